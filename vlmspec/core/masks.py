"""4-D attention masks in the form each transformers attention implementation reads.

Tree verification and batched steps hand the model a custom 4-D mask, which transformers
passes through untouched. The attention kernels then read it differently: `sdpa` takes
a boolean mask (True = attend) or an additive float one; `eager` and `flex_attention`
*add* the mask to the scores, so a boolean mask there silently becomes +1 / +0 and the
output drifts. Flash-attention kernels take no 4-D mask at all. `model_mask` turns the
structural boolean mask into what the model's implementation reads, or refuses clearly.
"""

from __future__ import annotations

import torch

from ..errors import UnsupportedError

BOOLEAN_MASK_IMPLEMENTATIONS = ("sdpa",)
ADDITIVE_MASK_IMPLEMENTATIONS = ("eager", "flex_attention")


def attention_implementation(model: torch.nn.Module) -> str:
    """The attention implementation the model's language layers run ("sdpa", "eager", ...)."""
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return str(getattr(text_config, "_attn_implementation", None) or getattr(config, "_attn_implementation", "sdpa"))


def model_mask(allowed: torch.Tensor, model: torch.nn.Module, dtype: torch.dtype | None = None) -> torch.Tensor:
    """allowed [batch, 1, rows, kv] bool (True = attend) -> the mask `model` reads, same shape.

    Boolean for sdpa; additive (0 where allowed, the dtype's minimum elsewhere) for eager and
    flex attention. Any other implementation cannot take a custom 4-D mask: UnsupportedError.
    """
    implementation = attention_implementation(model)
    if implementation in BOOLEAN_MASK_IMPLEMENTATIONS:
        return allowed
    if implementation in ADDITIVE_MASK_IMPLEMENTATIONS:
        dtype = dtype or next(model.parameters()).dtype
        additive = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return additive.masked_fill(~allowed, torch.finfo(dtype).min)
    raise UnsupportedError(
        f"Tree drafts and batched generation need a custom 4-D attention mask, which the model's "
        f"attn_implementation={implementation!r} cannot take. Load the target with "
        "attn_implementation='sdpa' (or 'eager'), or use a chain drafter with a single prompt."
    )
