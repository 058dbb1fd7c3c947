"""Deciding how much of a draft the target accepts (p = target, q = draft).

Greedy: the longest prefix equal to the target's argmax, then the target's own next
token (the bonus, or the correction at the first mismatch).
Sampling (Leviathan et al. / Chen et al.): accept draft token x with probability
min(1, p(x) / q(x)); at the first rejection resample from norm(max(0, p - q)); if all
are accepted, sample the bonus from p. The output distribution equals sampling from p.
A draft given without `draft_probs` was chosen deterministically: q is a point mass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Acceptance:
    """`num_accepted` draft tokens were accepted; `next_token` follows them (bonus or correction)."""

    num_accepted: int
    next_token: int


def verify_greedy(draft_tokens: torch.Tensor, target_logits: torch.Tensor) -> Acceptance:
    """draft_tokens: [n]; target_logits: [n + 1, vocab] (row i predicts the token after draft i-1)."""
    target_choice = target_logits.argmax(-1)  # [n + 1]
    num_drafted = draft_tokens.shape[0]
    mismatch = (draft_tokens != target_choice[:num_drafted]).nonzero()
    num_accepted = int(mismatch[0, 0]) if mismatch.numel() else num_drafted
    return Acceptance(num_accepted, int(target_choice[num_accepted]))


def verify_sampling(
    draft_tokens: torch.Tensor,
    draft_probs: torch.Tensor | None,
    target_probs: torch.Tensor,
    generator: torch.Generator | None,
) -> Acceptance:
    """draft_tokens: [n]; draft_probs: [n, vocab] or None (point mass); target_probs: [n + 1, vocab]."""
    for i, token in enumerate(draft_tokens.tolist()):
        p_token = float(target_probs[i, token])
        q_token = 1.0 if draft_probs is None else float(draft_probs[i, token])
        if q_token <= 0.0:
            raise ValueError(f"draft token {token} at position {i} has draft probability 0; the drafter is inconsistent")
        if float(torch.rand((), generator=generator)) * q_token < p_token:
            continue
        if draft_probs is None:
            residual = target_probs[i].clone()
            residual[token] = 0.0
        else:
            residual = (target_probs[i] - draft_probs[i]).clamp_min(0.0)  # [vocab]
        return Acceptance(i, sample_token(residual, generator))
    return Acceptance(draft_tokens.shape[0], sample_token(target_probs[-1], generator))


def sample_token(weights: torch.Tensor, generator: torch.Generator | None) -> int:
    """One draw from unnormalised non-negative `weights` [vocab]."""
    return int(torch.multinomial(weights / weights.sum(), 1, generator=generator))
