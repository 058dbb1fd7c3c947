"""MSD drafter: decoupled text and visual tokens.

On top of the EagleDrafter: text positions use the EAGLE input fc([embed(t_{i+1}) ; h_i]);
visual positions feed the image's projected visual embeddings (the projector outputs,
`TargetState.image_features`) straight into the decoder layer - no fc, no target hidden
state. Every image token is kept (the drafter's cache holds exactly the target's
positions), for any number of images and any token count per image (LLaVA's fixed count,
LLaVA-NeXT's count from image_sizes; nothing is hard-coded). Spec string: `msd:PATH`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .eagle import EagleConfig
from .image_tokens import Span
from .vision_common import VisionEagleDrafter, vision_spec_factory


@dataclass(frozen=True)
class MSDConfig(EagleConfig):
    """EagleConfig fields (how it drafts). MSD's visual path has nothing to configure: every
    image token enters the layer as its projected embedding."""


class MSDDrafter(VisionEagleDrafter):
    """EagleDrafter whose image positions take the projected visual embeddings directly."""

    drafter_kind = "msd"
    config_class = MSDConfig

    def _image_slots(self, features, spans: list[Span], hidden, prompt_length, train_options=None):
        return list(features), None  # per image [n_j, H]: one drafter entry per image token


msd_from_spec = vision_spec_factory(MSDDrafter)
