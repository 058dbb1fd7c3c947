"""Shared fixtures: tiny random LLaVA / LLaVA-NeXT checkpoints saved with save_pretrained.

They are built once per test session into a temp dir and loaded back through the same
code path a user's checkpoint takes.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from vlmspec.testing import TinyLlavaConfig, save_tiny_llava  # noqa: E402

# The test models are tiny: thread start-up costs more than it saves, and on a loaded
# 2-core machine a second thread makes them many times slower.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_llava_path(tmp_path_factory):
    return save_tiny_llava(tmp_path_factory.mktemp("tiny_llava"), TinyLlavaConfig(kind="llava"), seed=0)


@pytest.fixture(scope="session")
def tiny_llava_next_path(tmp_path_factory):
    return save_tiny_llava(tmp_path_factory.mktemp("tiny_llava_next"), TinyLlavaConfig(kind="llava_next"), seed=0)


@pytest.fixture(scope="session")
def other_tiny_llava_path(tmp_path_factory):
    """Same tokenizer and architecture as tiny_llava_path, different random weights."""
    return save_tiny_llava(tmp_path_factory.mktemp("tiny_llava_other"), TinyLlavaConfig(kind="llava"), seed=1)


def random_image(seed: int, width: int | None = None, height: int | None = None) -> Image.Image:
    rng = np.random.RandomState(seed)
    width = width or int(rng.randint(8, 90))
    height = height or int(rng.randint(8, 90))
    return Image.fromarray(rng.randint(0, 256, (height, width, 3), dtype=np.uint8))



def start_serve_process(target_path, *extra_args: str, timeout_s: float = 120.0):
    """`vlmspec serve` on the tiny model in a subprocess on 127.0.0.1; returns (process, base URL)
    once /health answers (bounded wait). The caller terminates the process."""
    from vlmspec.serving.launch import start_server

    proc, base, _ = start_server(["--target", str(target_path), "--fast-cpu", "off", *extra_args],
                                 timeout_s=timeout_s, env={"OMP_NUM_THREADS": "1"})
    return proc, base
