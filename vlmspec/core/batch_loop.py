"""The speculative loop for a batch: every active sequence drafts on its own, one target
forward scores all drafts, each sequence accepts its own number of tokens (ragged).

Per sequence it does exactly what `loop.speculative_decode` does for one sequence (same
drafter calls, same verification, same random stream), so outputs match single runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from .drafter import DraftContext, Drafter, StepFeedback
from .loop import choose_token
from .metrics import MetricsRecorder
from .sampling import SamplingParams
from .schedule import DraftSchedule
from .stopping import StopTracker
from .verify import verify_draft


def speculative_decode_batch(
    batch_target,
    drafters: list[Drafter],
    samples: list[dict],
    sampling: SamplingParams,
    schedules: list[DraftSchedule],
    stops: list[StopTracker],
    recorders: list[MetricsRecorder],
    generators: list[torch.Generator | None],
) -> Iterator[list[int]]:
    """Run every sequence to completion; results accumulate in `stops` and `recorders`.

    A generator: after the prefill and after every verification step it yields the indices of
    the sequences that gained tokens (iterate it to the end to run the batch)."""
    need_hidden = any(d.needs_target_hidden for d in drafters)
    started = time.perf_counter()
    state, first_logits = batch_target.prefill(samples, need_hidden)  # first_logits [batch, vocab]
    committed = []
    for b, view in enumerate(state.views):
        first = choose_token(first_logits[b], sampling, generators[b])
        recorders[b].prefill_done(time.perf_counter() - started)
        stops[b].add([first])
        committed.append(torch.cat([view.prompt_ids[0], view.prompt_ids.new_tensor([first])]))  # [seq]
        drafters[b].begin(DraftContext(batch_target.target, view, sampling, generators[b]))
    batch_target.keep(state, [[] for _ in samples], [not s.done for s in stops])
    yield list(range(len(samples)))

    try:
        while state.active:
            drafts, draft_seconds, requested = [], [], []
            for b in state.active:
                t0 = time.perf_counter()
                k = max(0, min(schedules[b].next_length(), stops[b].remaining - 1))
                requested.append(k)
                drafts.append(drafters[b].propose(committed[b], k))  # tokens [n_b]
                draft_seconds.append(time.perf_counter() - t0)
            t1 = time.perf_counter()
            candidates = [torch.cat([committed[b][-1:], d.tokens]) for b, d in zip(state.active, drafts)]
            logits, hidden = batch_target.forward(state, candidates, [d.parents for d in drafts], need_hidden)
            verify_seconds = time.perf_counter() - t1  # one shared forward: each sequence waited this long

            kept_rows, alive = [], []
            for i, (b, draft) in enumerate(zip(state.active, drafts)):
                target_logits = logits[i, : draft.tokens.shape[0] + 1]  # [n_b + 1, vocab]
                accepted = verify_draft(draft, target_logits, sampling, generators[b])
                rows = [0] + [node + 1 for node in accepted.path]
                kept = stops[b].add(draft.tokens[accepted.path].tolist() + [accepted.next_token])
                committed[b] = torch.cat([committed[b], committed[b].new_tensor(kept)])
                step_hidden = None if hidden is None else hidden[i : i + 1, rows]
                drafters[b].update(StepFeedback(accepted.num_accepted, accepted.path, committed[b], step_hidden))
                schedules[b].observe(len(draft.tokens), accepted.num_accepted, draft_seconds[i], verify_seconds)
                recorders[b].step(draft.depth, accepted.num_accepted, draft_seconds[i], verify_seconds, requested[i])
                kept_rows.append(rows)
                alive.append(not stops[b].done)
            stepped = list(state.active)
            batch_target.keep(state, kept_rows, alive)
            yield stepped
    finally:
        for drafter in drafters:
            drafter.end()
