#!/usr/bin/env bash
# Reproduce docs/RESULTS.md: every (task, method, seed) cell, skipping cells already saved in
# docs/results/. Long: run it in chunks (it skips saved cells, and a run stopped mid-way goes
# on from its last epoch checkpoint), e.g. `bash scripts/results.sh rte mrpc`;
# SEEDS="1 2" limits the seeds (SST-2 always runs seed 0 only); METHODS="bitfit" limits the
# methods (bitfit, frozen, bq+bm2, full); EPOCHS=16 trains that many epochs on every task and
# names the cells `...-e16-s0` (the longer-budget rows of the table); FRACTION=0.1 trains on a
# seeded, stratified 10% of the training set and names the cells `...-f10-s0` (the data-amount
# study: scripts/data_amount.sh).
# Then: .venv/bin/python -m bitpatch.trainer.results docs/results
set -euo pipefail
cd "$(dirname "$0")/.."
glue=${GLUE:-../shared/glue}
tasks=("${@:-rte mrpc stsb cola sst2}")
declare -A folder=([rte]=RTE [mrpc]=MRPC [stsb]=STS-B [cola]=CoLA [sst2]=SST-2)
suffix=${EPOCHS:+-e$EPOCHS}
fraction=${FRACTION:-1}
percent=$(.venv/bin/python -c "print(round(float('$fraction') * 100))")
[ "$percent" != 100 ] && suffix="$suffix-f$percent"

protocol_epochs() {  # the table's budget, from trainer/results.py
  .venv/bin/python -c "from bitpatch.trainer.results import protocol_epochs as p; print(p('$1'))"
}
methods=(${METHODS:-bitfit frozen bq+bm2 full})

run() {  # task method terms seed
  local task=$1 method=$2 terms=$3 seed=$4
  local name="$task-$method-${terms/+/_}$suffix-s$seed"
  [ -f "docs/results/$name.json" ] && return 0
  local extra=()
  [ "$terms" != all ] && extra=(--bias-terms "$terms")
  .venv/bin/bitpatch train --glue "$task" --data "$glue/${folder[$task]}" --method "$method" \
    "${extra[@]}" --seed "$seed" --train-fraction "$fraction" --epochs "${EPOCHS:-$(protocol_epochs "$task")}" --resume \
    --out "runs/results/$name$([ "$method" = full ] || echo .safetensors)" \
    --metrics-out "docs/results/$name.json"
}

for task in ${tasks[*]}; do
  seeds=(${SEEDS:-0 1 2})
  [ "$task" = sst2 ] && seeds=(0)
  for seed in "${seeds[@]}"; do
    for method in "${methods[@]}"; do
      case $method in
        bq+bm2) run "$task" bitfit bq+bm2 "$seed" ;;
        *) run "$task" "$method" all "$seed" ;;
      esac
    done
  done
done
