"""How the trainer drives each drafter kind: the `DrafterTrainingAdapter` protocol.

The trainer owns everything kind-independent (data, the frozen target's forward, input
noise, training-time-test unrolling, losses, accelerate, checkpoints). An adapter owns the
drafter: which parameters train, and one teacher-forced draft step.

Shapes (B batch, L sequence length, T = L - 1 drafter positions, H target hidden size,
V target vocabulary, V' draft vocabulary). Drafter position i holds the target state of
sequence position i and the token at i + 1 (EagleDrafter.forward_train's convention).

    adapter.kind: str
    adapter.drafter: nn.Module                 # the drafter itself (trained in float32)
    adapter.trainable_parameters() -> list[nn.Parameter]
    adapter.compute(batch: TrainBatch, teacher: TeacherOutputs,
                    input_features: Tensor[B, T, H], context: StepContext) -> dict[str, Tensor]
        must return   "draft_hidden" [B, T, H]  (prediction of the target state at i + 1)
                      "draft_logits" [B, T, V'] (prediction of the token at i + 2)
        may return    "aux_loss/<name>": scalar, already weighted, added to the loss
                      "metric/<name>":   scalar, logged only (e.g. the gate's choice share); NaN = not
                                         measured in this micro-batch (left out of the step's mean)
                      "loss_mask":       [B, T] bool, positions the drafter has an output for (the
                                         losses use loss_mask & the response positions)
    adapter.teacher_logits(logits: Tensor[..., V]) -> Tensor[..., V']   (draft-vocab columns)
    adapter.save_pretrained(directory) -> Path        (the drafter's own on-disk format)
    adapter.inference_drafter() -> Drafter            (in the target's dtype, for tau evaluation)

`input_features` are the target's states (plus noise) on the first step and, on
training-time-test steps, the drafter's own previous predictions shifted one position
right: a drafter must use them wherever EAGLE uses h_i. Vision-aware drafters also read
`teacher.image_features` / `teacher.image_spans`, the prompt lengths `batch.response_starts`
and `context.gumbel_temperature` / `context.generator` (see VisionDrafterAdapter).
"""

from __future__ import annotations

import importlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import nn

from ..errors import InputError, ModelLoadError


@dataclass
class TeacherOutputs:
    """The frozen target's forward over a batch (no grad)."""

    hidden: torch.Tensor  # [B, L, H] last-layer states after the final norm, float32
    logits: torch.Tensor  # [B, L, V] next-token logits
    image_features: list  # per sample: list of [n_image_tokens, H] projected features (the vision tokens)
    image_spans: list  # per sample: list of (start, end) sequence positions of each image's tokens
    features: torch.Tensor | None = None  # [B, L, n * H] the drafter's feature_layers (EAGLE-3), float32; None = `hidden`


@dataclass
class StepContext:
    """Where training is; randomness for the step comes from `generator` (CPU, seeded per micro-step)."""

    optimizer_step: int
    total_steps: int
    ttt_step: int  # 0 = the teacher-forced step; k > 0 = k-th step fed the drafter's own features
    gumbel_temperature: float
    generator: torch.Generator


@runtime_checkable
class DrafterTrainingAdapter(Protocol):
    kind: str
    drafter: nn.Module

    def trainable_parameters(self) -> list: ...

    def compute(self, batch, teacher: TeacherOutputs, input_features: torch.Tensor, context: StepContext) -> dict: ...

    def teacher_logits(self, logits: torch.Tensor) -> torch.Tensor: ...

    def save_pretrained(self, directory: str | os.PathLike) -> Path: ...

    def inference_drafter(self): ...


def _load_or_create(drafter_cls, config_cls, target, drafter_config: dict, *, init_from, draft_vocab,
                    init_layer_from_target: bool, seed: int, warm_start_from=None):
    """A drafter of an EagleDrafter class: loaded from ``init_from`` (``drafter_config`` may then
    only change how it drafts), warm-started from ``warm_start_from`` (a drafter of another
    fine-tune of the same base model) or freshly built for ``target``."""
    if init_from or warm_start_from:
        config = config_cls.from_dict(drafter_config) if drafter_config else None
        return drafter_cls.from_pretrained(init_from or warm_start_from, target, config,
                                           warm_start=bool(warm_start_from))
    return drafter_cls.from_target(target, config_cls.from_dict(drafter_config), draft_vocab=draft_vocab,
                                   init_layer_from_target=init_layer_from_target, seed=seed)


class EagleAdapter:
    """EAGLE-1/2 (and SpecVLM's EagleVLM with drafter_config input_norm=true)."""

    kind = "eagle"

    def __init__(self, drafter) -> None:
        self.drafter = drafter

    @classmethod
    def build(cls, target, drafter_config: dict, *, init_from=None, draft_vocab=None, init_layer_from_target=False, seed=0,
              warm_start_from=None):
        from ..drafters.eagle import EagleConfig, EagleDrafter

        return cls(_load_or_create(EagleDrafter, EagleConfig, target, drafter_config, init_from=init_from,
                                   draft_vocab=draft_vocab, init_layer_from_target=init_layer_from_target, seed=seed,
                                   warm_start_from=warm_start_from))

    def trainable_parameters(self) -> list:
        return [p for p in self.drafter.parameters() if p.requires_grad]

    def compute(self, batch, teacher: TeacherOutputs, input_features: torch.Tensor, context: StepContext) -> dict:
        next_ids = batch.input_ids[:, 1:]  # [B, T] t_{i+1}
        mask = batch.attention_mask[:, :-1]  # [B, T] position i is real
        draft_hidden, draft_logits = self.drafter.forward_train(next_ids, input_features, mask)
        return {"draft_hidden": draft_hidden, "draft_logits": draft_logits}

    def teacher_logits(self, logits: torch.Tensor) -> torch.Tensor:
        vocab = getattr(self.drafter, "draft_vocab", None)
        return logits if vocab is None else logits[..., vocab]

    def save_pretrained(self, directory) -> Path:
        return self.drafter.save_pretrained(directory)

    def inference_drafter(self):
        return _in_target_dtype(self.drafter)


def _in_target_dtype(drafter):
    """The drafter itself when its weights already have the target's dtype, else a reloaded copy."""
    target = drafter.target
    target_dtype = next(target.model.parameters()).dtype
    if all(p.dtype == target_dtype for p in drafter.parameters()):
        return drafter
    with tempfile.TemporaryDirectory(prefix="vlmspec-eval-") as folder:
        path = Path(folder) / "drafter"
        drafter.save_pretrained(path)
        return type(drafter).from_pretrained(path, target)


# Vision-aware drafters: module, drafter class, config class.
VISION_KINDS = {
    "vispec": ("vlmspec.drafters.vispec", "ViSpecDrafter", "ViSpecConfig"),
    "msd": ("vlmspec.drafters.msd", "MSDDrafter", "MSDConfig"),
    "specvlm": ("vlmspec.drafters.specvlm", "SpecVLMDrafter", "SpecVLMConfig"),
}


class VisionDrafterAdapter(EagleAdapter):
    """ViSpec / MSD / SpecVLM drafters (vlmspec.drafters.vispec / msd / specvlm): VisionEagleDrafter
    subclasses whose image positions hold their own "slots" instead of the EAGLE input.

    What their classes provide (module and class names in VISION_KINDS):

        Config.from_dict(d: dict) -> Config
        Drafter.from_target(target, config, *, draft_vocab=None, init_layer_from_target=False, seed=0)
        Drafter.from_pretrained(directory, target, config=None)      drafter.save_pretrained(directory)
        drafter.forward_train(
            input_embeds_ids: LongTensor[B, T],    # ids[:, 1:], as EagleDrafter
            target_hidden: Tensor[B, T, H],        # the input features (noised / own predictions)
            attention_mask: Tensor[B, T],          # 1 = real position
            *,
            image_features: list[list[Tensor[n_k, H]]],  # per sample, per image: projector outputs
            image_spans: list[list[tuple[int, int]]],    # per sample, per image: [start, end) positions
                                                         # in the sequence (= drafter positions)
            prompt_lengths: list[int],                   # per sample P (TrainBatch.response_starts): the
                                                         # question (SpecVLM's gate) is the prompt's text and
                                                         # position P - 1 always gets an output, as at inference
            gate_temperature: float | None = None,       # SpecVLM: Gumbel-softmax temperature (annealed
                                                         # loss.gumbel_temperature -> gumbel_temperature_end)
            generator: torch.Generator | None = None,    # CPU generator for the Gumbel noise
        ) -> (draft_hidden [B, T, H], draft_logits [B, T, V'])
             or (draft_hidden, draft_logits, extras: dict[str, Tensor])
        where extras keys are "aux_loss/<name>" (weighted scalars added to the loss) or
        "metric/<name>" (logged, e.g. SpecVLM's "metric/gate/<operator>" share of samples).
        A drafter that sets `last_train_details.output_mask` [B, T] (positions it has an entry
        for; dropped image positions hold zeros) restricts the losses to those positions.

    Every metric the drafter kind can report is returned on every step (NaN when the batch
    has no image: the trainer leaves it out of that step's mean), so all processes of a
    distributed run log the same keys. A module may instead define
    `make_training_adapter(drafter) -> DrafterTrainingAdapter` to take over completely.
    """

    def __init__(self, drafter, kind: str) -> None:
        super().__init__(drafter)
        self.kind = kind

    def metric_names(self) -> list[str]:
        """The "metric/..." keys this drafter reports whenever a batch holds an image."""
        names = []
        if hasattr(self.drafter, "_image_slots"):  # a VisionEagleDrafter
            names.append("metric/visual_token_ratio")
        config = getattr(self.drafter, "config", None)
        operators = getattr(config, "operators", None)
        if operators and getattr(config, "combine", None) in ("top1", "mix"):  # SpecVLM's gate
            names += [f"metric/gate/{op}" for op in operators]
        return names

    def compute(self, batch, teacher: TeacherOutputs, input_features: torch.Tensor, context: StepContext) -> dict:
        prompt_lengths = list(getattr(batch, "response_starts", None) or [])
        if len(prompt_lengths) != batch.input_ids.shape[0]:  # a batch built by hand: P from the loss mask
            prompt_lengths = [int(row.nonzero()[0]) + 1 if row.any() else int(mask.sum())
                              for row, mask in zip(batch.loss_mask, batch.attention_mask)]
        self.drafter.last_train_details = None
        out = self.drafter.forward_train(
            batch.input_ids[:, 1:],
            input_features,
            batch.attention_mask[:, :-1],
            image_features=teacher.image_features,
            image_spans=teacher.image_spans,
            prompt_lengths=prompt_lengths,
            gate_temperature=context.gumbel_temperature,
            generator=context.generator,
        )
        if not isinstance(out, tuple) or len(out) not in (2, 3):
            raise TypeError(
                f"{type(self.drafter).__name__}.forward_train must return (draft_hidden, draft_logits) or "
                "(draft_hidden, draft_logits, extras); see vlmspec.training.adapters.VisionDrafterAdapter."
            )
        result = {"draft_hidden": out[0], "draft_logits": out[1]}
        details = getattr(self.drafter, "last_train_details", None)
        output_mask = getattr(details, "output_mask", None)
        if output_mask is not None:
            result["loss_mask"] = output_mask
        for name in self.metric_names():
            result[name] = torch.tensor(float("nan"), device=out[0].device)
        if len(out) == 3:
            for key, value in dict(out[2]).items():
                if not key.startswith(("aux_loss/", "metric/")):
                    raise KeyError(f"forward_train extras key {key!r} must start with 'aux_loss/' or 'metric/'.")
                result[key] = value
        return result


def _vision_classes(kind: str):
    module_name, drafter_name, config_name = VISION_KINDS[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(
            f"Drafter kind {kind!r} needs {module_name}, which could not be imported ({exc}). Install a vlmspec "
            "version that ships it, or train drafter='eagle'."
        ) from None
    missing = [name for name in (drafter_name, config_name) if not hasattr(module, name)]
    if missing and not hasattr(module, "make_training_adapter"):
        raise ModelLoadError(
            f"{module_name} defines no {', '.join(missing)}; the trainer needs {drafter_name} and {config_name} "
            "(see vlmspec.training.adapters.VisionDrafterAdapter for the interface)."
        )
    return module, getattr(module, drafter_name, None), getattr(module, config_name, None)


def build_adapter(
    kind: str,
    target,
    drafter_config: dict,
    *,
    init_from: str | None = None,
    draft_vocab=None,
    init_layer_from_target: bool = False,
    seed: int = 0,
    warm_start_from: str | None = None,
) -> DrafterTrainingAdapter:
    """The training adapter of a new (or `init_from`-loaded, or `warm_start_from`-initialised)
    drafter of `kind` for `target`."""
    options = dict(init_from=init_from, draft_vocab=draft_vocab, init_layer_from_target=init_layer_from_target, seed=seed)
    if warm_start_from:
        options["warm_start_from"] = warm_start_from
    factory = _ADAPTERS.get(kind)
    if factory is not None:
        return factory(target, drafter_config, **options)
    if kind not in VISION_KINDS:
        known = sorted(set(_ADAPTERS) | set(VISION_KINDS))
        raise InputError(f"Unknown drafter kind {kind!r}; trainable kinds: {', '.join(known)}.")
    module, drafter_cls, config_cls = _vision_classes(kind)
    if drafter_cls is None:
        raise ModelLoadError(f"{module.__name__} has make_training_adapter but no drafter class to build.")
    drafter = _load_or_create(drafter_cls, config_cls, target, drafter_config, init_from=init_from,
                              draft_vocab=draft_vocab, init_layer_from_target=init_layer_from_target, seed=seed,
                              warm_start_from=warm_start_from)
    if hasattr(module, "make_training_adapter"):
        return module.make_training_adapter(drafter)
    return VisionDrafterAdapter(drafter, kind)


AdapterFactory = Callable[..., Any]
_ADAPTERS: dict[str, AdapterFactory] = {"eagle": EagleAdapter.build}


def register_adapter(kind: str, factory: AdapterFactory) -> None:
    """factory(target, drafter_config: dict, *, init_from, draft_vocab, init_layer_from_target, seed
    [, warm_start_from]) -> adapter."""
    _ADAPTERS[kind] = factory
