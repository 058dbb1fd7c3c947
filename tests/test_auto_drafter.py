"""The default drafter "auto": the shipped drafter whose target fingerprint matches, else prompt lookup."""

from __future__ import annotations

import json

import pytest
import torch

from vlmspec import load
from vlmspec.drafters import shipped
from vlmspec.drafters.eagle import EagleConfig, EagleDrafter
from vlmspec.drafters.prompt_lookup import PromptLookupDrafter
from vlmspec.drafters.registry import build_drafter
from vlmspec.errors import InputError
from vlmspec.target import Target


@pytest.fixture()
def shipped_dir(tmp_path, monkeypatch, tiny_llava_path):
    """A fake package-data folder holding an EAGLE drafter built for tiny_llava_path, named best."""
    target = Target.load(tiny_llava_path)
    torch.manual_seed(0)
    drafter = EagleDrafter.from_target(target, EagleConfig(tree="chain"), init_layer_from_target=True)
    drafter.save_pretrained(tmp_path / "eagle")
    (tmp_path / "best.json").write_text(json.dumps({"drafter": "eagle"}))
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path)
    monkeypatch.setattr(shipped, "BEST_FILE", tmp_path / "best.json")
    return tmp_path


def test_auto_picks_the_shipped_drafter_of_its_own_target(shipped_dir, tiny_llava_path):
    target = Target.load(tiny_llava_path)
    assert shipped.shipped_drafter_spec(target) == f"eagle:{shipped_dir / 'eagle'}"
    assert isinstance(build_drafter("auto", target), EagleDrafter)
    pipe = load(tiny_llava_path)  # the default drafter is "auto"
    assert isinstance(pipe.drafter, EagleDrafter)


def test_auto_falls_back_to_prompt_lookup_for_any_other_target(shipped_dir, other_tiny_llava_path):
    target = Target.load(other_tiny_llava_path)  # same architecture and tokenizer, other weights
    assert shipped.shipped_drafter_spec(target) is None
    assert type(build_drafter("auto", target)) is PromptLookupDrafter


def test_auto_without_shipped_drafters_is_prompt_lookup(tmp_path, monkeypatch, tiny_llava_path):
    monkeypatch.setattr(shipped, "BEST_FILE", tmp_path / "missing.json")
    assert type(build_drafter("auto", Target.load(tiny_llava_path))) is PromptLookupDrafter


def test_auto_takes_no_argument(tiny_llava_path):
    with pytest.raises(InputError, match="'auto' takes no argument"):
        build_drafter("auto:3", Target.load(tiny_llava_path))
