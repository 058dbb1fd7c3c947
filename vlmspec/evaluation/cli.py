"""The ``vlmspec eval`` subcommand: arguments, an optional JSON config file, and the handler.

``vlmspec/cli.py`` calls ``add_eval_parser(subparsers)``; the parser's ``func`` default is
``run_eval_command(args) -> int``. Settings come from ``--config FILE`` (a JSON object whose
keys are :class:`~vlmspec.evaluation.runner.EvalConfig` fields, plus ``results_md``), then
from the command line, which wins. Without a ``vlmspec/cli.py`` the same parser runs as
``python -m vlmspec.evaluation.cli eval ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shlex
import sys
from pathlib import Path

from vlmspec.errors import InputError, VlmspecError
from vlmspec.evaluation.metrics import METRIC_NAMES

from .runner import EvalConfig, run_eval

# argparse dest -> EvalConfig field (same name unless listed)
_FIELD_OF = {"out": "out_dir"}
_CONFIG_KEYS = {f.name for f in dataclasses.fields(EvalConfig)} | {"results_md"}


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``eval`` on an argparse subparsers object; returns the new parser."""
    p = subparsers.add_parser(
        "eval",
        help="benchmark methods side by side against model.generate (speed, accuracy, losslessness)",
        description="Run plain model.generate and every given method on the same samples, interleaved, "
                    "and write samples.jsonl, summary.json, report.md and PNG plots into --out. "
                    "Re-running with the same --out resumes: finished samples are not redone.",
    )
    p.add_argument("--config", default=None, help="JSON file of settings (EvalConfig field names); flags override it")
    p.add_argument("--benchmark", default=None,
                   help="synthetic-long | synthetic-qa | FORMAT:PATH | PATH (FORMAT: textvqa, vqav2, coco, gqa, "
                        "scienceqa, chartqa, docvqa, infovqa, mmvet, llava-bench, generic)")
    p.add_argument("--target", default=None, help="LLaVA-style checkpoint dir or name (default: the default model)")
    p.add_argument("--methods", default=None,
                   help="comma-separated: plain, hf-assisted[:PATH|self], hf-prompt-lookup[:N], vlmspec drafters "
                        "(none, prompt-lookup[:N], model:PATH, ...), and verdict:CONFIG (Speculative Verdict with "
                        "a JSON VerdictConfig: accuracy mode, NOT lossless; adds rows for each single expert and "
                        "the verdict model alone); plain (the baseline) is always run. Default: plain,prompt-lookup")
    p.add_argument("--limit", type=int, default=None, help="first N samples (built-in sets: N scenes; default 50)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default 128")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy (default); losslessness needs 0")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=None, help="sampling seed and synthetic-set seed (default 0)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per sample (default 1); spread reported")
    p.add_argument("--warmup", type=int, default=None, help="un-recorded warm-up generations per method (default 1)")
    p.add_argument("--draft-length", default=None, help="vlmspec draft length: an integer or a schedule name (default: the drafter's depth cap, else 5)")
    p.add_argument("--assistant", default=None, help="assistant for a bare hf-assisted: PATH or 'self'")
    p.add_argument("--split", default=None, help="split of the benchmark (Karpathy/ScienceQA/synthetic; default test)")
    p.add_argument("--image-root", default=None, help="folder the benchmark's relative image paths live in")
    p.add_argument("--prompt-style", default=None, choices=("short", "detailed", "raw"),
                   help="default: the benchmark's own (short for VQA sets, raw for long-form sets)")
    p.add_argument("--metric", default=None, choices=METRIC_NAMES,
                   help="default: the benchmark's own")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--out", default=None, help="output folder (default runs/eval/BENCHMARK)")
    p.add_argument("--overwrite", action="store_true", default=None, help="discard earlier results in --out")
    p.add_argument("--results-md", default=None, help="also write the Markdown report to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_eval_command)
    return p


def _read_config_file(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--config {path}: file not found") from None
    except json.JSONDecodeError as err:
        raise InputError(f"--config {path}, line {err.lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise InputError(f"--config {path}: expected a JSON object of settings")
    data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_comment": notes, as in training configs
    unknown = sorted(set(data) - _CONFIG_KEYS)
    if unknown:
        raise InputError(f"--config {path}: unknown keys {', '.join(unknown)}; known: {', '.join(sorted(_CONFIG_KEYS))}")
    return data


def _default_out(benchmark: str) -> str:
    name = Path(benchmark.split(":", 1)[-1]).stem if ("/" in benchmark or "." in benchmark) else benchmark
    return str(Path("runs") / "eval" / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "benchmark"))


def config_from_args(args: argparse.Namespace) -> tuple[EvalConfig, str | None]:
    """EvalConfig and the ``results_md`` path from parsed arguments (+ ``--config``)."""
    settings = _read_config_file(args.config) if getattr(args, "config", None) else {}
    for dest in ("benchmark", "target", "methods", "limit", "max_new_tokens", "temperature", "top_p", "top_k",
                 "seed", "repeats", "warmup", "draft_length", "assistant", "split", "image_root",
                 "prompt_style", "metric", "device", "dtype", "out", "overwrite", "results_md"):
        value = getattr(args, dest, None)
        if value is not None:
            settings[_FIELD_OF.get(dest, dest)] = value
    if not settings.get("benchmark"):
        raise InputError("no benchmark given: pass --benchmark synthetic-long (or FORMAT:PATH, PATH, or --config)")
    methods = settings.get("methods")
    if isinstance(methods, str):
        settings["methods"] = tuple(m.strip() for m in methods.split(",") if m.strip())
    elif isinstance(methods, list):
        settings["methods"] = tuple(methods)
    draft_length = settings.get("draft_length")
    if isinstance(draft_length, str) and draft_length.strip().isdigit():
        settings["draft_length"] = int(draft_length)
    settings.setdefault("out_dir", _default_out(settings["benchmark"]))
    results_md = settings.pop("results_md", None)
    try:
        config = EvalConfig(**settings)
    except TypeError as err:
        raise InputError(f"invalid eval settings: {err}") from None
    return config, results_md


_OVERRIDE_DESTS = ("benchmark", "target", "methods", "limit", "max_new_tokens", "temperature", "top_p", "top_k",
                   "seed", "repeats", "warmup", "draft_length", "assistant", "split", "image_root",
                   "prompt_style", "metric", "device", "dtype", "out", "results_md")


def command_line(config: EvalConfig, args: argparse.Namespace | None = None) -> str:
    """A ``vlmspec eval`` command that reproduces ``config``: ``--config FILE`` plus the flags
    given with it, or else every setting that differs from the defaults."""
    config_file = getattr(args, "config", None)
    if config_file:
        parts = ["vlmspec", "eval", "--config", config_file]
        for dest in _OVERRIDE_DESTS:
            value = getattr(args, dest, None)
            if value is not None:
                parts += ["--" + dest.replace("_", "-"), str(value)]
    else:
        defaults = EvalConfig(benchmark=config.benchmark, out_dir=config.out_dir)
        parts = ["vlmspec", "eval", "--benchmark", config.benchmark]
        for f in dataclasses.fields(EvalConfig):
            if f.name in ("benchmark", "overwrite", "warmup_max_new_tokens"):
                continue
            value = getattr(config, f.name)
            if value is None or (value == getattr(defaults, f.name) and f.name != "out_dir"):
                continue
            flag = "--out" if f.name == "out_dir" else "--" + f.name.replace("_", "-")
            parts += [flag, ",".join(value) if f.name == "methods" else str(value)]
        if getattr(args, "results_md", None):
            parts += ["--results-md", args.results_md]
    if config.overwrite:
        parts.append("--overwrite")
    return " ".join(shlex.quote(p) for p in parts)


def run_eval_command(args: argparse.Namespace) -> int:
    """Handler of ``vlmspec eval``: run, write the outputs, print where they are and the table."""
    from .report import write_outputs

    config, results_md = config_from_args(args)
    run = run_eval(config, progress=not getattr(args, "no_progress", False), write_report=False)
    run.outputs = write_outputs(run, command=command_line(config, args),
                                extra_markdown=results_md)
    print(Path(run.outputs["report"]).read_text(encoding="utf-8"))
    reused = len(run.records) - run.newly_run
    print(f"[{run.newly_run} generations run, {reused} reused from {config.out_dir}; "
          f"outputs: {', '.join(run.outputs.values())}]", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m vlmspec.evaluation.cli eval ...`` (the same as ``vlmspec eval ...``)."""
    parser = argparse.ArgumentParser(prog="vlmspec")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_eval_parser(subparsers)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except VlmspecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
