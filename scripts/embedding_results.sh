#!/usr/bin/env bash
# Reproduce docs/RESULTS.md's embedding table: STS-B dev Spearman of the cosine for the frozen
# default backbone, a BitFit embedding patch and full fine-tuning (seeds 0 1 2), trained on
# STS-B train as pairs with their scores. Skips cells already saved in docs/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
glue=${GLUE:-../shared/glue}
epochs=${EPOCHS:-3}

run() {  # method seed [extra flags]
  local method=$1 seed=$2 name="stsb-embedding-$1-s$2"
  shift 2
  [ -f "docs/results/$name.json" ] && return 0
  .venv/bin/bitpatch train --kind embedding --glue stsb --data "$glue/STS-B" --method "$method" \
    --task stsb-embedding --pooling mean \
    --seed "$seed" --epochs "$epochs" --out "runs/results/$name$([ "$method" = full ] || echo .safetensors)" \
    --metrics-out "docs/results/$name.json" "$@"
}

run frozen 0
for seed in ${SEEDS:-0 1 2}; do
  run bitfit "$seed"
  run full "$seed"
done
