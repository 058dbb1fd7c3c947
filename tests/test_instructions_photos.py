"""Fast checks for vlmspec.data.instructions and vlmspec.data.photos."""

from __future__ import annotations

import random
import re

import pytest
from PIL import Image

from vlmspec.data import instructions as ins
from vlmspec.data import photos

_STOP = {"the", "a", "an", "and", "of", "in", "on", "to", "for", "with", "at"}


def _words(text: str) -> set[str]:
    """Lower-case content words with a trailing plural 's' stripped."""
    return {w.rstrip("s") for w in re.findall(r"[a-z]+", text.lower())} - _STOP - {""}


# ------------------------------------------------------------------ instructions

def test_instruction_counts_and_uniqueness():
    assert len(ins.TRAIN_INSTRUCTIONS) >= 400
    assert len(ins.HELDOUT_INSTRUCTIONS) >= 60
    assert len(set(ins.TRAIN_INSTRUCTIONS)) == len(ins.TRAIN_INSTRUCTIONS)
    assert len(set(ins.HELDOUT_INSTRUCTIONS)) == len(ins.HELDOUT_INSTRUCTIONS)
    assert len(ins.HELDOUT_TOPICS) == len(ins.HELDOUT_INSTRUCTIONS)
    assert all(s.strip() == s and s for s in ins.TRAIN_INSTRUCTIONS + ins.HELDOUT_INSTRUCTIONS)


def test_required_heldout_examples():
    for s in ("Write a haiku about autumn.", "Explain what a prime number is.",
              "Explain why the sky is blue in simple words.", "Write a short poem about the sea."):
        assert s in ins.HELDOUT_INSTRUCTIONS


def test_heldout_disjoint_from_train():
    assert not set(ins.HELDOUT_INSTRUCTIONS) & set(ins.TRAIN_INSTRUCTIONS)
    train_topic_words = set().union(*map(_words, ins.TRAIN_TOPICS))
    train_words = set().union(*map(_words, ins.TRAIN_INSTRUCTIONS))
    for topic in ins.HELDOUT_TOPICS:
        assert not _words(topic) & train_topic_words, topic
        assert not _words(topic) & train_words, topic  # no held-out subject anywhere in train


def test_heldout_templates_disjoint():
    templates = ins._TRAIN_TEMPLATES + ins._HOWTO_TEMPLATES + ins._FACT_TEMPLATES
    for tpl in templates:
        pat = re.compile(re.escape(tpl).replace(re.escape("{t}"), ".+")
                         .replace(re.escape("{task}"), ".+").replace(re.escape("{c}"), ".+"))
        for s in ins.HELDOUT_INSTRUCTIONS:
            assert not pat.fullmatch(s), (tpl, s)


def test_train_is_deterministic_and_diverse():
    assert ins._build_train() == ins.TRAIN_INSTRUCTIONS
    first_words = {s.split()[0] for s in ins.TRAIN_INSTRUCTIONS}
    assert len(first_words) >= 10


def test_sample_instructions():
    a = ins.sample_instructions(50, seed=3)
    assert a == ins.sample_instructions(50, seed=3)
    assert a != ins.sample_instructions(50, seed=4)
    assert len(set(a)) == 50 and set(a) <= set(ins.TRAIN_INSTRUCTIONS)
    assert len(ins.sample_instructions(len(ins.TRAIN_INSTRUCTIONS) + 5, seed=0)) == \
        len(ins.TRAIN_INSTRUCTIONS) + 5


# ---------------------------------------------------------------------- colours

@pytest.mark.parametrize("rgb, name", [
    ((255, 0, 0), "red"), ((220, 40, 40), "red"), ((255, 255, 255), "white"),
    ((0, 0, 0), "black"), ((128, 128, 128), "gray"), ((40, 80, 220), "blue"),
    ((40, 160, 60), "green"), ((235, 200, 30), "yellow"), ((245, 130, 20), "orange"),
    ((140, 60, 180), "purple"), ((120, 70, 30), "brown"), ((255, 170, 200), "pink"),
])
def test_patch_colour_names_solid(rgb, name):
    names = photos.patch_colour_names(Image.new("RGB", (60, 48), rgb), grid=6)
    assert names == [name] * 36
    assert name in photos.PHOTO_COLOURS
    assert photos.dominant_colours(names) == [name]


def test_patch_colour_names_row_major_and_dominant():
    img = Image.new("RGB", (40, 40), (255, 0, 0))
    img.paste((0, 0, 255), (0, 20, 40, 40))  # bottom half blue
    names = photos.patch_colour_names(img, grid=2)
    assert names == ["red", "red", "blue", "blue"]
    mixed = ["red"] * 10 + ["blue"] * 5 + ["green"] * 3 + ["gray"] * 2
    assert photos.dominant_colours(mixed, k=3) == ["red", "blue", "green"]  # 3/20 = 15%
    assert photos.dominant_colours(mixed, k=2) == ["red", "blue"]
    assert photos.dominant_colours(mixed + ["black"] * 2, k=3) == ["red", "blue"]  # 3/22 < 15%
    assert photos.dominant_colours(["a", "b", "c", "d", "e", "f", "g"], k=3) == ["a"]


def test_brightness():
    assert photos.brightness(Image.new("RGB", (8, 8), (255, 255, 255))) == "bright"
    assert photos.brightness(Image.new("RGB", (8, 8), (0, 0, 0))) == "dark"
    assert photos.brightness(Image.new("L", (8, 8), 128)) == "medium"


def test_random_crop():
    img = Image.new("RGB", (200, 100), (10, 20, 30))
    rng = random.Random(0)
    for _ in range(5):
        out = photos.random_crop(img, rng, 64, 48)
        assert out.size == (64, 48) and out.mode == "RGB"


# ----------------------------------------------------------------------- photos

def test_photo_split():
    assert not set(photos.PHOTO_NAMES_TRAIN) & set(photos.PHOTO_NAMES_HELDOUT)
    assert len(photos.PHOTO_NAMES_HELDOUT) >= 3
    assert len(photos.PHOTO_NAMES_TRAIN) >= 2 * len(photos.PHOTO_NAMES_HELDOUT)


def test_load_photos():
    pytest.importorskip("skimage")
    assert photos.available()
    for name in photos.PHOTO_NAMES_TRAIN + photos.PHOTO_NAMES_HELDOUT:
        img = photos.load_photo(name)
        assert img.mode == "RGB", name
        assert min(img.size) > 64, name
        assert photos.brightness(img) in ("bright", "dark", "medium")
        assert len(photos.patch_colour_names(img)) == 36
    with pytest.raises(KeyError):
        photos.load_photo("no_such_photo")


def test_missing_skimage_message(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "skimage" or name.startswith("skimage."):
            raise ImportError("blocked")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    photos.load_photo.cache_clear()
    try:
        with pytest.raises(ImportError, match="pip install scikit-image"):
            photos.load_photo("camera")
    finally:
        photos.load_photo.cache_clear()
