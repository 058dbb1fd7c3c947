"""What a Speculative Verdict call returns: the answer, every intermediate step, and the
cost of each stage (`StageCost`, `VerdictCost`, `ExpertAnswer`, `VerdictResult`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

MODE_LABEL = "accuracy (not lossless)"
STAGES = ("answer", "score", "reason", "verdict")


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
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def to_dict(self) -> dict:
        return asdict(self)


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
        costs = {stage: getattr(self.cost, stage) for stage in STAGES} | {"total": self.cost.total}
        for stage, c in costs.items():
            lines.append(f"       {stage:<8}  {c.forwards:>8}  {c.tokens:>6}  {c.seconds:>7.2f}  {c.loads:>5}")
        return "\n".join(lines)
