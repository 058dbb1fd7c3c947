"""Checkpoint names: found in the local Hugging Face cache first, without touching the network.

A name such as ``llava-hf/llava-1.5-7b-hf`` is looked up in the hub cache directory
(``HF_HUB_CACHE``, else huggingface_hub's default) with no network call. Found: the snapshot
folder is loaded like any local directory. Not found: with ``HF_HUB_OFFLINE`` set (or
``local_files_only``) that is a clear error naming the folder looked in; otherwise the user is
told it is about to be downloaded, and transformers downloads it.
"""

from __future__ import annotations

import os
import sys

from .errors import ModelLoadError


def hub_cache_dir() -> str:
    """The folder the Hugging Face cache lives in, as huggingface_hub resolves it now."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE


def cached_snapshot(name: str, cache_dir: str | None = None) -> str | None:
    """The local snapshot folder of a cached checkpoint ``name`` (its ``main`` revision), or None."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, cache_dir=cache_dir or hub_cache_dir(), local_files_only=True)
    except Exception:  # not cached, or not a valid repo id: the caller decides what to say
        return None


def resolve_checkpoint(name: str, local_only: bool) -> tuple[str, bool]:
    """(what to hand ``from_pretrained``, whether it must stay offline) for a checkpoint name."""
    cache = hub_cache_dir()
    snapshot = cached_snapshot(name, cache)
    if snapshot is not None:
        return snapshot, True
    if local_only:
        raise ModelLoadError(
            f"Checkpoint {name!r} is not a local directory and is not in the local Hugging Face cache "
            f"({cache}; HF_HUB_OFFLINE is set, so nothing is downloaded). Pass a checkpoint directory, or "
            f"download it first (huggingface-cli download {name}) on a machine with network access."
        )
    print(f"vlmspec: {name!r} is not in the local Hugging Face cache ({cache}); downloading it from the "
          "Hugging Face Hub (set HF_HUB_OFFLINE=1 to stay offline).", file=sys.stderr)
    return name, False
