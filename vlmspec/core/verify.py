"""Deciding how much of a draft tree the target accepts (p = target, q = draft).

A chain is the tree whose parents are [-1, 0, 1, ...] (the default when `parents` is None).
Row 0 of the target's scores belongs to the root (the pending token), row i + 1 to node i.

Greedy: walk down from the root, each time into the child whose token equals the
target's argmax; stop where none does. The target's argmax there is the next token
(the bonus when the walk ended at a leaf, the correction otherwise).

Sampling (lossless, recursive rejection over siblings, SpecInfer / Chen et al.): at a
node with target distribution r (initially p), try its children in order. A child drawn
from q is accepted with probability min(1, r(x) / q(x)); after a rejection
r <- norm(max(0, r - q)). A child given without q (a point mass: chosen
deterministically, e.g. top-k or n-gram lookup) is accepted with probability r(x); after
a rejection r(x) <- 0 and r is renormalised. When no child is accepted the next token is
drawn from r. Either way the output has exactly the target's distribution, provided
siblings with q were drawn independently from that same q.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .sampling import SamplingParams, warp_probs
from .tree import chain_parents, children_of


@dataclass(frozen=True)
class Acceptance:
    """The accepted nodes (root's child first) and the token that follows them."""

    path: list[int]
    next_token: int

    @property
    def num_accepted(self) -> int:
        return len(self.path)


def verify_greedy(
    draft_tokens: torch.Tensor, target_logits: torch.Tensor, parents: torch.Tensor | None = None
) -> Acceptance:
    """draft_tokens: [n]; target_logits: [n + 1, vocab]; parents: [n] or None for a chain."""
    target_choice = target_logits.argmax(-1).tolist()  # [n + 1]
    tokens = draft_tokens.tolist()
    if parents is None:  # chain: the longest matching prefix
        accepted = 0
        while accepted < len(tokens) and tokens[accepted] == target_choice[accepted]:
            accepted += 1
        return Acceptance(list(range(accepted)), target_choice[accepted])
    children = children_of(parents)
    row, path = 0, []
    while True:
        match = next((c for c in children[row] if tokens[c] == target_choice[row]), None)
        if match is None:
            return Acceptance(path, target_choice[row])
        path.append(match)
        row = match + 1


def verify_sampling(
    draft_tokens: torch.Tensor,
    draft_probs: torch.Tensor | None,
    target_probs: torch.Tensor,
    generator: torch.Generator | None,
    parents: torch.Tensor | None = None,
) -> Acceptance:
    """draft_tokens: [n]; draft_probs: [n, vocab] (q each node was drawn from) or None (point masses);
    target_probs: [n + 1, vocab]; parents: [n] or None for a chain."""
    if parents is None:
        parents = chain_parents(draft_tokens.shape[0], draft_tokens.device)
    children = children_of(parents)
    tokens = draft_tokens.tolist()
    row, path = 0, []
    while True:
        residual = target_probs[row].double()  # [vocab] normalised
        for child in children[row]:
            token = tokens[child]
            r_token = float(residual[token])
            if draft_probs is None:
                accepted = float(torch.rand((), generator=generator)) < r_token
            else:
                q_token = float(draft_probs[child, token])
                if q_token <= 0.0:
                    raise ValueError(f"draft node {child} (token {token}) has draft probability 0: inconsistent drafter")
                accepted = float(torch.rand((), generator=generator)) * q_token < r_token
            if accepted:
                break
            if draft_probs is None:
                residual = residual.clone()
                residual[token] = 0.0
            else:
                residual = (residual - draft_probs[child].double()).clamp_min(0.0)
            total = float(residual.sum())
            residual = residual / total if total > 0 else target_probs[row].double()
        else:
            return Acceptance(path, sample_token(residual, generator))
        path.append(child)
        row = child + 1


def verify_draft(draft, target_logits: torch.Tensor, sampling: SamplingParams, generator,
                 trusted: int = 0) -> Acceptance:
    """Greedy or sampling verification of a chain or tree `Draft`; target_logits: [n + 1, vocab].

    `trusted` > 0 (approximate verification, NOT lossless): the first `trusted` chain tokens
    are accepted unchecked and the usual test runs on the rest; 0 is the lossless check."""
    if trusted:
        if draft.parents is not None:
            raise ValueError("approximate verification applies to chains only")
        trusted = min(int(trusted), int(draft.tokens.shape[0]))
        rest = type(draft)(draft.tokens[trusted:], None if draft.probs is None else draft.probs[trusted:])
        tail = verify_draft(rest, target_logits[trusted:], sampling, generator)
        return Acceptance(list(range(trusted)) + [trusted + node for node in tail.path], tail.next_token)
    if sampling.greedy:
        return verify_greedy(draft.tokens, target_logits, draft.parents)
    target_probs = warp_probs(target_logits, sampling)  # [n + 1, vocab]
    return verify_sampling(draft.tokens, draft.probs, target_probs, generator, draft.parents)


def sample_token(weights: torch.Tensor, generator: torch.Generator | None) -> int:
    """One draw from unnormalised non-negative `weights` [vocab]."""
    return int(torch.multinomial(weights / weights.sum(), 1, generator=generator))
