"""Drafters: everything that proposes tokens for the target to verify."""

from ..core.drafter import Draft, DraftContext, Drafter, StepFeedback
from .eagle import EagleConfig, EagleDrafter
from .model import ModelDrafter
from .prompt_lookup import NoDrafter, PromptLookupDrafter
from .registry import build_drafter, register_drafter

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
]
