#!/usr/bin/env bash
# The bf16 training guard (README, Speed): train the default grid's hybrid cell in fp32 and in bf16
# with the same seed (same batches), evaluate both on the whole XQuAD-R with the same encoding
# precision, and print the summary metrics side by side; read the differences against the seed
# standard deviation of the grid's hybrid runs.
#
#   bash benchmarks/bf16_training_guard.sh [seed] [eval_precision]      # defaults: 0 bf16
#
# The bf16 side reuses the default grid's own run of that cell when it is complete in HBT_OUTPUTS
# (eval-train-me5-small-q4-hybrid-a0.5-mlqa-r-s<seed>-xquad-r, trained with precision auto on a
# CPU with bf16 units); otherwise both sides are trained here. Runs go to HBT_OUTPUTS (outputs/).
set -euo pipefail
seed=${1:-0}; eval_precision=${2:-bf16}
py=${PYTHON:-.venv/bin/python}
outputs=${HBT_OUTPUTS:-outputs}
common="backbone=me5-small-q4 sampler=hybrid alpha=0.5 train_sources=mlqa-r seed=$seed steps=40
        batch_size=32 learning_rate=3e-5 temperature=0.05"

train_and_evaluate() {  # precision -> the evaluation run's name on stdout
  local run=guard-$1-hybrid-s$seed
  [ -f "$outputs/$run/COMPLETE.json" ] || [ -f "$outputs/$run/metrics.json" ] \
    || $py -m lib.train $common precision=$1 run=$run >&2
  [ -f "$outputs/$run-xquad-r/metrics.json" ] || $py -m lib.evaluate backbone="$outputs/$run/model" \
    dataset=xquad-r precision=$eval_precision run_depth=0 run=$run-xquad-r >&2
  echo "$run-xquad-r"
}

fp32=$(train_and_evaluate fp32)
bf16=eval-train-me5-small-q4-hybrid-a0.5-mlqa-r-s$seed-xquad-r
[ -f "$outputs/$bf16/COMPLETE.json" ] || bf16=$(train_and_evaluate bf16)
$py - "$outputs/$fp32" "$outputs/$bf16" <<'PY'
import json, sys
fp32, bf16 = (json.load(open(f"{path}/metrics.json"))["summary"] for path in sys.argv[1:])
print(f"fp32-trained: {sys.argv[1]}\nbf16-trained: {sys.argv[2]}\nmetric | fp32-trained | bf16-trained | bf16 - fp32")
for key in ("mono map", "cross map", "multi map", "multi recall@10", "multi rank_distance"):
    print(f"{key} | {fp32[key]:.4f} | {bf16[key]:.4f} | {bf16[key] - fp32[key]:+.4f}")
PY
