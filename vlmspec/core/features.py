"""Which target hidden states a drafter reads, and how they are taken from a forward's outputs.

A drafter names them with `feature_layers` (see `core.drafter.Drafter`):
    None                      the last layer after the final norm (EAGLE-1/2: hidden_states[-1])
    (low, mid, high, ...)     indexes into transformers' `hidden_states` tuple (0 = the
                              embeddings, i = the output of decoder layer i - 1, before the
                              final norm; num_layers = the last one, after it), concatenated
                              along the feature axis (EAGLE-3: [.., len(layers) * H])
"""

from __future__ import annotations

from typing import Sequence

import torch


def eagle3_layers(num_layers: int) -> tuple[int, int, int]:
    """EAGLE-3's low / middle / high choice for a target of `num_layers` decoder layers."""
    if num_layers < 7:
        raise ValueError(
            f"EAGLE-3's (2, L // 2, L - 3) layers need a target of at least 7 layers; it has {num_layers}. "
            "Name the layers instead, e.g. feature_layers=[0, 1, 2]."
        )
    return (2, num_layers // 2, num_layers - 3)


def check_layers(layers: Sequence[int] | None, num_layers: int, owner: str) -> None:
    """Raise ValueError naming the problem if `layers` cannot be read from a target of `num_layers`."""
    if layers is None:
        return
    bad = [i for i in layers if not 0 <= i <= num_layers]
    if bad:
        raise ValueError(
            f"{owner}: feature layers {list(bad)} do not exist in a target of {num_layers} layers "
            f"(valid: 0 .. {num_layers}; e.g. {eagle3_layers(num_layers) if num_layers >= 7 else tuple(range(num_layers + 1))})."
        )


def select_features(hidden_states: Sequence[torch.Tensor], layers: Sequence[int] | None) -> torch.Tensor:
    """hidden_states: a forward's tuple ([B, L, H] each) -> [B, L, H] or [B, L, len(layers) * H]."""
    if layers is None:
        return hidden_states[-1]
    return torch.cat([hidden_states[i] for i in layers], dim=-1)


__all__ = ["check_layers", "eagle3_layers", "select_features"]
