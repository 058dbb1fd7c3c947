"""Reading weight files safely: safetensors only, and a damaged file is a clear `ModelLoadError`
(what is wrong and how to get a good copy), never a raw safetensors or torch traceback."""

from __future__ import annotations

import os

import torch

from .errors import ModelLoadError


def damaged_weights_message(path, exc: Exception) -> str:
    return (f"{path} is not a readable safetensors file ({exc}); it is truncated or corrupt "
            "(an interrupted copy or download?). Copy, download or save it again.")


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors file; a truncated or garbage file raises ModelLoadError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(damaged_weights_message(path, exc)) from None


def load_weights_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source) -> tuple[list, list]:
    """``module.load_state_dict(tensors, strict=False)``; tensors of the wrong shape (weights
    saved from another configuration) raise ModelLoadError naming the first mismatches."""
    own = module.state_dict()
    wrong = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
             for k, v in tensors.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise ModelLoadError(
            f"The weights in {source} do not fit this model's configuration ({'; '.join(wrong[:3])}"
            f"{'; ...' if len(wrong) > 3 else ''}); the config and the weights come from different saves. "
            "Save the drafter again (config and weights together)."
        )
    return module.load_state_dict(tensors, strict=False)
