"""Synthetic grounded data for vlmspec (see :mod:`vlmspec.data.synthetic` for the API)."""

from vlmspec.data.synthetic import (
    DESCRIBE_PROMPT,
    QTYPES,
    SPLITS,
    Scene,
    build_dataset,
    generate_scene,
    iter_scenes,
    split_seed,
)

__all__ = [
    "DESCRIBE_PROMPT", "QTYPES", "SPLITS", "Scene", "build_dataset", "generate_scene",
    "iter_scenes", "split_seed",
]
