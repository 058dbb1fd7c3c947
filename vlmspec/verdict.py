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
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .errors import InputError, ModelLoadError, NumericalError, PromptError, VlmspecError

MODE_LABEL = "accuracy (not lossless)"
MEMORY_MODES = ("resident", "sequential")
STAGES = ("answer", "score", "reason", "verdict")

DEFAULT_ANSWER_INSTRUCTION = "Answer the question using a single word or phrase."
DEFAULT_REASONING_INSTRUCTION = (
    "Think step by step about what the image shows, then give the final answer "
    "in the form \\boxed{answer}."
)
DEFAULT_VERDICT_INSTRUCTION = (
    "Several assistants reasoned about this image and question; their reasoning may "
    "contain mistakes. Check each reasoning path against the image, decide which answer "
    "is correct, and give the final answer in the form \\boxed{answer}."
)
SCORING_PROMPT = "Question: {question}\nAnswer:"

# An expert or verdict model: a checkpoint path / name, a `(hf_model, hf_processor)` pair,
# or an already loaded vlmspec pipeline (anything with `.target` and `.generate`).
ModelSpec = Any


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class VerdictConfig:
    """Everything that defines one Speculative Verdict setup; validated at construction.

    JSON form (`VerdictConfig.from_file`), every key but `experts` and `verdict` optional:
        {"experts": ["ckpt/a", "ckpt/b", "ckpt/c"], "verdict": "ckpt/big", "m": 3,
         "memory": "sequential", "max_answer_tokens": 32, "max_reasoning_tokens": 256,
         "max_verdict_tokens": 256, "verdict_drafter": "prompt-lookup"}
    Relative paths in a file are resolved against the file's folder when they exist there.
    """

    experts: tuple = ()
    verdict: ModelSpec = None
    m: int = 3
    memory: str = "resident"
    max_answer_tokens: int = 32
    max_reasoning_tokens: int = 256
    max_verdict_tokens: int = 256
    # Drafter specs (as for vlmspec.load) for the experts' and the verdict's generations.
    # Speculative decoding is lossless, so the drafter changes speed, never the text; "none" disables.
    expert_drafter: str | None = "prompt-lookup"
    verdict_drafter: str | None = "prompt-lookup"
    device: str | None = None
    dtype: Any = None
    answer_instruction: str = DEFAULT_ANSWER_INSTRUCTION
    reasoning_instruction: str = DEFAULT_REASONING_INSTRUCTION
    verdict_instruction: str = DEFAULT_VERDICT_INSTRUCTION

    def __post_init__(self) -> None:
        experts = self.experts
        if isinstance(experts, (str, os.PathLike)) or not isinstance(experts, Sequence):
            raise InputError(
                f"experts must be a list of models (paths or loaded models), got {type(experts).__name__}; "
                "pass e.g. experts=['path/a', 'path/b', 'path/c']."
            )
        object.__setattr__(self, "experts", tuple(experts))
        if not self.experts:
            raise InputError("No experts given; pass at least m expert models (experts=[...]).")
        for index, spec in enumerate(self.experts):
            _check_spec(spec, f"experts[{index}]")
        if self.verdict is None:
            raise InputError("No verdict model given; pass verdict=PATH (a LLaVA-style checkpoint).")
        _check_spec(self.verdict, "verdict")
        if isinstance(self.m, bool) or not isinstance(self.m, int) or self.m < 1:
            raise InputError(f"m must be a positive integer (the number of experts kept), got {self.m!r}.")
        if len(self.experts) < self.m:
            raise InputError(
                f"Speculative Verdict keeps m={self.m} experts but only {len(self.experts)} were given; "
                f"pass at least {self.m} experts or lower m to {len(self.experts)}."
            )
        if self.memory not in MEMORY_MODES:
            raise InputError(f"memory must be one of {MEMORY_MODES}, got {self.memory!r}.")
        for name in ("max_answer_tokens", "max_reasoning_tokens", "max_verdict_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("answer_instruction", "reasoning_instruction", "verdict_instruction"):
            if not isinstance(getattr(self, name), str):
                raise InputError(f"{name} must be a string.")

    @property
    def expert_names(self) -> list[str]:
        return [_spec_name(spec, f"expert {i}") for i, spec in enumerate(self.experts)]

    @property
    def verdict_name(self) -> str:
        return _spec_name(self.verdict, "verdict")

    @classmethod
    def from_dict(cls, data: dict, *, base_dir: str | Path | None = None) -> "VerdictConfig":
        """Build from a plain dict (the JSON form); unknown keys are an error."""
        if not isinstance(data, dict):
            raise InputError(f"A verdict config must be a JSON object, got {type(data).__name__}.")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"Unknown verdict config keys {unknown}; known keys are {sorted(known)}.")
        for key in ("experts", "verdict"):
            if key not in data:
                raise InputError(f"The verdict config is missing {key!r}.")
        values = dict(data)
        if base_dir is not None:
            values["experts"] = [_resolve_relative(p, base_dir) for p in values["experts"]]
            values["verdict"] = _resolve_relative(values["verdict"], base_dir)
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> "VerdictConfig":
        """Read a JSON verdict config (see the class docstring for the keys)."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"Verdict config file not found: {path}; pass the path of a JSON file.")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"Verdict config {path} is not valid JSON ({exc}); fix the file.") from None
        return cls.from_dict(data, base_dir=path.parent)

    def to_dict(self) -> dict:
        """JSON-ready dict (models that were passed as objects appear by name)."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["experts"] = self.expert_names
        data["verdict"] = self.verdict_name
        data["dtype"] = None if self.dtype is None else str(self.dtype)
        return data


def _check_spec(spec: ModelSpec, label: str) -> None:
    if isinstance(spec, (str, os.PathLike)):
        if not str(spec).strip():
            raise InputError(f"{label} is an empty path; pass a checkpoint path.")
        return
    if isinstance(spec, tuple) and len(spec) == 2:
        return
    if hasattr(spec, "target") and hasattr(spec, "generate"):
        return
    raise InputError(
        f"{label} must be a checkpoint path, a (model, processor) pair or a loaded vlmspec "
        f"pipeline, got {type(spec).__name__}."
    )


def _spec_name(spec: ModelSpec, fallback: str) -> str:
    if isinstance(spec, (str, os.PathLike)):
        return str(spec)
    model = spec[0] if isinstance(spec, tuple) else getattr(getattr(spec, "target", None), "model", None)
    path = getattr(model, "name_or_path", "") or getattr(getattr(model, "config", None), "_name_or_path", "")
    return str(path) if path else f"{fallback} ({type(model).__name__})"


def _is_missing_local_path(spec: ModelSpec) -> bool:
    """True for a path written as local (absolute, ./, ../, ~) that does not exist; hub names pass."""
    if not isinstance(spec, (str, os.PathLike)):
        return False
    text = os.fspath(spec)
    local = os.path.isabs(text) or text.startswith((".", "~"))
    return local and not os.path.exists(os.path.expanduser(text))


def _resolve_relative(spec: Any, base_dir: str | Path) -> Any:
    if isinstance(spec, str) and not os.path.isabs(spec):
        candidate = Path(base_dir) / spec
        if candidate.exists():
            return str(candidate)
    return spec


# --------------------------------------------------------------------------- consensus


def consensus_scores(nll: Any) -> list[float]:
    """Consensus score of every answer from a square NLL matrix (lower = more agreed on).

    nll[j][i] = mean NLL (= log PPL) of answer i under expert j; row j is scorer j, column i
    answer i, and the diagonal is each expert's own answer. Shape [n_experts, n_experts].
        score(i) = sum_{j != i} |nll[j][i] - nll[j][j]|
    NaN marks an answer that could not be scored (an empty answer): a scorer whose own
    answer is NaN abstains (adds nothing to anyone), and an answer that is NaN for itself
    or for a non-abstaining scorer scores +inf (ranked last).
    """
    matrix = torch.as_tensor(nll, dtype=torch.float64)  # [n_scorers, n_answers]
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise InputError(
            f"The NLL matrix must be square [n_experts, n_experts] (scorer j, answer i), got shape "
            f"{tuple(matrix.shape)}."
        )
    if torch.isinf(matrix).any():
        raise InputError("The NLL matrix contains infinite values; use NaN for answers that cannot be scored.")
    n = matrix.shape[0]
    own = matrix.diagonal()  # [n]  log PPL_j(y_j)
    scores: list[float] = []
    for i in range(n):
        if math.isnan(own[i].item()):
            scores.append(math.inf)
            continue
        total = 0.0
        for j in range(n):
            if j == i or math.isnan(own[j].item()):
                continue  # self, or an abstaining scorer
            value = matrix[j, i].item()
            if math.isnan(value):
                total = math.inf
                break
            total += abs(value - own[j].item())
        scores.append(total)
    return scores


def select_consensus(scores: Sequence[float], m: int) -> list[int]:
    """Indices of the m lowest consensus scores, best first; ties go to the lower index."""
    scores = [float(s) for s in scores]
    if any(math.isnan(s) for s in scores):
        raise InputError("Consensus scores contain NaN; compute them with consensus_scores().")
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= len(scores):
        raise InputError(f"m must be between 1 and the number of answers ({len(scores)}), got {m!r}.")
    return sorted(range(len(scores)), key=lambda i: (scores[i], i))[:m]


# --------------------------------------------------------------------------- answers


_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_PREFIX = re.compile(r"^\s*(?:the\s+)?(?:final\s+)?answer\s*(?:is)?\s*[:\-]?\s*", re.IGNORECASE)
_TEXT_WRAPPER = re.compile(r"^\\(?:text|textbf|mathrm)\{(.*)\}$", re.DOTALL)


def extract_boxed(text: str) -> tuple[str, bool]:
    """The content of the last complete, non-empty `\\boxed{...}` (nested braces allowed).

    Returns (answer, True) when found; otherwise (fallback_answer(text), False).
    """
    candidates: list[str] = []
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        for pos in range(start, len(text)):
            if text[pos] == "{":
                depth += 1
            elif text[pos] == "}":
                depth -= 1
                if depth == 0:
                    candidates.append(text[start:pos])
                    break
    for content in reversed(candidates):
        content = content.strip()
        wrapped = _TEXT_WRAPPER.match(content)
        if wrapped:
            content = wrapped.group(1).strip()
        if content:
            return content, True
    return fallback_answer(text), False


def fallback_answer(text: str) -> str:
    """A short answer from unboxed text: its last non-empty line, without an 'Answer:' prefix."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    line = _BOXED.sub("", lines[-1])  # an unclosed \boxed{ cut off by the token limit
    line = _ANSWER_PREFIX.sub("", line).strip()
    return line.rstrip(".").strip() or lines[-1]


# --------------------------------------------------------------------------- results


@dataclass
class StageCost:
    """What one stage cost: target forwards, generated tokens, wall seconds (loads included)."""

    forwards: int = 0
    tokens: int = 0  # new tokens generated (0 for the scoring stage)
    scored_tokens: int = 0  # answer tokens teacher-forced in the scoring stage
    seconds: float = 0.0
    loads: int = 0  # models loaded during this stage
    load_seconds: float = 0.0

    def add(self, other: "StageCost") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class VerdictCost:
    """Cost of one verdict call per stage (answer, score, reason, verdict) and in total."""

    answer: StageCost = field(default_factory=StageCost)
    score: StageCost = field(default_factory=StageCost)
    reason: StageCost = field(default_factory=StageCost)
    verdict: StageCost = field(default_factory=StageCost)

    @property
    def total(self) -> StageCost:
        total = StageCost()
        for stage in STAGES:
            total.add(getattr(self, stage))
        return total

    def to_dict(self) -> dict:
        data = {stage: getattr(self, stage).to_dict() for stage in STAGES}
        data["total"] = self.total.to_dict()
        return data


@dataclass
class ExpertAnswer:
    """One expert's brief answer (stage 1) and what it cost on its own."""

    expert: str
    answer: str
    tokens: int
    forwards: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class VerdictResult:
    """Outcome of Speculative Verdict. An accuracy mode: NOT lossless (`lossless` is False)."""

    answer: str  # the final answer
    boxed_found: bool  # whether the verdict wrote a \boxed{...}
    answer_source: str  # "boxed" | "last_line" | "consensus" (verdict wrote nothing usable)
    verdict_text: str  # the verdict model's full output
    experts: list[str]  # expert names, index order
    expert_answers: list[ExpertAnswer]  # stage 1, index order
    nll: list[list[float]]  # [scorer j][answer i] mean NLL (= log PPL); NaN = empty answer
    consensus_scores: list[float]  # per answer i (lower = more agreed on)
    selected: list[int]  # indices of the m kept experts, best consensus first
    reasoning: list[str]  # stage 3 outputs, in `selected` order
    reasoning_answers: list[str]  # the answer read from each reasoning path
    cost: VerdictCost
    m: int
    verdict_model: str = ""
    lossless: bool = False
    mode: str = MODE_LABEL

    @property
    def selected_experts(self) -> list[str]:
        return [self.experts[i] for i in self.selected]

    @property
    def answers(self) -> list[str]:
        return [a.answer for a in self.expert_answers]

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "lossless": self.lossless,
            "answer": self.answer,
            "boxed_found": self.boxed_found,
            "answer_source": self.answer_source,
            "verdict_model": self.verdict_model,
            "verdict_text": self.verdict_text,
            "m": self.m,
            "experts": list(self.experts),
            "expert_answers": [a.to_dict() for a in self.expert_answers],
            "nll": [[None if math.isnan(v) else v for v in row] for row in self.nll],
            "consensus_scores": [None if math.isinf(s) else s for s in self.consensus_scores],
            "selected": list(self.selected),
            "selected_experts": self.selected_experts,
            "reasoning": list(self.reasoning),
            "reasoning_answers": list(self.reasoning_answers),
            "cost": self.cost.to_dict(),
        }

    def summary(self) -> str:
        """Human-readable report (what the CLI prints without --json)."""
        lines = [f"mode: {self.mode} - Speculative Verdict does not reproduce any single model's output"]
        lines.append(f"answer: {self.answer}" + ("" if self.boxed_found else f"  (no \\boxed{{}}; from {self.answer_source})"))
        lines.append("experts (consensus score, lower = more agreed on):")
        for i, item in enumerate(self.expert_answers):
            mark = "*" if i in self.selected else " "
            lines.append(f"  {mark} [{i}] {item.expert}: {item.answer!r}  score={self.consensus_scores[i]:.4g}")
        for rank, (index, answer) in enumerate(zip(self.selected, self.reasoning_answers)):
            lines.append(f"reasoning {rank + 1} (expert {index}) -> {answer!r}")
        lines.append(f"verdict ({self.verdict_model}): {self.verdict_text!r}")
        lines.append("cost:  stage     forwards  tokens  seconds  loads")
        for stage in (*STAGES, "total"):
            c = self.cost.total if stage == "total" else getattr(self.cost, stage)
            lines.append(f"       {stage:<8}  {c.forwards:>8}  {c.tokens:>6}  {c.seconds:>7.2f}  {c.loads:>5}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- models


def _default_load_pipeline(spec: ModelSpec, *, drafter: str | None, device: Any, dtype: Any):
    """A vlmspec pipeline for `spec`; an already loaded pipeline is used as it is (its own drafter)."""
    if hasattr(spec, "target") and hasattr(spec, "generate"):
        return spec
    import vlmspec

    return vlmspec.load(target=spec, drafter=drafter, device=device, dtype=dtype)


class ModelPool:
    """Loads the experts and the verdict model on demand, under a memory mode.

    Index 0..k-1 are the experts, index k the verdict model. "resident": a model stays
    loaded once used. "sequential": at most one model is held; asking for another frees it
    first. Load failures raise ModelLoadError naming the model; a local path that does not
    exist is reported at construction, before any model runs.
    """

    def __init__(self, config: VerdictConfig, load_pipeline: Callable | None = None) -> None:
        self.config = config
        self.specs = [*config.experts, config.verdict]
        self.names = [*config.expert_names, config.verdict_name]
        self.drafters = [config.expert_drafter] * len(config.experts) + [config.verdict_drafter]
        self._load_pipeline = load_pipeline or _default_load_pipeline
        self._loaded: dict[int, Any] = {}
        for index, spec in enumerate(self.specs):
            if _is_missing_local_path(spec):
                raise ModelLoadError(
                    f"Could not load {self._role(index)} {self.names[index]!r} for Speculative Verdict: no such "
                    "directory. Pass the directory of a LLaVA-style checkpoint, or remove it from the list."
                )

    def _role(self, index: int) -> str:
        return "verdict model" if index == self.verdict_index else f"expert {index}"

    @property
    def verdict_index(self) -> int:
        return len(self.specs) - 1

    @property
    def loaded_indices(self) -> list[int]:
        return sorted(self._loaded)

    def get(self, index: int, cost: StageCost):
        """The loaded pipeline for model `index`; loads (and in sequential mode frees) as needed."""
        if index in self._loaded:
            return self._loaded[index]
        if self.config.memory == "sequential":
            self.release()
        started = time.perf_counter()
        role = self._role(index)
        try:
            pipe = self._load_pipeline(
                self.specs[index], drafter=self.drafters[index], device=self.config.device, dtype=self.config.dtype
            )
        except InputError as exc:  # e.g. a bad drafter spec: the user's option, not the checkpoint
            raise type(exc)(f"{role} {self.names[index]!r}: {exc}") from exc
        except ModelLoadError as exc:  # vlmspec's own message already says what to fix
            raise ModelLoadError(f"Could not load {role} {self.names[index]!r} for Speculative Verdict: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - any other failure becomes one clear error naming the model
            raise ModelLoadError(
                f"Could not load {role} {self.names[index]!r} for Speculative Verdict "
                f"({exc.__class__.__name__}: {exc}). Check that the path is a LLaVA-style checkpoint "
                "vlmspec can load (vlmspec.load(target=PATH)), or remove it from the list."
            ) from exc
        cost.loads += 1
        cost.load_seconds += time.perf_counter() - started
        self._loaded[index] = pipe
        return pipe

    def release(self) -> None:
        """Free every loaded model."""
        if not self._loaded:
            return
        self._loaded.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _generate(pipe, image, prompt: str, max_new_tokens: int, where: str, hint: str = "") -> tuple[str, int, int]:
    """Greedy generation with a vlmspec pipeline: (text, new tokens, target forwards).

    vlmspec errors are re-raised with `where` (which model, which stage) in front, and
    `hint` added to prompt-length errors.
    """
    try:
        result = pipe.generate(image, prompt, max_new_tokens=max_new_tokens, temperature=0.0)
    except VlmspecError as exc:
        extra = f" {hint}" if hint and isinstance(exc, PromptError) else ""
        raise type(exc)(f"{where}: {exc}{extra}") from exc
    metrics = result.metrics
    forwards = int(getattr(metrics, "target_forwards", 0) or 0)
    tokens = int(getattr(metrics, "new_tokens", len(result.token_ids)) or 0)
    return result.text, tokens, forwards


@torch.no_grad()
def score_answers(pipe, image, question: str, answers: Sequence[str]) -> tuple[list[float], int, int]:
    """Mean NLL of each answer span under one model: ([n_answers] floats, forwards, scored tokens).

    The image and the prompt "Question: q\\nAnswer:" are prefilled once; the cache is then
    repeated for every non-empty answer and all answers run as one right-padded batch, so
    each expert encodes the image once and runs two forwards. Empty answers get NaN.
    """
    model = pipe.target.model
    tokenizer = pipe.target.tokenizer
    prefix = pipe.prepare(image, SCORING_PROMPT.format(question=question))
    answer_ids = [tokenizer(a, add_special_tokens=False)["input_ids"] if a else [] for a in answers]
    scored = [i for i, ids in enumerate(answer_ids) if ids]
    nll = [math.nan] * len(answers)
    if not scored:
        return nll, 0, 0
    device = prefix["input_ids"].device
    out = model(**prefix, use_cache=True)
    prefix_logprobs = out.logits[0, -1].float().log_softmax(-1)  # [vocab]: predicts answer token 0
    cache = out.past_key_values
    n_rows = len(scored)
    longest = max(len(answer_ids[i]) for i in scored)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batch_ids = torch.full((n_rows, longest), pad_id, dtype=torch.long, device=device)  # [n_answers, seq]
    answer_mask = torch.zeros((n_rows, longest), dtype=torch.long, device=device)  # [n_answers, seq]
    for row, i in enumerate(scored):
        ids = answer_ids[i]
        batch_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long, device=device)
        answer_mask[row, : len(ids)] = 1
    forwards = 1
    if longest > 1:
        cache.batch_repeat_interleave(n_rows)
        prefix_mask = prefix["attention_mask"].to(device).expand(n_rows, -1)  # [n_answers, prefix]
        full_mask = torch.cat([prefix_mask, answer_mask], dim=1)  # [n_answers, prefix + seq]
        out = model(input_ids=batch_ids, attention_mask=full_mask, past_key_values=cache, use_cache=False)
        answer_logprobs = out.logits.float().log_softmax(-1)  # [n_answers, seq, vocab]
        forwards = 2
    for row, i in enumerate(scored):
        ids = torch.tensor(answer_ids[i], dtype=torch.long, device=device)  # [len_i]
        token_logprobs = [prefix_logprobs[ids[0]]]
        if len(ids) > 1:
            # position t of the batch predicts answer token t + 1
            token_logprobs.append(answer_logprobs[row, : len(ids) - 1].gather(-1, ids[1:, None])[:, 0])
        value = -torch.cat([t.reshape(-1) for t in token_logprobs]).mean().item()
        if not math.isfinite(value):
            raise NumericalError(
                f"Scoring answer {i} ({answers[i]!r}) gave a non-finite NLL ({value}); the model produced "
                "NaN/inf logits. Load it in float32 (dtype=torch.float32) and try again."
            )
        nll[i] = value
    return nll, forwards, int(answer_mask.sum().item())


# --------------------------------------------------------------------------- prompts


def _answer_prompt(config: VerdictConfig, question: str) -> str:
    return f"{question}\n{config.answer_instruction}" if config.answer_instruction else question


def _reasoning_prompt(config: VerdictConfig, question: str) -> str:
    return f"{question}\n{config.reasoning_instruction}" if config.reasoning_instruction else question


def _verdict_prompt(config: VerdictConfig, question: str, reasoning: Sequence[str], answers: Sequence[str]) -> str:
    parts = [f"Question: {question}", config.verdict_instruction]
    for number, (path, answer) in enumerate(zip(reasoning, answers), start=1):
        parts.append(f"Reasoning path {number}:\n{path.strip()}\nAnswer {number}: {answer}")
    parts.append("Final answer in the form \\boxed{answer}:")
    return "\n\n".join(part for part in parts if part)


# --------------------------------------------------------------------------- pipeline


def _as_config(config: "VerdictConfig | dict | str | Path") -> VerdictConfig:
    if isinstance(config, VerdictConfig):
        return config
    if isinstance(config, dict):
        return VerdictConfig.from_dict(config)
    if isinstance(config, (str, os.PathLike)):
        return VerdictConfig.from_file(config)
    raise InputError(
        f"Expected a VerdictConfig, its dict form or a JSON file path, got {type(config).__name__}."
    )


class VerdictRunner:
    """Runs Speculative Verdict for many (image, question) pairs with one model pool.

    In "resident" memory mode models stay loaded across calls; call `close()` (or use it as
    a context manager) to free them.
    """

    def __init__(self, config: "VerdictConfig | dict | str | Path", *, load_pipeline: Callable | None = None) -> None:
        config = _as_config(config)
        self.config = config
        self.pool = ModelPool(config, load_pipeline)

    def __enter__(self) -> "VerdictRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.pool.release()

    def run(self, image: Any, question: str) -> VerdictResult:
        from .images import load_image

        if not isinstance(question, str) or not question.strip():
            raise PromptError("The question is empty; pass the question to answer about the image.")
        image = load_image(image)
        config, pool = self.config, self.pool
        names = config.expert_names
        n_experts = len(config.experts)
        cost = VerdictCost()

        # 1. every expert answers briefly
        started = time.perf_counter()
        expert_answers: list[ExpertAnswer] = []
        answer_prompt = _answer_prompt(config, question)
        for i in range(n_experts):
            pipe = pool.get(i, cost.answer)
            t0 = time.perf_counter()
            text, tokens, forwards = _generate(
                pipe, image, answer_prompt, config.max_answer_tokens, f"expert {i} {names[i]!r} (answer stage)"
            )
            expert_answers.append(ExpertAnswer(names[i], text.strip(), tokens, forwards, time.perf_counter() - t0))
            cost.answer.forwards += forwards
            cost.answer.tokens += tokens
        cost.answer.seconds = time.perf_counter() - started
        answers = [a.answer for a in expert_answers]

        # 2. every expert scores every answer; reverse order reuses the model still loaded
        started = time.perf_counter()
        nll: list[list[float]] = [[] for _ in range(n_experts)]  # [scorer j][answer i]
        for j in reversed(range(n_experts)):
            pipe = pool.get(j, cost.score)
            try:
                nll[j], forwards, scored_tokens = score_answers(pipe, image, question, answers)
            except VlmspecError as exc:
                raise type(exc)(f"expert {j} {names[j]!r} (score stage): {exc}") from exc
            cost.score.forwards += forwards
            cost.score.scored_tokens += scored_tokens
        scores = consensus_scores(nll)
        selected = select_consensus(scores, config.m)
        cost.score.seconds = time.perf_counter() - started

        # 3. the selected experts reason step by step (a model still loaded goes first)
        started = time.perf_counter()
        reasoning_by_expert: dict[int, str] = {}
        reasoning_prompt = _reasoning_prompt(config, question)
        for i in sorted(selected, key=lambda idx: (idx not in pool.loaded_indices, selected.index(idx))):
            pipe = pool.get(i, cost.reason)
            text, tokens, forwards = _generate(
                pipe, image, reasoning_prompt, config.max_reasoning_tokens, f"expert {i} {names[i]!r} (reason stage)"
            )
            reasoning_by_expert[i] = text.strip()
            cost.reason.forwards += forwards
            cost.reason.tokens += tokens
        reasoning = [reasoning_by_expert[i] for i in selected]
        reasoning_answers = [extract_boxed(text)[0] for text in reasoning]
        cost.reason.seconds = time.perf_counter() - started

        # 4. the verdict model decides
        started = time.perf_counter()
        pipe = pool.get(pool.verdict_index, cost.verdict)
        prompt = _verdict_prompt(config, question, reasoning, reasoning_answers)
        hint = (
            f"The verdict prompt holds m={config.m} reasoning paths of up to {config.max_reasoning_tokens} "
            "tokens each; lower max_reasoning_tokens or m, or use a verdict model with a longer context."
        )
        verdict_text, tokens, forwards = _generate(
            pipe, image, prompt, config.max_verdict_tokens, f"verdict model {config.verdict_name!r}", hint
        )
        cost.verdict.forwards += forwards
        cost.verdict.tokens += tokens
        answer, boxed_found = extract_boxed(verdict_text)
        source = "boxed" if boxed_found else "last_line"
        if not answer:
            answer, source = answers[selected[0]], "consensus"
        cost.verdict.seconds = time.perf_counter() - started

        return VerdictResult(
            answer=answer,
            boxed_found=boxed_found,
            answer_source=source,
            verdict_text=verdict_text,
            experts=names,
            expert_answers=expert_answers,
            nll=nll,
            consensus_scores=scores,
            selected=selected,
            reasoning=reasoning,
            reasoning_answers=reasoning_answers,
            cost=cost,
            m=config.m,
            verdict_model=config.verdict_name,
        )

    def answer_alone(self, image: Any, question: str, *, model: int | None = None) -> tuple[str, dict]:
        """One model answering on its own (a baseline): (answer, cost dict).

        `model` is an expert index, or None for the verdict model; it gets the same brief
        answer prompt the experts get in stage 1.
        """
        from .images import load_image

        index = self.pool.verdict_index if model is None else model
        if not 0 <= index <= self.pool.verdict_index:
            raise InputError(f"model must be an expert index in 0..{len(self.config.experts) - 1} or None.")
        image = load_image(image)
        cost = StageCost()
        started = time.perf_counter()
        pipe = self.pool.get(index, cost)
        text, tokens, forwards = _generate(
            pipe,
            image,
            _answer_prompt(self.config, question),
            self.config.max_answer_tokens,
            f"{'verdict model' if model is None else f'expert {index}'} {self.pool.names[index]!r} (alone)",
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


# --------------------------------------------------------------------------- eval harness hook


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


# --------------------------------------------------------------------------- CLI


def add_verdict_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `verdict` sub-command to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "verdict",
        help="Speculative Verdict: several expert VLMs + a verdict model (accuracy mode, NOT lossless)",
        description=(
            "Speculative Verdict - ACCURACY MODE, NOT LOSSLESS: the answer is not any single model's "
            "output. Every expert answers, the experts score each other's answers, the m most agreed-on "
            "experts reason step by step, and the verdict model writes the final answer. Costs more "
            "compute than one model; the cost is reported per stage."
        ),
    )
    parser.add_argument("--image", required=True, help="image file")
    parser.add_argument("--question", required=True, help="question about the image")
    parser.add_argument("--config", help="JSON VerdictConfig (experts, verdict, m, ...); flags below override it")
    parser.add_argument("--expert", action="append", default=None, help="expert checkpoint (repeat, >= m)")
    parser.add_argument("--verdict", dest="verdict_model", help="verdict model checkpoint")
    parser.add_argument("--m", type=int, default=None, help="experts kept by consensus (default 3)")
    parser.add_argument("--memory", choices=MEMORY_MODES, default=None, help="resident (default) or sequential")
    parser.add_argument("--max-answer-tokens", type=int, default=None, help="brief answers, stage 1 (default 32)")
    parser.add_argument("--max-reasoning-tokens", type=int, default=None, help="reasoning paths, stage 3 (default 256)")
    parser.add_argument("--max-verdict-tokens", type=int, default=None, help="the verdict, stage 4 (default 256)")
    parser.add_argument(
        "--verdict-drafter", default=None, help="drafter for the verdict model's generation (default prompt-lookup; none, model:PATH)"
    )
    parser.add_argument("--expert-drafter", default=None, help="drafter for the experts' generations (default prompt-lookup)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: the loader's choice)")
    parser.add_argument("--json", action="store_true", help="print the full result (answers, scores, reasoning, cost) as JSON")
    parser.set_defaults(func=run_verdict_command)
    return parser


def _config_from_args(args: argparse.Namespace) -> VerdictConfig:
    values: dict[str, Any] = {}
    base_dir = None
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise InputError(f"Verdict config file not found: {path}; pass the path of a JSON file.")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"Verdict config {path} is not valid JSON ({exc}); fix the file.") from None
        base_dir = path.parent
    overrides = {
        "experts": args.expert,
        "verdict": args.verdict_model,
        "m": args.m,
        "memory": args.memory,
        "max_answer_tokens": args.max_answer_tokens,
        "max_reasoning_tokens": args.max_reasoning_tokens,
        "max_verdict_tokens": args.max_verdict_tokens,
        "verdict_drafter": args.verdict_drafter,
        "expert_drafter": args.expert_drafter,
        "device": args.device,
        "dtype": args.dtype,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "experts" not in values:
        raise InputError("No experts given; pass --expert PATH (repeatable, at least m) or --config FILE.")
    if "verdict" not in values:
        raise InputError("No verdict model given; pass --verdict PATH or --config FILE.")
    return VerdictConfig.from_dict(values, base_dir=base_dir)


def run_verdict_command(args: argparse.Namespace) -> int:
    """Handler of `vlmspec verdict`: prints the result; returns the exit code."""
    try:
        config = _config_from_args(args)
        with VerdictRunner(config) as runner:
            result = runner.run(args.image, args.question)
    except VlmspecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.summary())
    return 0
