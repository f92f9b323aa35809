from bitpatch.cli import main

main()
