#!/usr/bin/env bash
# Re-train the demo patches shipped in patches/demo/ (default backbone, ~20 min on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
glue=${GLUE:-../shared/glue}
out=patches/demo
.venv/bin/bitpatch train --glue sst2 --data "$glue/SST-2" --task sentiment --epochs 1 \
  --max-train-examples 12000 --out "$out/sentiment.safetensors"
.venv/bin/bitpatch train --glue mrpc --data "$glue/MRPC" --task paraphrase --epochs 5 \
  --out "$out/paraphrase.safetensors"
.venv/bin/bitpatch train --glue stsb --data "$glue/STS-B" --task similarity --epochs 4 \
  --out "$out/similarity.safetensors"
