"""What an export reads: a saved vlmspec drafter folder and its target's language-model config.

`read_drafter(dir)` parses the folder `save_pretrained` wrote (config.json: the drafter kind,
its EagleConfig, the decoder-layer class, the target fingerprint; model.safetensors: the
drafter-only tensors) without loading any target weights. `target_text_config(target)` finds
the target's text config (num heads, head_dim, rope, norm eps: what an engine config needs and
the drafter folder does not hold) from a checkpoint folder, a cached Hub name, the default
model, a loaded `Target` or a transformers config; `check_target(drafter, config)` compares it
with the fingerprint the drafter was saved with.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..drafters.eagle import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME
from ..drafters.eagle_config import EagleConfig
from ..errors import DrafterMismatchError, ModelLoadError
from ..weights import read_safetensors


@dataclass(frozen=True)
class SavedDrafter:
    """A vlmspec drafter folder as saved: nothing is bound to a target."""

    path: Path
    kind: str  # "eagle", "vispec", "msd", "specvlm", ...
    meta: dict  # config.json as written by save_pretrained
    tensors: dict[str, torch.Tensor]  # model.safetensors

    @property
    def config(self) -> EagleConfig:
        """The drafter's EagleConfig (plain `eagle` drafters; vision kinds have their own class)."""
        return EagleConfig.from_dict(self.meta["eagle"])

    @property
    def decoder_layer(self) -> str | None:
        return self.meta.get("decoder_layer")

    @property
    def fingerprint(self) -> dict:
        return self.meta.get("target_fingerprint") or {}

    @property
    def draft_vocab(self) -> torch.Tensor | None:
        """[N] target ids of the trimmed draft vocabulary (draft id j -> target id draft_vocab[j]), or None."""
        ids = self.tensors.get("draft_vocab")
        return None if ids is None else ids.long()

    @property
    def dtype(self) -> torch.dtype:
        return self.tensors["fc.weight"].dtype


def read_drafter(directory: str | os.PathLike) -> SavedDrafter:
    """Parse a saved vlmspec drafter folder; a missing, damaged or foreign folder is a ModelLoadError."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not directory.is_dir():
        raise ModelLoadError(f"{directory} is not a directory; pass the folder of a saved vlmspec drafter "
                             f"(it holds {CONFIG_NAME} and {WEIGHTS_NAME}).")
    if not config_path.is_file() or not weights_path.is_file():
        raise ModelLoadError(f"{directory} is not a saved vlmspec drafter (needs {CONFIG_NAME} and {WEIGHTS_NAME}); "
                             "pass the drafter folder `vlmspec train` wrote (its output_dir's drafter/).")
    try:
        meta = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"Could not read {config_path}: {exc}.") from None
    kind = meta.get("vlmspec_drafter") if isinstance(meta, dict) else None
    if not isinstance(kind, str):
        raise ModelLoadError(f"{config_path} does not describe a vlmspec drafter (no \"vlmspec_drafter\" field); "
                             "is this an engine checkpoint or another model's config?")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(f"{directory} uses drafter format {meta.get('format_version')!r}; this vlmspec "
                             f"reads {FORMAT_VERSION}.")
    if not isinstance(meta.get("eagle"), dict):
        raise ModelLoadError(f"{config_path} has no \"eagle\" section (the drafter's configuration); the file is "
                             "incomplete. Save the drafter again with save_pretrained(dir).")
    tensors = read_safetensors(weights_path)
    if "fc.weight" not in tensors:
        raise ModelLoadError(f"{weights_path} holds no fc.weight; it is not an EAGLE-family vlmspec drafter's weights.")
    return SavedDrafter(directory, kind, meta, tensors)


# ------------------------------------------------------------------ the target's config
def _config_source(name: str) -> tuple[str, bool]:
    """(what AutoConfig.from_pretrained reads, local_files_only) for a target name or folder."""
    from ..models.default import DEFAULT_MODEL, default_model_dir

    if os.path.isdir(name):
        return name, True
    if name == DEFAULT_MODEL:
        return str(default_model_dir()), True
    if name.startswith(DEFAULT_MODEL + "@"):
        return str(default_model_dir(weights=os.path.expanduser(name.split("@", 1)[1]))), True
    if Path(name).exists() or name.startswith((".", "/", "~")):
        raise ModelLoadError(f"Target path {name} is not a directory; pass the target's checkpoint folder or name.")
    from ..hub import resolve_checkpoint

    local_only = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    return resolve_checkpoint(name, local_only)


def target_text_config(target: Any = None, trust_remote_code: bool = False) -> tuple[Any, str | None]:
    """(the target language model's transformers config, the whole model's model_type). `target`:
    None (the default model), a checkpoint folder or name, a vlmspec Target, a transformers model,
    or a PretrainedConfig."""
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(target, PretrainedConfig):
        config = target
    elif hasattr(target, "model") and hasattr(getattr(target, "model"), "config"):  # a vlmspec Target
        config = target.model.config
    elif hasattr(target, "config") and isinstance(getattr(target, "config"), PretrainedConfig):
        config = target.config
    else:
        from ..models.default import DEFAULT_MODEL

        name = DEFAULT_MODEL if target is None else os.fspath(target)
        source, local_only = _config_source(name)
        try:
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code,
                                                local_files_only=local_only)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"Could not read the target config of {name!r}: {exc}. Pass --target, the "
                                 "checkpoint folder the drafter was trained against.") from None
    return config.get_text_config(), getattr(config, "model_type", None)


def check_target(drafter: SavedDrafter, text_config, model_type: str | None) -> None:
    """The drafter was saved against a target of this shape (its weights are checked when vlmspec
    loads the drafter; an export reads only the config)."""
    saved = drafter.fingerprint
    actual = {
        "model_type": model_type,  # the whole model's (e.g. "llava"), as the fingerprint records it
        "hidden_size": int(text_config.hidden_size),
        "num_layers": int(text_config.num_hidden_layers),
        "vocab_size": int(text_config.vocab_size),
    }
    differences = [f"{k}: drafter {saved.get(k)!r} vs target {v!r}" for k, v in actual.items()
                   if saved.get(k) is not None and saved.get(k) != v]
    if differences:
        raise DrafterMismatchError(
            f"The drafter in {drafter.path} was trained for another target ({'; '.join(differences)}); pass "
            "--target, the checkpoint it was trained against."
        )


__all__ = ["SavedDrafter", "check_target", "read_drafter", "target_text_config"]
