"""Continuous speculative batching (vlmspec.serving.engine): requests that join a running batch
and leave it early get exactly what `Pipeline.generate` gives each of them alone."""

from __future__ import annotations

import pytest
import torch

from vlmspec import ModelDrafter, PromptLookupDrafter, Target
from vlmspec.api import Pipeline
from vlmspec.batching import BatchTarget
from vlmspec.core.batch_loop import BatchDecoder
from vlmspec.errors import PromptError
from vlmspec.serving.engine import Engine, EngineConfig, Job

from conftest import random_image

PROMPTS = ["Describe this.", "Hi there, what is shown in this picture? Answer in detail.", "x", "Tell me a story.",
           "What colour dominates?", "Count the things."]


@pytest.fixture(scope="module")
def target(tiny_llava_path):
    return Target.load(tiny_llava_path)


@pytest.fixture(scope="module", params=["copy", "copy-tree", "prompt-lookup"])
def pipe(request, target, tiny_llava_path):
    if request.param == "prompt-lookup":
        drafter = PromptLookupDrafter()
    else:
        copy = ModelDrafter.from_pretrained(tiny_llava_path)
        tree = [[0], [1], [0, 0], [1, 0], [0, 0, 0]] if request.param == "copy-tree" else None
        drafter = ModelDrafter(copy.model, copy.tokenizer, tree_paths=tree)
    return Pipeline(target, drafter)


def chat(i: int, images: int = 1) -> list[dict]:
    parts = [{"type": "image", "image": random_image(100 + i + k)} for k in range(images)]
    return [{"role": "user", "content": parts + [{"type": "text", "text": PROMPTS[i % len(PROMPTS)]}]}]


def alone(pipe: Pipeline, messages, **options):
    return pipe.generate(inputs=pipe.prepare_chat(messages), **options)


def test_one_image_first_message_is_the_generate_prompt(pipe):
    image = random_image(3)
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Describe this."}]}]
    assert torch.equal(pipe.prepare_chat(messages)["input_ids"], pipe.prepare(image, "Describe this.")["input_ids"])


@pytest.mark.parametrize("max_batch", [1, 2, 4])
def test_requests_joining_and_leaving_match_generate_alone(pipe, max_batch):
    lengths = [7, 19, 3, 25, 11, 5]  # ragged: they finish at different steps, so others join mid-batch
    jobs = [Job(chat(i, images=i % 3), {"max_new_tokens": n}) for i, n in enumerate(lengths)]
    engine = Engine(pipe, EngineConfig(max_batch=max_batch)).start()
    try:
        handles = [engine.submit(job) for job in jobs]
        results = [h.wait(timeout=120) for h in handles]
    finally:
        engine.shutdown()
    for job, result in zip(jobs, results):
        assert result.token_ids == alone(pipe, job.messages, **job.options).token_ids


def test_sampling_with_seeds_matches_generate_alone(pipe):
    jobs = [Job(chat(i), {"max_new_tokens": 12, "temperature": t, "top_p": p, "seed": 40 + i})
            for i, (t, p) in enumerate([(0.7, None), (1.0, 0.9), (1.3, None), (0.0, None)])]
    engine = Engine(pipe, EngineConfig(max_batch=3)).start()
    try:
        results = [h.wait(timeout=120) for h in [engine.submit(job) for job in jobs]]
    finally:
        engine.shutdown()
    for job, result in zip(jobs, results):
        assert result.token_ids == alone(pipe, job.messages, **job.options).token_ids


def test_events_mark_draft_tokens_and_add_up_to_the_answer(pipe):
    engine = Engine(pipe).start()
    try:
        handle = engine.submit(Job(chat(1), {"max_new_tokens": 30}))
        tokens, result = [], None
        while result is None:
            event = handle.get(timeout=120)
            assert event.error is None
            tokens += event.tokens
            result = event.result
    finally:
        engine.shutdown()
    assert [t.id for t in tokens] == result.token_ids
    assert "".join(t.text for t in tokens) == result.text
    assert not tokens[0].drafted  # the first token is the target's own (prefill)
    drafted = sum(t.drafted for t in tokens)
    # every target forward after the prefill gives one token of its own (correction or bonus)
    assert len(tokens) - drafted == result.metrics.target_forwards


def test_a_cancelled_request_frees_its_slot_and_others_are_unchanged(pipe):
    engine = Engine(pipe, EngineConfig(max_batch=2)).start()
    try:
        long = engine.submit(Job(chat(0), {"max_new_tokens": 200}))
        assert long.get(timeout=120).tokens  # running
        long.cancel()
        others = [engine.submit(Job(chat(i), {"max_new_tokens": 9})) for i in (1, 2)]
        results = [h.wait(timeout=120) for h in others]
    finally:
        engine.shutdown()
    for i, result in zip((1, 2), results):
        assert result.token_ids == alone(pipe, chat(i), max_new_tokens=9).token_ids
    assert engine.active == 0


def test_bad_requests_fail_alone(pipe):
    engine = Engine(pipe, EngineConfig(max_batch=4)).start()
    try:
        bad = engine.submit(Job([{"role": "assistant", "content": "hi"}], {"max_new_tokens": 5}))
        too_long = engine.submit(Job(chat(1), {"max_new_tokens": 10**6}))
        good = engine.submit(Job(chat(2), {"max_new_tokens": 6}))
        with pytest.raises(PromptError, match="last message must come from the user"):
            bad.wait(timeout=120)
        with pytest.raises(PromptError, match="exceed the model's context"):
            too_long.wait(timeout=120)
        assert good.wait(timeout=120).token_ids == alone(pipe, chat(2), max_new_tokens=6).token_ids
    finally:
        engine.shutdown()


def test_decoder_join_between_steps(target, tiny_llava_path):
    """The core piece alone: a sequence joins a batch after three steps of another one."""
    pipe = Pipeline(target, ModelDrafter.from_pretrained(tiny_llava_path))
    first = pipe.batch_sequence(pipe.prepare_chat(chat(1)), max_new_tokens=30)
    second = pipe.batch_sequence(pipe.prepare_chat(chat(4, images=2)), max_new_tokens=30)
    decoder = BatchDecoder(BatchTarget(target))
    decoder.join([first])
    for _ in range(3):
        decoder.step()
    decoder.join([second])
    while decoder.active:
        decoder.step()
    assert first.stop.generated == alone(pipe, chat(1), max_new_tokens=30).token_ids
    assert second.stop.generated == alone(pipe, chat(4, images=2), max_new_tokens=30).token_ids


def test_engine_config_is_checked():
    with pytest.raises(ValueError, match="max_batch"):
        EngineConfig(max_batch=0)
