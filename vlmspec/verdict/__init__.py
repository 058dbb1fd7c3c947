"""Speculative Verdict: several small expert VLMs, a consensus, one verdict.

ACCURACY MODE - NOT LOSSLESS. Everything else in vlmspec reproduces the target model's
output exactly; this mode deliberately produces a *different* (usually more accurate)
answer than any single model, and costs more compute than one model. Results carry
`lossless=False` and `mode="accuracy (not lossless)"` and report their cost per stage.

The four stages for one (image, question):

1. answer  - every expert answers briefly (greedy).
2. score   - every expert j scores every answer y_i by the mean negative log-likelihood of
             the answer span (= log PPL_j(y_i)) under the prompt "Question: q\\nAnswer:"
             (user turn, with the image) with the answer as the assistant turn. The image
             and the prompt are prefilled ONCE per expert; all answers then run as one
             right-padded batch on copies of that cache (2 forwards per expert).
             Consensus score(i) = sum_{j != i} |log PPL_j(y_i) - log PPL_j(y_j)|; the m
             lowest are kept, ties broken by expert index.
3. reason  - the m selected experts answer again, reasoning step by step.
4. verdict - the verdict model sees the image, the question and the m reasoning paths with
             their answers and writes the final answer, read from the last `\\boxed{...}`.
             Without a box, the last non-empty line is used (`boxed_found=False`), and if
             the verdict wrote nothing, the top consensus answer (`answer_source`).

Every model is loaded with `vlmspec.load`, so experts and the verdict are any LLaVA-style
checkpoint vlmspec supports, and the verdict (or the experts) may use a drafter for
speculative decoding of their own generations. Memory modes: "resident" keeps every model
loaded (fastest, most memory); "sequential" holds at most one model at a time (load, run,
free), reusing the model already loaded when the next stage starts with it.

    result = verdict(image, "What is the highest bar?", experts=[p1, p2, p3, p4], verdict=big, m=3)
    result.answer, result.selected_experts, result.cost.to_dict()

For the evaluation harness: `VerdictConfig.from_file(path)` (JSON) and
`run_verdict_method(config, image, question, runner=...)` -> (answer_text, cost_dict).

Modules: config (VerdictConfig), consensus (the math), answers (prompts, reading answers),
result (results and costs), models (loading, memory modes, generation), scoring (stage 2
on one model), runner (the stages in order), cli (`vlmspec verdict`).
"""

from ..lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["SCORING_PROMPT", "extract_boxed", "fallback_answer"], ".answers"),
    **dict.fromkeys(["add_verdict_parser", "run_verdict_command"], ".cli"),
    **dict.fromkeys(["MEMORY_MODES", "VerdictConfig"], ".config"),
    **dict.fromkeys(["consensus_scores", "select_consensus"], ".consensus"),
    **dict.fromkeys(["ExpertAnswer", "MODE_LABEL", "STAGES", "StageCost", "VerdictCost", "VerdictResult"], ".result"),
    **dict.fromkeys(["VerdictRunner", "run_verdict_method", "verdict"], ".runner"),
    **dict.fromkeys(["score_answers"], ".scoring"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
