"""Predicted acceptance while drafting: a learned stop rule (lossless) and SPRINTER (lossy).

A drafter that drafts a chain asks ``context.gate.keep_drafting(features)`` after each
token (``Drafter.keep_drafting`` does it); ``features`` come from `acceptance_features`:
what the drafter already has at that token (its draft distribution, the depth, and its
hidden state where it has one). A predictor maps them to a = P(the target accepts this
token | the tokens before it were accepted).

- ``mode="stop"`` (``draft_length="learned"``, lossless): the survival s_i = a_1 ... a_i is
  the chance token i gets accepted. Token i's distribution is already paid for, so token i
  is always kept; the question after it is whether to pay one more drafter forward for
  token i + 1, which is worth s_{i+1} = s_i * a_{i+1} expected tokens. A predictor with a
  next-token output gives n_i ~ a_{i+1} from token i's own features, and drafting goes on
  while s_i * n_i clears the threshold; one without it (older predictors) can only use s_i,
  which overestimates the next token's worth (s_i a_{i+1} <= s_i) and drafts past the
  break-even.
  The target verifies every drafted token as usual: nothing about the output changes, only
  where drafting stops. The threshold is the break-even point from measured costs, per
  position: with n tokens drafted, one more is worth drafting when the tokens it is expected
  to add pay for the time it adds at the rate the loop already achieves (R tokens/s,
  measured), i.e. s_{n+1} > (t_draft + t_verify(n + 2) - t_verify(n + 1)) * R. Where
  verifying one more token costs nothing (a flat stretch of the CPU's verify costs) the bar
  is only the draft step; where the verify cost jumps (a slower kernel from that row count
  on) the bar rises there and only a confident draft goes past it.
- ``mode="approximate"`` (SPRINTER, Zhong et al. 2025, **not lossless**): tokens the
  predictor calls acceptable (a >= threshold) are committed without a target check;
  drafting stops at the first token it flags (or at the run cap), and the target checks
  only that one with the usual ratio test (`verify_draft(..., trusted=n)`). With
  ``verify_tail=m`` the drafter drafts m more tokens after the flagged one, and the target
  checks them with it as a lossless chain (where verifying a few tokens costs what
  verifying one does, as on CPU with the fast path, the tail is nearly free; m = 0 is
  SPRINTER's rule). At threshold 1.0 no token is ever trusted and the output is exactly the
  lossless one (with m = k - 1, the lossless chain of k itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

GATE_MODES = ("stop", "approximate")
BASE_FEATURES = ("top1_prob", "entropy", "margin", "depth")  # then the hidden state, if any
DEPTH_SCALE = 16.0


def acceptance_features(draft_probs: torch.Tensor, depth: int, hidden: torch.Tensor | None = None) -> torch.Tensor:
    """draft_probs: [vocab] the distribution the token came from; hidden: [H] or None -> [4 (+ H)].

    top-1 probability, entropy (in nats / log vocab), top-1 minus top-2, depth / 16, then the hidden state."""
    probs = draft_probs.float().clamp_min(0)
    probs = probs / probs.sum().clamp_min(1e-12)
    top = probs.topk(2).values if probs.numel() > 1 else torch.cat([probs, probs.new_zeros(1)])
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum() / math.log(max(probs.numel(), 2))
    base = torch.stack([top[0], entropy, top[0] - top[1], probs.new_tensor(depth / DEPTH_SCALE)])  # [4]
    if hidden is None:
        return base
    return torch.cat([base, hidden.float().reshape(-1)])  # [4 + H]


@dataclass(frozen=True)
class GateConfig:
    """How predictions steer drafting. Validated at construction."""

    mode: str = "stop"
    threshold: float | None = None  # stop: None = the break-even point from measured costs; approximate: 0.5
    max_length: int = 8  # longest run drafted (SPRINTER caps at 20; a CPU verify of 20 tokens costs more)
    min_threshold: float = 0.01  # the cost-derived threshold is kept inside [min, max] (a guard, not a tuning knob)
    max_threshold: float = 0.95
    verify_tail: int = 0  # approximate: tokens drafted after the flagged one, checked with it (0 = SPRINTER)

    def __post_init__(self) -> None:
        from ..errors import InputError

        if self.mode not in GATE_MODES:
            raise InputError(f"GateConfig.mode must be one of {', '.join(GATE_MODES)}, got {self.mode!r}.")
        if self.threshold is not None and not (0.0 <= float(self.threshold) <= 1.0):
            raise InputError(f"the acceptance threshold must lie in [0, 1], got {self.threshold!r}.")
        if not (isinstance(self.max_length, int) and self.max_length >= 1):
            raise InputError(f"GateConfig.max_length must be an integer >= 1, got {self.max_length!r}.")
        if not (isinstance(self.verify_tail, int) and self.verify_tail >= 0):
            raise InputError(f"GateConfig.verify_tail must be an integer >= 0, got {self.verify_tail!r}.")
        if not (0.0 <= self.min_threshold <= self.max_threshold <= 1.0):
            raise InputError("GateConfig needs 0 <= min_threshold <= max_threshold <= 1.")

    @property
    def lossless(self) -> bool:
        return self.mode == "stop"

    def initial_threshold(self) -> float:
        if self.threshold is not None:
            return float(self.threshold)
        return 0.5 if self.mode == "approximate" else 0.3


class AcceptanceGate:
    """Per-draft state of the rule: call `start()` before a draft, `keep_drafting` after each token."""

    def __init__(self, predict: Callable[[torch.Tensor], float], config: GateConfig = GateConfig()) -> None:
        self.predict = predict  # features [F] -> a = P(accepted | prefix accepted), or (a, P(next accepted))
        self.config = config
        self.threshold = config.initial_threshold()  # the bar until measured costs arrive (stop mode), or always
        self._costs: tuple[float, Callable[[int], float], float] | None = None  # set_costs: draft s, verify(n) s, tokens/s
        self.start()

    def start(self) -> None:
        self.scores: list[float] = []  # predicted acceptance of each drafted token
        self.survival = 1.0
        self.trusted = 0  # leading tokens approved (approximate mode)
        self._flagged = False
        self._tail_left = 0  # tokens still to draft after the flag (checked by the target)

    def keep_drafting(self, features: torch.Tensor) -> bool:
        predicted = self.predict(features)  # a float, or (this token, the next one)
        if isinstance(predicted, torch.Tensor):
            predicted = predicted.reshape(-1).tolist()
        if isinstance(predicted, (tuple, list)):
            score, next_score = float(predicted[0]), (float(predicted[1]) if len(predicted) > 1 else None)
        else:
            score, next_score = float(predicted), None
        self.scores.append(score)
        if self.config.mode == "stop":
            self.survival *= score
            worth = self.survival if next_score is None else self.survival * next_score  # ~ s_{i+1}
            return worth >= self.threshold_after(len(self.scores))
        if self._flagged:  # a tail token (or a drafter that ignored the last answer): never trusted
            self._tail_left -= 1
            return self._tail_left > 0
        if score >= self.threshold and self.threshold < 1.0:
            self.trusted += 1
            return True
        self._flagged = True
        self._tail_left = self.config.verify_tail
        return self._tail_left > 0

    def trusted_prefix(self, drafted: int) -> int:
        """Leading tokens of this draft committed without a target check (0 in stop mode)."""
        return min(self.trusted, drafted) if self.config.mode == "approximate" else 0

    def set_costs(self, draft_seconds_per_token: float, verify_seconds: Callable[[int], float],
                  tokens_per_second: float) -> None:
        """Stop mode with no fixed threshold: the measured costs the per-position break-even uses."""
        if self.config.mode != "stop" or self.config.threshold is not None or tokens_per_second <= 0:
            return
        self._costs = (draft_seconds_per_token, verify_seconds, tokens_per_second)

    def breakeven(self, drafted: int) -> float:
        """Expected tokens that one more drafted token (after `drafted`) must add to pay for itself."""
        if self._costs is None:
            return self.threshold
        draft_seconds, verify_seconds, rate = self._costs
        extra = verify_seconds(drafted + 2) - verify_seconds(drafted + 1)  # the root token is verified too
        return (draft_seconds + extra) * rate

    def threshold_after(self, drafted: int) -> float:
        """The bar s_{drafted+1} must clear: fixed, or the break-even kept inside [min, max]."""
        if self._costs is None:
            return self.threshold
        return min(max(self.breakeven(drafted), self.config.min_threshold), self.config.max_threshold)
