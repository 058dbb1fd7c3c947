"""Greedy speculative decoding must reproduce `model.generate(do_sample=False)` token for token."""

from __future__ import annotations

import itertools

import pytest
import torch
import vlmspec
from vlmspec import ModelDrafter, NoDrafter, Pipeline, PromptLookupDrafter, ScheduleConfig, Target

from conftest import random_image

PROMPTS = [
    "Describe this.",
    "What is in the picture? Answer in detail.",
    "abc abc abc abc",
    "Count the shapes, then name their colours.",
    "x",
]


@pytest.fixture(scope="module")
def targets(tiny_llava_path, tiny_llava_next_path):
    return {"llava": Target.load(tiny_llava_path), "llava_next": Target.load(tiny_llava_next_path)}


@pytest.fixture(scope="module")
def copy_drafters(tiny_llava_path, tiny_llava_next_path):
    """A ModelDrafter that is a second, separately loaded copy of each target (it sees the image)."""
    return {
        "llava": ModelDrafter.from_pretrained(tiny_llava_path),
        "llava_next": ModelDrafter.from_pretrained(tiny_llava_next_path),
    }


@pytest.fixture(scope="module")
def other_drafter(other_tiny_llava_path):
    return ModelDrafter.from_pretrained(other_tiny_llava_path)


def reference_tokens(target: Target, inputs: dict, max_new_tokens: int, eos: list[int]) -> list[int]:
    out = target.model.generate(
        **inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=0
    )
    return out[0, inputs["input_ids"].shape[1] :].tolist()


SCHEDULES = ["1", "2", "3", "5", "8", "64", "adaptive", "cost-aware"]
DRAFTER_KINDS = ["prompt-lookup", "copy", "other", "none"]
# 2 targets x 4 drafters x 8 schedules = 64 combinations, each with its own seed/prompt/image/budget.
CASES = list(itertools.product(["llava", "llava_next"], DRAFTER_KINDS, SCHEDULES))


@pytest.mark.parametrize("kind,drafter_kind,schedule", CASES)
def test_greedy_matches_generate(kind, drafter_kind, schedule, targets, copy_drafters, other_drafter):
    seed = CASES.index((kind, drafter_kind, schedule))
    target = targets[kind]
    if drafter_kind == "other" and kind == "llava_next":
        drafter_kind = "prompt-lookup:2"  # the other model is a plain LLaVA; keep the combination count
    drafter = {
        "prompt-lookup": PromptLookupDrafter(),
        "prompt-lookup:2": vlmspec.build_drafter("prompt-lookup:2", target),
        "copy": copy_drafters[kind],
        "other": other_drafter,
        "none": NoDrafter(),
    }[drafter_kind]
    pipe = Pipeline(target, drafter, ScheduleConfig.parse(schedule))
    image = random_image(seed)
    prompt = PROMPTS[seed % len(PROMPTS)]
    max_new_tokens = 5 + (seed * 7) % 40
    inputs = pipe.prepare(image, prompt)
    expected = reference_tokens(target, inputs, max_new_tokens, target.eos_token_ids)
    result = pipe.generate(image, prompt, max_new_tokens=max_new_tokens)
    assert result.token_ids == expected
    assert result.text == target.tokenizer.decode(expected, skip_special_tokens=True)
    assert result.metrics.new_tokens == len(expected)


@pytest.mark.parametrize("kind", ["llava", "llava_next"])
@pytest.mark.parametrize("eos_position,draft_length", [(1, 8), (3, 8), (4, 5), (6, 3), (2, 1)])
def test_eos_inside_a_draft(kind, eos_position, draft_length, targets, copy_drafters):
    """Make a token the model emits mid-answer the EOS: generation must stop right there, inside the draft."""
    target = targets[kind]
    pipe = Pipeline(target, copy_drafters[kind], ScheduleConfig.parse(draft_length))
    image = random_image(100 + eos_position)
    inputs = pipe.prepare(image, "Describe this.")
    free_run = reference_tokens(target, inputs, 30, eos=[])
    eos_token = free_run[eos_position]
    expected = reference_tokens(target, inputs, 30, eos=[eos_token])
    assert expected[-1] == eos_token and len(expected) <= eos_position + 1
    original = target.eos_token_ids
    target.eos_token_ids = [eos_token]
    try:
        result = pipe.generate(image, "Describe this.", max_new_tokens=30)
    finally:
        target.eos_token_ids = original
    assert result.token_ids == expected
    assert result.finish_reason == "eos"


@pytest.mark.parametrize("max_new_tokens", [1, 2, 3, 7, 11])
def test_budget_hit_mid_draft(max_new_tokens, targets, copy_drafters):
    target = targets["llava"]
    pipe = Pipeline(target, copy_drafters["llava"], ScheduleConfig.parse(6))
    image = random_image(7)
    inputs = pipe.prepare(image, "Describe this.")
    expected = reference_tokens(target, inputs, max_new_tokens, eos=[])
    original = target.eos_token_ids
    target.eos_token_ids = []
    try:
        result = pipe.generate(image, "Describe this.", max_new_tokens=max_new_tokens)
    finally:
        target.eos_token_ids = original
    assert result.token_ids == expected
    assert len(result.token_ids) == max_new_tokens
    assert result.finish_reason == "length"


@pytest.mark.parametrize("kind", ["llava", "llava_next"])
def test_target_copy_drafter_reaches_tau_near_k_plus_one(kind, targets, copy_drafters):
    """A drafter identical to the target, seeing the image, gets every token accepted."""
    target, k, budget = targets[kind], 4, 60
    pipe = Pipeline(target, copy_drafters[kind], ScheduleConfig.parse(k))
    original = target.eos_token_ids
    target.eos_token_ids = []
    try:
        result = pipe.generate(random_image(3), "Describe this.", max_new_tokens=budget)
    finally:
        target.eos_token_ids = original
    m = result.metrics
    assert m.acceptance_per_position == [1.0] * k
    # prefill gives 1 token, every verify step gives k + 1: 60 tokens in 1 + ceil(59 / 5) = 13 forwards.
    assert m.target_forwards == 13
    assert m.tau == pytest.approx(budget / 13)
    assert m.tau > 0.9 * (k + 1)


def text_only_copy(vlm_path, out_dir):
    """Save the target's language model + LM head as a plain causal LM checkpoint (with the tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    vlm = AutoModelForImageTextToText.from_pretrained(vlm_path)
    lm = AutoModelForCausalLM.from_config(vlm.config.text_config)
    lm.model.load_state_dict(vlm.model.language_model.state_dict())
    lm.lm_head.load_state_dict(vlm.lm_head.state_dict())
    lm.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(vlm_path).save_pretrained(out_dir)
    return out_dir


def test_text_only_drafter_is_lossless_but_blind(targets, tiny_llava_path, tmp_path):
    """The same weights as a text-only drafter ("model:PATH") stay exact but lose the image, so accept less."""
    target = targets["llava"]
    text_only = vlmspec.build_drafter(f"model:{text_only_copy(tiny_llava_path, tmp_path / 'lm')}", target)
    assert not text_only.is_vlm
    seeing = Pipeline(target, ModelDrafter.from_pretrained(tiny_llava_path), ScheduleConfig.parse(4))
    blind = Pipeline(target, text_only, ScheduleConfig.parse(4))
    image = random_image(11)
    inputs = seeing.prepare(image, "Describe this.")
    expected = reference_tokens(target, inputs, 30, target.eos_token_ids)
    a = seeing.generate(image, "Describe this.", max_new_tokens=30)
    b = blind.generate(image, "Describe this.", max_new_tokens=30)
    assert a.token_ids == expected and b.token_ids == expected
    assert a.metrics.acceptance_rate == 1.0
    assert b.metrics.acceptance_rate < a.metrics.acceptance_rate


def test_two_images_in_one_prompt(targets, copy_drafters):
    target = targets["llava"]
    pipe = Pipeline(target, copy_drafters["llava"], ScheduleConfig.parse(3))
    images = [random_image(21), random_image(22)]
    inputs = pipe.prepare(images, "Compare the two pictures.")
    assert len(target.prefill(inputs)[0].image_spans) == 2
    expected = reference_tokens(target, inputs, 20, target.eos_token_ids)
    assert pipe.generate(images, "Compare the two pictures.", max_new_tokens=20).token_ids == expected


def test_preprocessed_inputs_path(targets):
    target = targets["llava_next"]
    pipe = Pipeline(target, PromptLookupDrafter(), ScheduleConfig.parse(4))
    inputs = pipe.prepare(random_image(5), "Describe this.")
    assert "image_sizes" in inputs
    expected = reference_tokens(target, inputs, 25, target.eos_token_ids)
    result = vlmspec.generate(inputs=inputs, target=target, drafter=PromptLookupDrafter(), max_new_tokens=25)
    assert result.token_ids == expected


def test_streaming_yields_the_same_text(targets, copy_drafters):
    target = targets["llava"]
    pipe = Pipeline(target, copy_drafters["llava"], ScheduleConfig.parse(3))
    image = random_image(9)
    full = pipe.generate(image, "Describe this.", max_new_tokens=30)
    stream = pipe.generate(image, "Describe this.", max_new_tokens=30, stream=True)
    pieces = list(stream)
    assert len(pieces) > 1
    assert "".join(pieces) == full.text
    assert stream.result.token_ids == full.token_ids


def test_stop_string_ends_generation(targets):
    target = targets["llava"]
    pipe = Pipeline(target, PromptLookupDrafter(), ScheduleConfig.parse(4))
    image = random_image(13)
    free = pipe.generate(image, "Describe this.", max_new_tokens=30)
    stop = free.text[3:5]
    assert stop
    result = pipe.generate(image, "Describe this.", max_new_tokens=30, stop=[stop])
    assert result.finish_reason == "stop_string"
    assert stop in result.text
    assert result.token_ids == free.token_ids[: len(result.token_ids)]
    assert stop not in target.tokenizer.decode(result.token_ids[:-1], skip_special_tokens=True)


@pytest.mark.parametrize("kind", ["llava", "llava_next"])
def test_vlm_drafter_after_a_generated_image_token(kind, targets, copy_drafters):
    """A generated token equal to the image placeholder id is an ordinary token: the VLM drafter's
    first forward (prompt + images, then the generated tokens) must not count it as an image."""
    from transformers import DynamicCache

    from vlmspec.core.cache import cache_kwargs
    from vlmspec.core.drafter import DraftContext
    from vlmspec.core.sampling import SamplingParams

    target, drafter = targets[kind], copy_drafters[kind]
    inputs = Pipeline(target, NoDrafter()).prepare(random_image(3), "Describe this.")
    state, _ = target.prefill(inputs)
    drafter.begin(DraftContext(target, state, SamplingParams(), None))
    prompt = inputs["input_ids"][0]
    committed = torch.cat([prompt, prompt.new_tensor([target.image_token_id])])  # [prompt_len + 1]
    draft = drafter.propose(committed, 3)  # raised DrafterMismatchError ("could not read the image inputs")
    # The same as a plain forward of the drafter model: prompt with images, then the placeholder id as text.
    image_inputs = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    cache = DynamicCache(config=drafter.model.config.get_text_config())
    drafter.model(input_ids=prompt[None], **image_inputs, **cache_kwargs(drafter.model, cache), use_cache=True)
    logits = drafter.model(input_ids=committed[None, -1:], **cache_kwargs(drafter.model, cache)).logits[0, -1]
    assert int(draft.tokens[0]) == int(logits[: target.vocab_size].argmax())
    drafter.end()
