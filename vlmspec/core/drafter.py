"""The interface every drafter implements; the loop knows nothing else about drafters.

Life of a drafter during one generation:
    begin(context)                  once, after the target's prefill
    propose(committed, k) -> Draft  up to k tokens continuing `committed`
    update(feedback)                what the target accepted (and, if asked, its hidden states)
    end()                           release per-generation state
A draft with `probs=None` was chosen deterministically (a point mass), e.g. by n-gram
lookup; otherwise `probs[i]` is the (warped) distribution token i was drawn from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .sampling import SamplingParams


@dataclass
class DraftContext:
    target: Any  # vlmspec.target.Target
    state: Any  # vlmspec.target.TargetState after the prefill (prompt ids, image features, spans, ...)
    sampling: SamplingParams
    generator: torch.Generator | None


@dataclass
class Draft:
    tokens: torch.Tensor  # [n] proposed token ids, n <= k
    probs: torch.Tensor | None = None  # [n, vocab] draft distribution q of each token, None = point mass

    @classmethod
    def empty(cls, device: torch.device | str = "cpu") -> "Draft":
        return cls(torch.empty(0, dtype=torch.long, device=device))


@dataclass
class StepFeedback:
    num_accepted: int  # draft tokens the target accepted this step
    committed: torch.Tensor  # [seq] prompt + every generated token so far (bonus included)
    target_hidden: torch.Tensor | None = None  # [1, num_accepted + 1, hidden] target states of the newly cached tokens


class Drafter:
    """Base class: override `propose`; the other hooks are optional."""

    needs_target_hidden: bool = False  # ask the target to return last-layer hidden states

    def begin(self, context: DraftContext) -> None:
        self.context = context

    def propose(self, committed: torch.Tensor, k: int) -> Draft:
        raise NotImplementedError

    def update(self, feedback: StepFeedback) -> None:
        pass

    def end(self) -> None:
        pass

    def check_compatible(self, target: Any) -> None:
        """Raise DrafterMismatchError if this drafter cannot serve `target`."""
