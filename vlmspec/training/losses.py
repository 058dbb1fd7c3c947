"""Distillation losses for feature drafters, and the noise they are trained with.

    loss = w_ce * softCE(draft_logits / T, target_logits / T) + w_feat * SmoothL1(draft_hidden, target_hidden)

averaged over the positions `mask` marks (response positions), SpecVLM's online-logit
distillation with defaults 0.1 / 1.0. With training-time test the per-step losses are
weighted decay**k (EAGLE-3). Also: top-1 agreement (drafter argmax == target argmax),
uniform input noise, a Gumbel-softmax helper for SpecVLM's operator gate, and the
expected-tau estimate from an acceptance rate (Leviathan et al.).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """values [B, T] (float), mask [B, T] (bool) -> scalar mean over marked positions (0 when none)."""
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def soft_cross_entropy(
    draft_logits: torch.Tensor, target_logits: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Cross-entropy of the draft distribution against the target's full distribution.

    draft_logits [B, T, V'], target_logits [B, T, V'] (already restricted to the draft
    vocabulary when trimmed), mask [B, T] bool -> scalar. Computed in float32.
    """
    target_probs = torch.softmax(target_logits.float() / temperature, dim=-1)  # [B, T, V']
    draft_log_probs = torch.log_softmax(draft_logits.float() / temperature, dim=-1)  # [B, T, V']
    per_position = -(target_probs * draft_log_probs).sum(-1)  # [B, T]
    return masked_mean(per_position, mask)


def feature_loss(
    draft_hidden: torch.Tensor, target_hidden: torch.Tensor, mask: torch.Tensor, beta: float = 1.0
) -> torch.Tensor:
    """SmoothL1 between draft_hidden [B, T, H] and target_hidden [B, T, H], mean over H, then over mask."""
    per_element = F.smooth_l1_loss(draft_hidden.float(), target_hidden.float(), reduction="none", beta=beta)
    return masked_mean(per_element.mean(-1), mask)  # [B, T] -> scalar


@torch.no_grad()
def top1_agreement(draft_logits: torch.Tensor, target_logits: torch.Tensor, mask: torch.Tensor) -> tuple[int, int]:
    """(positions where the drafter's argmax equals the target's, positions counted); [B, T, V'] each."""
    same = draft_logits.argmax(-1) == target_logits.argmax(-1)  # [B, T]
    return int((same & mask).sum()), int(mask.sum())


def uniform_noise(shape: torch.Size, scale: float, generator: torch.Generator, device, dtype) -> torch.Tensor:
    """U(-scale/2, scale/2) of `shape`, drawn on the CPU from `generator` (identical on every device)."""
    noise = (torch.rand(shape, generator=generator, dtype=torch.float32) - 0.5) * scale
    return noise.to(device=device, dtype=dtype)


def gumbel_softmax_select(
    gate_logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None, hard: bool = True
) -> torch.Tensor:
    """Differentiable top-1 choice for SpecVLM's operator gate.

    gate_logits [B, K] -> weights [B, K]: a one-hot row (straight-through gradients of the
    soft Gumbel-softmax) with hard=True, the soft weights otherwise. Noise is drawn from
    `generator` on the CPU so a seeded run is reproducible. At inference use argmax.
    """
    uniform = torch.rand(gate_logits.shape, generator=generator, dtype=torch.float32).clamp_(1e-9, 1 - 1e-9)
    gumbel = -torch.log(-torch.log(uniform)).to(gate_logits.device, gate_logits.dtype)  # [B, K]
    soft = torch.softmax((gate_logits + gumbel) / temperature, dim=-1)  # [B, K]
    if not hard:
        return soft
    one_hot = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)  # [B, K]
    return one_hot - soft.detach() + soft


def expected_tau(acceptance: float, draft_length: int) -> float:
    """Tokens per target forward for a chain of `draft_length` drafts accepted i.i.d. with `acceptance`."""
    alpha = min(max(acceptance, 0.0), 1.0)
    if alpha >= 1.0:
        return float(draft_length + 1)
    return (1.0 - alpha ** (draft_length + 1)) / (1.0 - alpha)
