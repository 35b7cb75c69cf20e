#!/usr/bin/env bash
# The training guards (README, Speed): train the default grid's hybrid cell with one thing changed
# and the same seed (same batches), evaluate both on the whole XQuAD-R with the same encoding
# precision, and print the summary metrics side by side; read the differences against the seed
# standard deviation of the grid's hybrid runs.
#
#   bash benchmarks/training_guard.sh [bf16|masks] [seed] [eval_precision]   # defaults: bf16 0 bf16
#
#   bf16   an fp32 twin (torch dropout masks) against the grid's bf16 run: what bf16 training changes
#   masks  a twin with lib.dropout's numpy masks (bf16) against the grid's run (torch masks): what
#          the faster masks change (a different draw of the same dropout, like another dropout seed)
#
# The grid's side reuses the default grid's own run of that cell when it is complete in HBT_OUTPUTS
# (eval-train-me5-small-q4-hybrid-a0.5-mlqa-r-s<seed>-xquad-r: precision auto on a CPU with bf16
# units, torch masks); otherwise it is trained here. Runs go to HBT_OUTPUTS (outputs/).
set -euo pipefail
mode=${1:-bf16}; seed=${2:-0}; eval_precision=${3:-bf16}
py=${PYTHON:-.venv/bin/python}
outputs=${HBT_OUTPUTS:-outputs}
common="backbone=me5-small-q4 sampler=hybrid alpha=0.5 train_sources=mlqa-r seed=$seed steps=40
        batch_size=32 learning_rate=3e-5 temperature=0.05"

train_and_evaluate() {  # run name, training overrides -> the evaluation run's name on stdout
  local run=$1-hybrid-s$seed; shift
  [ -f "$outputs/$run/COMPLETE.json" ] || [ -f "$outputs/$run/metrics.json" ] \
    || $py -m lib.train $common "$@" run=$run >&2
  [ -f "$outputs/$run-xquad-r/metrics.json" ] || $py -m lib.evaluate backbone="$outputs/$run/model" \
    dataset=xquad-r precision=$eval_precision run_depth=0 run=$run-xquad-r >&2
  echo "$run-xquad-r"
}

case $mode in
  bf16)  twin=$(train_and_evaluate guard-fp32 precision=fp32 dropout_masks=torch) ;;
  masks) twin=$(train_and_evaluate guard-numpy-masks precision=bf16 dropout_masks=numpy) ;;
  *) echo "training_guard.sh: mode '$mode': expected bf16 or masks" >&2; exit 2 ;;
esac
grid=eval-train-me5-small-q4-hybrid-a0.5-mlqa-r-s$seed-xquad-r
[ -f "$outputs/$grid/COMPLETE.json" ] || grid=$(train_and_evaluate guard-grid precision=bf16 dropout_masks=torch)
$py - "$outputs/$twin" "$outputs/$grid" <<'PY'
import json, sys
twin, grid = (json.load(open(f"{path}/metrics.json"))["summary"] for path in sys.argv[1:])
print(f"twin: {sys.argv[1]}\ngrid: {sys.argv[2]}\nmetric | twin | grid (bf16, torch masks) | grid - twin")
for key in ("mono map", "cross map", "multi map", "multi recall@10", "multi rank_distance"):
    print(f"{key} | {twin[key]:.4f} | {grid[key]:.4f} | {grid[key] - twin[key]:+.4f}")
PY
