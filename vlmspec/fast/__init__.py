"""CPU speed-ups for the target/drafter forwards: pre-packed linear weights (cpu_linear.py),
kept only where a measurement on the target says they pay (decide.py)."""

from .decide import DecideConfig, TargetFastReport, accelerate_target, should_keep
from .drafter import DRAFTER_FAST_CONFIG, accelerate_drafter
from .cpu_linear import (
    BACKENDS,
    MODULE_GROUPS,
    FastConfig,
    FastReport,
    PackedLinear,
    accelerate_cpu,
    available_backends,
    fast_status,
    is_accelerated,
    restore,
)

__all__ = [
    "DecideConfig",
    "TargetFastReport",
    "accelerate_target",
    "DRAFTER_FAST_CONFIG",
    "accelerate_drafter",
    "should_keep",
    "BACKENDS",
    "MODULE_GROUPS",
    "FastConfig",
    "FastReport",
    "PackedLinear",
    "accelerate_cpu",
    "available_backends",
    "fast_status",
    "is_accelerated",
    "restore",
]
