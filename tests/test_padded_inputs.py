"""Left-padded `inputs=` (a processor batch row with padding_side='left') match model.generate(**inputs)."""

from __future__ import annotations

import pytest
import torch

from vlmspec import InputError, ModelDrafter, NoDrafter, Pipeline, PromptError, PromptLookupDrafter, ScheduleConfig, Target

from vlmspec.testing import TinyLlavaConfig, save_tiny_llava

from conftest import random_image

TREE = [[0], [1], [0, 0], [1, 0], [0, 0, 0]]


@pytest.fixture(scope="module")
def soft_paths(tmp_path_factory):
    """Tiny LLaVAs with less peaked logits than the shared ones, so attending a pad changes tokens."""
    root = tmp_path_factory.mktemp("soft")
    return [save_tiny_llava(root / f"m{seed}", TinyLlavaConfig(kind="llava", initializer_range=0.08), seed=seed)
            for seed in (0, 1)]


@pytest.fixture(scope="module")
def target(soft_paths):
    return Target.load(soft_paths[0])


@pytest.fixture(scope="module")
def drafters(soft_paths):
    copy = ModelDrafter.from_pretrained(soft_paths[0])
    other = ModelDrafter.from_pretrained(soft_paths[1])
    return {"none": NoDrafter(), "lookup": PromptLookupDrafter(), "chain": other, "copy": copy,
            "tree": ModelDrafter(copy.model, copy.tokenizer, tree_paths=TREE)}


def left_pad(inputs: dict, pads: int, pad_id: int = 0) -> dict:
    ids = inputs["input_ids"]  # [1, prompt_len]
    padded = dict(inputs)
    padded["input_ids"] = torch.cat([ids.new_full((1, pads), pad_id), ids], dim=1)
    padded["attention_mask"] = torch.cat([ids.new_zeros((1, pads)), torch.ones_like(ids)], dim=1)
    return padded


@pytest.mark.parametrize("drafter_name", ["none", "lookup", "chain", "copy", "tree"])
@pytest.mark.parametrize("pads", [1, 7, 30])
def test_left_padded_inputs_match_generate(target, drafters, drafter_name, pads):
    seed = pads + len(drafter_name)
    pipe = Pipeline(target, drafters[drafter_name], ScheduleConfig.parse(3))
    inputs = left_pad(pipe.prepare(random_image(seed), "Describe this in detail."), pads)
    reference = target.model.generate(**inputs, max_new_tokens=40, do_sample=False,
                                      eos_token_id=target.eos_token_ids, pad_token_id=0)
    expected = reference[0, inputs["input_ids"].shape[1]:].tolist()
    assert pipe.generate(inputs=inputs, max_new_tokens=40).token_ids == expected


def test_bad_padding_and_malformed_inputs_are_refused(target):
    pipe = Pipeline(target, PromptLookupDrafter())
    inputs = pipe.prepare(random_image(1), "Describe this.")
    right = dict(inputs, attention_mask=torch.cat([torch.ones_like(inputs["input_ids"]),
                                                   inputs["input_ids"].new_zeros((1, 2))], dim=1),
                 input_ids=torch.cat([inputs["input_ids"], inputs["input_ids"].new_zeros((1, 2))], dim=1))
    with pytest.raises(InputError, match="padding_side = 'left'"):
        pipe.generate(inputs=right, max_new_tokens=4)
    with pytest.raises(InputError, match=r"integer tensor \[1, prompt_len\]"):
        pipe.generate(inputs=dict(inputs, input_ids=inputs["input_ids"][0]), max_new_tokens=4)
    with pytest.raises(InputError, match=r"integer tensor"):
        pipe.generate(inputs=dict(inputs, input_ids=inputs["input_ids"].tolist()), max_new_tokens=4)
    with pytest.raises(InputError, match="outside the model's vocabulary"):
        pipe.generate(inputs=dict(inputs, input_ids=inputs["input_ids"] + 10_000), max_new_tokens=4)
    with pytest.raises(PromptError, match="empty"):
        pipe.generate(inputs={"input_ids": torch.zeros((1, 0), dtype=torch.long)}, max_new_tokens=4)
    with pytest.raises(InputError, match="batch of 2 sequences"):
        pipe.generate(inputs={"input_ids": torch.zeros((2, 3), dtype=torch.long)}, max_new_tokens=4)
    with pytest.raises(InputError, match="attention_mask'\\] must have"):
        pipe.generate(inputs=dict(inputs, attention_mask=torch.ones(1, 2, dtype=torch.long)), max_new_tokens=4)


@pytest.mark.parametrize("drafter_name", ["lookup", "chain", "tree"])
def test_a_left_padded_processor_batch_through_generate_batch(target, drafters, drafter_name):
    """generate_batch(inputs=batch): a multi-row left-padded processor batch (rows of different
    lengths, one image each) gives, row for row, what model.generate(**batch) gives."""
    pipe = Pipeline(target, drafters[drafter_name], ScheduleConfig.parse(3))
    prompts = ["Describe this in detail.", "What?", "Tell me a long story about the colours you can see here."]
    images = [random_image(40 + i) for i in range(3)]
    processor = target.processor
    side, processor.tokenizer.padding_side = processor.tokenizer.padding_side, "left"
    try:
        texts = [target.format_prompt(p, 1) for p in prompts]
        batch = dict(processor(images=images, text=texts, return_tensors="pt", padding=True))
    finally:
        processor.tokenizer.padding_side = side
    assert int((batch["attention_mask"] == 0).sum()) > 0, "the rows should need padding"
    pad_id = processor.tokenizer.pad_token_id or 0
    reference = target.model.generate(**batch, max_new_tokens=30, do_sample=False,
                                      eos_token_id=target.eos_token_ids, pad_token_id=pad_id)
    results = pipe.generate_batch(inputs=batch, max_new_tokens=30)
    for b, result in enumerate(results):
        expected = [t for t in reference[b, batch["input_ids"].shape[1]:].tolist()]
        # model.generate pads finished rows with pad_token_id after their EOS
        assert result.token_ids == expected[: len(result.token_ids)]
        assert all(t == pad_id for t in expected[len(result.token_ids):])
        alone = pipe.generate(images[b], prompts[b], max_new_tokens=30)
        assert result.token_ids == alone.token_ids
    with pytest.raises(InputError, match="pairs or inputs"):
        pipe.generate_batch([(images[0], prompts[0])], inputs=batch)
    two_per_row = dict(batch, pixel_values=torch.cat([batch["pixel_values"], batch["pixel_values"][:1]]))
    with pytest.raises(InputError, match="which of the 4 images"):
        pipe.generate_batch(inputs=two_per_row)
