"""Combine the results-table runs into eval/RESULTS.md (written atomically).

    vlmspec eval --config eval/configs/drafters-greedy.json --overwrite   # held out, greedy
    vlmspec eval --config eval/configs/drafters-t1.json --overwrite       # held out, T = 1
    vlmspec eval --config eval/configs/drafters-indist.json --overwrite   # training distribution
    python eval/make_results_table.py

Per method: tau (new tokens / target forwards, prefill counted, bonus token included),
speedup (plain `model.generate` wall time / method wall time on the same samples,
interleaved, same process), the same against `none` (vlmspec's loop without drafting: the
gain from speculation alone) and losslessness (greedy: share of samples whose token ids equal
plain greedy decoding; T = 1: exactness of the distribution is what the sampling verifier
guarantees and tests/test_lossless_sampling.py checks statistically). Then tau and speedup per
prompt style of the held-out greedy run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vlmspec.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RUNS = {"greedy": "drafters-greedy", "T = 1": "drafters-t1", "in-dist": "drafters-indist"}
NAMES = {"plain": "plain `model.generate`", "none": "vlmspec, no drafting (`none`)",
         "hf-prompt-lookup": "transformers assisted (prompt lookup)", "prompt-lookup": "vlmspec prompt lookup"}
SHIPPED = "vlmspec/models/default_weights/drafters/"
WHY_FAILED = {  # what the error of a method that fails on some samples means
    "hf-prompt-lookup": "transformers' prompt lookup copies n-grams of the prompt, image placeholder tokens included, "
                        "into its candidates, so LLaVA meets more image tokens than image features; only the "
                        "text-only prompts run, and its speedup is over those",
}


def label(method: str) -> str:
    if method in NAMES:
        return NAMES[method]
    kind, _, rest = method.partition(":")
    path, _, query = rest.partition("?")
    where = "shipped" if path.startswith(SHIPPED) else path.removesuffix("/drafter").split("/")[-1]
    return f"vlmspec {kind} ({where}" + (f", {query.replace('&', ' ')})" if query else ")")


def _machine() -> str:
    """CPU model and whether it has native bf16 GEMMs (what the drafter fast path's timing exploits)."""
    from vlmspec.core.autotune import cpu_name

    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "ISA unknown"
    return f"{cpu_name()} ({isa})"


def _cell(summary: dict | None, method: str, key: str, fmt: str, over_none: bool = False) -> str:
    entry = (summary or {}).get("methods", {}).get(method)
    if entry is None:
        return "skipped" if method in (summary or {}).get("skipped_methods", {}) else "—"
    value = entry.get(key)
    if value is None:
        return "n/a"
    if over_none:
        none = summary["methods"].get("none", {}).get("speedup_total")
        if not none:
            return "—"
        value = value / none
    return format(value, fmt) + ("x" if key == "speedup_total" else "")


def _lossless(summary: dict | None, method: str) -> str:
    entry = (summary or {}).get("methods", {}).get(method)
    if entry is None:
        return "—"
    if method == summary["baseline"]:
        return "baseline"
    return "n/a" if entry.get("lossless") is None else f"{entry['lossless'] * 100:.0f}%"


def _per_style(summary: dict, methods: list[str]) -> list[str]:
    per = summary.get("per_category") or {}
    if not per:
        return []
    shown = [m for m in methods if m not in ("plain", "hf-prompt-lookup") and any(m in e for e in per.values())]
    lines = ["", "## Held out, greedy, per prompt style (tau / speedup vs plain)", "",
             "| style | samples | " + " | ".join(label(m) for m in shown) + " |",
             "|---|---|" + "---|" * len(shown)]
    for style, entries in per.items():
        count = next(iter(entries.values())).get("samples", "")
        cells = []
        for m in shown:
            e = entries.get(m)
            cells.append("—" if e is None else f"{e['tau']:.2f} / {e['speedup_total']:.2f}x" if e.get("tau") else
                         f"n/a / {e['speedup_total']:.2f}x")
        lines.append(f"| {style} | {count} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    summaries = {}
    for mode, name in RUNS.items():
        path = ROOT / "runs" / "eval" / name / "summary.json"
        if path.is_file():
            summaries[mode] = json.loads(path.read_text())
    if "greedy" not in summaries:
        print("no greedy summary found; run the eval configs first (see this file's docstring)", file=sys.stderr)
        return 1
    first = summaries["greedy"]
    methods: list[str] = []
    for s in summaries.values():
        for m in [*s["methods"], *s["skipped_methods"]]:
            if m not in methods:
                methods.append(m)
    settings = first["settings"]
    g, t, i = summaries.get("greedy"), summaries.get("T = 1"), summaries.get("in-dist")
    lines = [
        "# Results: the default model on a held-out prompt mix",
        "",
        f"- target: {first['target']} (demo LLaVA: SmolLM2-135M + a small ViT; see adapters/default-model); "
        f"device: {first['device']}",
        f"- benchmark: `{first['benchmark']['name']}` (held out: test scenes, prompt wordings, instructions and "
        f"photos never used in training), {settings['limit']} prompts greedy"
        + (f", {t['settings']['limit']} at T = 1" if t else "")
        + f", {settings['max_new_tokens']} new tokens at most, warm-up {settings['warmup']}, repeats {settings['repeats']}"
        + (f"; in-distribution column: `{i['benchmark']['name']}`, {i['settings']['limit']} fresh rows of the "
           "training mix" if i else ""),
        f"- machine (where this table was assembled; the runs record their own device line): {_machine()}",
        *[f"- drafter fast path ({label(m)}): {e['drafter_fast_cpu']}" for m, e in first["methods"].items()
          if e.get("drafter_fast_cpu") and "?" not in m],
        "- regenerate: the commands at the top of eval/make_results_table.py",
        "- per-sample detail: [greedy](results/drafters-greedy.md), [T = 1](results/drafters-t1.md), "
        f"[in distribution](results/drafters-indist.md); created {first['created']}",
        "",
        "| method | greedy tau | greedy speedup | vs `none` | greedy lossless | T=1 tau | T=1 speedup | T=1 vs `none` "
        "| in-dist tau | in-dist speedup |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        cells = [label(m), _cell(g, m, "tau", ".2f"), _cell(g, m, "speedup_total", ".2f"),
                 _cell(g, m, "speedup_total", ".2f", over_none=True), _lossless(g, m),
                 _cell(t, m, "tau", ".2f"), _cell(t, m, "speedup_total", ".2f"),
                 _cell(t, m, "speedup_total", ".2f", over_none=True),
                 _cell(i, m, "tau", ".2f"), _cell(i, m, "speedup_total", ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [(mode, m, e) for mode, s in summaries.items() for m, e in s["methods"].items() if e.get("errors")]
    if failed:
        lines += ["", "Methods that failed on some samples (their cells cover only the samples that ran):", ""]
        lines += [f"- `{m}` ({mode}): {e['samples']} of {e['samples'] + e['errors']} samples ran; "
                  f"{e['errors']} failed with `{(e.get('error_examples') or ['?'])[0]}`"
                  + (f" ({WHY_FAILED[m]})" if m in WHY_FAILED else "") for mode, m, e in failed]
    skipped = {m: r for s in summaries.values() for m, r in s["skipped_methods"].items()}
    if skipped:
        lines += ["", "Skipped:", ""] + [f"- `{m}`: {r}" for m, r in skipped.items()]
    lines += _per_style(g, methods)
    lines += [
        "",
        "tau = new tokens / target forwards (prefill counted, bonus token included; plain = 1.00).",
        "Speedup = plain wall time / method wall time on the same samples in the same process; `vs none`",
        "divides by `none`'s speedup (the gain from speculation alone, vlmspec's loop and fast path held equal).",
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
