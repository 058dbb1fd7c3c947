"""The base language model's own answers to text instructions (replay data for stage 2).

Mixing these into the alignment keeps the default model's chat behaviour (LLaVA mixes
text-only chat data for the same reason): the LoRA learns to read images without
overwriting how SmolLM2-135M-Instruct answers "Write a haiku about ..." or "Explain ...".

``base_answers(instructions)`` generates greedily with the *base* LM (before any LoRA),
through the default model's own chat template, in left-padded batches, and caches every
answer in a JSON-lines file keyed by (instruction, settings): a killed run resumes where it
stopped, and the held-out check reuses the same function for its reference answers.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from tqdm import tqdm

from vlmspec.models.default import CHAT_TEMPLATE, vlmspec_home

MAX_NEW_TOKENS = 192


def cache_path(tag: str) -> Path:
    return vlmspec_home() / "recipe-cache" / f"replay-{tag}.jsonl"


def _key(instruction: str, max_new_tokens: int) -> str:
    return hashlib.sha256(f"{max_new_tokens}|{instruction}".encode()).hexdigest()[:16]


def _read_cache(path: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill: generated again
                continue
            out[row["key"]] = row
    return out


def prompt_text(tokenizer, instruction: str) -> str:
    """The chat prompt the default model sees for a text-only instruction (no system prompt)."""
    return tokenizer.apply_chat_template([{"role": "user", "content": instruction}], chat_template=CHAT_TEMPLATE,
                                         add_generation_prompt=True, tokenize=False)


@torch.inference_mode()
def base_answers(lm, tokenizer, instructions: list[str], tag: str, batch_size: int = 16,
                 max_new_tokens: int = MAX_NEW_TOKENS) -> list[dict]:
    """[{"instruction", "answer", "finished"}] for each instruction, from cache or generated now.

    ``finished`` is False when the answer hit ``max_new_tokens`` (the training example then
    carries no end-of-turn token, so the model is not taught to stop mid-sentence)."""
    path = cache_path(tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    cached = _read_cache(path)
    todo = [s for s in dict.fromkeys(instructions) if _key(s, max_new_tokens) not in cached]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        with path.open("a") as sink:
            for start in tqdm(range(0, len(todo), batch_size), desc="replay: base answers", mininterval=10,
                              disable=not todo):
                chunk = todo[start : start + batch_size]
                inputs = tokenizer([prompt_text(tokenizer, s) for s in chunk], return_tensors="pt", padding=True,
                                   add_special_tokens=False)
                out = lm.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=im_end,
                                  pad_token_id=tokenizer.pad_token_id or im_end)
                for instruction, row in zip(chunk, out[:, inputs["input_ids"].shape[1] :].tolist()):
                    finished = im_end in row
                    row = row[: row.index(im_end)] if finished else row
                    item = {"key": _key(instruction, max_new_tokens), "instruction": instruction,
                            "answer": tokenizer.decode(row, skip_special_tokens=True).strip(), "finished": finished}
                    cached[item["key"]] = item
                    sink.write(json.dumps(item) + "\n")
                sink.flush()
                os.fsync(sink.fileno())
    finally:
        tokenizer.padding_side = side
    return [cached[_key(s, max_new_tokens)] for s in instructions]
