"""What one generation cost and how well the drafter did.

tau = new tokens / target forwards, the prefill forward counted and the bonus token
included (plain decoding gives exactly 1.0). acceptance_per_position[i] = share of
draft steps that proposed more than i tokens in which token i was accepted.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field


@dataclass
class Metrics:
    new_tokens: int = 0
    target_forwards: int = 0
    tau: float = 0.0
    acceptance_per_position: list[float] = field(default_factory=list)
    acceptance_rate: float = 0.0  # accepted draft tokens / drafted tokens
    mean_draft_length: float = 0.0  # draft depth per step (a tree's depth, a chain's length)
    mean_requested_length: float = 0.0  # what the draft schedule asked for per step (k)
    draft_depth_cap: int | None = None  # the drafter's own depth limit (its config), None = k decides
    draft_seconds: float = 0.0
    verify_seconds: float = 0.0
    prefill_seconds: float = 0.0
    total_seconds: float = 0.0
    time_to_first_token: float = 0.0
    tokens_per_second: float = 0.0
    verification: str = "exact"  # "exact" (lossless) or "approximate" (SPRINTER: NOT lossless)
    unchecked_tokens: int = 0  # draft tokens committed without a target check (approximate only)

    @property
    def lossless(self) -> bool:
        return self.verification == "exact"

    @property
    def verification_label(self) -> str:
        """What every report prints: "exact (lossless)" or "approximate (not lossless)"."""
        return "exact (lossless)" if self.lossless else "approximate (not lossless)"

    def to_dict(self) -> dict:
        return asdict(self)


class MetricsRecorder:
    """Accumulates timings and acceptance counts during one generation."""

    def __init__(self, depth_cap: int | None = None, verification: str = "exact") -> None:
        self._start = time.perf_counter()
        self._metrics = Metrics(draft_depth_cap=depth_cap, verification=verification)
        self._requested = 0
        self._proposed_at = []  # proposed_at[i]: steps whose draft had more than i tokens
        self._accepted_at = []  # accepted_at[i]: of those, steps that accepted token i
        self._drafted = 0
        self._accepted = 0
        self._draft_steps = 0

    def prefill_done(self, seconds: float) -> None:
        m = self._metrics
        m.prefill_seconds = seconds
        m.target_forwards += 1
        m.time_to_first_token = time.perf_counter() - self._start

    def step(
        self, drafted: int, accepted: int, draft_seconds: float, verify_seconds: float, requested: int | None = None,
        unchecked: int = 0,
    ) -> None:
        m = self._metrics
        m.unchecked_tokens += unchecked
        self._requested += drafted if requested is None else requested
        m.target_forwards += 1
        m.draft_seconds += draft_seconds
        m.verify_seconds += verify_seconds
        if len(self._proposed_at) < drafted:
            grow = drafted - len(self._proposed_at)
            self._proposed_at += [0] * grow
            self._accepted_at += [0] * grow
        for i in range(drafted):
            self._proposed_at[i] += 1
            self._accepted_at[i] += int(i < accepted)
        self._drafted += drafted
        self._accepted += accepted
        self._draft_steps += 1

    def finish(self, new_tokens: int) -> Metrics:
        m = self._metrics
        m.new_tokens = new_tokens
        m.total_seconds = time.perf_counter() - self._start
        m.tau = new_tokens / m.target_forwards if m.target_forwards else 0.0
        m.acceptance_per_position = [a / p for a, p in zip(self._accepted_at, self._proposed_at)]
        m.acceptance_rate = self._accepted / self._drafted if self._drafted else 0.0
        m.mean_draft_length = self._drafted / self._draft_steps if self._draft_steps else 0.0
        m.mean_requested_length = self._requested / self._draft_steps if self._draft_steps else 0.0
        m.tokens_per_second = new_tokens / m.total_seconds if m.total_seconds > 0 else 0.0
        return m
