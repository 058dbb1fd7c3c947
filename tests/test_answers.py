"""Varied training answers (vlmspec.data.answers): true by construction, varied, honest on photos."""

from __future__ import annotations

import random

import pytest

from vlmspec.data import generate_scene
from vlmspec.data.answers import (
    HELDOUT_PROMPTS,
    TRAIN_PROMPTS_WIDE,
    PROMPT_STYLES,
    TRAIN_PROMPTS,
    answer,
    distinct_ngram_ratio,
    fact_check,
    follow_ups,
    normalize_prompt,
    quick_question,
    sample_dialogue,
)
from vlmspec.data.synthetic import Scene

SCENES = [generate_scene(f"t{i}") for i in range(200)]
VARIED = [generate_scene(f"v{i}", kind=("shapes", "text", "chart")[i % 3], style="varied") for i in range(60)]


class _FakePhoto(Scene):
    """A photo scene whose measured colours/brightness are fixed (no image needed)."""

    photo_colours = ("green", "blue")
    brightness = "dark"


def _photo() -> Scene:
    return _FakePhoto(seed="p0", kind="photo", width=256, height=192, background="photo")


def test_every_style_is_non_empty_and_true_by_construction():
    rng = random.Random(0)
    for scene in SCENES + VARIED:
        for style in PROMPT_STYLES:
            text = answer(scene, style, rng)
            assert text.strip(), (scene.seed, style)
            fc = fact_check(text, scene)
            assert fc["right"] == fc["mentions"], (scene.seed, style, text, fc)
            if scene.kind == "text" and style in ("read", "describe"):
                assert fc["text_found"], (scene.seed, style, text)
        for _, text in follow_ups(scene, rng):
            fc = fact_check(text, scene)
            assert text.strip() and fc["right"] == fc["mentions"], (scene.seed, text)


def test_describe_names_every_shape_and_never_the_aspect_ratio():
    rng = random.Random(1)
    for scene in SCENES:
        text = answer(scene, "describe", rng)
        words = text.lower().replace(".", " ").replace(",", " ").split()
        assert "wide" not in words and "tall" not in words, text
        if scene.kind == "shapes":
            fc = fact_check(text, scene)
            assert fc["shapes_named"] == fc["shapes_in_scene"], text


def test_answers_are_deterministic_for_a_seeded_rng():
    scene = SCENES[0]
    assert answer(scene, "describe", random.Random(5)) == answer(scene, "describe", random.Random(5))
    assert sample_dialogue(scene, random.Random(5)) == sample_dialogue(scene, random.Random(5))


def test_describe_wording_is_varied():
    texts = [answer(s, "describe", random.Random(i)) for i, s in enumerate(SCENES[:50])]
    ratio = distinct_ngram_ratio(texts, 4)
    assert ratio > 0.6, ratio  # measured 0.67 on these scenes
    assert distinct_ngram_ratio([texts[0]] * 50, 4) < 0.1  # the metric does catch repetition


def test_train_and_heldout_prompts_are_disjoint():
    assert set(TRAIN_PROMPTS) == set(HELDOUT_PROMPTS) == set(PROMPT_STYLES) - {"short"}
    train = {normalize_prompt(p) for ps in TRAIN_PROMPTS.values() for p in ps}
    held = {normalize_prompt(p) for ps in HELDOUT_PROMPTS.values() for p in ps}
    assert not train & held
    for style in TRAIN_PROMPTS:
        assert 8 <= len(TRAIN_PROMPTS[style]) <= 15 and 4 <= len(HELDOUT_PROMPTS[style]) <= 8
    assert "What do you see in this picture? Tell me about every object." in HELDOUT_PROMPTS["describe"]
    assert "List the objects in the image, one per line, with their colours." in HELDOUT_PROMPTS["list"]


def test_composed_training_wordings_keep_held_out_unseen():
    import re

    words = lambda p: re.findall(r"[a-z']+", p.lower())  # noqa: E731
    held4 = {tuple(w[i:i + 4]) for ps in HELDOUT_PROMPTS.values() for p in ps for w in [words(p)]
             for i in range(len(w) - 3)}
    held = {normalize_prompt(p) for ps in HELDOUT_PROMPTS.values() for p in ps}
    for style, wide in TRAIN_PROMPTS_WIDE.items():
        assert wide[:len(TRAIN_PROMPTS[style])] == TRAIN_PROMPTS[style]  # the hand-written ones first
        assert len(wide) >= 40 and len({normalize_prompt(p) for p in wide}) == len(wide)
        for p in wide[len(TRAIN_PROMPTS[style]):]:
            w = words(p)
            assert normalize_prompt(p) not in held
            assert not any(tuple(w[i:i + 4]) in held4 for i in range(len(w) - 3)), p


def test_single_shape_descriptions_are_full_sentences():
    singles = [s for s in SCENES if s.kind == "shapes" and len(s.shapes) == 1][:30]
    assert singles
    rng = random.Random(5)
    for scene in singles:
        text = answer(scene, "describe", rng)
        assert len(text.split()) >= 25, text
        facts = fact_check(text, scene)
        assert facts["right"] == facts["mentions"] > 0


def test_sample_dialogue_uses_the_right_prompt_set():
    train = {p for ps in TRAIN_PROMPTS_WIDE.values() for p in ps}
    held = {p for ps in HELDOUT_PROMPTS.values() for p in ps}
    rng = random.Random(2)
    lengths = set()
    for scene in SCENES[:100]:
        d = sample_dialogue(scene, rng)
        h = sample_dialogue(scene, rng, heldout=True)
        quick = scene.kind == "shapes" and len(d) == 1 and len(d[0][1].split()) <= 16
        assert (d[0][0] in train or quick) and d[0][0] not in held and h[0][0] in held
        lengths.add(len(d))
    assert lengths == {1, 2, 3}


def test_quick_questions_get_short_true_answers():
    held = {normalize_prompt(p) for ps in HELDOUT_PROMPTS.values() for p in ps}
    checked = {"what shape is in the image", "what color is the circle"}  # check.py's matplotlib wordings
    rng = random.Random(4)
    shapes = [s for s in SCENES if s.kind == "shapes"][:80]
    for scene in shapes:
        q, a = quick_question(scene, rng)
        assert normalize_prompt(q) not in held | checked
        assert len(a.split()) <= 16, a
        facts = fact_check(a, scene)
        assert facts["mentions"] > 0 or any(sh.color in a.lower() for sh in scene.shapes), a
        assert facts["right"] == facts["mentions"], (q, a)
    firsts = [sample_dialogue(s, random.Random(i))[0][0] for i, s in enumerate(shapes)]
    assert 0 < sum(f not in {p for ps in TRAIN_PROMPTS_WIDE.values() for p in ps} for f in firsts) < len(firsts) // 3


def test_fact_check_catches_a_wrong_colour():
    scene = next(s for s in SCENES if s.kind == "shapes" and all(sh.kind != "star" for sh in s.shapes))
    real = scene.shapes[0]
    fc = fact_check(f"There is a blue star and a {real.color} {real.kind}.", scene)
    assert fc["mentions"] == 2 and fc["right"] == 1 and fc["shapes_named"] == 1
    wrong = next(c for c in ("red", "green", "blue") if c != real.color)
    assert fact_check(f"A {wrong} {real.kind}.", scene)["right"] == 0


def test_fact_check_ignores_quoted_text_and_checks_the_word():
    scene = next(s for s in SCENES if s.kind == "text")
    ok = fact_check(f'It says "{scene.text.text}".', scene)
    assert ok["mentions"] == 0 and ok["text_found"]
    assert not fact_check('It says "zzzz".', scene)["text_found"]


@pytest.mark.parametrize("style", PROMPT_STYLES)
def test_photo_answers_are_honest(style):
    scene = _photo()
    rng = random.Random(3)
    for _ in range(5):
        text = answer(scene, style, rng)
        assert "photo" in text.lower(), text
        assert not any(ch.isdigit() for ch in text), text
        assert fact_check(text, scene)["mentions"] == 0
    for _, text in follow_ups(scene, rng) + sample_dialogue(scene, rng)[1:]:
        assert not any(ch.isdigit() for ch in text), text
    assert "green" in answer(scene, "describe", rng) and "dark" in answer(scene, "describe", rng)


_ASPECT = __import__("re").compile(r"\b(wide|tall|landscape|portrait|square picture|square image)\b", __import__("re").I)


def test_no_answer_states_the_image_aspect_ratio():
    """The model sees a square resize, so no training answer may claim a wide or tall picture."""
    rng = random.Random(11)
    for scene in SCENES[:80] + VARIED:
        for style in PROMPT_STYLES:
            text = answer(scene, style, rng)
            assert not _ASPECT.search(text), (scene.seed, style, text)


def test_list_answers_mostly_describe_each_item_in_a_sentence():
    # a chat model's list item is a sentence, not a bare label: held-out list prompts are judged on length
    scenes = [generate_scene(f"l{i}", kind="shapes", style="varied") for i in range(80)]
    texts = [answer(s, "list", random.Random(i)) for i, s in enumerate(scenes)]
    with_notes = sum(any(line.rstrip().endswith(".") and ". " in line for line in t.splitlines()) for t in texts)
    assert with_notes >= len(texts) // 3
    checks = [fact_check(t, s) for t, s in zip(texts, scenes)]
    assert all(c["right"] == c["mentions"] for c in checks)


def test_modal_description_varies_with_the_scene(monkeypatch):
    """The keyed phrasing: the most likely description (what greedy decoding settles on) follows
    the scene's content, so across scenes the wording is not one template. With the keyed choice
    forced (p=1), one scene's opening repeats across draws and different scenes open differently."""
    from vlmspec.data import answers as A

    keyed = A._keyed
    monkeypatch.setattr(A, "_keyed", lambda rng, options, key, p=0.8: keyed(rng, options, key, 1.0))
    shapes = [s for s in SCENES if s.kind == "shapes" and len(s.shapes) > 1][:40]
    opening = lambda s, seed: answer(s, "describe", random.Random(seed)).split(" ")[:3]  # noqa: E731
    assert len({tuple(opening(s, 0)) for s in shapes}) >= 4  # several opening templates across scenes
    for s in shapes[:5]:  # one opening is the clear mode per scene
        draws = [tuple(opening(s, k)) for k in range(16)]
        assert max(draws.count(d) for d in draws) >= 8, draws


def test_keyed_choice_is_stable_per_key_and_random_otherwise():
    from vlmspec.data.answers import _keyed

    options = tuple("abcdefgh")
    picks = {k: {_keyed(random.Random(s), options, k, p=1.0) for s in range(20)} for k in ("red", "blue", 3, (1, 2))}
    assert all(len(v) == 1 for v in picks.values())
    assert len({next(iter(v)) for v in picks.values()}) > 1
    assert len({_keyed(random.Random(s), options, "red", p=0.0) for s in range(40)}) > 3


def test_sample_dialogue_can_force_a_style():
    rng = random.Random(0)
    s = SCENES[0]
    turns = sample_dialogue(s, rng, style="describe")
    assert turns[0][0] in TRAIN_PROMPTS_WIDE["describe"]
    with pytest.raises(ValueError, match="style must be one of"):
        sample_dialogue(s, rng, style="poem")
