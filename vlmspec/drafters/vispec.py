"""ViSpec drafter: a vision adaptor compresses each image, a global image feature steers the text.

On top of the EagleDrafter (fc([embed ; h]) -> one target-family layer -> target LM head):
  * Vision adaptor: `num_q` learned queries, ONE multi-head cross-attention over all tokens
    of one image (its projected features [n, H]) -> [num_q, H]. The first num_q - 1 vectors
    are the image in the drafter's sequence (fed straight into the layer, at the positions of
    the image's last num_q - 1 tokens); the last one is the image's global feature g.
  * Global feature injection: every text position after an image reads
    img_fc([h ; g]) (2H -> H) instead of h, g of the latest image before it; img_fc starts as
    [I | 0] (bias 0), so an untrained ViSpec drafter is the EagleDrafter on text.
  * The drafter's KV cache never holds the raw image positions: num_q - 1 entries per image.
Multiple images: one adaptor pass per image; text after image j uses g_j until the next
image. Position ids are the target's (see image_tokens). Spec string: `vispec:PATH`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError
from .eagle import EagleConfig, EagleDrafter, _is_int
from .image_tokens import Span
from .vision_common import (
    QueryCrossAttention,
    SequenceImages,
    VisionEagleDrafter,
    check_optional_heads,
    resolve_heads,
    vision_spec_factory,
)


@dataclass(frozen=True)
class ViSpecConfig(EagleConfig):
    """EagleConfig fields (how it drafts) plus the vision adaptor's shape."""

    num_q: int = 2  # adaptor queries: num_q - 1 drafter positions per image + 1 global feature
    num_heads: int | None = None  # adaptor attention heads; None = the target's head count

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (_is_int(self.num_q) and self.num_q >= 2):
            raise InputError(
                f"ViSpecConfig.num_q must be an integer >= 2 (num_q - 1 image positions + 1 global feature); "
                f"got {self.num_q!r}."
            )
        check_optional_heads("ViSpecConfig.num_heads", self.num_heads)


class ViSpecDrafter(VisionEagleDrafter):
    """EagleDrafter + vision adaptor (num_q - 1 tokens per image) + global-feature injection (img_fc)."""

    drafter_kind = "vispec"
    config_class = ViSpecConfig

    def _build_vision(self, factory: dict, text_config) -> None:
        hidden = self.hidden_size
        heads = resolve_heads(self.config.num_heads, text_config, hidden, "ViSpecConfig")
        self.adaptor = QueryCrossAttention(hidden, self.config.num_q, heads, **factory)
        self.img_fc = nn.Linear(2 * hidden, hidden, **factory)
        self.reset_img_fc()

    @torch.no_grad()
    def reset_img_fc(self) -> None:
        """img_fc = [I | 0], bias 0: img_fc([h ; g]) == h (training starts from plain EAGLE)."""
        self.img_fc.weight.zero_()
        self.img_fc.weight[:, : self.hidden_size].copy_(torch.eye(self.hidden_size))
        self.img_fc.bias.zero_()

    def adapt(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One image's features [n, H] -> (its drafter tokens [num_q - 1, H], global feature g [H])."""
        out = self.adaptor(features)  # [num_q, H]
        return out[:-1], out[-1]

    def _image_slots(self, features, spans: list[Span], hidden, prompt_length, train_options=None):
        adapted = [self.adapt(f) for f in features]
        globals_ = torch.stack([g for _, g in adapted])  # [num_images, H]
        return [tokens for tokens, _ in adapted], globals_

    def _text_states(self, token_ids, hidden, positions, images: SequenceImages | None):
        """hidden [B, m, H] -> img_fc([h ; g_latest]) after an image, h before any image; then EAGLE's fc."""
        if images is not None and images.info is not None:
            latest = images.layout.latest_image(positions)  # [B, m] image index, -1 = none yet
            after = latest >= 0
            if bool(after.any()):
                g = images.info.to(hidden.dtype)[latest.clamp_min(0)]  # [B, m, H]
                injected = self.img_fc(torch.cat([hidden, g], dim=-1))  # [B, m, H]
                hidden = torch.where(after[..., None], injected, hidden)
        return EagleDrafter._input_states(self, token_ids, hidden, positions)


vispec_from_spec = vision_spec_factory(ViSpecDrafter)
