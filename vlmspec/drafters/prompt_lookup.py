"""Model-free drafters: n-gram lookup over prompt + generated text, and no drafting at all."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.drafter import Draft, Drafter
from ..errors import InputError


@dataclass(frozen=True)
class PromptLookupConfig:
    max_ngram: int = 3
    min_ngram: int = 1

    def __post_init__(self) -> None:
        if not (1 <= self.min_ngram <= self.max_ngram):
            raise InputError(f"prompt lookup needs 1 <= min_ngram <= max_ngram, got {self.min_ngram}, {self.max_ngram}.")


class PromptLookupDrafter(Drafter):
    """Find the latest earlier occurrence of the last n tokens (longest n first); propose what followed."""

    def __init__(self, config: PromptLookupConfig = PromptLookupConfig()) -> None:
        self.config = config

    def propose(self, committed: torch.Tensor, k: int) -> Draft:
        if k == 0:
            return Draft.empty(committed.device)
        seq_len = committed.shape[0]
        for n in range(min(self.config.max_ngram, seq_len - 1), self.config.min_ngram - 1, -1):
            pattern = committed[-n:]  # [n]
            windows = committed[:-1].unfold(0, n, 1)  # [seq - n, n] every earlier n-gram
            starts = (windows == pattern).all(-1).nonzero().flatten()  # [matches]
            if starts.numel():
                follow = int(starts[-1]) + n
                return Draft(committed[follow : follow + k].clone())
        return Draft.empty(committed.device)


class NoDrafter(Drafter):
    """Proposes nothing: the loop degenerates to plain autoregressive decoding (tau = 1)."""

    def propose(self, committed: torch.Tensor, k: int) -> Draft:
        return Draft.empty(committed.device)
