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
        assert tok.words(slots[30]) == [f" {c.chart}"]  # the bottom token row: chart type, colour, ...
        assert tok.words(slots[33]) == [c.labels[c.values.index(max(c.values))]]
        # each point sits in its own column, on the token row of its printed value (higher value, higher row)
        points = sorted((j % 6, j // 6, tok.words(s)) for j, s in enumerate(slots[:30]) if s)
        assert [p[2][0] for p in points] == list(c.labels)
        assert ["".join(p[2][1:]) for p in points] == [str(v) for v in c.values]
        assert len({p[0] for p in points}) == len(c.values)
        for (_, row_a, words_a), (_, row_b, words_b) in zip(points, points[1:]):
            value_a, value_b = int("".join(words_a[1:])), int("".join(words_b[1:]))
            if value_a - value_b >= 6:  # 6 units = 1.15 token rows
                assert row_a < row_b


def test_slot_roles_name_exactly_the_filled_slots(recipe):
    tok = WordTokenizer()
    for scene in scenes_of("shapes", 5) + scenes_of("text", 5) + scenes_of("chart", 5):
        slots = recipe.visual_slots(scene, tok)
        assert [ids for _, ids in slots] == recipe.visual_word_ids(scene, tok)
        assert all((role == "empty") == (not ids) for role, ids in slots)
        if scene.kind == "chart":
            assert sum(role == "chart label+value" for role, _ in slots) == len(scene.chart.values)


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
    labels = recipe.cell_token_labels([scene])[0, :, 1]  # [36]: the kind class per token
    for sh in scene.shapes:
        r, c = sh.cell
        for tok in (12 * r + 2 * c, 12 * r + 2 * c + 1, 12 * r + 2 * c + 6, 12 * r + 2 * c + 7):
            assert int(labels[tok]) == recipe.SHAPE_KINDS.index(sh.kind) + 1
    assert int((labels > 0).sum()) == 4 * len(scene.shapes)


def test_word_classes_keep_repeated_tokens_apart(recipe):
    # "11" is two "1" tokens: the second is its own class, so the readout can say 11, not 1.
    word_ids = [[[5, 1, 1], [], [7]], [[1], [], []]]
    word_ids = [slots + [[]] * (recipe.SLOTS - len(slots)) for slots in word_ids]
    classes = recipe.word_classes(word_ids)
    assert classes == [(1, 0), (1, 1), (5, 0), (7, 0)]
    words = recipe.word_multihot(word_ids, classes)  # [2, SLOTS, 4]
    assert words[0, 0].tolist() == [1, 1, 1, 0] and words[0, 2].tolist() == [0, 0, 0, 1]
    assert words[1, 0].tolist() == [1, 0, 0, 0] and int(words.sum()) == 5


def test_clamp_readout_turns_confident_word_logits_into_exact_embedding_sums(recipe):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    torch.manual_seed(0)
    dim, width = 6, 8  # the stock LLaVA projector: linear_1 (dim -> width) -> GELU -> linear_2 (width -> width)
    config = LlavaConfig(vision_config=CLIPVisionConfig(hidden_size=dim, num_attention_heads=1),
                         text_config=LlamaConfig(hidden_size=width, num_attention_heads=1),
                         projector_hidden_act="gelu")
    projector, head = LlavaMultiModalProjector(config), torch.nn.Linear(dim, 3)
    embeddings = torch.randn(10, width)
    classes = [(2, 0), (2, 1), (7, 0)]  # token 2 once or twice, token 7
    recipe.clamp_readout(projector, head, classes, embeddings, scale=2.0)
    x = torch.randn(200, dim) * 20
    with torch.no_grad():
        logits, out = head(x), projector(x)  # [200, 3], [200, width]
    expected = (logits > 0).float() @ embeddings[[2, 2, 7]]
    confident = (logits.abs() > 2.5).all(-1)
    assert confident.sum() > 20
    torch.testing.assert_close(out[confident], expected[confident], atol=2e-2, rtol=0)
    with pytest.raises(ValueError, match="hidden units"):
        recipe.clamp_readout(projector, head, [(i, 0) for i in range(5)], torch.randn(20, width), scale=2.0)


def test_recover_word_head_inverts_clamp_readout(recipe):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    torch.manual_seed(1)
    dim, width = 6, 8
    config = LlavaConfig(vision_config=CLIPVisionConfig(hidden_size=dim, num_attention_heads=1),
                         text_config=LlamaConfig(hidden_size=width, num_attention_heads=1),
                         projector_hidden_act="gelu")
    projector, head = LlavaMultiModalProjector(config), torch.nn.Linear(dim, 3)
    embeddings = torch.randn(10, width)
    classes = [(2, 0), (2, 1), (7, 0)]
    recipe.clamp_readout(projector, head, classes, embeddings, scale=2.0)
    got, got_classes = recipe.recover_word_head(projector, embeddings, scale=2.0)
    assert got_classes == classes
    torch.testing.assert_close(got.weight, head.weight)
    torch.testing.assert_close(got.bias, head.bias)
    wider = recipe.extend_word_head(got, classes, [(1, 0), (2, 0), (2, 1), (7, 0)])
    torch.testing.assert_close(wider.weight[1:], head.weight)
    assert float(wider.weight[0].abs().sum()) == 0 and float(wider.bias[0]) == -4.0


def test_varied_share_and_photo_slots(recipe):
    styles = [recipe.scene_style(i, 0.6) for i in range(1000)]
    assert 0.55 < styles.count("varied") / 1000 < 0.65
    assert {recipe.scene_style(i, 0.0) for i in range(50)} == {"classic"}
    pytest.importorskip("skimage")
    tok = WordTokenizer()
    scene = generate_scene("photo-slots", kind="photo", style="varied")
    slots = recipe.visual_word_ids(scene, tok)
    assert len(slots) == recipe.SLOTS and all(tok.words(s)[0] == " photo" and len(s) == 2 for s in slots)


def test_mix_masks_every_assistant_turn_and_only_those(recipe, tiny_llava_path):
    from transformers import AutoProcessor

    import mix  # train/default_model/mix.py, on the path once the recipe is loaded

    processor = AutoProcessor.from_pretrained(tiny_llava_path)
    tok = processor.tokenizer
    turns = [("Describe it.", "A red circle."), ("And its colour?", "Red.")]
    ids, spans = mix.encode_turns(processor, tok, turns, image=True)
    assert [tok.decode(ids[a:b]).strip() for a, b in spans][0].startswith("A red circle.")
    image_id = tok.convert_tokens_to_ids("<image>")
    expanded, shifted = mix.expand(ids, spans, image_id, 5)
    assert expanded.count(image_id) == 5
    assert [expanded[a:b] for a, b in shifted] == [ids[a:b] for a, b in spans]
    batch_ids, mask, labels = mix.make_batch([(expanded, shifted, 0), (ids[:4], [], None)], pad_id=0)
    assert int((labels[0] != -100).sum()) == sum(b - a for a, b in spans) and int((labels[1] != -100).sum()) == 0
    cut, cut_spans = mix.encode_turns(processor, tok, turns[:1], image=False, finished=False)
    assert len(cut) == cut_spans[0][1] and not tok.decode(cut[cut_spans[0][0]:]).rstrip().endswith("im_end|>")


def test_mix_describe_share_weights_descriptions(recipe, tiny_llava_path):
    """describe_share=1: every dialogue opens with a describe prompt; 0: styles stay mixed; out of
    [0, 1] is refused by name."""
    from transformers import AutoProcessor

    import mix
    from vlmspec.data import generate_scene
    from vlmspec.data.answers import TRAIN_PROMPTS_WIDE

    processor = AutoProcessor.from_pretrained(tiny_llava_path)
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<image>")
    scenes = [generate_scene(f"m{i}") for i in range(20)]
    describe = TRAIN_PROMPTS_WIDE["describe"]
    share_described = {}
    for share in (0.0, 1.0):
        m = mix.Mix(processor, image_id, 4, scenes, [], seed=0, describe_share=share)
        texts = []
        for step in (1, 2, 5, 6):  # the dialogue steps of STEP_CYCLE
            kind, batch = m.step(step)
            assert kind == "dialogue"
            texts += [tok.decode(ids) for ids, _, _ in batch]
        share_described[share] = sum(any(p in t for p in describe) for t in texts) / len(texts)
    assert share_described[1.0] == 1.0 and share_described[0.0] < 0.5
    with pytest.raises(ValueError, match="describe_share"):
        mix.Mix(processor, image_id, 4, scenes, [], seed=0, describe_share=1.5)


def test_a_huge_lone_shape_labels_every_cell_it_covers(recipe):
    # A lone huge shape spills over its neighbours: the cell heads of the tokens that see its
    # outline learn its kind too (the centre cell alone shows only its flat interior).
    from vlmspec.data.synthetic import ShapeSpec

    huge = ShapeSpec(kind="star", color="red", size="large", cx=0.5, cy=0.5, cell=(1, 1), radius=0.4)
    assert recipe.covered_cells(huge, 192, 192) == sorted(recipe.CELLS)  # reaches into all nine
    middling = ShapeSpec(kind="star", color="red", size="large", cx=0.5, cy=0.5, cell=(1, 1), radius=0.25)
    assert recipe.covered_cells(middling, 192, 192) == sorted({(1, 1), (0, 1), (1, 0), (1, 2), (2, 1)})
    small = ShapeSpec(kind="star", color="red", size="small", cx=0.5, cy=0.5, cell=(1, 1))
    assert recipe.covered_cells(small, 192, 192) == [(1, 1)]
    scene = generate_scene("huge", kind="shapes", style="varied")
    scene.shapes = (huge,)
    scene.width = scene.height = 192
    kinds = recipe.cell_token_labels([scene])[0, :, 1]  # [36]
    assert int((kinds == recipe.SHAPE_KINDS.index("star") + 1).sum()) == 36
