"""Silence transformers' own progress bars and notices while vlmspec loads or builds models.

transformers prints a "Loading weights" bar on every `from_pretrained`, a de-quantising
bar for GGUF files and a notice when embeddings are resized. Users of vlmspec did not ask
for them (they show even with `--json`); vlmspec's own progress stays where work is long.
Errors are still raised and logged as errors.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    gguf_module, gguf_bar = _silence_gguf_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars_were_on:
            hf_logging.enable_progress_bar()
        if gguf_module is not None:
            gguf_module.tqdm = gguf_bar


def _silence_gguf_bar():
    """transformers' GGUF reader draws its bar with plain ``tqdm`` (not its logging switch): disable
    that one bar for the duration. Returns (module, original) to restore, or (None, None)."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_module
    except ImportError:  # no gguf support installed: no bar to silence
        return None, None
    original = getattr(gguf_module, "tqdm", None)
    if original is None:
        return None, None
    gguf_module.tqdm = functools.partial(original, disable=True)
    return gguf_module, original
