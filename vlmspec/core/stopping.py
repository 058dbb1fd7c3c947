"""When generation ends: EOS, stop strings or `max_new_tokens`, even in the middle of a draft."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class StopCriteria:
    max_new_tokens: int
    eos_token_ids: frozenset[int] = frozenset()
    stop_strings: tuple[str, ...] = ()
    decode: Callable[[list[int]], str] | None = None  # needed only with stop strings


@dataclass
class StopTracker:
    criteria: StopCriteria
    generated: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "eos" | "stop_string" | "length"

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def remaining(self) -> int:
        return self.criteria.max_new_tokens - len(self.generated)

    def add(self, tokens: list[int]) -> list[int]:
        """Append tokens one by one until a stop condition; return the ones kept (stopper included)."""
        kept = []
        for token in tokens:
            if self.done:
                break
            self.generated.append(token)
            kept.append(token)
            if token in self.criteria.eos_token_ids:
                self.finish_reason = "eos"
            elif self.criteria.stop_strings and self._hit_stop_string():
                self.finish_reason = "stop_string"
            elif self.remaining <= 0:
                self.finish_reason = "length"
        return kept

    def _hit_stop_string(self) -> bool:
        text = self.criteria.decode(self.generated)
        return any(stop in text for stop in self.criteria.stop_strings)
