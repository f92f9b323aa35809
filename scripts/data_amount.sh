#!/usr/bin/env bash
# The data-amount study of docs/RESULTS.md: BitFit and full fine-tuning on MRPC, STS-B and CoLA
# with a seeded, stratified 10% and 30% of the training data, 16 epochs (the 100% column is the
# existing `-e16` cells), 3 seeds. Runs every missing cell, seed by seed, so a partial run still
# fills every column; `SEEDS="0"` limits the seeds, `FRACTIONS="0.1"` the fractions.
# Then: .venv/bin/python -m bitpatch.trainer.results docs/results
set -euo pipefail
cd "$(dirname "$0")/.."
for seed in ${SEEDS:-0 1 2}; do
  for fraction in ${FRACTIONS:-0.1 0.3}; do
    SEEDS=$seed FRACTION=$fraction EPOCHS=16 METHODS="bitfit full" bash scripts/results.sh mrpc stsb cola
  done
done
