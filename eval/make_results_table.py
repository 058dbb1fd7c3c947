"""Combine the greedy and T=1 results-table runs into eval/RESULTS.md (written atomically).

    vlmspec eval --config eval/configs/drafters-greedy.json --overwrite
    vlmspec eval --config eval/configs/drafters-t1.json --overwrite
    python eval/make_results_table.py

Per method and decoding mode: tau (new tokens / target forwards, prefill counted, bonus token
included), speedup (plain `model.generate` wall time / method wall time on the same samples,
interleaved, same process) and losslessness (greedy: share of samples whose token ids equal
plain greedy decoding; T = 1: exactness of the distribution is what the sampling verifier
guarantees and tests/test_lossless_sampling.py checks statistically, since single sampled
outputs cannot be compared token for token).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vlmspec.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RUNS = {"greedy": ROOT / "runs/eval/drafters-greedy/summary.json", "T = 1": ROOT / "runs/eval/drafters-t1/summary.json"}
DETAIL = {"greedy": "results/drafters-greedy.md", "T = 1": "results/drafters-t1.md"}
NAMES = {"plain": "plain `model.generate`", "hf-prompt-lookup": "transformers assisted (prompt lookup)",
         "prompt-lookup": "vlmspec prompt lookup"}


def label(method: str) -> str:
    kind = method.split(":")[0]
    return NAMES.get(method, f"vlmspec {kind}" + (" (shipped drafter)" if ":" in method else ""))


def main() -> int:
    summaries = {mode: json.loads(path.read_text()) for mode, path in RUNS.items() if path.is_file()}
    if not summaries:
        print("no summaries found; run the two eval configs first", file=sys.stderr)
        return 1
    first = next(iter(summaries.values()))
    methods: list[str] = []
    for s in summaries.values():
        for m in [*s["methods"], *s["skipped_methods"]]:
            if m not in methods:
                methods.append(m)
    settings = first["settings"]
    lines = [
        "# Results: the default model on synthetic long-form descriptions",
        "",
        f"- target: {first['target']} (demo LLaVA: SmolLM2-135M + a small ViT; see adapters/default-model); "
        f"device: {first['device']}",
        f"- benchmark: `{first['benchmark']['name']}`, {settings['limit']} test scenes, "
        f"{settings['max_new_tokens']} new tokens, warm-up {settings['warmup']}, repeats {settings['repeats']}",
        "- regenerate: `vlmspec eval --config eval/configs/drafters-greedy.json --overwrite && "
        "vlmspec eval --config eval/configs/drafters-t1.json --overwrite && python eval/make_results_table.py`",
        f"- per-sample detail: [greedy]({DETAIL['greedy']}), [T = 1]({DETAIL['T = 1']}); "
        f"created {first['created']}",
        "",
        "| method | greedy tau | greedy speedup | greedy lossless | T=1 tau | T=1 speedup |",
        "|---|---|---|---|---|---|",
    ]
    for m in methods:
        cells = [label(m)]
        for mode in ("greedy", "T = 1"):
            s = summaries.get(mode)
            entry = s["methods"].get(m) if s else None
            if entry is None:
                reason = (s or {}).get("skipped_methods", {}).get(m, "not run")
                cells += ["skipped", reason.split(":")[0] if mode == "greedy" else "skipped"] + (["—"] if mode == "greedy" else [])
                continue
            tau = f"{entry['tau']:.2f}" if entry.get("tau") is not None else "n/a"
            cells += [tau, f"{entry['speedup_total']:.2f}x"]
            if mode == "greedy":
                cells.append("baseline" if m == first["baseline"] else
                             ("n/a" if entry.get("lossless") is None else f"{entry['lossless'] * 100:.0f}%"))
        lines.append("| " + " | ".join(cells) + " |")
    skipped = {m: r for s in summaries.values() for m, r in s["skipped_methods"].items()}
    if skipped:
        lines += ["", "Skipped:", ""] + [f"- `{m}`: {r}" for m, r in skipped.items()]
    lines += [
        "",
        "tau = new tokens / target forwards (prefill counted, bonus token included; plain = 1.00).",
        "Speedup = plain wall time / method wall time on the same samples in the same process.",
        "Greedy lossless = share of samples whose token ids equal plain greedy decoding. At T = 1",
        "the verifier is distribution-exact (tested statistically in tests/test_lossless_sampling.py),",
        "so sampled outputs are compared as distributions, not token for token.",
        "",
    ]
    out = ROOT / "eval" / "RESULTS.md"
    atomic_write_text(out, "\n".join(lines), mode=0o644)
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
