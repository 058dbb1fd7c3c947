"""Vision-aware drafters (ViSpec, MSD, SpecVLM): lossless through chains and trees, 1 and 2 images,
LLaVA and LLaVA-NeXT, batches of 3, sampling; slot counts; compressor operators and gate;
ViSpec's img_fc at initialisation; inference == teacher forcing; save/load and fingerprints.

Drafters are untrained (random layer) or target-copy-initialised (layer copied from the
target's last layer); both must leave the target's outputs unchanged.
"""

from __future__ import annotations

import collections

import pytest
import torch

import vlmspec
from vlmspec import DrafterMismatchError, InputError, ModelLoadError, Pipeline, ScheduleConfig, Target
from vlmspec.core.cache import cache_length
from vlmspec.core.drafter import DraftContext, StepFeedback
from vlmspec.core.sampling import SamplingParams
from vlmspec.core.verify import verify_greedy
from vlmspec.drafters import (
    EagleConfig,
    EagleDrafter,
    MSDConfig,
    MSDDrafter,
    SpecVLMConfig,
    SpecVLMDrafter,
    ViSpecConfig,
    ViSpecDrafter,
)
from vlmspec.drafters.image_tokens import DrafterLayout, slot_positions, spans_for

from conftest import random_image
from test_lossless_sampling import SAMPLING, chi_square_p_value, distribution_setup

KINDS = {
    "vispec": (ViSpecDrafter, ViSpecConfig),
    "msd": (MSDDrafter, MSDConfig),
    "specvlm": (SpecVLMDrafter, SpecVLMConfig),
}
STATIC = ((0,), (1,), (0, 0), (1, 0), (0, 0, 0))
SHAPES = {
    "chain": dict(tree="chain"),
    "static": dict(tree="static", static_paths=STATIC),
    "dynamic": dict(tree="dynamic", top_k=4, total_tokens=12, depth=4),
}


@pytest.fixture(scope="module")
def targets(tiny_llava_path, tiny_llava_next_path):
    return {"llava": Target.load(tiny_llava_path), "llava_next": Target.load(tiny_llava_next_path)}


def make(kind: str, target: Target, shape: str = "dynamic", copy_init: bool = False, seed: int = 0, **extra):
    cls, config_cls = KINDS[kind]
    config = config_cls(**SHAPES[shape], **extra)
    return cls.from_target(target, config, init_layer_from_target=copy_init, seed=seed)


def images(count: int, seed: int) -> list:
    sizes = [(None, None), (80, 20), (17, 61)]
    return [random_image(seed * 10 + i, *sizes[i % 3]) for i in range(count)]


def reference(target: Target, inputs: dict, max_new_tokens: int) -> list[int]:
    out = target.model.generate(
        **inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=target.eos_token_ids, pad_token_id=0
    )
    return out[0, inputs["input_ids"].shape[1] :].tolist()


# (drafter, target, tree shape, images, copy-initialised, schedule, extra config)
GREEDY_CASES = [
    ("vispec", "llava", "chain", 1, False, "3", {}),
    ("vispec", "llava_next", "static", 2, True, "4", {}),
    ("vispec", "llava", "dynamic", 2, False, "adaptive", dict(num_q=5)),
    ("vispec", "llava_next", "dynamic", 1, True, "4", {}),
    ("msd", "llava", "static", 1, True, "2", {}),
    ("msd", "llava_next", "chain", 2, False, "4", {}),
    ("msd", "llava", "dynamic", 2, True, "5", {}),
    ("msd", "llava_next", "dynamic", 1, False, "adaptive", {}),
    ("specvlm", "llava", "dynamic", 1, False, "4", {}),
    ("specvlm", "llava_next", "chain", 2, True, "3", {}),
    ("specvlm", "llava", "static", 2, True, "4", dict(combine="mix")),
    ("specvlm", "llava_next", "dynamic", 2, False, "4", dict(combine="concat")),
    ("specvlm", "llava", "chain", 1, True, "4", dict(operators=("text",))),
    ("specvlm", "llava_next", "static", 1, False, "3", dict(operators=("conv", "resample"), conv_ratio=3)),
]


@pytest.mark.parametrize("index", range(len(GREEDY_CASES)))
def test_greedy_equals_plain_decoding(index, targets):
    kind, target_name, shape, count, copy_init, schedule, extra = GREEDY_CASES[index]
    target = targets[target_name]
    drafter = make(kind, target, shape, copy_init, seed=index, **extra)
    pipe = Pipeline(target, drafter, ScheduleConfig.parse(schedule))
    pictures, prompt = images(count, index), ["Describe this.", "What is in the picture? Answer in detail."][index % 2]
    budget = 16 + 3 * index
    result = pipe.generate(pictures, prompt, max_new_tokens=budget)
    assert result.token_ids == reference(target, pipe.prepare(pictures, prompt), budget), GREEDY_CASES[index]


@pytest.mark.parametrize(
    "kind,target_name,shape",
    [("vispec", "llava", "dynamic"), ("msd", "llava_next", "chain"), ("specvlm", "llava_next", "static")],
)
def test_batch_of_three_equals_single_runs(kind, target_name, shape, targets):
    target = targets[target_name]
    drafter = make(kind, target, shape, copy_init=True, seed=3)
    pipe = Pipeline(target, drafter, ScheduleConfig.parse(3))
    pairs = [
        (images(1, 1), "Describe this."),
        (images(2, 2), "Hi there, what is shown? Answer in detail."),
        (images(1, 3)[0], "x"),
    ]
    batched = pipe.generate_batch(pairs, max_new_tokens=14)
    batch_choices = list(getattr(drafter, "choices", []))[-3:]
    for i, ((picture, prompt), result) in enumerate(zip(pairs, batched)):
        alone = pipe.generate(picture, prompt, max_new_tokens=14)
        assert result.token_ids == alone.token_ids == reference(target, pipe.prepare(picture, prompt), 14)
        if kind == "specvlm":  # the batch reports each sample's operator, the same as a single run
            mine, single = batch_choices[i], drafter.last_choice  # batched prefill: weights equal up to rounding
            assert (mine.operator, mine.tokens_per_image) == (single.operator, single.tokens_per_image)
            assert mine.operator is not None and sum(mine.tokens_per_image) == sum(single.tokens_per_image)


@pytest.fixture(scope="module")
def sampling_setup(targets):
    target, _, inputs, expected = distribution_setup(targets["llava"])
    return target, inputs, expected


@pytest.mark.parametrize("kind,shape", [("vispec", "chain"), ("msd", "dynamic"), ("specvlm", "chain")])
def test_sampling_keeps_the_target_distribution(kind, shape, sampling_setup):
    target, inputs, expected = sampling_setup
    drafter = make(kind, target, shape, copy_init=kind == "msd", seed=5)
    pipe = Pipeline(target, drafter, ScheduleConfig.parse(2))
    draws, counts, drafted, accepted = 1000, collections.Counter(), 0.0, 0.0
    for seed in range(draws):
        result = pipe.generate(inputs=inputs, max_new_tokens=3, seed=seed, **SAMPLING)
        counts[tuple(result.token_ids)] += 1
        m = result.metrics
        depth = m.mean_draft_length * (m.target_forwards - 1)
        drafted, accepted = drafted + depth, accepted + m.acceptance_rate * depth
    assert 1 - accepted / drafted > 0.2, "drafts must be rejected often for the test to mean something"
    assert chi_square_p_value(counts, expected, draws) > 1e-3


def test_msd_copy_drafter_sees_the_image_as_the_target_does(tmp_path_factory):
    """1-layer target, drafter = its only layer with fc reading the token embedding: MSD feeds the
    image exactly as the target's layer sees it (same features, same positions), so it is accepted
    far more than the same weights without the image path (EAGLE), and stays lossless."""
    from vlmspec.testing import TinyLlavaConfig, save_tiny_llava

    target = Target.load(save_tiny_llava(tmp_path_factory.mktemp("one_layer"), TinyLlavaConfig(num_layers=1), seed=3))
    target.eos_token_ids = []
    pictures, taus = [random_image(1), random_image(2, 80, 20)], {}
    for cls, config_cls in [(MSDDrafter, MSDConfig), (EagleDrafter, EagleConfig)]:
        config = config_cls(tree="dynamic", top_k=4, total_tokens=16, depth=5)
        drafter = cls.from_target(target, config, init_layer_from_target=True)
        with torch.no_grad():
            drafter.fc.weight.zero_()
            drafter.fc.weight[:, : drafter.hidden_size].copy_(torch.eye(drafter.hidden_size))
        pipe = Pipeline(target, drafter, ScheduleConfig.parse(5))
        result = pipe.generate(pictures, "Describe this.", max_new_tokens=40)
        assert result.token_ids == reference(target, pipe.prepare(pictures, "Describe this."), 40)
        taus[cls] = result.metrics.tau
    assert taus[MSDDrafter] > 2.0 and taus[MSDDrafter] > taus[EagleDrafter] + 0.5, taus


# ------------------------------------------------------------- shapes, counts, layout
def _begin(target, drafter, pictures, prompt="Describe this.", sampling=SamplingParams()):
    inputs = target.prepare(pictures, prompt)
    state, logits = target.prefill(inputs, need_hidden=True)
    drafter.begin(DraftContext(target, state, sampling, None))
    return state, logits, inputs


@pytest.mark.parametrize("target_name", ["llava", "llava_next"])
@pytest.mark.parametrize("count", [1, 2])
def test_drafter_positions_per_image(target_name, count, targets):
    target = targets[target_name]
    for kind, extra in [("vispec", dict(num_q=2)), ("vispec", dict(num_q=5)), ("msd", {}), ("specvlm", {})]:
        drafter = make(kind, target, **extra)
        state, _, _ = _begin(target, drafter, images(count, 7))
        prompt_len = state.prompt_ids.shape[1]
        tokens = [end - start for start, end in state.image_spans]
        assert len(tokens) == count and tokens == [f.shape[0] for f in state.image_features]
        if kind == "vispec":
            kept = [extra["num_q"] - 1] * count  # exactly num_q - 1 drafter positions per image
        elif kind == "msd":
            kept = tokens  # every image token
        else:
            kept = list(drafter.last_choice.tokens_per_image)
            assert kept == [drafter.config.tokens_for(drafter.last_choice.operator, n) for n in tokens]
        # the cache holds the text positions 0 .. P-2 and the kept image entries, never the raw image
        assert cache_length(drafter.cache) == prompt_len - 1 - sum(tokens) + sum(kept)
        layout = drafter._images.layout
        for (start, end), k in zip(state.image_spans, kept):
            inside = layout.positions[(layout.positions >= start) & (layout.positions < end)]
            assert inside.tolist() == list(range(end - k, end))  # the image's last k positions
        drafter.end()


def test_layout_rules():
    assert slot_positions((4, 10), 2) == [8, 9]
    assert slot_positions((4, 6), 4) == [4, 4, 4, 5]  # more slots than tokens: first position repeated
    layout = DrafterLayout.build(12, [(2, 5), (5, 9)], [1, 0], needs_output=None)
    assert layout.positions.tolist() == [0, 1, 4, 9, 10, 11] and layout.slots.tolist() == [-1, -1, 0, -1, -1, -1]
    ending = DrafterLayout.build(6, [(2, 6)], [0], needs_output=5)  # prompt ends with a dropped image
    assert ending.positions.tolist() == [0, 1, 5] and ending.slots.tolist() == [-1, -1, -1]
    positions, slots = layout.entries(3, 14)
    assert positions.tolist() == [4, 9, 10, 11, 12, 13] and slots.tolist() == [0, -1, -1, -1, -1, -1]
    assert layout.latest_image(torch.tensor([0, 5, 8, 9, 40])).tolist() == [-1, 0, 0, 1, 1]
    ids = torch.tensor([1, 3, 3, 3, 7, 3, 3, 8])
    assert spans_for(ids, 3, [torch.zeros(3, 4), torch.zeros(2, 4)]) == [(1, 4), (5, 7)]


@pytest.mark.parametrize("n", [1, 3, 7, 15, 33])
def test_compressor_operators_emit_the_configured_counts(n, targets):
    config = SpecVLMConfig(prune_ratio=4, pool_ratio=4, conv_ratio=3, resampler_queries=2)
    drafter = SpecVLMDrafter.from_target(targets["llava"], config)
    x = torch.randn(n, drafter.hidden_size, generator=torch.Generator().manual_seed(n))
    expected = {"prune": -(-n // 4), "pool": -(-n // 4), "conv": -(-n // 3), "resample": 2, "text": 0}
    with torch.no_grad():
        for operator, count in expected.items():
            out = drafter.compressor.apply(operator, x)
            assert out.shape == (count, drafter.hidden_size) and config.tokens_for(operator, n) == count, operator
        pooled = drafter.compressor.apply("pool", x)
        assert torch.allclose(pooled[-1], x[4 * (pooled.shape[0] - 1) :].mean(0), atol=1e-6)  # partial window
        pruned = drafter.compressor.apply("prune", x)
        assert all(any(torch.equal(row, y) for y in x) for row in pruned)  # a subset of the tokens
        concat = SpecVLMDrafter.from_target(targets["llava"], SpecVLMConfig(combine="concat"))
        slots, choice = concat.compressor([x], x.mean(0))
        assert slots[0].shape[0] == sum(expected.values()) and choice.operator is None
        mix = SpecVLMDrafter.from_target(targets["llava"], SpecVLMConfig(combine="mix"))
        slots, choice = mix.compressor([x], x.mean(0))
        assert slots[0].shape[0] == max(expected.values()) and abs(sum(choice.weights.values()) - 1) < 1e-5


def test_gate_depends_on_the_input_and_is_deterministic_at_inference(targets):
    target = targets["llava_next"]
    drafter = SpecVLMDrafter.from_target(target, SpecVLMConfig(), seed=1)
    generator = torch.Generator().manual_seed(0)
    hidden = drafter.hidden_size
    chosen = set()
    with torch.no_grad():
        for _ in range(24):
            features, question = [torch.randn(9, hidden, generator=generator)], torch.randn(hidden, generator=generator)
            first = drafter.compressor(features, question)[1]
            assert drafter.compressor(features, question)[1] == first  # argmax: the same every time
            chosen.add(first.operator)
        assert len(chosen) >= 2, "the gate must pick different operators for different inputs"
        # through the drafter: the choice comes from the sample's question and image features
        seen = set()
        for seed in range(6):
            _begin(target, drafter, images(1, seed), ["Describe this.", "x", "Count the shapes."][seed % 3])
            seen.add(drafter.last_choice.operator)
            again = drafter.last_choice
            _begin(target, drafter, images(1, seed), ["Describe this.", "x", "Count the shapes."][seed % 3])
            assert drafter.last_choice == again
        assert len(seen) >= 2
        # training mode: Gumbel-softmax draws vary for one input
        drafter.train()
        drawn = {drafter.compressor(features, question)[1].operator for _ in range(40)}
        drafter.eval()
    assert len(drawn) >= 2


# ------------------------------------------------------------------ ViSpec init
def test_vispec_img_fc_init_makes_it_the_eagle_drafter(targets):
    target = targets["llava"]
    eagle = EagleDrafter.from_target(target, EagleConfig(tree="dynamic", top_k=3, total_tokens=8), seed=4)
    vispec = ViSpecDrafter.from_target(target, ViSpecConfig(tree="dynamic", top_k=3, total_tokens=8), seed=4)
    vispec.load_state_dict(eagle.state_dict(), strict=False)
    with torch.no_grad():
        for d in (eagle, vispec):
            d.fc.weight.copy_(torch.randn(d.fc.weight.shape, generator=torch.Generator().manual_seed(0)) * 0.1)
    h, g = torch.randn(2, 5, vispec.hidden_size).unbind(0)
    assert torch.equal(vispec.img_fc(torch.cat([h, g], -1)), h)  # [I | 0]
    # no image: the first forward (and the whole draft) is the EagleDrafter's
    results = []
    for d in (eagle, vispec):
        state, logits, _ = _begin(target, d, [], "Describe this.")
        committed = torch.cat([state.prompt_ids[0], logits.argmax(-1)])
        with torch.inference_mode():
            root = d._catch_up(committed)
        results.append((root, d.propose(committed, 3)))
    assert torch.equal(results[0][0][0], results[1][0][0]) and torch.equal(results[0][1].tokens, results[1][1].tokens)
    # with an image: the input of every text position after it is the EagleDrafter's input
    ids = torch.randint(10, 90, (1, 6))
    with torch.no_grad():
        hidden = torch.randn(1, 6, vispec.hidden_size)
        vispec.forward_train(ids, hidden, image_features=[[torch.randn(2, vispec.hidden_size)]], image_spans=[[(1, 3)]])
        details = vispec.last_train_details
        state, _, _ = _begin(target, vispec, images(1, 2))
        positions = torch.arange(state.image_spans[0][1], state.image_spans[0][1] + 4)[None]
        hidden = torch.randn(1, 4, vispec.hidden_size)
        token_ids = torch.randint(10, 90, (1, 4))
        mine = vispec._input_states(token_ids, hidden, positions)
        assert torch.equal(mine, eagle._input_states(token_ids, hidden, positions))
    assert details.output_mask[0].tolist() == [True, False, True, True, True, True]  # num_q - 1 = 1 slot for the image
    assert details.text_mask[0].tolist() == [True, False, False, True, True, True]


# ------------------------------------------------------- inference == teacher forcing
@pytest.mark.parametrize("kind", ["vispec", "msd", "specvlm"])
def test_inference_equals_forward_train(kind, targets):
    """After a few verify steps the drafter's root prediction equals forward_train over the committed
    sequence: the same positions, image slots and global features, cache or no cache."""
    target = targets["llava_next"]
    drafter = make(kind, target, "dynamic", seed=2)
    with torch.no_grad():
        drafter.fc.weight.normal_(0, 0.1)
        if kind == "vispec":
            drafter.img_fc.weight.normal_(0, 0.1)
    pictures = images(2, 9)
    state, logits, inputs = _begin(target, drafter, pictures, "What is in the picture?")
    committed = torch.cat([state.prompt_ids[0], logits.argmax(-1)])
    for _ in range(3):
        draft = drafter.propose(committed, 3)
        cached = cache_length(state.cache)
        scored = target.forward(state, torch.cat([committed[-1:], draft.tokens])[None], True, draft.parents)
        accepted = verify_greedy(draft.tokens, scored.logits[0], draft.parents)
        rows = [0] + [n + 1 for n in accepted.path]
        target.keep(state, cached, rows)
        tokens = draft.tokens[accepted.path].tolist() + [accepted.next_token]
        committed = torch.cat([committed, committed.new_tensor(tokens)])
        drafter.update(StepFeedback(len(accepted.path), accepted.path, committed, scored.hidden[:, rows]))
    with torch.inference_mode():
        root_hidden, root_logits = drafter._catch_up(committed)
    full = dict(inputs, input_ids=committed[None, :-1], attention_mask=torch.ones_like(committed[None, :-1]))
    full_state, _ = target.prefill(full, need_hidden=True)
    with torch.no_grad():
        out = drafter.forward_train(
            committed[None, 1:], full_state.prompt_hidden, image_features=[state.image_features],
            image_spans=[state.image_spans], prompt_lengths=[state.prompt_ids.shape[1]],
        )
    assert torch.allclose(root_hidden[0, 0], out.draft_hidden[0, -1], atol=1e-4)
    assert torch.allclose(root_logits, out.draft_logits[0, -1], atol=1e-3)
    dropped = sum(e - s for s, e in state.image_spans) - sum(drafter._images.layout.slot_counts)
    assert int(drafter.last_train_details.output_mask.sum()) == committed.shape[0] - 1 - max(dropped, 0)
    kept = sum(drafter._images.layout.slot_counts) / sum(e - s for s, e in state.image_spans)
    assert abs(float(out.extras["metric/visual_token_ratio"]) - kept) < 1e-6


@pytest.mark.parametrize("kind", ["vispec", "msd", "specvlm"])
def test_forward_train_gradients_and_padding(kind, targets):
    target = targets["llava"]
    # text-only sends no gradient to the gate, so leave it out here
    extra = dict(operators=("prune", "pool", "conv", "resample")) if kind == "specvlm" else {}
    drafter = make(kind, target, seed=1, **extra)
    drafter.train()
    hidden_size, generator = drafter.hidden_size, torch.Generator().manual_seed(0)
    ids = torch.randint(6, 100, (2, 12), generator=generator)
    hidden = torch.randn(2, 12, hidden_size, generator=generator)
    one, two = torch.randn(4, hidden_size, generator=generator), torch.randn(3, hidden_size, generator=generator)
    features = [[one], [two, two]]
    spans = [[(2, 6)], [(1, 4), (4, 7)]]
    images_kw = dict(image_features=features, image_spans=spans, prompt_lengths=[8, 9])
    out = drafter.forward_train(ids, hidden, None, **images_kw, gate_temperature=0.5, generator=generator)
    details = drafter.last_train_details
    assert out.draft_hidden.shape == (2, 12, hidden_size) and out.draft_logits.shape[:2] == (2, 12)
    (out.draft_logits[details.text_mask].logsumexp(-1).sum() + out.draft_hidden.sum()).backward()
    trained = []
    if kind == "vispec":
        trained = [drafter.adaptor.queries, drafter.img_fc.weight]
    if kind == "specvlm":
        assert len(details.info) == 2 and all(c.operator for c in details.info)
        shares = [float(out.extras[f"metric/gate/{op}"]) for op in drafter.config.operators]
        assert abs(sum(shares) - 1) < 1e-6
        trained = [drafter.compressor.gate[1].weight]  # straight-through Gumbel reaches the gate
    for p in trained + [drafter.fc.weight, drafter.layer.self_attn.q_proj.weight]:
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert target.model.get_input_embeddings().weight.grad is None
    drafter.eval()
    with torch.no_grad():  # left padding changes nothing for the real positions
        plain = drafter.forward_train(ids, hidden, **images_kw)
        plain_mask = drafter.last_train_details.output_mask
        padded = drafter.forward_train(
            torch.cat([torch.zeros(2, 3, dtype=torch.long), ids], 1),
            torch.cat([torch.zeros(2, 3, hidden_size), hidden], 1),
            torch.cat([torch.zeros(2, 3), torch.ones(2, 12)], 1).long(), **images_kw,
        )
    assert torch.allclose(padded.draft_hidden[:, 3:], plain.draft_hidden, atol=1e-5)
    assert torch.equal(drafter.last_train_details.output_mask[:, 3:], plain_mask)


# ------------------------------------------------------------------ save / load
@pytest.mark.parametrize("kind", ["vispec", "msd", "specvlm"])
def test_save_load_round_trip_and_fingerprint(kind, targets, other_tiny_llava_path, tmp_path):
    target = targets["llava"]
    extra = {"vispec": dict(num_q=3), "msd": {}, "specvlm": dict(combine="mix", prune_ratio=2.5)}[kind]
    drafter = make(kind, target, "dynamic", copy_init=True, seed=7, **extra)
    with torch.no_grad():
        drafter.fc.weight.normal_(0, 0.1)
    out = drafter.save_pretrained(tmp_path / kind)
    loaded = type(drafter).from_pretrained(out, target)
    built = vlmspec.build_drafter(f"{kind}:{out}", target)
    assert loaded.config == drafter.config == built.config
    drafts = []
    for d in (drafter, loaded, built):
        assert d.state_dict().keys() == drafter.state_dict().keys()
        assert all(torch.equal(v, drafter.state_dict()[k]) for k, v in d.state_dict().items())
        state, logits, _ = _begin(target, d, images(2, 12))
        drafts.append(d.propose(torch.cat([state.prompt_ids[0], logits.argmax(-1)]), 3))
    for other in drafts[1:]:
        assert torch.equal(drafts[0].tokens, other.tokens) and torch.equal(drafts[0].parents, other.parents)
    chain = vlmspec.build_drafter(f"{kind}:{out}?tree=chain&depth=2", target)
    assert chain.config.tree == "chain" and chain.config.depth == 2 and type(chain) is type(drafter)
    with pytest.raises(DrafterMismatchError, match="embed_sha256"):
        type(drafter).from_pretrained(out, Target.load(other_tiny_llava_path))
    with pytest.raises(DrafterMismatchError, match="architecture"):
        vlmspec.build_drafter(f"{kind}:{out}", targets["llava_next"])
    wrong = EagleDrafter if kind != "msd" else ViSpecDrafter
    with pytest.raises(ModelLoadError, match="does not describe"):
        wrong.from_pretrained(out, target)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "config_cls,kwargs,message",
    [
        (ViSpecConfig, dict(num_q=1), "num_q"),
        (ViSpecConfig, dict(num_heads=0), "num_heads"),
        (SpecVLMConfig, dict(operators=("prune", "crop")), "operators"),
        (SpecVLMConfig, dict(operators=()), "operators"),
        (SpecVLMConfig, dict(prune_ratio=0.5), "prune_ratio"),
        (SpecVLMConfig, dict(conv_ratio=2.5), "conv_ratio"),
        (SpecVLMConfig, dict(combine="vote"), "combine"),
        (SpecVLMConfig, dict(gumbel_tau=0), "gumbel_tau"),
        (MSDConfig, dict(tree="beam"), "must be one of"),
    ],
)
def test_bad_configs(config_cls, kwargs, message):
    with pytest.raises(InputError, match=message):
        config_cls(**kwargs)


def test_wrong_config_type_and_heads(targets):
    with pytest.raises(InputError, match="needs a ViSpecConfig"):
        ViSpecDrafter(targets["llava"], MSDConfig())
    with pytest.raises(InputError, match="must divide"):
        ViSpecDrafter.from_target(targets["llava"], ViSpecConfig(num_heads=7))
    drafter = ViSpecDrafter.from_target(targets["llava"])
    with pytest.raises(InputError, match="num_q"):
        drafter.with_config(ViSpecConfig(num_q=3))
    assert drafter.with_config(ViSpecConfig(tree="chain")).config.tree == "chain"
