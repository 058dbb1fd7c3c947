"""EagleDrafter: lossless greedy/sampling through chains, static and dynamic trees; caches; save/load.

Untrained drafters are enough for losslessness. To also exercise deep accepted paths
(through non-first children of a tree) some cases use a 1-layer target whose drafter is
fc = [I | 0] plus a copy of the target's only layer: it nearly reproduces the target.
Torch runs single-threaded here: on 2 shared cores the tiny models are ~50x faster so.
"""

from __future__ import annotations

import collections
import json

import pytest
import torch
from safetensors.torch import load_file

import vlmspec
from vlmspec import DrafterMismatchError, InputError, Pipeline, SamplingParams, ScheduleConfig, Target
from vlmspec.core.cache import cache_length, truncate_cache
from vlmspec.core.drafter import DraftContext, StepFeedback
from vlmspec.core.tree import tree_attention
from vlmspec.core.verify import verify_greedy
from vlmspec.drafters.eagle import DraftTree, EagleConfig, EagleDrafter, frequent_tokens
from vlmspec.drafters import eagle
from vlmspec.testing import TinyLlavaConfig, save_tiny_llava

from conftest import random_image
from test_lossless_sampling import SAMPLING, chi_square_p_value, distribution_setup

PROMPTS = ["Describe this.", "What is in the picture? Answer in detail.", "abc abc abc", "x", "Count the shapes."]
STATIC_TREES = [
    ((0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0)),
    tuple((0,) * d for d in range(1, 7)),
    tuple((r,) for r in range(10)) + ((0, 0), (0, 1), (0, 2), (0, 0, 0)),
    ((0,), (2,), (0, 3), (0, 3, 1), (2, 0)),
]


@pytest.fixture(scope="module")
def targets(tiny_llava_path, tiny_llava_next_path, tmp_path_factory):
    one_layer = save_tiny_llava(tmp_path_factory.mktemp("tiny_llava_1layer"), TinyLlavaConfig(num_layers=1), seed=3)
    return {
        "llava": Target.load(tiny_llava_path),
        "llava_next": Target.load(tiny_llava_next_path),
        "copy": Target.load(one_layer),
    }


def copy_drafter(target: Target, config: EagleConfig, **kwargs) -> EagleDrafter:
    """For a 1-layer target: fc reads only the token embedding, the layer is the target's layer."""
    drafter = EagleDrafter.from_target(target, config, init_layer_from_target=True, **kwargs)
    hidden = drafter.hidden_size
    with torch.no_grad():
        drafter.fc.weight.zero_()
        drafter.fc.weight[:, :hidden].copy_(torch.eye(hidden))
    return drafter


def make_drafter(kind: str, target: Target, config: EagleConfig, seed: int = 0, **kwargs) -> EagleDrafter:
    if kind == "copy":
        return copy_drafter(target, config, **kwargs)
    return EagleDrafter.from_target(target, config, seed=seed, init_layer_from_target=seed % 2 == 1, **kwargs)


def reference_tokens(target: Target, inputs: dict, max_new_tokens: int) -> list[int]:
    out = target.model.generate(
        **inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=target.eos_token_ids, pad_token_id=0
    )
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def greedy_cases() -> list[tuple]:
    """(target, EagleConfig kwargs, schedule): chains, static and dynamic trees of many shapes."""
    cases = []
    schedules = ["1", "2", "3", "4", "5", "6", "8", "adaptive"]
    totals = [1, 2, 5, 8, 16, 30, 48, 60]
    for i in range(42):
        kind = ("llava", "llava_next", "copy")[i % 3]
        shape = ("chain", "static", "dynamic")[(i // 3) % 3]
        if shape == "chain":
            config = dict(tree="chain", depth=None if i % 2 else 1 + i % 6)
        elif shape == "static":
            paths = STATIC_TREES[i % len(STATIC_TREES)]
            config = dict(tree="static", static_paths=paths, depth=None if i % 4 else 1 + i % 6)
        else:
            top_k = 1 + (i // 9 + 3 * (i % 3)) % 10  # the 12 dynamic cases cover top_k 1 .. 10
            config = dict(tree="dynamic", depth=1 + i % 6, top_k=top_k, total_tokens=totals[i % len(totals)])
        cases.append((kind, config, schedules[i % len(schedules)]))
    return cases


GREEDY_CASES = greedy_cases()


@pytest.mark.parametrize("index", range(len(GREEDY_CASES)))
def test_greedy_matches_generate(index, targets):
    kind, config_kwargs, schedule = GREEDY_CASES[index]
    target = targets[kind]
    drafter = make_drafter(kind, target, EagleConfig(**config_kwargs), seed=index)
    pipe = Pipeline(target, drafter, ScheduleConfig.parse(schedule))
    image = None if index % 7 == 5 else random_image(index)
    prompt = PROMPTS[index % len(PROMPTS)]
    max_new_tokens = 6 + (index * 11) % 30
    inputs = pipe.prepare(image, prompt)
    expected = reference_tokens(target, inputs, max_new_tokens)
    result = pipe.generate(image, prompt, max_new_tokens=max_new_tokens)
    assert result.token_ids == expected, (kind, config_kwargs, schedule)


def test_trees_accept_through_later_children(targets):
    """The near-copy drafter gets multi-token paths accepted, some through a non-first child."""
    target = targets["copy"]
    drafter = copy_drafter(target, EagleConfig(tree="dynamic", top_k=4, total_tokens=24, depth=5))
    state, logits, _ = _start(target, drafter, random_image(4), "Describe this.")
    committed = torch.cat([state.prompt_ids[0], logits.argmax(-1)])
    later_child, longest = False, 0
    for _ in range(12):
        draft = drafter.propose(committed, 5)
        tokens, hidden, path = _verify_step(target, state, committed, draft)
        first_child = {}
        for node, parent in enumerate(draft.parents.tolist()):
            first_child.setdefault(parent, node)
        later_child |= any(first_child[int(draft.parents[n])] != n for n in path)
        longest = max(longest, len(path))
        committed = torch.cat([committed, committed.new_tensor(tokens)])
        drafter.update(StepFeedback(len(path), path, committed, hidden))
    assert longest >= 3 and later_child


def test_untrained_copy_drafter_sanity(targets):
    """A drafter holding the target's only layer, fed the token embeddings, predicts text well."""
    target = targets["copy"]
    pipe = Pipeline(target, copy_drafter(target, EagleConfig(tree="chain")), ScheduleConfig.parse(4))
    original, target.eos_token_ids = target.eos_token_ids, []
    try:
        result = pipe.generate(None, "Describe this.", max_new_tokens=40)
    finally:
        target.eos_token_ids = original
    assert result.metrics.acceptance_rate > 0.6 and result.metrics.tau > 3.0


# --------------------------------------------------------------- sampling
def _sample_counts(pipe: Pipeline, inputs: dict, draws: int) -> tuple[collections.Counter, float]:
    """Counts of the 3-token outcomes, and the share of drafted depth that was rejected."""
    counts, drafted, accepted = collections.Counter(), 0.0, 0.0
    for seed in range(draws):
        result = pipe.generate(inputs=inputs, max_new_tokens=3, seed=seed, **SAMPLING)
        counts[tuple(result.token_ids)] += 1
        m = result.metrics
        depth = m.mean_draft_length * (m.target_forwards - 1)
        drafted += depth
        accepted += m.acceptance_rate * depth
    return counts, 1 - accepted / max(drafted, 1)


@pytest.fixture(scope="module")
def sampling_setup(targets):
    target, _, inputs, expected = distribution_setup(targets["llava"])
    return target, inputs, expected


@pytest.mark.parametrize(
    "config,draft_vocab",
    [
        (EagleConfig(tree="dynamic", top_k=3, total_tokens=6, depth=2), None),
        (EagleConfig(tree="chain"), list(range(3, 60))),  # q sampled over a trimmed vocabulary, scattered back
    ],
    ids=["dynamic-tree", "chain-trimmed-vocab"],
)
def test_sampling_keeps_the_target_distribution(config, draft_vocab, sampling_setup):
    target, inputs, expected = sampling_setup
    drafter = EagleDrafter.from_target(target, config, draft_vocab=draft_vocab, seed=5)
    counts, rejection_share = _sample_counts(Pipeline(target, drafter, ScheduleConfig.parse(2)), inputs, 1500)
    assert rejection_share > 0.2, "drafts must be rejected often for the test to mean something"
    assert chi_square_p_value(counts, expected, 1500) > 1e-3


def test_sampling_chain_returns_full_vocabulary_probs(targets):
    target = targets["llava"]
    vocab = torch.tensor([5, 9, 17, 30, 31, 40, 77])
    drafter = EagleDrafter.from_target(target, EagleConfig(tree="chain"), draft_vocab=vocab)
    generator = torch.Generator().manual_seed(0)
    state, logits, _ = _start(target, drafter, random_image(1), "Describe this.", SamplingParams(1.0), generator)
    committed = torch.cat([state.prompt_ids[0], logits.argmax(-1)])
    draft = drafter.propose(committed, 4)
    assert draft.tokens.shape == (4,) and draft.probs.shape == (4, target.vocab_size) and draft.parents is None
    assert torch.isin(draft.tokens, vocab).all()
    assert torch.allclose(draft.probs.sum(-1), torch.ones(4))
    outside = torch.ones(target.vocab_size, dtype=torch.bool)
    outside[vocab] = False
    assert (draft.probs[:, outside] == 0).all()
    assert (draft.probs[torch.arange(4), draft.tokens] > 0).all()


# ------------------------------------------------------------------ caches
def _start(target, drafter, image, prompt, sampling=SamplingParams(), generator=None):
    inputs = target.prepare([image] if image is not None else [], prompt)
    state, logits = target.prefill(inputs, need_hidden=True)
    drafter.begin(DraftContext(target, state, sampling, generator))
    return state, logits, inputs


def _verify_step(target, state, committed, draft):
    """One greedy verify step: returns (new tokens, target hidden of [pending, path], path)."""
    cached = cache_length(state.cache)
    scored = target.forward(state, torch.cat([committed[-1:], draft.tokens])[None], True, draft.parents)
    accepted = verify_greedy(draft.tokens, scored.logits[0], draft.parents)
    rows = [0] + [n + 1 for n in accepted.path]
    target.keep(state, cached, rows)
    return draft.tokens[accepted.path].tolist() + [accepted.next_token], scored.hidden[:, rows], accepted.path


def test_target_cache_after_tree_steps_equals_sequential_decoding(targets):
    target = targets["copy"]
    drafter = copy_drafter(target, EagleConfig(tree="dynamic", top_k=3, total_tokens=12, depth=4))
    state, logits, inputs = _start(target, drafter, random_image(8), "Describe this.")
    committed = torch.cat([state.prompt_ids[0], logits.argmax(-1)])
    gathered = 0
    for _ in range(6):
        draft = drafter.propose(committed, 4)
        tokens, hidden, path = _verify_step(target, state, committed, draft)
        gathered += path != list(range(len(path)))
        committed = torch.cat([committed, committed.new_tensor(tokens)])
        drafter.update(StepFeedback(len(path), path, committed, hidden))
        reference, _ = target.prefill(inputs)
        for token in committed[state.prompt_ids.shape[1] : -1].tolist():  # plain decoding, one token at a time
            target.forward(reference, committed.new_tensor([[token]]))
        assert cache_length(state.cache) == cache_length(reference.cache) == committed.shape[0] - 1
        for mine, plain in zip(state.cache.layers, reference.cache.layers):
            assert torch.allclose(mine.keys, plain.keys, atol=1e-5)
            assert torch.allclose(mine.values, plain.values, atol=1e-5)
    assert gathered, "at least one accepted path must need a gather (not a prefix of the nodes)"


def test_drafter_cache_is_restored_and_matches_teacher_forcing(targets):
    """After propose the drafter cache is the committed state again, and its root prediction equals
    forward_train over the whole committed sequence with the target's hidden states."""
    target = targets["llava"]
    drafter = EagleDrafter.from_target(target, EagleConfig(tree="dynamic", top_k=4, total_tokens=10), seed=2)
    with torch.no_grad():
        drafter.fc.weight.normal_(0, 0.1)  # use both halves of the input
    state, logits, inputs = _start(target, drafter, random_image(2), "Describe this.")
    committed = torch.cat([state.prompt_ids[0], logits.argmax(-1)])
    for _ in range(4):
        draft = drafter.propose(committed, 3)
        assert cache_length(drafter.cache) == committed.shape[0] - 1
        tokens, hidden, path = _verify_step(target, state, committed, draft)
        committed = torch.cat([committed, committed.new_tensor(tokens)])
        drafter.update(StepFeedback(len(path), path, committed, hidden))
    with torch.inference_mode():
        root_hidden, root_logits = drafter._catch_up(committed)
    full_inputs = dict(inputs, input_ids=committed[None, :-1], attention_mask=torch.ones_like(committed[None, :-1]))
    full_state, _ = target.prefill(full_inputs, need_hidden=True)
    with torch.no_grad():
        trained_hidden, trained_logits = drafter.forward_train(committed[None, 1:], full_state.prompt_hidden)
    assert torch.allclose(root_hidden[0, 0], trained_hidden[0, -1], atol=1e-4)
    assert torch.allclose(root_logits, trained_logits[0, -1], atol=1e-3)


def test_tree_mask_forward_equals_sequential_forwards(targets):
    target = targets["llava_next"]
    drafter = EagleDrafter.from_target(target, EagleConfig(), seed=4)
    with torch.no_grad():
        drafter.fc.weight.normal_(0, 0.1)
    state, logits, _ = _start(target, drafter, random_image(6), "What is in the picture?")
    committed = torch.cat([state.prompt_ids[0], logits.argmax(-1)])
    with torch.inference_mode():
        root_hidden, _ = drafter._catch_up(committed)
        base = cache_length(drafter.cache)
        tree = DraftTree(drafter, root_hidden, capacity=2)  # grows as nodes come
        parents = [-1, -1, -1, 0, 0, 1, 3, 3, 5, 6]  # depths 1 1 1 2 2 2 3 3 3 4
        tree.add([10, 13, 16], -1, 0.0)  # a level at once
        for i, parent in enumerate(parents[3:], start=3):
            tree.add(10 + 3 * i, parent, 0.0)
        assert tree.depths.tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4]
        assert tree.tokens.tolist() == [10 + 3 * i for i in range(len(parents))]
        for level in range(1, 5):  # one forward per level, over the nodes of that level
            tree.expand((tree.depths == level).nonzero().flatten())
        assert cache_length(drafter.cache) == base + len(parents)
        for node in range(len(parents)):
            path, cursor = [], node
            while cursor >= 0:
                path.insert(0, cursor)
                cursor = parents[cursor]
            truncate_cache(drafter.cache, base)
            hidden = root_hidden  # [1, 1, H]
            for depth, n in enumerate(path, start=1):  # plain causal forward, one token at a time
                ids = tree.tokens[n].reshape(1, 1)
                position = torch.tensor([[base - 1 + depth]])
                inputs = drafter._input_states(ids, hidden, position)
                mask = torch.ones(1, 1, 1, cache_length(drafter.cache) + 1, dtype=torch.bool)
                hidden = drafter._layer_forward(inputs, position, mask, drafter.cache)
            assert torch.allclose(hidden[0, 0], tree.outputs[node], atol=1e-5), node
    # the mask convention is the one the target uses for trees (without the root row)
    mask, positions = tree_attention(torch.tensor(parents), base, with_root=False)
    assert positions[0].tolist() == [base - 1 + d for d in (1, 1, 1, 2, 2, 2, 3, 3, 3, 4)]


def test_drafts_are_well_formed(targets):
    target = targets["llava"]
    for config, k, depth in [
        (EagleConfig(tree="dynamic", top_k=5, total_tokens=17, depth=6), 4, 4),
        (EagleConfig(tree="dynamic", top_k=2, total_tokens=60), 6, 6),
        (EagleConfig(tree="static", static_paths=STATIC_TREES[0]), 2, 2),
        (EagleConfig(tree="chain", depth=3), 8, 3),
    ]:
        drafter = EagleDrafter.from_target(target, config)
        state, logits, _ = _start(target, drafter, random_image(3), "Describe this.")
        committed = torch.cat([state.prompt_ids[0], logits.argmax(-1)])
        draft = drafter.propose(committed, k)
        assert draft.probs is None
        assert draft.depth == depth or (config.tree == "dynamic" and draft.depth < depth)
        assert cache_length(drafter.cache) == committed.shape[0] - 1  # draft positions dropped
        again = drafter.propose(committed, k)  # the restored state drafts the same again
        assert torch.equal(again.tokens, draft.tokens)
        if config.tree == "dynamic":
            assert len(draft.tokens) == min(config.total_tokens, config.top_k + (depth - 1) * config.top_k**2)
        if draft.parents is not None:
            parents = draft.parents.tolist()
            assert all(-1 <= p < i for i, p in enumerate(parents))
            for parent in set(parents):  # siblings are distinct tokens
                siblings = draft.tokens[draft.parents == parent]
                assert siblings.unique().numel() == siblings.numel()
        assert drafter.propose(committed, 0).tokens.numel() == 0


# --------------------------------------------------------------- save / load
def _perturbed(drafter: EagleDrafter) -> EagleDrafter:
    generator = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for parameter in drafter.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return drafter


def test_save_load_round_trip(targets, tmp_path):
    target = targets["llava"]
    config = EagleConfig(tree="dynamic", top_k=3, total_tokens=9, depth=3, input_norm=True)
    vocab = frequent_tokens([[5, 6, 6, 7], torch.tensor([7, 7, 8])], 50, include=target.eos_token_ids)
    vocab = torch.cat([vocab, torch.arange(20, 60)])
    drafter = _perturbed(EagleDrafter.from_target(target, config, draft_vocab=vocab))
    out = drafter.save_pretrained(tmp_path / "drafter")
    drafter.save_pretrained(out)  # overwriting an existing save works too
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    tensors = load_file(str(out / "model.safetensors"))
    assert torch.equal(tensors["draft_vocab"], vocab)
    assert not any("embed" in name or name.startswith("lm_head") for name in tensors)
    assert sum(t.numel() for t in tensors.values()) == sum(p.numel() for p in drafter.parameters()) + vocab.numel()
    meta = json.loads((out / "config.json").read_text())
    assert meta["eagle"]["input_norm"] is True
    fields = {"architecture", "model_type", "hidden_size", "vocab_size", "num_layers", "embed_sha256"}
    assert set(meta["target_fingerprint"]) >= fields

    loaded = EagleDrafter.from_pretrained(out, target)
    built = vlmspec.build_drafter(f"eagle:{out}", target)
    for a, b in [(drafter, loaded), (drafter, built)]:
        assert a.state_dict().keys() == b.state_dict().keys()
        assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    drafts = []
    for d in (drafter, loaded, built):
        state, logits, _ = _start(target, d, random_image(12), "Describe this.")
        drafts.append(d.propose(torch.cat([state.prompt_ids[0], logits.argmax(-1)]), 3))
    for other in drafts[1:]:
        assert torch.equal(drafts[0].tokens, other.tokens) and torch.equal(drafts[0].parents, other.parents)
    assert torch.isin(drafts[0].tokens, vocab).all()
    # spec-string overrides of how it drafts
    chain = vlmspec.build_drafter(f"eagle:{out}?tree=chain&depth=2", target)
    assert chain.config.tree == "chain" and chain.config.depth == 2 and chain.config.input_norm
    with pytest.raises(InputError, match="options are"):
        vlmspec.build_drafter(f"eagle:{out}?width=3", target)
    # static trees from a spec string: the default shape, or paths= digits
    from vlmspec.drafters.eagle import DEFAULT_STATIC_PATHS

    static = vlmspec.build_drafter(f"eagle:{out}?tree=static", target)
    assert static.config.tree == "static" and static.config.static_paths == DEFAULT_STATIC_PATHS
    custom = vlmspec.build_drafter(f"eagle:{out}?tree=static&paths=0,1,00,01,000", target)
    assert custom.config.static_paths == ((0,), (1,), (0, 0), (0, 1), (0, 0, 0))
    inputs = target.prepare([random_image(12)], "Describe this.")
    want = reference_tokens(target, inputs, 24)
    for d in (static, custom):
        assert Pipeline(target, d).generate(inputs=inputs, max_new_tokens=24).token_ids == want
    with pytest.raises(InputError, match="paths are comma-separated"):
        vlmspec.build_drafter(f"eagle:{out}?tree=static&paths=0,x", target)
    with pytest.raises(InputError, match="needs tree=static"):
        vlmspec.build_drafter(f"eagle:{out}?tree=chain&paths=0,1", target)


def test_a_float32_trained_drafter_loads_on_its_target_in_bf16_but_not_on_another(tiny_llava_path,
                                                                                  other_tiny_llava_path, tmp_path):
    from vlmspec import TargetConfig

    out = EagleDrafter.from_target(Target.load(tiny_llava_path)).save_pretrained(tmp_path / "d")
    for dtype in ("bfloat16", "float16"):
        same = Target.load(tiny_llava_path, TargetConfig(dtype=dtype, fast_cpu=False))
        EagleDrafter.from_pretrained(out, same)  # the byte hash differs; the probed values agree
        other = Target.load(other_tiny_llava_path, TargetConfig(dtype=dtype, fast_cpu=False))
        with pytest.raises(DrafterMismatchError, match=f"embed_sha256.*embeddings are {dtype}"):
            EagleDrafter.from_pretrained(out, other)
    saved = json.loads((out / "config.json").read_text())["target_fingerprint"]
    actual = eagle.target_fingerprint(Target.load(tiny_llava_path, TargetConfig(dtype="bfloat16", fast_cpu=False)))
    assert not eagle.fingerprint_mismatch(saved, actual)
    del saved["embed_probe"]  # a drafter saved before probes existed: the dtype change is named, not waved through
    assert any("no embed_probe" in d for d in eagle.fingerprint_mismatch(saved, actual))


def test_loading_for_another_target_fails(targets, tiny_llava_path, other_tiny_llava_path, tmp_path):
    out = EagleDrafter.from_target(targets["llava"]).save_pretrained(tmp_path / "d")
    other = Target.load(other_tiny_llava_path)
    with pytest.raises(DrafterMismatchError, match="embed_sha256.*(trained for|from_target)"):
        EagleDrafter.from_pretrained(out, other)
    with pytest.raises(DrafterMismatchError, match="architecture"):
        vlmspec.build_drafter(f"eagle:{out}", targets["llava_next"])
    with pytest.raises(DrafterMismatchError, match="num_layers"):
        EagleDrafter.from_pretrained(out, targets["copy"])
    with pytest.raises(vlmspec.ModelLoadError, match="not a saved EAGLE drafter"):
        EagleDrafter.from_pretrained(tmp_path / "missing", other)
    # the same checkpoint loaded twice is the same target: fine
    assert EagleDrafter.from_pretrained(out, Target.load(tiny_llava_path)).config == EagleConfig()


# ------------------------------------------------------------ bad inputs
@pytest.mark.parametrize(
    "draft_vocab,message",
    [
        ([], "empty"),
        ([1, 2, 2], "more than once"),
        ([1, 5000], "outside the target vocabulary"),
        ([-1, 3], "outside the target vocabulary"),
        ([[1, 2]], "1-D"),
        ([1.0, 2.0], "integer"),
    ],
)
def test_bad_draft_vocab(draft_vocab, message, targets):
    with pytest.raises(InputError, match=message):
        EagleDrafter.from_target(targets["llava"], draft_vocab=draft_vocab)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(tree="static", static_paths=[[0], [-1]]), "negative rank"),
        (dict(tree="static", static_paths=[[0], [1, 0]]), r"needs its prefix \[1\]"),
        (dict(tree="static", static_paths=[]), "at least one non-empty path"),
        (dict(tree="static", static_paths=[[0], []]), "at least one non-empty path"),
        (dict(tree="static", static_paths=[[0], ["a"]]), "integer ranks"),
        (dict(tree="dynamic", static_paths=[[0]]), "only apply"),
        (dict(tree="beam"), "must be one of"),
        (dict(depth=0), "depth"),
        (dict(top_k=0), "top_k"),
        (dict(total_tokens=0), "total_tokens"),
        (dict(input_norm="yes"), "input_norm"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(InputError, match=message):
        EagleConfig(**kwargs)


def test_configs_that_do_not_fit_the_vocabulary(targets):
    target = targets["llava"]
    with pytest.raises(InputError, match="rank 3 does not exist"):
        EagleDrafter.from_target(target, EagleConfig(tree="static", static_paths=[[0], [3]]), draft_vocab=[4, 5, 6])
    with pytest.raises(InputError, match="top_k=8 exceeds"):
        EagleDrafter.from_target(target, EagleConfig(top_k=8), draft_vocab=[4, 5, 6])
    with pytest.raises(InputError, match="needs a draft_vocab"):
        EagleDrafter.from_target(target, EagleConfig(trainable_head=True))
    with pytest.raises(InputError, match="Unknown EagleConfig fields"):
        EagleConfig.from_dict({"tree": "chain", "width": 3})


def test_frequent_tokens():
    ids = frequent_tokens([[1, 2, 2, 3, 3, 3], torch.tensor([4, 4, 4, 4])], 3)
    assert ids.tolist() == [4, 3, 2]
    assert frequent_tokens([[1, 2, 2]], 2, include=[9]).tolist() == [9, 2]
    assert frequent_tokens([[5, 6]], 10).tolist() == [5, 6]
    with pytest.raises(InputError, match="n >= 1"):
        frequent_tokens([[1]], 0)


# ------------------------------------------------------------- training hook
def test_forward_train_shapes_padding_and_gradients(targets):
    target = targets["llava"]
    drafter = EagleDrafter.from_target(target, EagleConfig(input_norm=True), draft_vocab=torch.arange(40))
    drafter.train()
    hidden_size = drafter.hidden_size
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(6, 100, (2, 7), generator=generator)
    hidden = torch.randn(2, 7, hidden_size, generator=generator)
    draft_hidden, draft_logits = drafter.forward_train(ids, hidden)
    assert draft_hidden.shape == (2, 7, hidden_size) and draft_logits.shape == (2, 7, 40)
    draft_logits.sum().backward()
    assert drafter.fc.weight.grad is not None and drafter.layer.self_attn.q_proj.weight.grad is not None
    assert target.model.get_input_embeddings().weight.grad is None
    # left padding changes nothing for the real positions
    padded_ids = torch.cat([torch.zeros(2, 3, dtype=torch.long), ids], dim=1)
    padded_hidden = torch.cat([torch.zeros(2, 3, hidden_size), hidden], dim=1)
    mask = torch.cat([torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 7, dtype=torch.long)], dim=1)
    with torch.no_grad():
        plain, _ = drafter.forward_train(ids, hidden)
        padded, _ = drafter.forward_train(padded_ids, padded_hidden, mask)
    assert torch.allclose(padded[:, 3:], plain, atol=1e-5)
    drafter.eval()


def test_target_fingerprint_cached_until_weights_change(targets, monkeypatch):
    """The embedding is hashed once per weight version: a second call re-uses it, an in-place
    edit of the embedding (a new version) is hashed again and gives a different fingerprint."""
    import hashlib

    from vlmspec.drafters import eagle, fingerprint

    target = targets["llava"]
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(fingerprint.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    first = eagle.target_fingerprint(target)
    again = eagle.target_fingerprint(target)
    assert again == first
    hashed = len(calls)
    assert hashed <= 1
    weight = target.model.get_input_embeddings().weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight[0, 0] += 1.0
        edited = eagle.target_fingerprint(target)
        assert len(calls) == hashed + 1
        assert edited["embed_sha256"] != first["embed_sha256"]
        again["embed_sha256"] = "mutated copy"  # callers get copies, never the cached dict
        assert eagle.target_fingerprint(target)["embed_sha256"] == edited["embed_sha256"]
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert eagle.target_fingerprint(target) == first


def test_warm_start_accepts_another_fine_tune_only(targets, tmp_path):
    """warm_start=True (the trainer's warm_start_from) loads a drafter of another fine-tune of the
    same base model, and what it saves carries the new target's fingerprint; a plain load still
    refuses it, and a drafter of another base (other embeddings) is refused even for a warm start."""
    target = targets["llava"]
    drafter = EagleDrafter.from_target(target, EagleConfig(tree="chain", depth=2), seed=1)
    drafter.save_pretrained(tmp_path / "d")
    weight = target.model.get_decoder().layers[-1].mlp.down_proj.weight
    embed = target.model.get_input_embeddings().weight
    before, embed_before = weight.detach().clone(), embed.detach().clone()
    try:
        with torch.no_grad():
            weight.add_(1e-3 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
        with pytest.raises(DrafterMismatchError, match="layer_probe"):
            EagleDrafter.from_pretrained(tmp_path / "d", target)
        warm = EagleDrafter.from_pretrained(tmp_path / "d", target, warm_start=True)
        for name, tensor in drafter.state_dict().items():
            assert torch.equal(tensor, warm.state_dict()[name]), name
        warm.save_pretrained(tmp_path / "warm")
        assert EagleDrafter.from_pretrained(tmp_path / "warm", target).fingerprint() == eagle.target_fingerprint(target)
        with torch.no_grad():
            embed.add_(1e-2)
        with pytest.raises(DrafterMismatchError, match="embed_sha256"):
            EagleDrafter.from_pretrained(tmp_path / "d", target, warm_start=True)
    finally:
        with torch.no_grad():
            weight.copy_(before)
            embed.copy_(embed_before)


def test_a_drafter_refuses_another_fine_tune_of_the_same_base(targets, tmp_path):
    """Same base model, same embeddings, but the decoder fine-tuned (as a LoRA merge does): the
    layer probe tells them apart, in float32 and across dtypes; an old config without it is named."""
    target = targets["llava"]
    drafter = EagleDrafter.from_target(target, EagleConfig(tree="chain", depth=2), seed=1)
    drafter.save_pretrained(tmp_path / "d")
    saved = json.loads((tmp_path / "d" / "config.json").read_text())["target_fingerprint"]
    assert saved["layer_probe"] and not eagle.fingerprint_mismatch(saved, eagle.target_fingerprint(target))
    layer = target.model.get_decoder().layers[-1]
    weight = layer.mlp.down_proj.weight
    before = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.add_(1e-3 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
        actual = eagle.target_fingerprint(target)
        assert actual["embed_sha256"] == saved["embed_sha256"]  # the embedding alone cannot tell
        assert any("fine-tuned differently" in d for d in eagle.fingerprint_mismatch(saved, actual))
        with pytest.raises(DrafterMismatchError, match="layer_probe"):
            EagleDrafter.from_pretrained(tmp_path / "d", target)
    finally:
        with torch.no_grad():
            weight.copy_(before)
    assert EagleDrafter.from_pretrained(tmp_path / "d", target).feature_layers is None
    old = dict(saved)
    del old["layer_probe"]
    assert any("older vlmspec" in d for d in eagle.fingerprint_mismatch(old, eagle.target_fingerprint(target)))
