"""The synthetic grounded scenes: deterministic bytes, answers right by construction, splits."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vlmspec.data import build_dataset, generate_scene
from vlmspec.data.synthetic import SPLITS, answer_from_spec, split_seed


def test_same_seed_same_png_bytes():
    for seed in (0, 1, "abc", 12345):
        assert generate_scene(seed).png_bytes() == generate_scene(seed).png_bytes()
    assert generate_scene(1).png_bytes() != generate_scene(2).png_bytes()


def test_png_bytes_are_the_same_in_a_fresh_process():
    code = "import hashlib; from vlmspec.data import generate_scene; print(hashlib.sha256(generate_scene(7).png_bytes()).hexdigest())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    import hashlib

    assert child.stdout.strip() == hashlib.sha256(generate_scene(7).png_bytes()).hexdigest()


def test_answers_rederived_from_the_spec():
    checked = 0
    for i in range(300):
        scene = generate_scene(split_seed("test", i))
        spec = json.loads(json.dumps(scene.spec_dict()))
        for qtype, question, answer in scene.questions:
            assert answer_from_spec(spec, qtype, question) == answer, (scene.seed, question)
            checked += 1
    assert checked > 1000


def test_every_kind_and_question_type_occurs_with_mixed_sizes():
    scenes = [generate_scene(split_seed("train", i)) for i in range(200)]
    assert {s.kind for s in scenes} == {"shapes", "text", "chart"}
    assert {q[0] for s in scenes for q in s.questions} >= {
        "color", "shape", "count", "position", "text", "chart_value", "chart_max", "chart_type", "size"
    }
    assert len({(s.image.width, s.image.height) for s in scenes}) > 10
    assert len({round(s.image.width / s.image.height, 2) for s in scenes}) > 3


def test_descriptions_are_long_and_name_what_is_drawn():
    for i in range(50):
        scene = generate_scene(split_seed("val", i))
        assert scene.description.count(". ") >= 2 and len(scene.description.split()) >= 30
        for shape in scene.shapes:
            assert f"{shape.color} {shape.kind}" in scene.description


def test_dataset_builder_is_deterministic_and_splits_are_disjoint():
    a = build_dataset("train", 5, seed=3)
    b = build_dataset("train", 5, seed=3)
    assert a["id"] == b["id"] and a["description"] == b["description"]
    assert set(a.column_names) >= {"id", "kind", "image", "description", "questions", "spec"}
    ids = {split: set(build_dataset(split, 20)["id"]) for split in SPLITS}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert build_dataset("test", 3)["id"] == build_dataset("test", 5)["id"][:3]  # a row depends on its index only


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown scene kind"):
        generate_scene(1, kind="video")


def test_varied_shapes_are_sometimes_anti_aliased_and_upright():
    # Half the varied shape scenes are drawn supersampled: their edges hold blended colours a
    # plain polygon fill never makes; some shapes stand at rotation 0.
    import numpy as np

    from vlmspec.data.synthetic import generate_scene

    scenes = [generate_scene(f"aa{i}", kind="shapes", style="varied") for i in range(40)]
    assert any(sh.rotation == 0.0 for s in scenes for sh in s.shapes)
    assert any(s.texture == "flat" and s.jpeg_quality == 0 for s in scenes)

    def colours(scene) -> int:
        return len(np.unique(np.asarray(scene.image).reshape(-1, 3), axis=0))

    flat = [colours(s) for s in scenes if s.texture == "flat" and s.jpeg_quality == 0 and not s.outline]
    # flat background + k solid fills: k + 1 colours when aliased, many more when anti-aliased
    assert min(flat) <= 6 < max(flat)


def test_varied_scenes_use_every_rasteriser_and_skimage_draws_the_shape_where_it_is():
    import random

    import numpy as np

    from vlmspec.data import styles
    from vlmspec.data.synthetic import pick_weighted

    picks = [pick_weighted(random.Random(i), styles.RENDERERS) for i in range(600)]
    for name, share in styles.RENDERERS:
        assert abs(picks.count(name) / 600 - share) < 0.07, name
    scene = next(s for s in (generate_scene(i, style="varied") for i in range(200))
                 if s.kind == "shapes" and len(s.shapes) == 1 and s.background != "photo")
    rng = random.Random(0)
    base = styles.background_image(scene, rng)
    drawn = np.asarray(styles._render_skimage(base, scene, rng)).astype(int)
    changed = np.abs(drawn - np.asarray(base).astype(int)).sum(-1) > 30  # [h, w]
    ys, xs = np.nonzero(changed)
    sh = scene.shapes[0]
    # the drawn pixels are centred on the shape's centre and span about its size
    assert abs(xs.mean() / scene.width - sh.cx) < 0.05 and abs(ys.mean() / scene.height - sh.cy) < 0.05
    span = (xs.max() - xs.min()) / min(scene.width, scene.height)
    assert 1.2 * sh.radius < span < 3.2 * sh.radius
    # coverage masks give partial (anti-aliased) edge pixels
    cov = styles._coverage("polygon", ((10, 10), (40, 12), (25, 40)), 50, 50)
    assert ((cov > 0) & (cov < 1)).sum() > 20 and cov.max() == 1.0
