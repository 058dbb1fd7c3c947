"""The speculative loop: draft -> verify -> accept -> update caches. Lossless by construction.

The target cache always holds every committed token except the last one (`pending`);
each step feeds [pending, d_1 .. d_n] in one forward (a chain, or a tree with a tree
attention mask), so row 0 scores the children of the root and row i + 1 the children
of node i; the row where the accepted path ends gives the bonus or correction token.
"""

from __future__ import annotations

import time
from typing import Iterator

import torch

from .cache import cache_length
from .drafter import DraftContext, Drafter, StepFeedback
from .metrics import MetricsRecorder
from .sampling import SamplingParams, warp_probs
from .schedule import DraftSchedule
from .stopping import StopTracker
from .verify import sample_token, verify_draft


def choose_token(logits: torch.Tensor, sampling: SamplingParams, generator: torch.Generator | None) -> int:
    """logits: [vocab] -> the next token under `sampling`."""
    if sampling.greedy:
        return int(logits.argmax())
    return sample_token(warp_probs(logits, sampling), generator)


def speculative_decode(
    target,
    drafter: Drafter,
    model_inputs: dict,
    sampling: SamplingParams,
    schedule: DraftSchedule,
    stop: StopTracker,
    recorder: MetricsRecorder,
    generator: torch.Generator | None = None,
) -> Iterator[list[int]]:
    """Yield the new tokens accepted at each step until `stop` says done."""
    started = time.perf_counter()
    need_hidden, layers = drafter.needs_target_hidden, drafter.feature_layers
    state, first_logits = target.prefill(model_inputs, need_hidden=need_hidden, feature_layers=layers)
    first = choose_token(first_logits[0], sampling, generator)
    recorder.prefill_done(time.perf_counter() - started)
    committed = torch.cat([state.prompt_ids[0], first_logits.new_tensor([first], dtype=torch.long)])  # [seq]
    yield stop.add([first])

    drafter.begin(DraftContext(target, state, sampling, generator, schedule.gate))
    try:
        while not stop.done:
            t0 = time.perf_counter()
            k = max(0, min(schedule.next_length(), stop.remaining - 1))  # never draft past the budget
            draft = drafter.propose(committed, k)  # draft.tokens [n], n <= k
            t1 = time.perf_counter()

            cached = cache_length(state.cache)  # == len(committed) - 1
            candidates = torch.cat([committed[-1:], draft.tokens])[None]  # [1, n + 1] root + nodes
            scored = target.forward(state, candidates, need_hidden, draft.parents, feature_layers=layers)
            trusted = schedule.trusted(len(draft.tokens))  # 0 = lossless; > 0 only in approximate mode
            accepted = verify_draft(draft, scored.logits[0], sampling, generator, trusted)  # logits [n + 1, vocab]
            rows = [0] + [node + 1 for node in accepted.path]  # root + accepted path
            target.keep(state, cached, rows)
            t2 = time.perf_counter()

            new_tokens = draft.tokens[accepted.path].tolist() + [accepted.next_token]
            kept = stop.add(new_tokens)
            committed = torch.cat([committed, committed.new_tensor(kept)])
            hidden = None if scored.hidden is None else scored.hidden[:, rows]
            drafter.update(StepFeedback(accepted.num_accepted, accepted.path, committed, hidden))
            schedule.observe(len(draft.tokens), accepted.num_accepted, t1 - t0, t2 - t1)
            recorder.step(draft.depth, accepted.num_accepted, t1 - t0, t2 - t1, requested=k, unchecked=trusted)
            yield kept
    finally:
        drafter.end()
