"""Turn the runner's per-sample records into the summary JSON, a Markdown table and PNG plots.

``summarize(run)`` aggregates per method (only samples and methods of the current config
count, so a resumed run with a smaller ``--limit`` reports just those):

* speedup: baseline wall time / method wall time, per sample (mean over repeats; median and
  mean reported) and as the ratio of totals over the samples both finished; with repeats,
  the ratio of totals of each repeat gives the spread (mean, std, min, max);
* tau = total new tokens / total target forwards (prefill counted, bonus included; HF methods
  count forwards of the target module with a hook, so HF assisted generation gets a tau too);
  acceptance by draft position = mean over samples of each sample's per-position rate;
* time to first token, time per output token ((wall - TTFT) / (tokens - 1)), tokens/s
  (total tokens / total wall), total wall time, peak memory (max over calls);
* losslessness: share of samples whose (first-repeat) token ids equal the baseline's, only at
  temperature 0 ("n/a" otherwise); accuracy: mean score of the benchmark's metric.

Rows whose records carry a ``mode`` (a ``verdict:CONFIG`` method and the rows it adds, e.g.
``verdict:CONFIG [expert 0]``, ``verdict:CONFIG [verdict alone]``) are accuracy modes, not
lossless: their losslessness is n/a, and the verdict row also gets its mean cost per stage.

``write_outputs(run)`` writes ``summary.json``, ``report.md`` and ``speedup.png``,
``acceptance.png``, ``accuracy_vs_speed.png`` (drawn by :mod:`vlmspec.evaluation.plots` from the
summary dict) into the output folder. Every write is atomic (temporary file in the same folder,
fsync, ``os.replace``). Imports go one way: the runner imports this module, this module imports
the plots, and neither imports the runner (a run is read through :class:`RunResults`).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any, Protocol

from ..atomic import atomic_write_text
from .aggregates import aggregate_by_method
from .plots import PLOT_FILES, write_plots

__all__ = ["ACCURACY_MODE", "PLOT_FILES", "REPORT_FILE", "SUMMARY_FILE", "RunResults", "expand_rows",
           "render_markdown", "report_warnings", "summarize", "summarize_records", "write_outputs",
           "write_plots"]

ACCURACY_MODE = "accuracy mode (not lossless)"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"


class RunResults(Protocol):
    """What the report reads of a run (the runner's ``EvalRun`` has it; the report never imports
    the runner: runner -> report -> plots, one way)."""

    config: Any  # EvalConfig: methods, greedy, out_dir, target and the settings
    benchmark: Any  # Benchmark: samples, describe()
    records: list[dict]
    skipped: dict[str, str]
    device: str
    memory_measure: str
    summary: dict


# ------------------------------------------------------------------------ summaries
def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _spread(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"mean": _mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def _ok(record: dict) -> bool:
    return not record.get("error")


def expand_rows(methods: list[str], records: list[dict]) -> list[str]:
    """``methods`` with, after each, the extra rows its records add (``record["group"]``)."""
    extra: dict[str, list[str]] = {}
    for record in records:
        group = record.get("group")
        if group in methods and record["method"] not in extra.setdefault(group, []):
            extra[group].append(record["method"])
    return [row for method in methods for row in (method, *extra.get(method, []))]


def _stage_means(records: list[dict]) -> dict | None:
    """Mean forwards, tokens and seconds per sample of each verdict stage (and the total)."""
    stages = [r["stages"] for r in records if r.get("stages")]
    if not stages:
        return None
    return {stage: {key: _mean([s[stage][key] for s in stages]) for key in ("forwards", "tokens", "seconds")}
            for stage in stages[0]}


def summarize_records(
    records: list[dict],
    methods: list[str],
    sample_ids: list[str],
    *,
    greedy: bool,
    baseline: str = "plain",
) -> dict:
    """Per-method aggregates (see the module docstring) from per-sample records."""
    wanted = set(sample_ids)
    by_key: dict[tuple[str, str, int], dict] = {}
    for record in records:
        if record["sample_id"] in wanted and record["method"] in methods:
            by_key[(record["sample_id"], record["method"], int(record["repeat"]))] = record
    repeats = sorted({key[2] for key in by_key})
    result: dict[str, Any] = {}
    for method in methods:
        mine = [r for k, r in by_key.items() if k[1] == method]
        ok = [r for r in mine if _ok(r)]
        first = {r["sample_id"]: r for r in ok if int(r["repeat"]) == repeats[0]} if repeats else {}
        entry: dict[str, Any] = {
            "samples": len({r["sample_id"] for r in ok}),
            "generations": len(ok),
            "errors": len(mine) - len(ok),
            "error_examples": sorted({r["error"] for r in mine if not _ok(r)})[:3],
        }
        # speed
        per_sample: dict[str, list[float]] = {}
        totals_by_repeat: dict[int, list[float]] = {}
        for r in ok:
            base = by_key.get((r["sample_id"], baseline, int(r["repeat"])))
            if base is None or not _ok(base) or r["wall_seconds"] <= 0:
                continue
            per_sample.setdefault(r["sample_id"], []).append(base["wall_seconds"] / r["wall_seconds"])
            pair = totals_by_repeat.setdefault(int(r["repeat"]), [0.0, 0.0])
            pair[0] += base["wall_seconds"]
            pair[1] += r["wall_seconds"]
        sample_speedups = {sid: _mean(values) for sid, values in per_sample.items()}
        base_total = sum(p[0] for p in totals_by_repeat.values())
        method_total = sum(p[1] for p in totals_by_repeat.values())
        entry["speedup_total"] = base_total / method_total if method_total > 0 else None
        entry["speedup_by_repeat"] = _spread([p[0] / p[1] for p in totals_by_repeat.values() if p[1] > 0])
        entry["speedup_per_sample"] = sample_speedups
        entry["speedup_median"] = statistics.median(sample_speedups.values()) if sample_speedups else None
        entry["speedup_mean"] = _mean(list(sample_speedups.values()))
        new_tokens = sum(r["new_tokens"] for r in ok)
        wall = sum(r["wall_seconds"] for r in ok)
        forwards = [r for r in ok if r.get("target_forwards")]
        entry["new_tokens"] = new_tokens
        entry["mean_new_tokens"] = new_tokens / len(ok) if ok else None
        entry["target_forwards"] = sum(r["target_forwards"] for r in forwards)
        entry["wall_seconds_total"] = wall
        entry["wall_seconds_mean"] = wall / len(ok) if ok else None
        entry["tokens_per_second"] = new_tokens / wall if wall > 0 else None
        entry["tau"] = (sum(r["new_tokens"] for r in forwards) / sum(r["target_forwards"] for r in forwards)
                        if forwards else None)
        entry["time_to_first_token"] = _mean([r["time_to_first_token"] for r in ok
                                              if r.get("time_to_first_token") is not None])
        entry["time_per_output_token"] = _mean([r["time_per_output_token"] for r in ok
                                                if r.get("time_per_output_token") is not None])
        curves = [r["acceptance_per_position"] for r in ok if r.get("acceptance_per_position")]
        depth = max((len(c) for c in curves), default=0)
        entry["acceptance_per_position"] = [
            _mean([c[i] for c in curves if len(c) > i]) for i in range(depth)
        ] or None
        entry["drafter"] = next((r["drafter"] for r in ok if r.get("drafter")), None)  # "auto -> eagle:DIR"
        entry["mean_draft_length"] = _mean([r["mean_draft_length"] for r in ok if r.get("mean_draft_length")])
        entry["draft_depth_cap"] = next((r["draft_depth_cap"] for r in ok if r.get("draft_depth_cap")), None)
        entry["drafter_fast_cpu"] = next((r["drafter_fast_cpu"] for r in ok if r.get("drafter_fast_cpu")), None)
        peaks = [r["peak_memory_bytes"] for r in ok if r.get("peak_memory_bytes") is not None]
        deltas = [r["memory_delta_bytes"] for r in ok if r.get("memory_delta_bytes") is not None]
        entry["peak_memory_bytes"] = max(peaks) if peaks else None
        entry["memory_delta_bytes"] = max(deltas) if deltas else None
        # quality
        scores = [r["score"] for r in first.values() if r.get("score") is not None]
        entry["accuracy"] = _mean(scores)
        entry["scored_samples"] = len(scores)
        entry["mode"] = next((r["mode"] for r in mine if r.get("mode")), None)
        if entry["mode"]:
            entry["group"] = next((r["group"] for r in mine if r.get("group")), None)
            entry["model"] = next((r["model"] for r in mine if r.get("model")), None)
            entry["stages"] = _stage_means(ok)
        if greedy and not entry["mode"]:
            base_first = {sid: r for (sid, m, rep), r in by_key.items()
                          if m == baseline and rep == (repeats[0] if repeats else 0) and _ok(r)}
            compared = [sid for sid in first if sid in base_first]
            same = [sid for sid in compared if first[sid]["token_ids"] == base_first[sid]["token_ids"]]
            entry["lossless"] = len(same) / len(compared) if compared else None
            entry["lossless_compared"] = len(compared)
            entry["mismatched_samples"] = sorted(set(compared) - set(same))
        else:
            entry["lossless"] = None  # n/a: sampled outputs differ by chance, or not lossless by design
            entry["lossless_compared"] = 0
            entry["mismatched_samples"] = []
        result[method] = entry
    return result


def summarize(run: RunResults) -> dict:
    """The summary JSON of a run."""
    config = run.config
    sample_ids = [s.sample_id for s in run.benchmark.samples]
    methods = expand_rows([m for m in config.methods if m not in run.skipped], run.records)
    summaries = summarize_records(run.records, methods, sample_ids, greedy=config.greedy)
    return {
        **_set_level(run, methods, config.greedy),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "benchmark": run.benchmark.describe(),
        "target": config.target or "default model",
        "device": run.device,
        "memory_measure": run.memory_measure,
        "settings": {
            "max_new_tokens": config.max_new_tokens, "temperature": config.temperature,
            "top_p": config.top_p, "top_k": config.top_k, "seed": config.seed, "repeats": config.repeats,
            "warmup": config.warmup, "draft_length": config.draft_length, "limit": config.limit,
        },
        "baseline": "plain",
        "losslessness_meaningful": config.greedy,
        "skipped_methods": dict(run.skipped),
        "methods": summaries,
        "warnings": report_warnings(summaries, "plain"),
    }


def _set_level(run: RunResults, methods: list[str], greedy: bool) -> dict:
    """``aggregates``: the benchmark's set-level scores per method (MME, POPE, ...);
    ``per_category``: speedup, tau and accuracy per sample category (prompt style, MME
    subtask, ...), each against the baseline on that category's samples only."""
    samples = run.benchmark.samples
    out: dict[str, Any] = {"aggregates": aggregate_by_method(run.benchmark.metric, samples, run.records, methods)}
    categories: dict[str, list[str]] = {}
    for sample in samples:
        if sample.category:
            categories.setdefault(sample.category, []).append(sample.sample_id)
    keys = ("speedup_total", "tau", "accuracy", "mean_new_tokens", "lossless", "samples")
    out["per_category"] = {
        category: {method: {k: entry[k] for k in keys}
                   for method, entry in summarize_records(run.records, methods, ids, greedy=greedy).items()}
        for category, ids in sorted(categories.items())
    } if len(categories) > 1 else {}
    return out


def _category_sections(summary: dict) -> list[str]:
    """Speedup / tau / accuracy per category, one row per category, one column group per method."""
    per_category = summary.get("per_category") or {}
    if not per_category:
        return []
    methods = [m for m in summary["methods"] if m != summary["baseline"]]
    lines = ["", "Per category (speedup vs the baseline on that category's samples, tau, lossless, accuracy):", "",
             "| Category | Samples | " + " | ".join(f"{m}" for m in methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for category, entries in per_category.items():
        cells = []
        for m in methods:
            e = entries.get(m) or {}
            cell = f"{_fmt(e.get('speedup_total'), '.2f', 'x')}, tau {_fmt(e.get('tau'))}"
            if e.get("lossless") is not None:
                cell += f", lossless {e['lossless'] * 100:.0f}%"
            if e.get("accuracy") is not None:
                cell += f", acc {e['accuracy']:.2f}"
            cells.append(cell)
        count = (entries.get(summary["baseline"]) or {}).get("samples", "")
        lines.append(f"| {category} | {count} | " + " | ".join(cells) + " |")
    return lines


def _aggregate_sections(summary: dict) -> list[str]:
    aggregates = summary.get("aggregates") or {}
    rows = {m: a for m, a in aggregates.items() if a and a.get("score") is not None}
    if not rows:
        return []
    lines = ["", f"Set-level scores (`{summary['benchmark']['metric']}`):", ""]
    for method, agg in rows.items():
        extra = ", ".join(f"{k} {_fmt(v)}" for k, v in agg.items()
                          if k not in ("score", "per_category") and isinstance(v, (int, float)))
        lines.append(f"- `{method}`: score {_fmt(agg['score'])}" + (f" ({extra})" if extra else ""))
    return lines


SHORT_ANSWER_TOKENS = 16  # below this many new tokens per answer, speculation has little to speed up


def report_warnings(methods: dict, baseline: str) -> list[str]:
    """What a reader must know before trusting the speed columns."""
    warnings = []
    base = methods.get(baseline) or {}
    per_answer = base.get("mean_new_tokens")
    if per_answer is not None:
        if per_answer < SHORT_ANSWER_TOKENS:
            warnings.append(
                f"Answers average {per_answer:.1f} new tokens: too few for speculative decoding to matter (the "
                "prefill dominates and a draft has little to propose), so tau and speedups here say little about "
                "speed. Measure speed on long answers, e.g. `vlmspec eval --benchmark synthetic-long`."
            )
    return warnings


# ------------------------------------------------------------------------- markdown
def _fmt(value: Any, spec: str = ".2f", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:{spec}}{suffix}"


def _fmt_bytes(value: int | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 2**20:.0f} MiB"


def render_markdown(summary: dict, command: str | None = None) -> str:
    """A Markdown report: settings, one row per method, skipped methods and notes."""
    bench = summary["benchmark"]
    settings = summary["settings"]
    metric = bench["metric"]
    lines = [
        f"# vlmspec eval: {bench['name']}",
        "",
        f"- target: `{summary['target']}`; device: {summary['device']}",
        f"- benchmark: `{bench['source']}` ({bench['format']}), {bench['samples']} samples, "
        f"prompt style `{bench['prompt_style']}`, metric `{metric}`",
        f"- max_new_tokens {settings['max_new_tokens']}, temperature {settings['temperature']}, "
        f"repeats {settings['repeats']}, warm-up {settings['warmup']}, draft length {settings['draft_length'] or 'default (the drafter depth cap, else 5)'}",
        f"- created {summary['created']}",
    ]
    if command:
        lines.append(f"- regenerate: `{command}`")
    spread_header = "Speedup (ratio of totals)" + (" ± std over repeats" if settings["repeats"] > 1 else "")
    lines += [
        "",
        f"| Method | {spread_header} | Median per-sample speedup | tau | Tokens/s | TTFT (ms) | "
        f"TPOT (ms) | Wall (s) | Lossless | Accuracy ({metric}) | Peak memory (+growth) | Samples |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in summary["methods"].items():
        speedup = _fmt(entry["speedup_total"], ".2f", "x")
        spread = entry.get("speedup_by_repeat")
        if spread and spread["n"] > 1:
            speedup += f" ± {spread['std']:.2f}"
        if name == summary["baseline"]:
            lossless = "baseline"
        elif entry.get("mode"):
            lossless = "n/a (not lossless)"
        else:
            lossless = _fmt(entry["lossless"] * 100 if entry["lossless"] is not None else None, ".0f", "%")
        label = f"{name} — {ACCURACY_MODE}" if entry.get("stages") else name
        samples = str(entry["samples"]) + (f" ({entry['errors']} errors)" if entry["errors"] else "")
        lines.append(
            f"| {label} | {speedup} | {_fmt(entry['speedup_median'], '.2f', 'x')} | {_fmt(entry['tau'])} | "
            f"{_fmt(entry['tokens_per_second'], '.1f')} | "
            f"{_fmt(entry['time_to_first_token'] * 1000 if entry['time_to_first_token'] is not None else None, '.0f')} | "
            f"{_fmt(entry['time_per_output_token'] * 1000 if entry['time_per_output_token'] is not None else None, '.1f')} | "
            f"{_fmt(entry['wall_seconds_total'], '.1f')} | {lossless} | {_fmt(entry['accuracy'], '.3f')} | "
            f"{_fmt_bytes(entry['peak_memory_bytes'])} (+{_fmt_bytes(entry['memory_delta_bytes'])}) | {samples} |"
        )
    drafters = {n: e for n, e in summary["methods"].items() if e.get("drafter")}
    if drafters:
        lines += ["", "Drafters (as resolved) and draft depth per step:", ""]
        for name, e in drafters.items():
            cap = f", capped at {e['draft_depth_cap']} by the drafter" if e.get("draft_depth_cap") else ""
            fast = f"; drafter fast_cpu: {e['drafter_fast_cpu']}" if e.get("drafter_fast_cpu") else ""
            lines.append(f"- `{name}`: `{e['drafter']}`, mean depth {_fmt(e.get('mean_draft_length'))}{cap}{fast}")
    lines += _aggregate_sections(summary)
    lines += _category_sections(summary)
    if summary.get("warnings"):
        lines += ["", *[f"> **Warning:** {w}" for w in summary["warnings"]]]
    lines += _verdict_sections(summary)
    if summary["skipped_methods"]:
        lines += ["", "Skipped methods:", ""]
        lines += [f"- `{name}`: {reason}" for name, reason in summary["skipped_methods"].items()]
    errors = {n: e["error_examples"] for n, e in summary["methods"].items() if e["errors"]}
    if errors:
        lines += ["", "Errors (first messages):", ""]
        lines += [f"- `{name}`: {'; '.join(examples)}" for name, examples in errors.items()]
    lossless_note = ("share of samples whose greedy token ids equal the baseline's"
                     if summary["losslessness_meaningful"] else
                     "n/a at temperature > 0 (sampled outputs differ by chance)")
    lines += [
        "",
        "Notes: speedup = baseline (`plain` = `model.generate`) wall time / method wall time on the same "
        "samples, interleaved per sample, after a warm-up; tau = new tokens / target forwards (prefill "
        f"counted, bonus token included); lossless = {lossless_note}; peak memory = "
        f"{summary['memory_measure']}, max over calls.",
        "",
    ]
    return "\n".join(lines)


def _verdict_sections(summary: dict) -> list[str]:
    """Per ``verdict:CONFIG`` method: its rows side by side and its mean cost per stage."""
    lines: list[str] = []
    methods = summary["methods"]
    metric = summary["benchmark"]["metric"]
    for name, entry in methods.items():
        if not entry.get("stages"):
            continue
        rows = [name] + [row for row, e in methods.items() if e.get("group") == name]
        lines += [
            "",
            f"## `{name}`: {ACCURACY_MODE}",
            "",
            "Speculative Verdict answers with several models, so its answer is not the target's: "
            "losslessness is n/a and speedup = `plain` wall time / its wall time (below 1 is expected). "
            "`[expert i]` rows are each expert's own brief answer (stage 1), `[verdict alone]` the verdict "
            "model answering alone with the same prompt; per sample, means.",
            "",
            f"| Row | Model | Accuracy ({metric}) | Forwards | Tokens | Seconds | Speedup |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            e = methods[row]
            n = e["generations"]
            lines.append(
                f"| {row} | {e.get('model') or 'experts + verdict'} | {_fmt(e['accuracy'], '.3f')} | "
                f"{_fmt(e['target_forwards'] / n if n else None, '.1f')} | "
                f"{_fmt(e['new_tokens'] / n if n else None, '.1f')} | "
                f"{_fmt(e['wall_seconds_mean'], '.3f')} | {_fmt(e['speedup_total'], '.2f', 'x')} |"
            )
        lines += ["", "| Stage | Forwards | Tokens | Seconds |", "|---|---|---|---|"]
        for stage, cost in entry["stages"].items():
            lines.append(f"| {stage} | {_fmt(cost['forwards'], '.1f')} | {_fmt(cost['tokens'], '.1f')} | "
                         f"{_fmt(cost['seconds'], '.3f')} |")
    return lines


def write_outputs(run: RunResults, command: str | None = None, extra_markdown: str | None = None) -> dict[str, str]:
    """Write summary.json, report.md and the plots into the run's output folder."""
    out = Path(run.config.out_dir)
    summary = run.summary
    atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    markdown = render_markdown(summary, command)
    atomic_write_text(out / REPORT_FILE, markdown)
    written = {"samples": str(out / "samples.jsonl"), "summary": str(out / SUMMARY_FILE),
               "report": str(out / REPORT_FILE)}
    written.update(write_plots(summary, out))
    if extra_markdown:
        atomic_write_text(extra_markdown, markdown)
        written["results_md"] = str(extra_markdown)
    return written
