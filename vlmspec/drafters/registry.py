"""Spec strings -> drafters: "auto" (the default), "none", "prompt-lookup[:N]", "model:PATH",
"eagle:PATH", "vispec:PATH", "msd:PATH", "specvlm:PATH", and whatever registers later.

A new drafter kind is one `register_drafter("kind", factory)` line; the loop never changes.
"""

from __future__ import annotations

from typing import Callable

from ..core.drafter import Drafter
from ..errors import InputError
from .eagle import eagle_from_spec
from .msd import msd_from_spec
from .specvlm import specvlm_from_spec
from .vispec import vispec_from_spec
from .model import ModelDrafter
from .prompt_lookup import NoDrafter, PromptLookupConfig, PromptLookupDrafter
from .shipped import shipped_drafter_spec

# factory(argument after the colon or None, target) -> Drafter
DrafterFactory = Callable[[str | None, object], Drafter]
_FACTORIES: dict[str, DrafterFactory] = {}


def register_drafter(kind: str, factory: DrafterFactory) -> None:
    _FACTORIES[kind] = factory


def known_kinds() -> list[str]:
    return sorted(_FACTORIES)


def build_drafter(spec: "str | Drafter | None", target) -> Drafter:
    """Turn a spec string (or a ready Drafter) into a drafter checked against `target`."""
    if isinstance(spec, Drafter):
        drafter = spec
    else:
        kind, _, argument = ("none" if spec is None else str(spec)).partition(":")
        factory = _FACTORIES.get(kind.strip().lower())
        if factory is None:
            raise InputError(
                f"Unknown drafter {spec!r}; use one of: {', '.join(known_kinds())} "
                "(e.g. 'prompt-lookup' or 'model:/path/to/small-model'), or pass a Drafter instance."
            )
        drafter = factory(argument or None, target)
        if not getattr(drafter, "spec", None):
            drafter.spec = "none" if spec is None else str(spec)
    drafter.check_compatible(target)
    _match_target_fast_path(drafter, target)
    return drafter


def _match_target_fast_path(drafter: Drafter, target) -> None:
    """When the target runs the CPU fast path (it was asked for and measured to pay), pack the
    drafter's linears too, bf16 allowed (vlmspec/fast/drafter.py); its report goes in
    `drafter.fast_cpu_report`. A drafter packed before keeps what it has."""
    from ..core.autotune import has_packed_linears

    model = getattr(target, "model", None)
    if not hasattr(drafter, "cpu_fast_modules") or model is None or not has_packed_linears(model):
        return
    if getattr(drafter, "fast_cpu_report", None) is None:
        from ..fast.drafter import accelerate_drafter

        drafter.fast_cpu_report = accelerate_drafter(drafter).summary()


def drafter_name(drafter: Drafter) -> str:
    """What a drafter is, for reports: the spec it was built from ("auto -> eagle:DIR" for auto), else its class."""
    return getattr(drafter, "spec", None) or type(drafter).__name__


def _prompt_lookup(argument: str | None, target) -> Drafter:
    if argument is None:
        return PromptLookupDrafter()
    if not argument.isdigit():
        raise InputError(f"'prompt-lookup:{argument}': the part after the colon is the longest n-gram, e.g. prompt-lookup:3.")
    return PromptLookupDrafter(PromptLookupConfig(max_ngram=int(argument)))


def _model(argument: str | None, target) -> Drafter:
    if not argument:
        raise InputError("'model:' needs a path, e.g. model:/path/to/small-model.")
    return ModelDrafter.from_pretrained(argument, device=target.device, dtype=target.model.dtype)


register_drafter("none", lambda argument, target: NoDrafter())
register_drafter("prompt-lookup", _prompt_lookup)
register_drafter("model", _model)
register_drafter("eagle", eagle_from_spec)
register_drafter("vispec", vispec_from_spec)
register_drafter("msd", msd_from_spec)
register_drafter("specvlm", specvlm_from_spec)
def auto_drafter(argument: str | None, target) -> Drafter:
    """"auto": the best shipped drafter trained for this target (fingerprint checked), else prompt lookup."""
    if argument:
        raise InputError(f"'auto' takes no argument (got 'auto:{argument}'); name a drafter spec instead.")
    spec = shipped_drafter_spec(target)
    drafter = build_drafter(spec, target) if spec else PromptLookupDrafter()
    drafter.spec = f"auto -> {spec or 'prompt-lookup'}"
    return drafter


register_drafter("auto", auto_drafter)
