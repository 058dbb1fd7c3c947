"""The "auto" drafter: the best drafter vlmspec ships for the target, else prompt lookup.

Trained drafters for the default model ship as package data under
``vlmspec/models/default_weights/drafters/<kind>/`` (cards in ``adapters/<kind>-default/``);
``drafters/best.json`` names the fastest one in the results table. "auto" picks it only when
its recorded target fingerprint (architecture, sizes, embedding hash) equals the target's,
so any other target gets prompt lookup (``registry``'s "auto" factory builds it, and reports
the choice as the drafter's ``spec``). This module only finds the shipped drafter.
"""

from __future__ import annotations

import json
from pathlib import Path

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "models" / "default_weights" / "drafters"
BEST_FILE = SHIPPED_DIR / "best.json"  # {"drafter": "<kind>", "why": "..."}


def shipped_drafter_spec(target) -> str | None:
    """Spec string ("kind:DIR") of the best shipped drafter trained for ``target``, or None."""
    from .eagle import CONFIG_NAME, fingerprint_mismatch, target_fingerprint

    try:
        kind = json.loads(BEST_FILE.read_text())["drafter"]
        directory = SHIPPED_DIR / kind
        meta = json.loads((directory / CONFIG_NAME).read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    saved = meta.get("target_fingerprint") or {}
    if fingerprint_mismatch(saved, target_fingerprint(target)):
        return None
    return f"{kind}:{directory}"
