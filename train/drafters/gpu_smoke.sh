#!/usr/bin/env bash
# Smoke test of a 7B drafter recipe before the long run: a few training steps of the recipe's own
# config (drafter, dtype, per-GPU batch, optimizer) on the target's own 48-token answers to the ~60
# questions of 4 built-in synthetic scenes (or 16 rows of SMOKE_DATA), a checkpoint halfway, the
# end-of-run tau, then one small `vlmspec eval` (plain vs the new drafter, 2 prompts, must be lossless).
# Under 10 minutes on one GPU once the target's weights are in the Hugging Face cache.
#
#   train/drafters/gpu_smoke.sh llava-1.5-7b        # or llava-next-7b, or the path of a training config JSON
#   SMOKE_TINY=1 train/drafters/gpu_smoke.sh llava-1.5-7b    # CPU only: a tiny random LLaVA of the same
#                                                   # kind (1.5 or NeXT) instead of the 7B target; ~1 minute
#
# Environment (all optional):
#   SMOKE_TINY=1          CPU run on a tiny random target (built into $SMOKE_OUT/tiny-target)
#   SMOKE_TARGET=NAME     another target than the recipe's (a checkpoint folder or hub name)
#   SMOKE_STEPS=10        optimizer steps (a checkpoint is written halfway)
#   SMOKE_NPROC=1         processes: >1 launches DDP through accelerate (GPUs, or gloo with SMOKE_TINY)
#   SMOKE_DATA=FILE       the first 16 rows of your JSON-lines prompts instead of the built-in synthetic
#   SMOKE_IMAGE_ROOT=DIR  ... and the folder their image paths are relative to
#   SMOKE_OUT=DIR         output folder (default runs/drafters/gpu-smoke-<recipe>); wiped first
#   PYTHON=...            interpreter (default: .venv/bin/python if present, else python)
# Prints the seconds per step and (one GPU) the peak GPU memory; exits nonzero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

recipe="${1:-llava-1.5-7b}"
case "$recipe" in
    *.json) config="$recipe"; name="$(basename "$(dirname "$recipe")")" ;;
    *) config="train/drafters/$recipe/train.json"; name="$recipe" ;;
esac
[ -f "$config" ] || { echo "gpu_smoke: no training config $config" >&2; exit 2; }
PY="${PYTHON:-}"
if [ -z "$PY" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi; fi
out="${SMOKE_OUT:-runs/drafters/gpu-smoke-$name}"
steps="${SMOKE_STEPS:-10}"
nproc="${SMOKE_NPROC:-1}"
rm -rf "$out"
mkdir -p "$out"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-0}" TOKENIZERS_PARALLELISM=false

target="${SMOKE_TARGET:-$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["target"])' "$config")}"
sets=()
eval_device=()
if [ "${SMOKE_TINY:-0}" = 1 ]; then
    case "$target" in *v1.6*|*next*|*NeXT*) kind=llava_next ;; *) kind=llava ;; esac
    "$PY" -c 'import sys; from vlmspec.testing import TinyLlavaConfig, save_tiny_llava
save_tiny_llava(sys.argv[1], TinyLlavaConfig(kind=sys.argv[2]), seed=0)' "$out/tiny-target" "$kind" >/dev/null 2>&1
    target="$out/tiny-target"
    export ACCELERATE_USE_CPU=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
    sets+=(--set mixed_precision='"no"' --set target_dtype='"float32"' --set batch_size=2 --set grad_accum=1
           --set data.max_length=512)
    eval_device=(--device cpu)
    echo "gpu_smoke: CPU, a tiny random $kind target standing in for $(
        "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["target"])' "$config")"
fi
if [ -n "${SMOKE_DATA:-}" ]; then
    source="{\"kind\": \"jsonl\", \"path\": \"$SMOKE_DATA\", \"limit\": 16${SMOKE_IMAGE_ROOT:+, \"image_root\": \"$SMOKE_IMAGE_ROOT\"}}"
else
    source='{"kind": "synthetic", "split": "train", "n": 4, "seed": 0, "task": "questions"}'
fi
sets+=(--set "data.sources=[$source]" --set data.self_distill.max_new_tokens=48
       --set 'eval={"every": 0, "num_prompts": 2, "max_new_tokens": 32, "draft_length": 5, "source": {"kind": "synthetic", "split": "val", "n": 2, "task": "questions"}}'
       --set max_steps="$steps" --set checkpoint_every=$(( steps / 2 > 0 ? steps / 2 : 1 )) --set log_every=1
       --set resume=null)
train_args=(--config "$config" --target "$target" --output-dir "$out/train" --no-progress "${sets[@]}")

started=$(date +%s)
if [ "$nproc" -gt 1 ]; then
    if [ "${SMOKE_TINY:-0}" = 1 ]; then launch=(--multi_gpu --mixed_precision no); else launch=(--config_file train/drafters/multi_gpu.yaml); fi
    "$PY" -m accelerate.commands.launch "${launch[@]}" --num_processes "$nproc" --num_machines 1 --dynamo_backend no \
        -m vlmspec.training "${train_args[@]}"
else  # one process, in this interpreter: the peak GPU memory can be read afterwards
    "$PY" - "${train_args[@]}" <<'EOF'
import sys
import torch
from vlmspec.training.cli import main
code = main(sys.argv[1:])
if torch.cuda.is_available():
    print(f"gpu_smoke: peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB allocated, "
          f"{torch.cuda.max_memory_reserved() / 2**30:.1f} GiB reserved ({torch.cuda.get_device_name()})")
sys.exit(code)
EOF
fi
trained=$(date +%s)

"$PY" - "$out/train" "$steps" <<'EOF'
import json, math, statistics, sys
from pathlib import Path
out, steps = Path(sys.argv[1]), int(sys.argv[2])
records = [json.loads(line) for line in open(out / "metrics.jsonl")]
train = [r for r in records if "loss" in r]
evals = [r for r in records if "eval_tau" in r]
assert [r["step"] for r in train] == list(range(1, steps + 1)), [r["step"] for r in train]
assert all(math.isfinite(r["loss"]) for r in train), [r["loss"] for r in train]
assert evals and evals[-1]["eval_tau"] >= 1.0, evals
assert (out / "checkpoints" / "latest").is_file() and (out / "drafter" / "model.safetensors").is_file()
seconds = statistics.median(r["seconds"] for r in train[1:] or train)
print(f"gpu_smoke: {steps} steps, loss {train[0]['loss']:.4f} -> {train[-1]['loss']:.4f}, "
      f"median {seconds:.2f} s/step, eval tau {evals[-1]['eval_tau']:.2f}")
EOF

"$PY" -m vlmspec eval --benchmark synthetic-qa --target "$target" "${eval_device[@]}" \
    --methods "plain,eagle:$out/train/drafter" --limit 2 --max-new-tokens 32 --warmup 0 \
    --out "$out/eval" --overwrite --no-progress >"$out/eval.log" 2>&1 || { tail -40 "$out/eval.log" >&2; exit 1; }
"$PY" - "$out/eval/summary.json" <<'EOF'
import json, sys
summary = json.load(open(sys.argv[1]))
entry = next(e for name, e in summary["methods"].items() if name.startswith("eagle:"))
assert entry["lossless"] == 1.0, entry
print(f"gpu_smoke: vlmspec eval (2 prompts): tau {entry.get('tau')}, lossless {entry['lossless']:.0%}")
EOF
echo "gpu_smoke: OK in $(( $(date +%s) - started )) s (training $(( trained - started )) s); outputs in $out"
