"""The default model's training recipe: the visual-word slot grammar each image token is
aligned to (train/default_model/train.py) says, slot by slot, what the scene spec says."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

from vlmspec.data.synthetic import CELL_NAMES, generate_scene, split_seed

RECIPE = Path(__file__).resolve().parents[1] / "train" / "default_model" / "train.py"


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("default_model_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


class WordTokenizer:
    """Words (with their leading space) and single digits are tokens; ids are assigned on first use."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        pieces = re.findall(r" ?[A-Za-z]+| ?\d", text)
        pieces = [p for piece in pieces for p in ([piece] if not piece.strip().isdigit() else [piece.strip()])]
        return {"input_ids": [self.vocab.setdefault(p, len(self.vocab)) for p in pieces]}

    def words(self, ids: list[int]) -> list[str]:
        inverse = {v: k for k, v in self.vocab.items()}
        return [inverse[i] for i in ids]


def scenes_of(kind: str, n: int = 25):
    return [generate_scene(split_seed("test", i, 3), kind=kind) for i in range(n)]


def test_shape_slots_sit_in_their_cell(recipe):
    tok = WordTokenizer()
    for scene in scenes_of("shapes"):
        slots = recipe.visual_word_ids(scene, tok)
        assert len(slots) == recipe.SLOTS == 36
        by_cell = {tuple(sh.cell): sh for sh in scene.shapes}
        for row, col in CELL_NAMES:
            base = 12 * row + 2 * col  # token (2R, 2C) of the 6x6 grid
            sh = by_cell.get((row, col))
            if sh is None:  # an empty cell says the scene kind + count, and the background
                assert tok.words(slots[base]) == [" shapes", str(len(scene.shapes))]
                assert "".join(tok.words(slots[base + 1])) == f" {scene.background}"
                assert slots[base + 6] == slots[base + 7] == []
            else:
                assert tok.words(slots[base]) == [f" {sh.color}", f" {sh.size}"]
                assert tok.words(slots[base + 1]) == [f" {sh.kind}"]
                assert "".join(tok.words(slots[base + 6])) == f" {sh.kind} {CELL_NAMES[tuple(sh.cell)]}"
                assert slots[base + 7] == []


def test_text_and_chart_slots_spell_the_answers(recipe):
    tok = WordTokenizer()
    for scene in scenes_of("text"):
        slots = recipe.visual_word_ids(scene, tok)
        base = 12 * scene.text.cell[0]  # the token row where the text is drawn
        assert tok.words(slots[base]) == [f" {scene.text.color}"]
        spelled = "".join(w for s in slots[base + 1 : base + 6] for w in tok.words(s))
        assert spelled == scene.text.text
        assert tok.words(slots[base + 6]) == [" number" if scene.text.is_number else " word"]
        assert sum(bool(s) for s in slots) == 4 + len(tok(scene.text.text)["input_ids"])
    for scene in scenes_of("chart"):
        c = scene.chart
        slots = recipe.visual_word_ids(scene, tok)
        assert tok.words(slots[0]) == [f" {c.chart}"]
        assert tok.words(slots[3]) == [c.labels[c.values.index(max(c.values))]]
        points = [tok.words(s) for s in slots[30:] if s]  # the bottom token row, left to right
        assert [p[0] for p in points] == list(c.labels)
        assert ["".join(p[1:]) for p in points] == [str(v) for v in c.values]


def test_targets_are_sums_of_the_slot_embeddings(recipe):
    tok = WordTokenizer()
    scenes = scenes_of("shapes", 3) + scenes_of("chart", 2)
    word_ids = [recipe.visual_word_ids(s, tok) for s in scenes]
    embeddings = torch.randn(len(tok.vocab) + 4, 8)
    targets = recipe.visual_word_targets(word_ids, embeddings)  # [n, SLOTS, 8]
    assert targets.shape == (len(scenes), recipe.SLOTS, 8)
    for i, s in enumerate(scenes):
        for j, slot in enumerate(recipe.visual_word_ids(s, tok)):
            expected = embeddings[slot].sum(0) if slot else torch.zeros(8)
            torch.testing.assert_close(targets[i, j], expected)


def test_token_cells_maps_each_image_token_to_the_scene_cell_it_covers(recipe):
    # 6x6 image tokens over the 3x3 scene grid: token (r, c) lies in cell (r // 2, c // 2).
    cells = recipe.token_cells(6)
    assert cells.shape == (36,)
    for r in range(6):
        for c in range(6):
            assert int(cells[6 * r + c]) == recipe.CELLS.index((r // 2, c // 2))
    # The per-token cell labels of a scene put each shape's kind exactly on its cell's 4 tokens.
    scene = next(s for i in range(50) if (s := generate_scene(split_seed("train", i))).kind == "shapes")
    labels = recipe.scene_labels(scene)["cell_shape"][cells]  # [36]
    for sh in scene.shapes:
        r, c = sh.cell
        for tok in (12 * r + 2 * c, 12 * r + 2 * c + 1, 12 * r + 2 * c + 6, 12 * r + 2 * c + 7):
            assert int(labels[tok]) == recipe.SHAPE_KINDS.index(sh.kind) + 1
    assert int((labels > 0).sum()) == 4 * len(scene.shapes)
