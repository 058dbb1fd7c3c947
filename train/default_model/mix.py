"""Stage 2's data mix for the default model: what one alignment step trains on.

A step is one of four kinds (``STEP_CYCLE`` repeats):

* ``qa``: short questions about a scene with a one-word / number answer (grounding);
* ``dialogue``: open prompts in natural language (describe, list, count, compare, locate,
  read, chart, story), sometimes with follow-up turns (``vlmspec.data.answers``), on classic,
  varied and photo scenes; ``describe_share`` of them are descriptions (the rest any style);
* ``replay``: a text-only instruction answered by the base language model itself
  (``replay.base_answers``), so the LoRA keeps SmolLM2's chat behaviour;
* ``replay_image``: the same, with an unrelated image attached (an image in the prompt does
  not mean every answer is about it).

Every example is a chat (one image placeholder in the first user turn when it has an image);
the loss covers the assistant turns only (``spans``).
"""

from __future__ import annotations

import random

import torch

from vlmspec.data import answers

STEP_CYCLE = ("qa", "dialogue", "dialogue", "replay", "qa", "dialogue", "dialogue", "replay_image")
BATCH = {"qa": 8, "dialogue": 4, "replay": 4, "replay_image": 4}


def encode_turns(processor, tokenizer, turns: list[tuple[str, str]], image: bool,
                 finished: bool = True) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of a chat (user, assistant) x n through the processor's chat template, and the
    [start, end) spans of the assistant tokens (each answer + <|im_end|>; the last one without
    it when ``finished`` is False: an answer cut at a length limit must not teach stopping)."""
    messages: list[dict] = []
    ids: list[int] = []
    spans: list[tuple[int, int]] = []
    consumed = ""
    for k, (user, answer) in enumerate(turns):
        content = [{"type": "text", "text": user}]
        if image and k == 0:
            content.insert(0, {"type": "image"})
        messages.append({"role": "user", "content": content})
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        if not prompt.startswith(consumed):
            raise ValueError("the chat template does not extend the previous turns; cannot mask the answers")
        ids += tokenizer(prompt[len(consumed):], add_special_tokens=False)["input_ids"]
        end = "<|im_end|>" if finished or k < len(turns) - 1 else ""
        answer_ids = tokenizer(answer + end, add_special_tokens=False)["input_ids"]
        spans.append((len(ids), len(ids) + len(answer_ids)))
        ids += answer_ids
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        consumed = prompt + answer + end
    return ids, spans


def expand(ids: list[int], spans, image_token_id: int, count: int):
    """Repeat the image placeholder ``count`` times (as the processor does) and shift the spans."""
    out: list[int] = []
    shift_at, shift = None, 0
    for i, t in enumerate(ids):
        if t == image_token_id:
            out.extend([t] * count)
            shift_at, shift = i, shift + count - 1
        else:
            out.append(t)
    if shift_at is None:
        return out, list(spans)
    return out, [(a + shift if a > shift_at else a, b + shift if b > shift_at else b) for a, b in spans]


def make_batch(examples, pad_id: int):
    """examples: (ids, spans, image row or None). Right-padded ids, mask, labels (-100 outside the spans)."""
    width = max(len(ids) for ids, _, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, (seq, spans, _) in enumerate(examples):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        for a, b in spans:
            labels[row, a:b] = torch.tensor(seq[a:b])
    return ids, mask, labels


class Mix:
    """Draws the examples of each alignment step (deterministic from ``seed``)."""

    def __init__(self, processor, image_token_id: int, image_tokens: int, scenes, replay: list[dict], seed: int,
                 describe_share: float = 0.0):
        if not 0.0 <= describe_share <= 1.0:
            raise ValueError(f"describe_share must be in [0, 1], got {describe_share}")
        self.describe_share = describe_share
        self.processor, self.tokenizer = processor, processor.tokenizer
        self.image_token_id, self.image_tokens = image_token_id, image_tokens
        self.scenes, self.replay = scenes, [r for r in replay if r["answer"]]
        self.rng = random.Random(seed)
        self.qa_rows = [i for i, s in enumerate(scenes) if s.questions]

    def _example(self, turns, image_row, finished=True):
        ids, spans = encode_turns(self.processor, self.tokenizer, turns, image_row is not None, finished)
        ids, spans = expand(ids, spans, self.image_token_id, self.image_tokens)
        return ids, spans, image_row

    def step(self, step: int) -> tuple[str, list]:
        kind = STEP_CYCLE[step % len(STEP_CYCLE)]
        if kind.startswith("replay") and not self.replay:  # no replay data (e.g. a tiny smoke run)
            kind = "qa"
        rng, batch = self.rng, []
        for _ in range(BATCH[kind]):
            if kind == "qa":
                i = rng.choice(self.qa_rows)
                _, question, answer = rng.choice(self.scenes[i].questions)
                batch.append(self._example([(question, answer)], i))
            elif kind == "dialogue":
                i = rng.randrange(len(self.scenes))
                style = "describe" if rng.random() < self.describe_share else None
                batch.append(self._example(answers.sample_dialogue(self.scenes[i], rng, style=style), i))
            else:
                item = rng.choice(self.replay)
                row = rng.randrange(len(self.scenes)) if kind == "replay_image" else None
                batch.append(self._example([(item["instruction"], item["answer"])], row, item["finished"]))
        return kind, batch
