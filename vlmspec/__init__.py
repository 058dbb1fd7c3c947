"""vlmspec: lossless speculative decoding for LLaVA-style vision-language models.

    import vlmspec
    result = vlmspec.generate("photo.png", "Describe the image in detail.")
    print(result.text, result.metrics.tau)
"""

from .api import Pipeline, Result, TextStream, generate, load
from .core.drafter import Draft, DraftContext, Drafter, StepFeedback
from .core.metrics import Metrics
from .core.sampling import SamplingParams
from .core.schedule import ScheduleConfig
from .drafters import ModelDrafter, NoDrafter, PromptLookupDrafter, build_drafter, register_drafter
from .errors import (
    DrafterMismatchError,
    ImageError,
    InputError,
    ModelLoadError,
    DraftDepthWarning,
    NumericalError,
    UnsupportedError,
    PromptError,
    VlmspecError,
)
from .target import Target, TargetConfig
from .verdict import verdict

__version__ = "0.1.0"

__all__ = [
    "Draft",
    "DraftContext",
    "Drafter",
    "DrafterMismatchError",
    "ImageError",
    "InputError",
    "Metrics",
    "ModelDrafter",
    "ModelLoadError",
    "NoDrafter",
    "DraftDepthWarning",
    "NumericalError",
    "UnsupportedError",
    "Pipeline",
    "PromptError",
    "PromptLookupDrafter",
    "Result",
    "SamplingParams",
    "ScheduleConfig",
    "StepFeedback",
    "Target",
    "TargetConfig",
    "TextStream",
    "VlmspecError",
    "build_drafter",
    "generate",
    "load",
    "register_drafter",
    "verdict",
]
