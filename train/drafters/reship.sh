#!/usr/bin/env bash
# Re-ship the four default-model drafters after a new default model lands: train each kind from
# RECIPES (default train/drafters/v4: warm-started from the shipped drafters), export them, run the
# three results-table evaluations, pick "auto", train its acceptance predictor, rebuild RESULTS.md.
# Resumable: each training run continues from its last checkpoint, the self-distillation cache
# keeps finished rows. Long (on 2 CPU cores: ~20 min self-distillation, ~8-25 min per drafter,
# ~60 min of evaluation); run it in the background and read its log.
set -euo pipefail
cd "$(dirname "$0")/../.."
RECIPES=${RECIPES:-train/drafters/v4}
PY=${PY:-.venv/bin/python}
for k in eagle vispec msd specvlm; do "$PY" -m vlmspec.training --config "$RECIPES/$k.json"; done
"$PY" train/drafters/export_default.py --recipes "$RECIPES"
for c in drafters-greedy drafters-t1 drafters-indist; do
  "$PY" -m vlmspec eval --config "eval/configs/$c.json" --overwrite
done
"$PY" train/drafters/export_default.py --recipes "$RECIPES" --greedy runs/eval/drafters-greedy/summary.json \
  --sampled runs/eval/drafters-t1/summary.json --heldout runs/eval/drafters-greedy/summary.json \
  --indist runs/eval/drafters-indist/summary.json
"$PY" -m vlmspec train --config train/acceptance/default.json
"$PY" eval/make_results_table.py
