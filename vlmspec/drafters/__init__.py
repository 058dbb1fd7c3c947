"""Drafters: everything that proposes tokens for the target to verify."""

from ..core.drafter import Draft, DraftContext, Drafter, StepFeedback
from .eagle import EagleConfig, EagleDrafter
from .model import ModelDrafter
from .msd import MSDConfig, MSDDrafter
from .prompt_lookup import NoDrafter, PromptLookupDrafter
from .registry import build_drafter, register_drafter
from .specvlm import SpecVLMConfig, SpecVLMDrafter
from .vispec import ViSpecConfig, ViSpecDrafter

__all__ = [
    "Draft",
    "DraftContext",
    "EagleConfig",
    "EagleDrafter",
    "Drafter",
    "StepFeedback",
    "ModelDrafter",
    "NoDrafter",
    "PromptLookupDrafter",
    "build_drafter",
    "register_drafter",
    "MSDConfig",
    "MSDDrafter",
    "SpecVLMConfig",
    "SpecVLMDrafter",
    "ViSpecConfig",
    "ViSpecDrafter",
]
