"""Image-token bookkeeping shared by the vision-aware drafters (ViSpec, MSD, SpecVLM).

The target sees every image token; a vision drafter replaces each image's tokens by its
own "slots" (ViSpec: num_q - 1 adaptor outputs, MSD: all projected features, SpecVLM:
the compressor's output). This module says where they go.

Where each image is in the TARGET sequence comes from `vlmspec.target.image_spans`
(LLaVA: a fixed count per image; LLaVA-NeXT: a count that depends on `image_sizes`); at
inference it is already in `TargetState.image_spans` / `image_features`, for training
`spans_for(ids, image_token_id, features)` computes it from the full token ids.

Slot placement (`slot_positions`): the r slots of an image with span [start, end) take the
positions of the image's LAST r tokens, slot i at position max(start, end - r + i) (an
image with fewer tokens than slots gives several slots its first position; RoPE position
ids need not be unique, the causal order is the slot order). Position ids in the drafter
are therefore the target's own absolute positions: text tokens keep exactly the target's
relative distances (what a layer copied from the target and the target features it reads
expect), drafted nodes get position = target position, and dropped image positions are
simply gaps. Cache slots are compact (one per drafter entry); the drafter counts the target
positions it has fed separately (`EagleDrafter._fed_positions`).

`DrafterLayout` lists the drafter's entries over target positions [0, length) in order:
(position, slot) with slot = -1 for a text entry (the EAGLE input of that position) or the
index of a slot vector in the concatenation of all images' slots. An image position with no
slot is skipped, except the prompt's last position when `needs_output` names it: the
drafter needs an output there (the root of the first draft), so it becomes a text entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import InputError
from ..target import image_spans

Span = tuple[int, int]


def spans_for(ids: torch.Tensor, image_token_id: int, features: Sequence[torch.Tensor]) -> list[Span]:
    """[start, end) of each image's tokens in ids [seq] (features: per image [n_i, H]).

    Works for LLaVA (fixed n) and LLaVA-NeXT (n from image_sizes: take it from the features).
    """
    if ids.dim() != 1:
        raise InputError(f"spans_for takes the token ids of ONE sequence [seq]; got shape {tuple(ids.shape)}.")
    return image_spans(ids, image_token_id, [int(f.shape[0]) for f in features])


def check_images(features: Sequence[torch.Tensor], spans: Sequence[Span], hidden_size: int) -> None:
    """Features [n_i, H] and spans [start, end) must agree image by image (clear error otherwise)."""
    if len(features) != len(spans):
        raise InputError(
            f"{len(features)} images' features but {len(spans)} image spans; pass one span per image "
            "(vlmspec.drafters.image_tokens.spans_for computes them from the token ids)."
        )
    previous_end = 0
    for i, (f, (start, end)) in enumerate(zip(features, spans)):
        if f.dim() != 2 or f.shape[1] != hidden_size:
            raise InputError(f"image {i}: features must be [n_tokens, {hidden_size}]; got {tuple(f.shape)}.")
        if end - start != f.shape[0]:
            raise InputError(
                f"image {i}: span {start}:{end} holds {end - start} tokens but its features hold {f.shape[0]}."
            )
        if start < previous_end or start >= end:
            raise InputError(f"image spans must be non-empty, in order and disjoint; got {list(spans)}.")
        previous_end = end


def slot_positions(span: Span, count: int) -> list[int]:
    """Target positions of an image's `count` slots: its last `count` token positions (see module doc)."""
    start, end = span
    return [max(start, end - count + i) for i in range(count)]


@dataclass(frozen=True)
class DrafterLayout:
    """The drafter's entries over target positions [0, length), in drafter order."""

    length: int  # target positions described; later positions are text
    positions: torch.Tensor  # [E] long: target position (= RoPE position id) of each entry, non-decreasing
    slots: torch.Tensor  # [E] long: -1 = text entry, else index into the concatenated slot vectors
    spans: tuple[Span, ...]
    slot_counts: tuple[int, ...]

    @classmethod
    def build(
        cls, length: int, spans: Sequence[Span], slot_counts: Sequence[int], needs_output: int | None = None
    ) -> "DrafterLayout":
        """Text positions -> text entries; image j -> slot_counts[j] slots at `slot_positions`."""
        if len(spans) != len(slot_counts):
            raise InputError(f"{len(spans)} image spans but {len(slot_counts)} slot counts.")
        kind = [-1] * length  # per position: -1 text, -2 image
        for start, end in spans:
            if end > length:
                raise InputError(f"image span {start}:{end} runs past the sequence ({length} positions).")
            kind[start:end] = [-2] * (end - start)
        at: dict[int, list[int]] = {}  # position -> slot indices placed there
        offset = 0
        for span, count in zip(spans, slot_counts):
            for i, position in enumerate(slot_positions(span, count)):
                at.setdefault(position, []).append(offset + i)
            offset += count
        positions, slots = [], []
        for p in range(length):
            if kind[p] == -1:
                positions.append(p)
                slots.append(-1)
            elif p in at:
                positions += [p] * len(at[p])
                slots += at[p]
            elif p == needs_output:  # a slot-less image position where the drafter needs an output
                positions.append(p)
                slots.append(-1)
        return cls(
            length,
            torch.tensor(positions, dtype=torch.long),
            torch.tensor(slots, dtype=torch.long),
            tuple((int(s), int(e)) for s, e in spans),
            tuple(int(c) for c in slot_counts),
        )

    def entries(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Entries for target positions [start, stop): positions [L], slots [L] (positions past
        `length` are text entries)."""
        lo = int(torch.searchsorted(self.positions, start))
        hi = int(torch.searchsorted(self.positions, min(stop, self.length)))
        positions, slots = self.positions[lo:hi], self.slots[lo:hi]
        if stop > self.length:
            tail = torch.arange(max(start, self.length), stop, dtype=torch.long)
            positions = torch.cat([positions, tail])
            slots = torch.cat([slots, torch.full_like(tail, -1)])
        return positions, slots

    def latest_image(self, positions: torch.Tensor) -> torch.Tensor:
        """positions [...] -> index of the latest image whose span ends at or before each position
        ([...] long, -1 = no image before it)."""
        ends = torch.tensor([e for _, e in self.spans], dtype=torch.long, device=positions.device)
        return torch.searchsorted(ends, positions, right=True) - 1
