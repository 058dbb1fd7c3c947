"""Stage 2 on one model: the mean NLL of every expert's answer, all answers in one batch."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from transformers import DynamicCache

from ..core.cache import cache_kwargs
from ..errors import NumericalError
from .answers import SCORING_PROMPT


@torch.no_grad()
def score_answers(pipe, image, question: str, answers: Sequence[str]) -> tuple[list[float], int, int]:
    """Mean NLL of each answer span under one model: ([n_answers] floats, forwards, scored tokens).

    The image and the prompt "Question: q\\nAnswer:" are prefilled once; the cache is then
    repeated for every non-empty answer and all answers run as one right-padded batch, so
    each expert encodes the image once and runs two forwards. Empty answers get NaN.
    """
    model = pipe.target.model
    tokenizer = pipe.target.tokenizer
    prefix = pipe.prepare(image, SCORING_PROMPT.format(question=question))
    answer_ids = [tokenizer(a, add_special_tokens=False)["input_ids"] if a else [] for a in answers]
    scored = [i for i, ids in enumerate(answer_ids) if ids]
    nll = [math.nan] * len(answers)
    if not scored:
        return nll, 0, 0
    device = prefix["input_ids"].device
    cache = DynamicCache(config=model.config.get_text_config())
    out = model(**prefix, **cache_kwargs(model, cache), use_cache=True)  # fills `cache` in place
    prefix_logprobs = out.logits[0, -1].float().log_softmax(-1)  # [vocab]: predicts answer token 0
    n_rows = len(scored)
    longest = max(len(answer_ids[i]) for i in scored)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batch_ids = torch.full((n_rows, longest), pad_id, dtype=torch.long, device=device)  # [n_answers, seq]
    answer_mask = torch.zeros((n_rows, longest), dtype=torch.long, device=device)  # [n_answers, seq]
    for row, i in enumerate(scored):
        ids = answer_ids[i]
        batch_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long, device=device)
        answer_mask[row, : len(ids)] = 1
    forwards = 1
    if longest > 1:
        cache.batch_repeat_interleave(n_rows)
        prefix_mask = prefix["attention_mask"].to(device).expand(n_rows, -1)  # [n_answers, prefix]
        full_mask = torch.cat([prefix_mask, answer_mask], dim=1)  # [n_answers, prefix + seq]
        out = model(input_ids=batch_ids, attention_mask=full_mask, **cache_kwargs(model, cache), use_cache=False)
        answer_logprobs = out.logits.float().log_softmax(-1)  # [n_answers, seq, vocab]
        forwards = 2
    for row, i in enumerate(scored):
        ids = batch_ids[row, : len(answer_ids[i])]  # [len_i]
        token_logprobs = prefix_logprobs[ids[:1]]  # [1]
        if len(ids) > 1:
            # position t of the batch predicts answer token t + 1
            rest = answer_logprobs[row, : len(ids) - 1].gather(-1, ids[1:, None])[:, 0]  # [len_i - 1]
            token_logprobs = torch.cat([token_logprobs, rest])
        value = -token_logprobs.mean().item()
        if not math.isfinite(value):
            raise NumericalError(
                f"Scoring answer {i} ({answers[i]!r}) gave a non-finite NLL ({value}); the model produced "
                "NaN/inf logits. Load it in float32 (dtype=torch.float32) and try again."
            )
        nll[i] = value
    return nll, forwards, int(answer_mask.sum().item())
