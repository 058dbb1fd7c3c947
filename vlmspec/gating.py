"""Set-up of the two predictor-driven modes for a Pipeline: ``draft_length="learned"`` and
``verification="approximate"`` (SPRINTER). The loop itself lives in core (GatedLength,
AcceptanceGate); this module finds the drafter's AcceptancePredictor, switches the drafter to
chains, and measures the verify costs the stop threshold is derived from.

Approximate verification is NOT lossless: tokens the predictor approves are committed without
the target's check. It is never on by default; every Result, CLI line, server response and
eval row it produces says "approximate (not lossless)".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .core.acceptance import AcceptanceGate, GateConfig
from .core.schedule import DEFAULT_DRAFT_LENGTH, GatedLength
from .drafters.acceptance import AcceptancePredictor
from .drafters.registry import drafter_name
from .errors import InputError

VERIFICATIONS = ("exact", "approximate")


@dataclass
class GateSetup:
    """What a Pipeline needs to build a gated schedule per generation."""

    config: GateConfig
    predictor: AcceptancePredictor
    verify_costs: dict[int, float] = field(default_factory=dict)

    @property
    def verification(self) -> str:
        return "exact" if self.config.lossless else "approximate"

    def schedule(self) -> GatedLength:
        return GatedLength(AcceptanceGate(self.predictor.predict, self.config), self.verify_costs)


def check_verification(verification: str) -> str:
    if verification not in VERIFICATIONS:
        raise InputError(f"verification must be 'exact' (lossless, the default) or 'approximate' (SPRINTER, "
                         f"not lossless); got {verification!r}.")
    return verification


def setup_gate(target, drafter, *, learned: bool, verification: str = "exact", threshold: float | None = None,
               predictor: "str | os.PathLike | AcceptancePredictor | None" = None,
               max_length: int | None = None, measure_costs: bool = True, verify_tail: int | None = None):
    """(chain drafter, GateSetup) for the learned stop rule or approximate verification.

    ``verify_tail`` (approximate only): tokens drafted after the flagged one and checked with
    it; None = the length a Pipeline drafts it at by default (its depth cap, else 5) minus one, so
    that at threshold 1.0 approximate mode drafts and outputs exactly what the drafter's
    lossless chain does, and every trusted token comes on top of it."""
    check_verification(verification)
    if learned and verification == "approximate":
        raise InputError("draft_length='learned' and verification='approximate' are two uses of the same "
                         "predictor; pick one (approximate already stops drafting at the first flagged token).")
    mode = "approximate" if verification == "approximate" else "stop"
    extra = {} if max_length is None else {"max_length": max_length}
    if mode == "approximate":
        if verify_tail is None:  # the length a Pipeline drafts this drafter at by default
            verify_tail = max(int(drafter.max_depth or DEFAULT_DRAFT_LENGTH) - 1, 0)
        extra["verify_tail"] = verify_tail
    config = GateConfig(mode=mode, threshold=threshold, **extra)
    chain = drafter.chain_drafter(config.max_length)
    if chain is None or chain.acceptance_features_size is None:
        raise InputError(
            f"{drafter_name(drafter)} has no acceptance features (it drafts without a distribution to read), so "
            f"{'draft_length=learned' if learned else 'verification=approximate'} cannot use it; use a trained "
            "drafter (eagle / vispec / msd / specvlm / model:PATH).")
    predictor = _find_predictor(predictor, drafter, chain)
    costs = {}
    if measure_costs and mode == "stop" and threshold is None:
        from .core.autotune import load_or_measure

        costs = dict(load_or_measure(target, tuple(range(1, config.max_length + 2))))  # cached per machine
    return chain, GateSetup(config, predictor, costs)


def _find_predictor(predictor, drafter, chain) -> AcceptancePredictor:
    if isinstance(predictor, AcceptancePredictor):
        predictor.check_drafter(chain)
        return predictor
    if predictor is None:
        source = getattr(drafter, "source_dir", None)
        if source is None:
            raise InputError(f"{drafter_name(drafter)} was not loaded from a directory, so there is no acceptance "
                             "predictor beside it; pass predictor=DIR (train one: `vlmspec train --config train/acceptance/default.json`).")
        predictor = Path(source)
    return AcceptancePredictor.load(predictor, chain)
