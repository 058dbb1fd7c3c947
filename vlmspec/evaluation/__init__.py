"""The vlmspec eval harness: benchmarks, metrics, a side-by-side runner and reports.

    from vlmspec.evaluation import EvalConfig, run_eval
    run = run_eval(EvalConfig(benchmark="synthetic-long", out_dir="runs/eval/long",
                              methods=("plain", "prompt-lookup"), limit=20))
    run.summary["methods"]["prompt-lookup"]["speedup_total"]

The command line is ``vlmspec eval`` (:mod:`vlmspec.evaluation.cli`); see ``eval/README.md``.
"""

from .loaders import (
    BUILTINS,
    FORMATS,
    PROMPT_STYLES,
    Benchmark,
    BenchmarkConfig,
    BenchmarkFormatError,
    Sample,
    build_prompt,
    load_benchmark,
)
from .metrics import (
    METRIC_NAMES,
    anls,
    choice_accuracy,
    exact_match,
    normalize_vqa_answer,
    relaxed_accuracy,
    rouge_l,
    score_prediction,
    vqa_accuracy,
)
from .report import render_markdown, summarize, summarize_records, write_outputs
from .runner import EvalConfig, EvalError, EvalRun, MethodSpec, parse_method, run_eval

__all__ = [
    "BUILTINS", "FORMATS", "METRIC_NAMES", "PROMPT_STYLES", "Benchmark", "BenchmarkConfig",
    "BenchmarkFormatError", "EvalConfig", "EvalError", "EvalRun", "MethodSpec", "Sample", "anls",
    "build_prompt", "choice_accuracy", "exact_match", "load_benchmark", "normalize_vqa_answer",
    "parse_method", "relaxed_accuracy", "render_markdown", "rouge_l", "run_eval", "score_prediction",
    "summarize", "summarize_records", "vqa_accuracy", "write_outputs",
]
