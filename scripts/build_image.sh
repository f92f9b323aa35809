#!/usr/bin/env bash
# Build the bitpatch image: `--variant cuda` (default, for GPU hosts) or `--variant cpu`.
# Both variants are the same Dockerfile; the variant picks the base image and torch's wheel index.
#   scripts/build_image.sh --variant cpu --tag bitpatch:cpu
#   scripts/build_image.sh --variant cpu --base my-debian:bookworm --torch-index http://host/simple
set -euo pipefail
cd "$(dirname "$0")/.."

variant=cuda tag="" base="" index="" extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --variant) variant=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --base) base=$2; shift 2 ;;              # another base image with apt (e.g. a local mirror's)
    --torch-index) index=$2; shift 2 ;;      # another index that serves the torch wheel
    --network) extra+=(--network "$2"); shift 2 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "build_image.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$variant" in
  cuda) base=${base:-nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04}
        index=${index:-https://download.pytorch.org/whl/cu128} tag=${tag:-bitpatch:latest} ;;
  cpu)  base=${base:-debian:bookworm-slim}
        index=${index:-https://download.pytorch.org/whl/cpu} tag=${tag:-bitpatch:cpu} ;;
  *) echo "build_image.sh: --variant must be cuda or cpu, not '$variant'" >&2; exit 2 ;;
esac
docker build "${extra[@]}" --build-arg "BASE_IMAGE=$base" --build-arg "TORCH_INDEX_URL=$index" \
  -t "$tag" .
