"""Draft trees: masks, static specs, tree verification, cache gather, and lossless tree decoding."""

from __future__ import annotations

import random

import pytest
import torch

from vlmspec import DraftContext, InputError, ModelDrafter, Pipeline, SamplingParams, ScheduleConfig, Target
from vlmspec.core.cache import keep_positions
from vlmspec.core.tree import ancestor_matrix, static_tree, tree_attention
from vlmspec.core.verify import verify_greedy, verify_sampling

from conftest import random_image
from test_lossless_sampling import chi_square_p_value, distribution_setup, sample_joint


def random_tree_paths(rng: random.Random, depth: int, width: int, extra: int) -> list[list[int]]:
    """A random static tree: `width` children of the root, then `extra` random extensions up to `depth`."""
    paths = [[r] for r in range(width)]
    for _ in range(extra):
        base = rng.choice(paths)
        if len(base) < depth:
            siblings = [p for p in paths if p[:-1] == base]
            paths.append(base + [len(siblings) if siblings else 0])
    return paths


# ------------------------------------------------------------------ tree structure
def test_ancestor_matrix_and_positions():
    parents = torch.tensor([-1, -1, 0, 2])  # root -> {0, 1}; 0 -> 2 -> 3
    allowed = ancestor_matrix(parents)
    assert allowed.tolist() == [
        [True, False, False, False, False],
        [True, True, False, False, False],
        [True, False, True, False, False],
        [True, True, False, True, False],
        [True, True, False, True, True],
    ]
    mask, positions = tree_attention(parents, cache_len=3)
    assert mask.shape == (1, 1, 5, 8) and mask[0, 0, :, :3].all()
    assert positions.tolist() == [[3, 4, 4, 5, 6]]
    mask, positions = tree_attention(parents, cache_len=3, with_root=False)
    assert mask.shape == (1, 1, 4, 7) and positions.tolist() == [[3, 3, 4, 5]]


def test_static_tree_spec():
    parents, ranks = static_tree([[0, 0], [1], [0]])
    assert parents.tolist() == [-1, -1, 0] and ranks.tolist() == [0, 1, 0]


@pytest.mark.parametrize(
    "paths,message",
    [([], "at least one"), ([[0], [0, -1]], "negative rank"), ([[0], [1, 0, 0]], "needs its prefix"), ([[]], "non-empty")],
)
def test_malformed_tree_specs(paths, message):
    with pytest.raises(InputError, match=message):
        static_tree(paths)


def test_tree_greedy_verification_walks_the_matching_branch():
    parents = torch.tensor([-1, -1, 1, 1, 3])  # root -> {a=0, b=1}; b -> {c=2, d=3}; d -> e=4
    tokens = torch.tensor([5, 6, 7, 8, 9])
    choice = torch.tensor([6, 0, 8, 0, 9, 4])  # argmax per row: root 6 -> b, b 8 -> d, d 9 -> e, e -> 4
    logits = torch.nn.functional.one_hot(choice, 10).float()
    result = verify_greedy(tokens, logits, parents)
    assert result.path == [1, 3, 4] and result.next_token == 4
    choice[0] = 3  # no child of the root matches
    result = verify_greedy(tokens, torch.nn.functional.one_hot(choice, 10).float(), parents)
    assert result.path == [] and result.next_token == 3


def test_tree_sampling_point_mass_siblings_cover_the_distribution():
    """Root children 0 and 1 as point masses, p = [0.5, 0.3, 0.2]: outcome frequencies must be p."""
    parents = torch.tensor([-1, -1])
    tokens = torch.tensor([0, 1])
    target = torch.tensor([[0.5, 0.3, 0.2], [1.0, 0, 0], [1.0, 0, 0]])
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(3)
    for _ in range(4000):
        result = verify_sampling(tokens, None, target, gen, parents)
        first = tokens[result.path[0]] if result.path else result.next_token
        counts[int(first)] += 1
    assert torch.allclose(counts / 4000, torch.tensor([0.5, 0.3, 0.2]), atol=0.03)


def test_keep_positions_gathers_the_accepted_path():
    from transformers import DynamicCache

    cache = DynamicCache()
    keys = torch.arange(8.0).reshape(1, 1, 8, 1)
    cache.update(keys, keys + 100, layer_idx=0)
    keep_positions(cache, prefix_len=3, rows=[0, 2, 4])
    assert cache.layers[0].keys.flatten().tolist() == [0, 1, 2, 3, 5, 7]
    assert cache.layers[0].values.flatten().tolist() == [100, 101, 102, 103, 105, 107]
    keep_positions(cache, prefix_len=3, rows=[0, 1])  # a chain prefix: plain truncation
    assert cache.layers[0].keys.flatten().tolist() == [0, 1, 2, 3, 5]


# ------------------------------------------------------------------ lossless tree decoding
@pytest.fixture(scope="module")
def targets(tiny_llava_path, tiny_llava_next_path):
    return {"llava": Target.load(tiny_llava_path), "llava_next": Target.load(tiny_llava_next_path)}


@pytest.fixture(scope="module")
def drafter_models(tiny_llava_path, tiny_llava_next_path, other_tiny_llava_path):
    return {
        ("llava", "copy"): ModelDrafter.from_pretrained(tiny_llava_path),
        ("llava_next", "copy"): ModelDrafter.from_pretrained(tiny_llava_next_path),
        ("llava", "other"): ModelDrafter.from_pretrained(other_tiny_llava_path),
    }


def tree_drafter(base: ModelDrafter, paths) -> ModelDrafter:
    return ModelDrafter(base.model, base.tokenizer, tree_paths=paths)


TREE_CASES = [
    (kind, drafter, depth, width)
    for kind, drafter in [("llava", "copy"), ("llava_next", "copy"), ("llava", "other")]
    for depth, width in [(1, 1), (1, 10), (2, 3), (3, 2), (4, 4), (5, 1), (6, 3), (6, 10)]
]


@pytest.mark.parametrize("kind,drafter_kind,depth,width", TREE_CASES)
def test_greedy_static_trees_match_generate(kind, drafter_kind, depth, width, targets, drafter_models):
    seed = TREE_CASES.index((kind, drafter_kind, depth, width))
    rng = random.Random(seed)
    paths = random_tree_paths(rng, depth, width, extra=3 * depth)
    target = targets[kind]
    pipe = Pipeline(target, tree_drafter(drafter_models[(kind, drafter_kind)], paths), ScheduleConfig.parse(depth))
    image, prompt = random_image(200 + seed), ["Describe this.", "What colour?", "abc abc abc"][seed % 3]
    budget = 8 + seed % 30
    inputs = pipe.prepare(image, prompt)
    expected = target.model.generate(**inputs, max_new_tokens=budget, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    result = pipe.generate(image, prompt, max_new_tokens=budget)
    assert result.token_ids == expected.tolist()
    if drafter_kind == "copy" and len(expected) > 2 * (depth + 1):
        assert result.metrics.acceptance_per_position[0] == 1.0  # the rank-0 path is the target's own choice


def test_target_cache_after_a_tree_step_equals_plain_decoding(targets, drafter_models):
    """After one tree step, the target cache must equal prefill + the accepted tokens fed one by one."""
    target = targets["llava"]
    drafter = tree_drafter(drafter_models[("llava", "other")], random_tree_paths(random.Random(5), 4, 4, 12))
    pipe = Pipeline(target, drafter)
    inputs = pipe.prepare(random_image(77), "Describe this.")

    state, first_logits = target.prefill(inputs)
    first = int(first_logits.argmax())
    committed = torch.cat([state.prompt_ids[0], state.prompt_ids.new_tensor([first])])
    drafter.begin(DraftContext(target, state, SamplingParams(), None))
    draft = drafter.propose(committed, 4)
    assert draft.parents is not None and draft.tokens.numel() > 4
    cached = state.cache.get_seq_length()
    scored = target.forward(state, torch.cat([committed[-1:], draft.tokens])[None], parents=draft.parents)
    accepted = verify_greedy(draft.tokens, scored.logits[0], draft.parents)
    target.keep(state, cached, [0] + [n + 1 for n in accepted.path])

    reference, _ = target.prefill(inputs)
    for token in [first] + draft.tokens[accepted.path].tolist():
        target.forward(reference, committed.new_tensor([[token]]))
    for tree_layer, plain_layer in zip(state.cache.layers, reference.cache.layers):
        assert tree_layer.keys.shape == plain_layer.keys.shape
        assert torch.allclose(tree_layer.keys, plain_layer.keys, atol=1e-5)
        assert torch.allclose(tree_layer.values, plain_layer.values, atol=1e-5)


class _NoisyTreeDrafter(ModelDrafter):
    def __init__(self, base: ModelDrafter, paths, scale: float):
        super().__init__(base.model, base.tokenizer, tree_paths=paths)
        self.noise = torch.randn(base.model.config.get_text_config().vocab_size,
                                 generator=torch.Generator().manual_seed(3)) * scale

    def _fit_vocab(self, logits):
        return super()._fit_vocab(logits + self.noise)


def test_sampling_through_trees_keeps_the_distribution(targets, drafter_models):
    target, image, _, expected = distribution_setup(targets["llava"])
    drafter = _NoisyTreeDrafter(drafter_models[("llava", "copy")], [[0], [1], [2], [0, 0], [1, 0]], scale=1.5)
    pipe = Pipeline(target, drafter, ScheduleConfig.parse(2))
    draws = 2000
    counts, rejection_share = sample_joint(pipe, image, draws, 3)
    assert rejection_share > 0.2
    assert chi_square_p_value(counts, expected, draws) > 1e-3


def test_a_drafter_depth_cap_is_warned_and_reported(tiny_llava_path):
    """A static tree 3 deep under draft_length=8: one warning, the cap and both lengths in the metrics."""
    import warnings

    from vlmspec import DraftDepthWarning, ModelDrafter, Pipeline, ScheduleConfig, Target
    from vlmspec.drafters.eagle import EagleConfig

    from conftest import random_image

    target = Target.load(tiny_llava_path)
    copy = ModelDrafter.from_pretrained(tiny_llava_path)
    drafter = ModelDrafter(copy.model, copy.tokenizer, tree_paths=[[0], [1], [0, 0], [0, 0, 0]])
    assert drafter.max_depth == 3 and copy.max_depth is None
    pipe = Pipeline(target, drafter, ScheduleConfig.parse(8))
    with pytest.warns(DraftDepthWarning, match="at most 3 tokens deep.*draft_length=8.*depth=6"):
        result = pipe.generate(random_image(1), "Describe this.", max_new_tokens=30)
    m = result.metrics
    assert m.draft_depth_cap == 3 and m.mean_draft_length <= 3 < m.mean_requested_length
    with warnings.catch_warnings():
        warnings.simplefilter("error", DraftDepthWarning)  # said once per pipeline and setting
        pipe.generate(random_image(2), "Describe this.", max_new_tokens=10)
        Pipeline(target, drafter, ScheduleConfig.parse(3)).generate(random_image(2), "x", max_new_tokens=10)
    assert EagleConfig(tree="chain", depth=3).max_depth() == 3
    assert EagleConfig(tree="dynamic").max_depth() is None
    assert EagleConfig(tree="static", static_paths=((0,), (0, 0)), depth=5).max_depth() == 2


def test_cli_prints_vlmspec_warnings_in_one_line(capsys):
    from vlmspec.cli import _one_line_warning
    from vlmspec.errors import DraftDepthWarning

    _one_line_warning(DraftDepthWarning("capped at 3"), DraftDepthWarning, "x.py", 1)
    assert capsys.readouterr().err == "warning: capped at 3\n"
