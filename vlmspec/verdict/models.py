"""The models of one setup: `ModelPool` loads the experts and the verdict model on demand
under a memory mode, and `generate` runs one greedy generation, counting its cost.

Errors from a model are re-raised with which model and which stage in front (`named_errors`).
"""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch

from ..errors import InputError, ModelLoadError, PromptError, VlmspecError
from .config import ModelSpec, VerdictConfig, is_missing_local_path, is_pipeline
from .result import StageCost


@contextmanager
def named_errors(where: str, hint: str = "") -> Iterator[None]:
    """Re-raise vlmspec errors as the same type with `where` in front (and `hint` after
    prompt errors, e.g. a prompt too long for the model)."""
    try:
        yield
    except VlmspecError as exc:
        extra = f" {hint}" if hint and isinstance(exc, PromptError) else ""
        raise type(exc)(f"{where}: {exc}{extra}") from exc


def _default_load_pipeline(spec: ModelSpec, *, drafter: str | None, device: Any, dtype: Any):
    """A vlmspec pipeline for `spec`; an already loaded pipeline is used as it is (its own drafter)."""
    if is_pipeline(spec):
        return spec
    import vlmspec

    return vlmspec.load(target=spec, drafter=drafter, device=device, dtype=dtype)


class ModelPool:
    """Loads the experts and the verdict model on demand, under a memory mode.

    Index 0..k-1 are the experts, index k the verdict model. "resident": a model stays
    loaded once used. "sequential": at most one model is held; asking for another frees it
    first. Load failures raise ModelLoadError naming the model; a local path that does not
    exist is reported at construction, before any model runs.
    """

    def __init__(self, config: VerdictConfig, load_pipeline: Callable | None = None) -> None:
        self.config = config
        self.specs = [*config.experts, config.verdict]
        self.names = [*config.expert_names, config.verdict_name]
        self.drafters = [config.expert_drafter] * len(config.experts) + [config.verdict_drafter]
        self._load_pipeline = load_pipeline or _default_load_pipeline
        self._loaded: dict[int, Any] = {}
        for index, spec in enumerate(self.specs):
            if is_missing_local_path(spec):
                raise ModelLoadError(
                    f"Could not load {self.label(index)} for Speculative Verdict: no such "
                    "directory. Pass the directory of a LLaVA-style checkpoint, or remove it from the list."
                )

    @property
    def verdict_index(self) -> int:
        return len(self.specs) - 1

    @property
    def loaded_indices(self) -> list[int]:
        return sorted(self._loaded)

    def label(self, index: int) -> str:
        """How errors name model `index`: "expert 1 'path'" or "verdict model 'path'"."""
        role = "verdict model" if index == self.verdict_index else f"expert {index}"
        return f"{role} {self.names[index]!r}"

    def get(self, index: int, cost: StageCost):
        """The loaded pipeline for model `index`; loads (and in sequential mode frees) as needed."""
        if index in self._loaded:
            return self._loaded[index]
        twin = self._twin(index)
        if twin is not None:  # the same checkpoint with the same drafter is already loaded: share it
            self._loaded[index] = self._loaded[twin]
            return self._loaded[index]
        if self.config.memory == "sequential":
            self.release()
        started = time.perf_counter()
        label = self.label(index)
        try:
            pipe = self._load_pipeline(
                self.specs[index], drafter=self.drafters[index], device=self.config.device, dtype=self.config.dtype
            )
        except InputError as exc:  # e.g. a bad drafter spec: the user's option, not the checkpoint
            raise type(exc)(f"{label}: {exc}") from exc
        except ModelLoadError as exc:  # vlmspec's own message already says what to fix
            raise ModelLoadError(f"Could not load {label} for Speculative Verdict: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - any other failure becomes one clear error naming the model
            raise ModelLoadError(
                f"Could not load {label} for Speculative Verdict "
                f"({exc.__class__.__name__}: {exc}). Check that the path is a LLaVA-style checkpoint "
                "vlmspec can load (vlmspec.load(target=PATH)), or remove it from the list."
            ) from exc
        cost.loads += 1
        cost.load_seconds += time.perf_counter() - started
        self._loaded[index] = pipe
        return pipe

    def _twin(self, index: int) -> int | None:
        """A loaded model index with the same checkpoint path / name and drafter as `index`."""
        spec = self.specs[index]
        if not isinstance(spec, str):
            return None
        for other, pipe in self._loaded.items():
            if self.specs[other] == spec and self.drafters[other] == self.drafters[index]:
                return other
        return None

    def release(self) -> None:
        """Free every loaded model."""
        if not self._loaded:
            return
        self._loaded.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def generate(pipe, image, prompt: str, max_new_tokens: int, where: str, hint: str = "") -> tuple[str, int, int]:
    """Greedy generation with a vlmspec pipeline: (text, new tokens, target forwards).

    Errors name `where` (which model, which stage); `hint` is added to prompt errors.
    """
    with named_errors(where, hint):
        result = pipe.generate(image, prompt, max_new_tokens=max_new_tokens, temperature=0.0)
    metrics = result.metrics
    forwards = int(getattr(metrics, "target_forwards", 0) or 0)
    tokens = int(getattr(metrics, "new_tokens", len(result.token_ids)) or 0)
    return result.text, tokens, forwards
