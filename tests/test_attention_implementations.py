"""Every attention implementation that runs on CPU: chain, tree and batched steps match `model.generate`.

Tree and batch steps hand the model a custom 4-D mask; eager attention adds it to the
scores, sdpa reads booleans. `core.masks.model_mask` must give each what it reads.
(flex_attention needs torch.compile, which does not run on these CPUs; flash attention
takes no 4-D mask and is refused with a clear error.)
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from vlmspec import ModelDrafter, Pipeline, PromptLookupDrafter, ScheduleConfig, Target, UnsupportedError
from vlmspec.core.masks import model_mask

from conftest import random_image

TREE = [[0], [1], [0, 0], [1, 0], [0, 0, 0], [0, 1]]
IMPLEMENTATIONS = ["sdpa", "eager"]


@pytest.fixture(scope="module")
def loaded(tiny_llava_path, other_tiny_llava_path):
    """implementation -> (target, chain drafter, tree drafter), each loaded with that implementation."""
    out = {}
    for impl in IMPLEMENTATIONS:
        model = AutoModelForImageTextToText.from_pretrained(tiny_llava_path, attn_implementation=impl)
        target = Target(model, AutoProcessor.from_pretrained(tiny_llava_path))
        draft_model = AutoModelForImageTextToText.from_pretrained(other_tiny_llava_path, attn_implementation=impl)
        chain = ModelDrafter(draft_model, target.tokenizer)
        tree = ModelDrafter(draft_model, target.tokenizer, tree_paths=TREE)
        out[impl] = (target, chain, tree)
    return out


def reference(target: Target, inputs: dict, budget: int) -> list[int]:
    out = target.model.generate(**inputs, max_new_tokens=budget, do_sample=False,
                                eos_token_id=target.eos_token_ids, pad_token_id=0)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("mode", ["chain", "tree", "lookup"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_generation_matches_generate(impl, mode, seed, loaded):
    target, chain, tree = loaded[impl]
    drafter = {"chain": chain, "tree": tree, "lookup": PromptLookupDrafter()}[mode]
    pipe = Pipeline(target, drafter, ScheduleConfig.parse(str(2 + seed)))
    image, prompt = random_image(100 + seed), ["Describe this.", "abc abc abc", "What is it?"][seed]
    budget = 20 + 7 * seed
    result = pipe.generate(image, prompt, max_new_tokens=budget)
    assert result.token_ids == reference(target, pipe.prepare(image, prompt), budget)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("mode", ["chain", "tree"])
def test_batch_matches_generate(impl, mode, loaded):
    target, chain, tree = loaded[impl]
    pipe = Pipeline(target, chain if mode == "chain" else tree, ScheduleConfig.parse("3"))
    pairs = [(random_image(200), "Describe this."), (random_image(201, 70, 20), "Hi there, what is shown here?"),
             (random_image(202), "x")]
    results = pipe.generate_batch(pairs, max_new_tokens=30)
    for (image, prompt), result in zip(pairs, results):
        assert result.token_ids == reference(target, pipe.prepare(image, prompt), 30)


def test_mask_forms_per_implementation(loaded):
    allowed = torch.tensor([[True, False], [True, True]])[None, None]  # [1, 1, 2, 2]
    sdpa_target, eager_target = loaded["sdpa"][0], loaded["eager"][0]
    assert model_mask(allowed, sdpa_target.model).dtype == torch.bool
    additive = model_mask(allowed, eager_target.model)
    assert additive.dtype == torch.float32
    assert additive[0, 0, 0, 0] == 0 and additive[0, 0, 1, 1] == 0
    assert additive[0, 0, 0, 1] == torch.finfo(torch.float32).min


def test_flash_attention_is_refused_for_tree_masks(loaded):
    model = loaded["sdpa"][0].model
    text_config = model.config.get_text_config()
    saved = text_config._attn_implementation
    text_config._attn_implementation = "flash_attention_2"
    try:
        with pytest.raises(UnsupportedError, match="attn_implementation='sdpa'"):
            model_mask(torch.ones(1, 1, 2, 2, dtype=torch.bool), model)
    finally:
        text_config._attn_implementation = saved
