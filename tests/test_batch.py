"""Batched generation: ragged acceptance, outputs identical to running each sequence alone."""

from __future__ import annotations

import pytest

from vlmspec import InputError, ModelDrafter, NoDrafter, Pipeline, PromptLookupDrafter, ScheduleConfig, Target

from conftest import random_image

PAIRS = [
    ("Describe this.", (1, None, None)),
    ("Hi there, what is shown in this picture? Answer in detail.", (2, 80, 20)),
    ("x", (3, 17, 61)),
]


@pytest.fixture(scope="module")
def targets(tiny_llava_path, tiny_llava_next_path):
    return {"llava": Target.load(tiny_llava_path), "llava_next": Target.load(tiny_llava_next_path)}


@pytest.fixture(scope="module")
def drafters(tiny_llava_path, tiny_llava_next_path, other_tiny_llava_path):
    """drafters(name, kind) -> a drafter for a target of that kind."""
    copies = {
        "llava": ModelDrafter.from_pretrained(tiny_llava_path),
        "llava_next": ModelDrafter.from_pretrained(tiny_llava_next_path),
    }
    other = ModelDrafter.from_pretrained(other_tiny_llava_path)

    def make(name: str, kind: str):
        if name == "prompt-lookup":
            return PromptLookupDrafter()
        if name == "none":
            return NoDrafter()
        if name == "copy":
            return copies[kind]
        if name == "other":
            return other
        tree = [[0], [1], [0, 0], [1, 0], [0, 0, 0]]
        return ModelDrafter(copies[kind].model, copies[kind].tokenizer, tree_paths=tree)

    return make


def pairs_for(seed: int, count: int = 3):
    return [(random_image(seed * 10 + s, w, h), prompt) for prompt, (s, w, h) in PAIRS[:count]]


CASES = [
    ("llava", "prompt-lookup", 3),
    ("llava", "copy", 4),
    ("llava", "other", 3),
    ("llava", "none", 2),
    ("llava", "copy-tree", 3),
    ("llava_next", "prompt-lookup", 5),
    ("llava_next", "copy", 2),
    ("llava_next", "copy-tree", 2),
]


@pytest.mark.parametrize("kind,drafter_kind,k", CASES)
def test_batched_greedy_equals_single_runs_and_generate(kind, drafter_kind, k, targets, drafters):
    if drafter_kind == "other" and kind != "llava":
        pytest.skip("the other model is a LLaVA")
    target = targets[kind]
    pipe = Pipeline(target, drafters(drafter_kind, kind), ScheduleConfig.parse(k))
    seed = CASES.index((kind, drafter_kind, k))
    pairs = pairs_for(seed)
    budget = 12 + 5 * seed
    batched = pipe.generate_batch(pairs, max_new_tokens=budget)
    for (image, prompt), result in zip(pairs, batched):
        alone = pipe.generate(image, prompt, max_new_tokens=budget)
        inputs = pipe.prepare(image, prompt)
        reference = target.model.generate(**inputs, max_new_tokens=budget, do_sample=False)
        assert result.token_ids == alone.token_ids == reference[0, inputs["input_ids"].shape[1] :].tolist()
        assert result.metrics.target_forwards == alone.metrics.target_forwards


def test_ragged_acceptance_in_one_batch(targets, drafters):
    """Sequences in the same batch accept different numbers of tokens per step and still match."""
    target = targets["llava"]
    pipe = Pipeline(target, drafters("other", "llava"), ScheduleConfig.parse(4))
    pairs = pairs_for(7)
    batched = pipe.generate_batch(pairs, max_new_tokens=40)
    forwards = {r.metrics.target_forwards for r in batched}
    rates = {round(r.metrics.acceptance_rate, 3) for r in batched}
    assert len(forwards) > 1 or len(rates) > 1, "the cases should accept differently"
    for (image, prompt), result in zip(pairs, batched):
        assert result.token_ids == pipe.generate(image, prompt, max_new_tokens=40).token_ids


def test_sequences_finishing_at_different_times(targets, drafters):
    target = targets["llava"]
    pipe = Pipeline(target, drafters("copy", "llava"), ScheduleConfig.parse(3))
    pairs = pairs_for(3)
    singles = [pipe.generate(image, prompt, max_new_tokens=30) for image, prompt in pairs]
    original = target.eos_token_ids
    target.eos_token_ids = [singles[0].token_ids[4], singles[1].token_ids[9]]  # stop two sequences early
    try:
        batched = pipe.generate_batch(pairs, max_new_tokens=30)
        singles = [pipe.generate(image, prompt, max_new_tokens=30) for image, prompt in pairs]
    finally:
        target.eos_token_ids = original
    assert len({len(r.token_ids) for r in batched}) > 1
    assert [r.token_ids for r in batched] == [r.token_ids for r in singles]


def test_batched_sampling_equals_single_runs_with_the_same_seed(targets, drafters):
    target = targets["llava_next"]
    pipe = Pipeline(target, drafters("copy", "llava_next"), ScheduleConfig.parse(3))
    pairs = pairs_for(5)
    batched = pipe.generate_batch(pairs, max_new_tokens=20, temperature=1.0, top_k=5, seed=11)
    for (image, prompt), result in zip(pairs, batched):
        alone = pipe.generate(image, prompt, max_new_tokens=20, temperature=1.0, top_k=5, seed=11)
        assert result.token_ids == alone.token_ids


def test_batch_of_one_and_bad_batches(targets):
    pipe = Pipeline(targets["llava"], PromptLookupDrafter())
    image, prompt = pairs_for(1, 1)[0]
    assert pipe.generate_batch([(image, prompt)], max_new_tokens=10)[0].token_ids == pipe.generate(
        image, prompt, max_new_tokens=10
    ).token_ids
    with pytest.raises(InputError, match="at least one"):
        pipe.generate_batch([])
    with pytest.raises(InputError, match=r"\(image, prompt\) pairs"):
        pipe.generate_batch(["just a prompt"])


def test_streamed_batch_pieces_add_up_to_each_sequences_text(targets, drafters):
    """generate_batch(stream=True): (index, piece) events, interleaved across the batch as each
    sequence accepts tokens; each sequence's pieces join to its text, equal to the plain batch's."""
    from vlmspec import BatchStream

    target = targets["llava"]
    pipe = Pipeline(target, drafters("other", "llava"), ScheduleConfig.parse(3))
    pairs = pairs_for(9)
    plain = pipe.generate_batch(pairs, max_new_tokens=24)
    stream = pipe.generate_batch(pairs, max_new_tokens=24, stream=True)
    assert isinstance(stream, BatchStream) and stream.results is None
    events = list(stream)
    joined = ["".join(piece for i, piece in events if i == b) for b in range(len(pairs))]
    assert joined == [r.text for r in stream.results] == [r.text for r in plain]
    assert [r.token_ids for r in stream.results] == [r.token_ids for r in plain]
    order = [i for i, _ in events]
    assert order != sorted(order), "events should interleave across the batch, not come one sequence at a time"
    assert all(order.count(b) > 1 for b in range(len(pairs)))
