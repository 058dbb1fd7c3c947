"""Ship the drafters trained for the default model: package data, cards, and the "auto" choice.

For each kind trained with `train/drafters/cpu/<kind>.json` (or `--recipes DIR`) this copies the run's
`<output_dir>/drafter/` (weights as fp16: the drafter only proposes, so its precision
never changes an output) into `vlmspec/models/default_weights/drafters/<kind>/`, writes the card
`adapters/<kind>-default/README.md` from the training log and the results-table runs, and
writes `drafters/best.json` naming the drafter with the highest greedy speedup, if one beats
prompt lookup (otherwise "auto" keeps prompt lookup).

    python train/drafters/export_default.py \
        --greedy runs/eval/drafters-greedy/summary.json --sampled runs/eval/drafters-t1/summary.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file

from vlmspec.atomic import atomic_replace_dir, atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "vlmspec" / "models" / "default_weights" / "drafters"
KINDS = ("eagle", "vispec", "msd", "specvlm")
TITLES = {
    "eagle": "EAGLE-2 feature drafter (text only)",
    "vispec": "ViSpec drafter (image compressed to a few query tokens + a global image feature)",
    "msd": "MSD drafter (visual and text tokens decoupled, two-stage curriculum)",
    "specvlm": "SpecVLM drafter (elastic visual compressor with a per-input operator gate)",
}


def _atomic_dir(final: Path, fill) -> None:
    """Fill a temp folder beside ``final``, then swap it in (``atomic_replace_dir``)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-"))
    try:
        fill(tmp)
        os.chmod(tmp, 0o755)
        atomic_replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def copy_drafter(source: Path, dest: Path, shape: dict) -> int:
    """Copy a saved drafter with its float tensors as fp16 and its drafting shape set to
    ``shape`` (how it drafts, not what it learned); returns the weights' size in bytes."""
    import torch

    def fill(tmp: Path) -> None:
        tensors = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous()
                   for k, v in load_file(str(source / "model.safetensors")).items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        meta = json.loads((source / "config.json").read_text())
        for section in meta.values():
            if isinstance(section, dict) and "tree" in section:
                section.update(shape)
                if shape.get("tree") != "static":
                    section["static_paths"] = None
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        os.chmod(tmp / "config.json", 0o644)
        os.chmod(tmp / "model.safetensors", 0o644)
        # Files shipped beside the weights (the acceptance predictor and its calibration) belong to
        # these weights: they stay when the weights are byte-identical, and go (with a note) when not.
        old_weights = dest / "model.safetensors"
        same = old_weights.is_file() and old_weights.read_bytes() == (tmp / "model.safetensors").read_bytes()
        for extra in (dest.iterdir() if dest.is_dir() else ()):
            if extra.is_file() and extra.name not in ("model.safetensors", "config.json"):
                if same:
                    shutil.copy2(extra, tmp / extra.name)
                else:
                    print(f"{dest.name}: new weights, so {extra.name} (made for the old ones) is not kept; retrain it")

    _atomic_dir(dest, fill)
    return (dest / "model.safetensors").stat().st_size


def _current_auto() -> str | None:
    """The drafter "auto" ships with now (drafters/best.json), None when there is none."""
    try:
        return json.loads((SHIPPED / "best.json").read_text()).get("drafter")
    except (OSError, ValueError):
        return None


def training_summary(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval_tau" in r]
    last = steps[-1] if steps else {}
    return {
        "steps": last.get("step"),
        # "seconds" is the logged step's own time (logged every log_every steps): mean x steps
        "minutes": round(sum(r.get("seconds", 0.0) for r in steps) / max(len(steps), 1) * (last.get("step") or 0) / 60, 1),
        "last": {k: last.get(k) for k in ("loss", "ce", "feat", "top1", "tau_est") if k in last},
        "eval_tau": evals[-1]["eval_tau"] if evals else None,
    }


def _method_row(summary: dict | None, spec_prefix: str) -> dict | None:
    """The row of the shipped copy of `spec_prefix` (else the first method of that kind)."""
    if summary is None:
        return None
    shipped = f"{spec_prefix}:{SHIPPED.relative_to(ROOT).as_posix()}/{spec_prefix}"
    if shipped in summary["methods"]:
        return summary["methods"][shipped]
    for name, entry in summary["methods"].items():
        if name.split(":")[0] == spec_prefix:
            return entry
    return None


def _fmt(row: dict | None, key: str, spec: str) -> str:
    if row is None or row.get(key) is None:
        return "n/a"
    return format(row[key], spec)


def _data_text(data: dict) -> str:
    sources = f"`{json.dumps(data['sources'])}`"
    if data.get("self_distill", {}).get("enabled"):
        sd = data["self_distill"]
        how = "greedy" if sd.get("temperature", 0) == 0 else f"sampled at T={sd['temperature']}"
        return (f"{sources}: the target's own {how} answers (self-distilled once, cached under the run folder or self_distill.cache_dir, "
                f"up to {sd.get('max_new_tokens')} tokens) to a wide prompt mix (describe / open questions / "
                "short answers / chat / photos, `vlmspec.data.prompt_mix`); the target computes its logits and "
                "features on the fly at every training step, nothing else cached")
    return (f"{sources} (the built-in synthetic scenes' long descriptions; the target computes its logits and "
            "features on the fly at every step, nothing cached on disk)")


def _row(label: str, row: dict | None) -> str:
    lossless = "n/a" if row is None or row.get("lossless") is None else f"{row['lossless'] * 100:.0f}% token-identical"
    return f"| {label} | {_fmt(row, 'tau', '.2f')} | {_fmt(row, 'speedup_total', '.2f')}x | {lossless} |"


def card(kind: str, config_path: Path, config: dict, train: dict, size: int, vocab_size: int,
         sampled: dict | None, heldout: dict | None = None, indist: dict | None = None,
         shape: dict | None = None) -> str:
    shape = shape or {"tree": "chain", "depth": 3}
    s = _method_row(sampled, kind)
    data = config["data"]
    lines = [
        f"# {kind}-default: {TITLES[kind]} for the vlmspec default model",
        "",
        "A drafter for `vlmspec-default` (the demo LLaVA built by `vlmspec.models.default_model_dir()`),",
        "trained by online-logit distillation (`vlmspec.training`) on this machine's 2 CPU cores.",
        f"Weights ship as package data in `vlmspec/models/default_weights/drafters/{kind}/`",
        f"({size / 2**20:.1f} MB, fp16, vocabulary trimmed to the {vocab_size} tokens the",
        f"training responses use (`draft_vocab_size` {config.get('draft_vocab_size')} was the cap); the",
        "embedding and LM head are the target's, never stored). It records the target's fingerprint",
        "and refuses to load against any other target (`DrafterMismatchError`).",
        "",
        "```bash",
        "vlmspec generate --image examples/scene.png --prompt \"Describe the image in detail.\" \\",
        f"    --drafter {kind}:vlmspec/models/default_weights/drafters/{kind}",
        "```",
        "",
        "## Recipe",
        "",
        f"- config: [`{config_path.relative_to(ROOT)}`](../../{config_path.relative_to(ROOT)}); command:",
        f"  `python -m vlmspec.training --config {config_path.relative_to(ROOT)}` then",
        "  `python train/drafters/export_default.py ...` (this card).",
        f"- drafter config in training: `{json.dumps(config.get('drafter_config'))}`; the shipped copy drafts",
        f"  `{json.dumps(shape)}`, the shape kept on this CPU (chain against dynamic trees in the held-out run,",
        "  eval/results/drafters-greedy.md: ties keep the chain; `Pipeline.autotune` re-decides per machine); override",
        "  with `?tree=...`",
        f"- loss: `{json.dumps(config['loss'])}`",
        f"- optimiser: `{json.dumps(config['optim'])}`, batch {config['batch_size']}, "
        f"{train['steps']} steps, {train['minutes']} min of training steps",
        f"- data: {_data_text(data)}" + (f", curriculum `{json.dumps(data['curriculum'])}`" if "curriculum" in data else ""),
        f"- at the end of training: `{json.dumps(train['last'])}`, eval tau on 4 training-distribution prompts "
        f"{train['eval_tau']}",
        "",
        "## Measured (eval harness, default model, one process per table, 2 CPU threads)",
        "",
        "| set, decoding | tau | speedup vs plain `model.generate` | lossless |",
        "|---|---|---|---|",
        _row("prompt-mix **held out** (test scenes, held-out wordings, instructions, photos), greedy",
             _method_row(heldout, kind)),
        _row("prompt-mix in distribution (fresh rows of the training mix), greedy", _method_row(indist, kind)),
        f"| prompt-mix held out, T = 1 | {_fmt(s, 'tau', '.2f')} | "
        + (f"{s['speedup_total']:.2f}x" if s and s.get('speedup_total') is not None else "n/a")
        + " | same distribution (exact rejection sampling) |",
        "",
        "tau = new tokens / target forwards (prefill counted, bonus token included). The whole table",
        "with every method is in [eval/RESULTS.md](../../eval/RESULTS.md).",
        "",
        "Per prompt style: eval/results/drafters-greedy.md. Limitations: trained for minutes on CPU",
        "on the default model's own answers about synthetic scenes; useless for any other target.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--recipes", default="train/drafters/cpu",
                        help="folder of the <kind>.json recipes that trained the drafters (their output_dir, cards)")
    parser.add_argument("--runs", default=None,
                        help="folder holding <kind>/drafter (default: each recipe's output_dir)")
    parser.add_argument("--greedy", help="summary.json of the greedy results-table run")
    parser.add_argument("--sampled", help="summary.json of the T=1 results-table run")
    parser.add_argument("--heldout", help="summary.json of the held-out prompt-mix run (picks 'auto' when given)")
    parser.add_argument("--indist", help="summary.json of the in-distribution prompt-mix run")
    parser.add_argument("--tree", default="chain", help="drafting shape the shipped copies use (measured best here)")
    parser.add_argument("--tie", type=float, default=0.03,
                        help="'auto' changes only when another drafter is faster by more than this share (noise)")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--total-tokens", type=int, default=None)
    args = parser.parse_args(argv)
    greedy = json.loads(Path(args.greedy).read_text()) if args.greedy else None
    sampled = json.loads(Path(args.sampled).read_text()) if args.sampled else None
    heldout = json.loads(Path(args.heldout).read_text()) if args.heldout else None
    indist = json.loads(Path(args.indist).read_text()) if args.indist else None
    for kind in args.kinds:  # every run is checked before anything shipped is replaced
        config_path = ROOT / args.recipes / f"{kind}.json"
        run_dir = Path(args.runs) / kind if args.runs else ROOT / json.loads(config_path.read_text())["output_dir"]
        missing = [name for name in ("drafter/model.safetensors", "drafter/config.json", "metrics.jsonl")
                   if not (run_dir / name).is_file()]
        if missing:
            parser.error(f"{kind}: {run_dir} lacks {', '.join(missing)} (train it with {config_path.relative_to(ROOT)})")
    for kind in args.kinds:
        config_path = ROOT / args.recipes / f"{kind}.json"
        config = json.loads(config_path.read_text())
        run_dir = Path(args.runs) / kind if args.runs else ROOT / config["output_dir"]
        shape = {"tree": args.tree, "depth": args.depth}
        shape.update({k: v for k, v in (("top_k", args.top_k), ("total_tokens", args.total_tokens)) if v is not None})
        size = copy_drafter(run_dir / "drafter", SHIPPED / kind, shape)
        vocab_size = json.loads((run_dir / "drafter" / "config.json").read_text())["draft_vocab_size"]
        text = card(kind, config_path, config, training_summary(run_dir), size, vocab_size, sampled,
                    heldout, indist, shape)
        atomic_write_text(ROOT / "adapters" / f"{kind}-default" / "README.md", text, mode=0o644)
        print(f"{kind}: {size / 2**20:.1f} MB -> {SHIPPED / kind}")
    chooser, where = (heldout, "held-out prompt-mix run") if heldout is not None else (greedy, "results table")
    if chooser is not None:
        speed = {k: (_method_row(chooser, k) or {}).get("speedup_total") for k in (*KINDS, "prompt-lookup")}
        trained = {k: v for k, v in speed.items() if k in KINDS and v is not None and (SHIPPED / k).is_dir()}
        best = max(trained, key=trained.get) if trained else None
        if best is not None and trained[best] <= (speed.get("prompt-lookup") or 0.0):
            best = None
        why = (f"highest greedy speedup in the {where} ({trained[best]:.2f}x)" if best
               else "no trained drafter beat prompt lookup")
        incumbent = _current_auto()
        if (best and incumbent in trained and incumbent != best and trained[incumbent] >= trained[best] * (1 - args.tie)
                and trained[incumbent] > (speed.get("prompt-lookup") or 0.0)):
            why = (f"within {args.tie:.0%} of the highest greedy speedup in the {where} ({trained[incumbent]:.2f}x vs "
                   f"{best} {trained[best]:.2f}x): a tie within run-to-run noise keeps the current choice")
            best = incumbent
        atomic_write_text(SHIPPED / "best.json", json.dumps({"drafter": best, "why": why, "speedups": speed}, indent=2) + "\n",
                          mode=0o644)
        print(f"best: {best} ({why})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
