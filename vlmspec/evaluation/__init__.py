"""The vlmspec eval harness: benchmarks, metrics, a side-by-side runner and reports.

    from vlmspec.evaluation import EvalConfig, run_eval
    run = run_eval(EvalConfig(benchmark="synthetic-long", out_dir="runs/eval/long",
                              methods=("plain", "prompt-lookup"), limit=20))
    run.summary["methods"]["prompt-lookup"]["speedup_total"]

The command line is ``vlmspec eval`` (:mod:`vlmspec.evaluation.cli`); see ``eval/README.md``.
"""

from ..lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["BUILTINS", "Benchmark", "BenchmarkConfig", "BenchmarkFormatError", "FORMATS", "PROMPT_STYLES", "Sample", "build_prompt", "load_benchmark"], ".loaders"),
    **dict.fromkeys(["METRIC_NAMES", "anls", "choice_accuracy", "exact_match", "normalize_vqa_answer", "open_match", "parse_yes_no", "relaxed_accuracy", "rouge_l", "score_prediction", "vqa_accuracy", "yes_no_accuracy"], ".metrics"),
    **dict.fromkeys(["aggregate", "aggregate_by_method"], ".aggregates"),
    **dict.fromkeys(["TASKS", "TaskSpec"], ".tasks"),
    **dict.fromkeys(["render_markdown", "summarize", "summarize_records", "write_outputs"], ".report"),
    **dict.fromkeys(["short_method_name", "short_method_names", "write_plots"], ".plots"),
    **dict.fromkeys(["EvalConfig", "EvalError", "EvalRun", "MethodSpec", "parse_method", "run_eval"], ".runner"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
