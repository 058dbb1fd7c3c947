"""What defines one Speculative Verdict setup: `VerdictConfig`, its JSON form, and the
helpers that check and name a model spec (a path, a (model, processor) pair or a pipeline)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError

MEMORY_MODES = ("resident", "sequential")

DEFAULT_ANSWER_INSTRUCTION = "Answer the question using a single word or phrase."
DEFAULT_REASONING_INSTRUCTION = (
    "Think step by step about what the image shows, then give the final answer "
    "in the form \\boxed{answer}."
)
DEFAULT_VERDICT_INSTRUCTION = (
    "Several assistants reasoned about this image and question; their reasoning may "
    "contain mistakes. Check each reasoning path against the image, decide which answer "
    "is correct, and give the final answer in the form \\boxed{answer}."
)

# An expert or verdict model: a checkpoint path / name, a `(hf_model, hf_processor)` pair,
# or an already loaded vlmspec pipeline (anything with `.target` and `.generate`).
ModelSpec = Any


@dataclass(frozen=True)
class VerdictConfig:
    """Everything that defines one Speculative Verdict setup; validated at construction.

    JSON form (`VerdictConfig.from_file`), every key but `experts` and `verdict` optional:
        {"experts": ["ckpt/a", "ckpt/b", "ckpt/c"], "verdict": "ckpt/big", "m": 3,
         "memory": "sequential", "max_answer_tokens": 32, "max_reasoning_tokens": 256,
         "max_verdict_tokens": 256, "verdict_drafter": "prompt-lookup"}
    Relative paths in a file are resolved against the file's folder when they exist there.
    """

    experts: tuple = ()
    verdict: ModelSpec = None
    m: int = 3
    memory: str = "resident"
    max_answer_tokens: int = 32
    max_reasoning_tokens: int = 256
    max_verdict_tokens: int = 256
    # Drafter specs (as for vlmspec.load) for the experts' and the verdict's generations.
    # Speculative decoding is lossless, so the drafter changes speed, never the text; "none" disables.
    expert_drafter: str | None = "prompt-lookup"
    verdict_drafter: str | None = "prompt-lookup"
    device: str | None = None
    dtype: Any = None
    answer_instruction: str = DEFAULT_ANSWER_INSTRUCTION
    reasoning_instruction: str = DEFAULT_REASONING_INSTRUCTION
    verdict_instruction: str = DEFAULT_VERDICT_INSTRUCTION

    def __post_init__(self) -> None:
        experts = self.experts
        if isinstance(experts, (str, os.PathLike)) or not isinstance(experts, Sequence):
            raise InputError(
                f"experts must be a list of models (paths or loaded models), got {type(experts).__name__}; "
                "pass e.g. experts=['path/a', 'path/b', 'path/c']."
            )
        object.__setattr__(self, "experts", tuple(experts))
        if not self.experts:
            raise InputError("No experts given; pass at least m expert models (experts=[...]).")
        for index, spec in enumerate(self.experts):
            _check_spec(spec, f"experts[{index}]")
        if self.verdict is None:
            raise InputError("No verdict model given; pass verdict=PATH (a LLaVA-style checkpoint).")
        _check_spec(self.verdict, "verdict")
        if isinstance(self.m, bool) or not isinstance(self.m, int) or self.m < 1:
            raise InputError(f"m must be a positive integer (the number of experts kept), got {self.m!r}.")
        if len(self.experts) < self.m:
            raise InputError(
                f"Speculative Verdict keeps m={self.m} experts but only {len(self.experts)} were given; "
                f"pass at least {self.m} experts or lower m to {len(self.experts)}."
            )
        if self.memory not in MEMORY_MODES:
            raise InputError(f"memory must be one of {MEMORY_MODES}, got {self.memory!r}.")
        for name in ("max_answer_tokens", "max_reasoning_tokens", "max_verdict_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("answer_instruction", "reasoning_instruction", "verdict_instruction"):
            if not isinstance(getattr(self, name), str):
                raise InputError(f"{name} must be a string.")

    @property
    def expert_names(self) -> list[str]:
        return [spec_name(spec, f"expert {i}") for i, spec in enumerate(self.experts)]

    @property
    def verdict_name(self) -> str:
        return spec_name(self.verdict, "verdict")

    @classmethod
    def from_dict(cls, data: dict, *, base_dir: str | Path | None = None) -> "VerdictConfig":
        """Build from a plain dict (the JSON form); unknown keys are an error."""
        if not isinstance(data, dict):
            raise InputError(f"A verdict config must be a JSON object, got {type(data).__name__}.")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise InputError(f"Unknown verdict config keys {unknown}; known keys are {sorted(cls.__dataclass_fields__)}.")
        for key in ("experts", "verdict"):
            if key not in data:
                raise InputError(f"The verdict config is missing {key!r}.")
        values = dict(data)
        if base_dir is not None:
            values["experts"] = [_resolve_relative(p, base_dir) for p in values["experts"]]
            values["verdict"] = _resolve_relative(values["verdict"], base_dir)
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> "VerdictConfig":
        """Read a JSON verdict config (see the class docstring for the keys)."""
        return cls.from_dict(read_config_file(path), base_dir=Path(path).parent)

    def to_dict(self) -> dict:
        """JSON-ready dict (models that were passed as objects appear by name)."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["experts"] = self.expert_names
        data["verdict"] = self.verdict_name
        data["dtype"] = None if self.dtype is None else str(self.dtype)
        return data


def read_config_file(path: str | Path) -> dict:
    """The JSON object in a verdict config file, with a clear error if missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Verdict config file not found: {path}; pass the path of a JSON file.")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"Verdict config {path} is not valid JSON ({exc}); fix the file.") from None
    if not isinstance(data, dict):
        raise InputError(f"Verdict config {path} must be a JSON object, got {type(data).__name__}.")
    return data


def as_config(config: "VerdictConfig | dict | str | Path") -> VerdictConfig:
    """A VerdictConfig from itself, its dict form or a JSON file path."""
    if isinstance(config, VerdictConfig):
        return config
    if isinstance(config, dict):
        return VerdictConfig.from_dict(config)
    if isinstance(config, (str, os.PathLike)):
        return VerdictConfig.from_file(config)
    raise InputError(f"Expected a VerdictConfig, its dict form or a JSON file path, got {type(config).__name__}.")


def is_pipeline(spec: ModelSpec) -> bool:
    """True for an already loaded vlmspec pipeline (used as it is)."""
    return hasattr(spec, "target") and hasattr(spec, "generate")


def spec_name(spec: ModelSpec, fallback: str) -> str:
    """A model's display name: its path, else the checkpoint it was loaded from, else `fallback`."""
    if isinstance(spec, (str, os.PathLike)):
        return str(spec)
    model = spec[0] if isinstance(spec, tuple) else getattr(getattr(spec, "target", None), "model", None)
    path = getattr(model, "name_or_path", "") or getattr(getattr(model, "config", None), "_name_or_path", "")
    return str(path) if path else f"{fallback} ({type(model).__name__})"


def is_missing_local_path(spec: ModelSpec) -> bool:
    """True for a path written as local (absolute, ./, ../, ~) that does not exist; hub names pass."""
    if not isinstance(spec, (str, os.PathLike)):
        return False
    text = os.fspath(spec)
    local = os.path.isabs(text) or text.startswith((".", "~"))
    return local and not os.path.exists(os.path.expanduser(text))


def _check_spec(spec: ModelSpec, label: str) -> None:
    if isinstance(spec, (str, os.PathLike)):
        if not str(spec).strip():
            raise InputError(f"{label} is an empty path; pass a checkpoint path.")
        return
    if (isinstance(spec, tuple) and len(spec) == 2) or is_pipeline(spec):
        return
    raise InputError(
        f"{label} must be a checkpoint path, a (model, processor) pair or a loaded vlmspec "
        f"pipeline, got {type(spec).__name__}."
    )


def _resolve_relative(spec: Any, base_dir: str | Path) -> Any:
    if isinstance(spec, str) and "@" in spec and not os.path.exists(spec):  # "vlmspec-default@weights.safetensors"
        name, weights = spec.split("@", 1)
        return f"{name}@{_resolve_relative(weights, base_dir)}"
    if isinstance(spec, str) and not os.path.isabs(spec):
        candidate = Path(base_dir) / spec
        if candidate.exists():
            return str(candidate)
    return spec
