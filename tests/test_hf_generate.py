"""model.generate(..., custom_generate=vlmspec.hf_generate) and the folder form: greedy output
token for token what plain model.generate returns, on stock transformers models loaded from disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

import vlmspec
from vlmspec import ModelDrafter, PromptLookupDrafter, UnsupportedError
from vlmspec.testing import TinyLlavaConfig, save_tiny_llava

from conftest import random_image

FOLDER = str(Path(__file__).resolve().parents[1] / "adapters" / "hf-custom-generate")
TREE = [[0], [1], [0, 0], [1, 0], [0, 0, 0]]
PROMPTS = ["Describe this in detail.", "What?", "Tell me a long story about the colours you can see here."]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_generate")
    return [save_tiny_llava(root / f"m{seed}", TinyLlavaConfig(kind="llava", initializer_range=0.08), seed=seed)
            for seed in (0, 1)]


@pytest.fixture(scope="module")
def model(paths):
    return LlavaForConditionalGeneration.from_pretrained(paths[0]).eval()


@pytest.fixture(scope="module")
def processor(paths):
    return AutoProcessor.from_pretrained(paths[0])


@pytest.fixture(scope="module")
def drafters(paths):
    other = ModelDrafter.from_pretrained(paths[1])
    copy = ModelDrafter.from_pretrained(paths[0])
    return {"chain": other, "tree": ModelDrafter(copy.model, copy.tokenizer, tree_paths=TREE),
            "lookup": PromptLookupDrafter(), "none": None}


def one_row(processor, seed: int, prompt: str) -> dict:
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}],
        add_generation_prompt=True)
    return dict(processor(images=[random_image(seed)], text=[text], return_tensors="pt"))


def padded_batch(processor, seeds) -> dict:
    texts = [processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p}]}],
        add_generation_prompt=True) for p in PROMPTS[: len(seeds)]]
    side, processor.tokenizer.padding_side = processor.tokenizer.padding_side, "left"
    try:
        return dict(processor(images=[random_image(s) for s in seeds], text=texts, return_tensors="pt",
                              padding=True))
    finally:
        processor.tokenizer.padding_side = side


@pytest.mark.parametrize("drafter_name", ["chain", "tree", "lookup", "none"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_matches_plain_generate(model, processor, drafters, drafter_name, seed):
    inputs = one_row(processor, seed, PROMPTS[seed])
    reference = model.generate(**inputs, max_new_tokens=30, do_sample=False)
    out = model.generate(**inputs, max_new_tokens=30, do_sample=False, custom_generate=vlmspec.hf_generate,
                         drafter=drafters[drafter_name], draft_length=3)
    assert out.shape == reference.shape
    assert torch.equal(out, reference)
    if drafters[drafter_name] is not None:  # vlmspec's loop ran, with this drafter
        pipes = vlmspec.hf._pipelines[model].values()
        assert any(p.drafter is drafters[drafter_name] for p in pipes)


@pytest.mark.parametrize("drafter_name", ["chain", "tree"])
def test_a_left_padded_batch_matches_plain_generate(model, processor, drafters, drafter_name):
    batch = padded_batch(processor, [10, 11, 12])
    assert int((batch["attention_mask"] == 0).sum()) > 0, "the rows should need padding"
    reference = model.generate(**batch, max_new_tokens=25, do_sample=False)
    out = model.generate(**batch, max_new_tokens=25, do_sample=False, custom_generate=vlmspec.hf_generate,
                         drafter=drafters[drafter_name], draft_length=3)
    assert torch.equal(out, reference)


def test_eos_token_id_per_call_and_max_length(model, processor, drafters):
    inputs = one_row(processor, 3, PROMPTS[0])
    plain = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    new = plain[0, inputs["input_ids"].shape[1]:].tolist()
    stop_at = new[5]  # a token the greedy answer emits: used as this call's EOS, it ends the answer there
    reference = model.generate(**inputs, max_new_tokens=20, do_sample=False, eos_token_id=stop_at)
    out = model.generate(**inputs, max_new_tokens=20, do_sample=False, eos_token_id=stop_at,
                         custom_generate=vlmspec.hf_generate, drafter=drafters["chain"])
    assert torch.equal(out, reference)
    assert out.shape[1] <= inputs["input_ids"].shape[1] + 6
    by_length = model.generate(**inputs, max_length=inputs["input_ids"].shape[1] + 7, do_sample=False,
                               custom_generate=vlmspec.hf_generate, drafter=drafters["chain"])
    assert torch.equal(by_length, plain[:, : inputs["input_ids"].shape[1] + 7])


def test_the_folder_form_runs_the_same_loop(model, processor, drafters):
    inputs = one_row(processor, 4, PROMPTS[2])
    reference = model.generate(**inputs, max_new_tokens=30, do_sample=False)
    out = model.generate(**inputs, max_new_tokens=30, do_sample=False, custom_generate=FOLDER,
                         trust_remote_code=True, drafter=drafters["tree"])
    assert torch.equal(out, reference)


def test_sampling_returns_valid_sequences(model, processor, drafters):
    inputs = one_row(processor, 5, PROMPTS[0])
    prompt_len = inputs["input_ids"].shape[1]
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=15, do_sample=True, temperature=0.8, top_k=20, top_p=0.9,
                         custom_generate=vlmspec.hf_generate, drafter=drafters["chain"])
    assert torch.equal(out[:, :prompt_len], inputs["input_ids"])
    assert 0 < out.shape[1] - prompt_len <= 15
    assert int(out.max()) < model.config.text_config.vocab_size
    # top_k=1 sampling keeps only the argmax: the warpers' values reach vlmspec, so this is greedy's output
    greedy = model.generate(**inputs, max_new_tokens=15, do_sample=False)
    top1 = model.generate(**inputs, max_new_tokens=15, do_sample=True, top_k=1, temperature=0.7,
                          custom_generate=vlmspec.hf_generate, drafter=drafters["chain"])
    assert torch.equal(top1, greedy)


@pytest.mark.parametrize("kwargs, match", [
    (dict(repetition_penalty=1.3), "RepetitionPenaltyLogitsProcessor"),
    (dict(no_repeat_ngram_size=2), "NoRepeatNGramLogitsProcessor"),
    (dict(num_return_sequences=2, do_sample=True), "num_return_sequences"),
    (dict(return_dict_in_generate=True, output_scores=True), "return_dict_in_generate"),
    (dict(max_time=5.0), "max_time"),
])
def test_settings_vlmspec_would_not_reproduce_are_refused_by_name(model, processor, kwargs, match):
    inputs = one_row(processor, 6, PROMPTS[1])
    with pytest.raises(UnsupportedError, match=match):
        model.generate(**inputs, max_new_tokens=5, custom_generate=vlmspec.hf_generate, drafter="lookup", **kwargs)
