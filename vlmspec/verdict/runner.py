"""The four stages in order: `VerdictRunner` (one model pool, many questions), the one-call
`verdict()`, and `run_verdict_method`, the hook the evaluation harness calls per example."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import InputError, PromptError
from ..images import load_image
from .answers import extract_boxed, instructed_prompt, verdict_prompt
from .config import ModelSpec, VerdictConfig, as_config
from .consensus import consensus_scores, select_consensus
from .models import ModelPool, generate, named_errors
from .result import ExpertAnswer, StageCost, VerdictCost, VerdictResult
from .scoring import score_answers


class VerdictRunner:
    """Runs Speculative Verdict for many (image, question) pairs with one model pool.

    In "resident" memory mode models stay loaded across calls; call `close()` (or use it as
    a context manager) to free them.
    """

    def __init__(self, config: "VerdictConfig | dict | str | Path", *, load_pipeline: Callable | None = None) -> None:
        self.config = as_config(config)
        self.pool = ModelPool(self.config, load_pipeline)

    def __enter__(self) -> "VerdictRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.pool.release()

    def run(self, image: Any, question: str) -> VerdictResult:
        if not isinstance(question, str) or not question.strip():
            raise PromptError("The question is empty; pass the question to answer about the image.")
        image = load_image(image)
        cost = VerdictCost()
        expert_answers = self._answer_stage(image, question, cost.answer)
        answers = [a.answer for a in expert_answers]
        nll, scores, selected = self._score_stage(image, question, answers, cost.score)
        reasoning = self._reason_stage(image, question, selected, cost.reason)
        reasoning_answers = [extract_boxed(text)[0] for text in reasoning]
        verdict_text, answer, boxed_found, source = self._verdict_stage(
            image, question, reasoning, reasoning_answers, answers[selected[0]], cost.verdict
        )
        return VerdictResult(
            answer=answer,
            boxed_found=boxed_found,
            answer_source=source,
            verdict_text=verdict_text,
            experts=self.config.expert_names,
            expert_answers=expert_answers,
            nll=nll,
            consensus_scores=scores,
            selected=selected,
            reasoning=reasoning,
            reasoning_answers=reasoning_answers,
            cost=cost,
            m=self.config.m,
            verdict_model=self.config.verdict_name,
        )

    def _answer_stage(self, image, question: str, cost: StageCost) -> list[ExpertAnswer]:
        """1. every expert answers briefly."""
        started = time.perf_counter()
        prompt = instructed_prompt(question, self.config.answer_instruction)
        expert_answers = []
        for i, name in enumerate(self.config.expert_names):
            pipe = self.pool.get(i, cost)
            t0 = time.perf_counter()
            text, tokens, forwards = generate(
                pipe, image, prompt, self.config.max_answer_tokens, f"{self.pool.label(i)} (answer stage)"
            )
            expert_answers.append(ExpertAnswer(name, text.strip(), tokens, forwards, time.perf_counter() - t0))
            cost.forwards += forwards
            cost.tokens += tokens
        cost.seconds = time.perf_counter() - started
        return expert_answers

    def _score_stage(self, image, question: str, answers: list[str], cost: StageCost):
        """2. every expert scores every answer -> (nll [scorer j][answer i], scores, selected).

        Reverse order reuses the model still loaded from stage 1 in sequential mode.
        """
        started = time.perf_counter()
        nll: list[list[float]] = [[] for _ in answers]
        for j in reversed(range(len(answers))):
            pipe = self.pool.get(j, cost)
            with named_errors(f"{self.pool.label(j)} (score stage)"):
                nll[j], forwards, scored_tokens = score_answers(pipe, image, question, answers)
            cost.forwards += forwards
            cost.scored_tokens += scored_tokens
        scores = consensus_scores(nll)
        selected = select_consensus(scores, self.config.m)
        cost.seconds = time.perf_counter() - started
        return nll, scores, selected

    def _reason_stage(self, image, question: str, selected: list[int], cost: StageCost) -> list[str]:
        """3. the selected experts reason step by step; returned in `selected` order.

        A model still loaded goes first, so sequential mode saves a load.
        """
        started = time.perf_counter()
        prompt = instructed_prompt(question, self.config.reasoning_instruction)
        loaded = set(self.pool.loaded_indices)
        order = [i for i in selected if i in loaded] + [i for i in selected if i not in loaded]
        reasoning: dict[int, str] = {}
        for i in order:
            pipe = self.pool.get(i, cost)
            text, tokens, forwards = generate(
                pipe, image, prompt, self.config.max_reasoning_tokens, f"{self.pool.label(i)} (reason stage)"
            )
            reasoning[i] = text.strip()
            cost.forwards += forwards
            cost.tokens += tokens
        cost.seconds = time.perf_counter() - started
        return [reasoning[i] for i in selected]

    def _verdict_stage(
        self, image, question: str, reasoning: list[str], reasoning_answers: list[str], consensus_answer: str,
        cost: StageCost,
    ) -> tuple[str, str, bool, str]:
        """4. the verdict model reads the reasoning paths and writes the final answer.

        Returns (verdict text, answer, boxed_found, answer source); the answer is the last
        `\\boxed{}`, else the last line, else (nothing written) `consensus_answer`.
        """
        started = time.perf_counter()
        config, index = self.config, self.pool.verdict_index
        pipe = self.pool.get(index, cost)
        prompt = verdict_prompt(question, config.verdict_instruction, reasoning, reasoning_answers)
        hint = (
            f"The verdict prompt holds m={config.m} reasoning paths of up to {config.max_reasoning_tokens} "
            "tokens each; lower max_reasoning_tokens or m, or use a verdict model with a longer context."
        )
        text, tokens, forwards = generate(pipe, image, prompt, config.max_verdict_tokens, self.pool.label(index), hint)
        cost.forwards += forwards
        cost.tokens += tokens
        answer, boxed_found = extract_boxed(text)
        source = "boxed" if boxed_found else "last_line"
        if not answer:
            answer, source = consensus_answer, "consensus"
        cost.seconds = time.perf_counter() - started
        return text, answer, boxed_found, source

    def answer_alone(self, image: Any, question: str, *, model: int | None = None) -> tuple[str, dict]:
        """One model answering on its own (a baseline): (answer, cost dict).

        `model` is an expert index, or None for the verdict model; it gets the same brief
        answer prompt the experts get in stage 1.
        """
        index = self.pool.verdict_index if model is None else model
        if not 0 <= index <= self.pool.verdict_index:
            raise InputError(f"model must be an expert index in 0..{len(self.config.experts) - 1} or None.")
        image = load_image(image)
        cost = StageCost()
        started = time.perf_counter()
        pipe = self.pool.get(index, cost)
        text, tokens, forwards = generate(
            pipe,
            image,
            instructed_prompt(question, self.config.answer_instruction),
            self.config.max_answer_tokens,
            f"{self.pool.label(index)} (alone)",
        )
        cost.forwards, cost.tokens, cost.seconds = forwards, tokens, time.perf_counter() - started
        return text.strip(), cost.to_dict()


def verdict(
    image: Any,
    question: str,
    *,
    experts: Sequence[ModelSpec],
    verdict: ModelSpec,
    m: int = 3,
    memory: str = "resident",
    max_answer_tokens: int = 32,
    max_reasoning_tokens: int = 256,
    max_verdict_tokens: int = 256,
    expert_drafter: str | None = "prompt-lookup",
    verdict_drafter: str | None = "prompt-lookup",
    device: str | None = None,
    dtype: Any = None,
) -> VerdictResult:
    """Answer `question` about `image` with Speculative Verdict (accuracy mode, NOT lossless).

    experts: >= m models (checkpoint paths, (model, processor) pairs or loaded pipelines);
    verdict: the stronger model that writes the final answer; m: experts kept by consensus;
    memory: "resident" (all loaded) or "sequential" (one at a time, freed after use);
    *_drafter: drafter spec (as for vlmspec.load: "prompt-lookup", "model:PATH", "none") used
    for that model's generations; lossless, so it changes speed only.
    Models loaded here are freed before returning.
    """
    config = VerdictConfig(
        experts=experts,
        verdict=verdict,
        m=m,
        memory=memory,
        max_answer_tokens=max_answer_tokens,
        max_reasoning_tokens=max_reasoning_tokens,
        max_verdict_tokens=max_verdict_tokens,
        expert_drafter=expert_drafter,
        verdict_drafter=verdict_drafter,
        device=device,
        dtype=dtype,
    )
    with VerdictRunner(config) as runner:
        return runner.run(image, question)


def run_verdict_method(
    config: VerdictConfig | dict | str | Path,
    image: Any,
    question: str,
    *,
    runner: VerdictRunner | None = None,
    baselines: bool = False,
) -> tuple[str, dict]:
    """One eval example with Speculative Verdict: (answer_text, cost_dict).

    config: a VerdictConfig, its dict form or a JSON file path (ignored when `runner` is
    given). Pass the same `runner = VerdictRunner(VerdictConfig.from_file(path))` for every
    example of a benchmark so resident models load once (close it at the end).
    cost_dict: {"mode", "lossless": False, "stages": {answer|score|reason|verdict|total:
    {forwards, tokens, scored_tokens, seconds, loads, load_seconds}}, "forwards", "tokens",
    "seconds" (totals), "selected_experts", "boxed_found", "experts": [{expert, answer,
    tokens, forwards, seconds}]} - the stage-1 entries are each expert's own brief answer
    and cost, i.e. the single-expert baselines for free. With baselines=True it also holds
    "verdict_alone": {"answer", "cost"}: the verdict model answering by itself.
    """
    owns_runner = runner is None
    if owns_runner:
        runner = VerdictRunner(config)
    try:
        result = runner.run(image, question)
        total = result.cost.total
        cost = {
            "mode": result.mode,
            "lossless": result.lossless,
            "stages": result.cost.to_dict(),
            "forwards": total.forwards,
            "tokens": total.tokens,
            "seconds": total.seconds,
            "selected_experts": result.selected_experts,
            "boxed_found": result.boxed_found,
            "experts": [a.to_dict() for a in result.expert_answers],
        }
        if baselines:
            answer, alone_cost = runner.answer_alone(image, question)
            cost["verdict_alone"] = {"answer": answer, "cost": alone_cost}
        return result.answer, cost
    finally:
        if owns_runner:
            runner.close()
