"""The interface every drafter implements; the loop knows nothing else about drafters.

Life of a drafter during one generation:
    begin(context)                  once, after the target's prefill
    propose(committed, k) -> Draft  up to k tokens continuing `committed`
    update(feedback)                what the target accepted (and, if asked, its hidden states)
    end()                           release per-generation state
A draft with `probs=None` was chosen deterministically (a point mass), e.g. by n-gram
lookup; otherwise `probs[i]` is the (warped) distribution token i was drawn from.
A draft with `parents` is a tree (chains are the special case parents = [-1, 0, 1, ...]);
siblings that come with `probs` must have been drawn independently from the same q.
For a chain, `k` bounds the number of tokens; for a tree, its depth.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from .sampling import SamplingParams
from .tree import node_depths


@dataclass
class DraftContext:
    target: Any  # vlmspec.target.Target
    state: Any  # vlmspec.target.TargetState after the prefill (prompt ids, image features, spans, ...)
    sampling: SamplingParams
    generator: torch.Generator | None
    gate: Any = None  # core.acceptance.AcceptanceGate consulted after each chain token, or None


@dataclass
class Draft:
    tokens: torch.Tensor  # [n] proposed token ids
    probs: torch.Tensor | None = None  # [n, vocab] draft distribution q of each token, None = point mass
    parents: torch.Tensor | None = None  # [n] tree parents (see core/tree.py), None = a chain

    @property
    def depth(self) -> int:
        if self.parents is None:
            return int(self.tokens.shape[0])
        return int(node_depths(self.parents).max()) if self.tokens.numel() else 0

    @classmethod
    def empty(cls, device: torch.device | str = "cpu") -> "Draft":
        return cls(torch.empty(0, dtype=torch.long, device=device))


@dataclass
class StepFeedback:
    num_accepted: int  # draft tokens the target accepted this step (length of the accepted path)
    path: list[int]  # accepted draft node indices, root's child first
    committed: torch.Tensor  # [seq] prompt + every generated token so far (bonus included)
    target_hidden: torch.Tensor | None = None  # [1, num_accepted + 1, F] states of [pending, accepted path]
    # (F = hidden, or len(feature_layers) * hidden)


class Drafter:
    """Base class: override `propose`; the other hooks are optional."""

    needs_target_hidden: bool = False  # ask the target to return hidden states (see feature_layers)
    feature_layers: tuple[int, ...] | None = None  # which: None = last layer, else core/features.py's indexes
    max_depth: int | None = None  # deepest draft it proposes whatever k asks (its config); None = k decides

    def begin(self, context: DraftContext) -> None:
        self.context = context

    def propose(self, committed: torch.Tensor, k: int) -> Draft:
        raise NotImplementedError

    def update(self, feedback: StepFeedback) -> None:
        pass

    def keep_drafting(self, draft_probs: torch.Tensor, depth: int, hidden: torch.Tensor | None = None) -> bool:
        """Chain drafters call this after each token (draft_probs [vocab] it came from, depth >= 1,
        their hidden state [H] where they have one): False = stop this draft here. True without a gate."""
        gate = getattr(getattr(self, "context", None), "gate", None)
        if gate is None:
            return True
        from .acceptance import acceptance_features

        return gate.keep_drafting(acceptance_features(draft_probs, depth, hidden))

    def chain_drafter(self, max_depth: int) -> "Drafter | None":
        """The same drafter drafting chains of up to `max_depth`, calling `keep_drafting` after each
        token (what the learned stop rule and approximate verification need); None if it cannot."""
        return None

    @property
    def acceptance_features_size(self) -> int | None:
        """Length of the features this drafter passes to `keep_drafting` (None: it never calls it)."""
        return None

    def end(self) -> None:
        pass

    def fork(self) -> "Drafter":
        """A drafter for another sequence of the same batch: shares weights, not per-sequence state
        (per-sequence state is created in `begin`)."""
        return copy.copy(self)

    def with_tree(self, total_tokens: int, depth: int, top_k: int) -> "Drafter | None":
        """A drafter with the same weights drafting that dynamic tree, or None if it drafts chains only."""
        return None

    def check_compatible(self, target: Any) -> None:
        """Raise DrafterMismatchError if this drafter cannot serve `target`."""
