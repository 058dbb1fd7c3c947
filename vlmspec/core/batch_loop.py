"""The speculative loop for a batch: every active sequence drafts on its own, one target
forward scores all drafts, each sequence accepts its own number of tokens (ragged).

Per sequence it does exactly what `loop.speculative_decode` does for one sequence (same
drafter calls, same verification, same random stream), so outputs match single runs.
`BatchDecoder` lets sequences join between steps (continuous batching: a server admits
new requests while others are mid-answer) and leave early (a client went away).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from .drafter import DraftContext, Drafter, StepFeedback
from .loop import choose_token
from .metrics import MetricsRecorder
from .sampling import SamplingParams
from .schedule import DraftSchedule
from .stopping import StopTracker
from .verify import verify_draft


@dataclass
class BatchSequence:
    """One sequence of a batch: its inputs, its own drafter / sampling / stop rule / random stream."""

    sample: dict  # processor outputs for this sequence alone (input_ids [1, prompt_len], pixel_values, ...)
    drafter: Drafter
    sampling: SamplingParams
    schedule: DraftSchedule
    stop: StopTracker
    recorder: MetricsRecorder
    generator: torch.Generator | None = None
    committed: torch.Tensor | None = None  # [prompt_len + generated]: prompt and tokens kept so far
    last_kept: list[int] = field(default_factory=list)  # tokens kept by the latest step
    last_drafted: int = 0  # how many of `last_kept` (from its start) were accepted draft tokens


class BatchDecoder:
    """Continuous speculative batching: `join` sequences, `step` until `active` is empty.

    ``batch_target`` provides ``prefill(samples, need_hidden, keys, feature_layers=)``,
    ``forward(state, candidates, parents, need_hidden, feature_layers=)``, ``keep(state, kept_rows, still_active)`` and ``merge(a, b)``
    (see `vlmspec.batching.BatchTarget`)."""

    def __init__(self, batch_target) -> None:
        self.batch_target = batch_target
        self.state = None  # the running batch's state (None while empty)
        self.sequences: dict[int, BatchSequence] = {}  # key -> sequence, for sequences still running
        self._keys = itertools.count()

    @property
    def active(self) -> list[int]:
        """Keys of the running sequences, in batch-row order."""
        return list(self.state.active) if self.state is not None else []

    def join(self, sequences: list[BatchSequence]) -> list[int]:
        """Prefill ``sequences`` (one forward for all of them), pick each one's first token and add
        them to the running batch. Returns their keys (in the order given)."""
        if not sequences:
            return []
        need_hidden, layers = self._features(sequences)
        started = time.perf_counter()
        keys = [next(self._keys) for _ in sequences]
        state, first_logits = self.batch_target.prefill(
            [s.sample for s in sequences], need_hidden, keys, feature_layers=layers
        )  # [n, vocab]
        for row, (key, seq) in enumerate(zip(keys, sequences)):
            view = state.views[key]
            first = choose_token(first_logits[row], seq.sampling, seq.generator)
            seq.recorder.prefill_done(time.perf_counter() - started)
            seq.last_kept, seq.last_drafted = seq.stop.add([first]), 0
            seq.committed = torch.cat([view.prompt_ids[0], view.prompt_ids.new_tensor([first])])  # [seq]
            seq.drafter.begin(DraftContext(self.batch_target.target, view, seq.sampling, seq.generator))
            self.sequences[key] = seq
        self._retire(state, [[] for _ in keys], keys)
        self.state = state if self.state is None else self.batch_target.merge(self.state, state)
        if self.state is not None and not self.state.active:
            self.state = None
        return keys

    def step(self) -> list[int]:
        """One draft -> verify -> accept -> update step for every running sequence.
        Returns the keys that gained tokens (all that ran); finished ones leave the batch."""
        if self.state is None:
            return []
        state, running = self.state, self.active
        sequences = [self.sequences[key] for key in running]
        need_hidden, layers = self._features(sequences)
        drafts, draft_seconds, requested = [], [], []
        for seq in sequences:
            t0 = time.perf_counter()
            k = max(0, min(seq.schedule.next_length(), seq.stop.remaining - 1))
            requested.append(k)
            drafts.append(seq.drafter.propose(seq.committed, k))  # tokens [n_b]
            draft_seconds.append(time.perf_counter() - t0)
        t1 = time.perf_counter()
        candidates = [torch.cat([seq.committed[-1:], d.tokens]) for seq, d in zip(sequences, drafts)]
        logits, hidden = self.batch_target.forward(
            state, candidates, [d.parents for d in drafts], need_hidden, feature_layers=layers
        )
        verify_seconds = time.perf_counter() - t1  # one shared forward: each sequence waited this long

        kept_rows = []
        for i, (seq, draft) in enumerate(zip(sequences, drafts)):
            target_logits = logits[i, : draft.tokens.shape[0] + 1]  # [n_b + 1, vocab]
            accepted = verify_draft(draft, target_logits, seq.sampling, seq.generator)
            rows = [0] + [node + 1 for node in accepted.path]
            kept = seq.stop.add(draft.tokens[accepted.path].tolist() + [accepted.next_token])
            seq.last_kept, seq.last_drafted = kept, min(len(kept), accepted.num_accepted)
            seq.committed = torch.cat([seq.committed, seq.committed.new_tensor(kept)])
            step_hidden = None if hidden is None else hidden[i : i + 1, rows]
            seq.drafter.update(StepFeedback(accepted.num_accepted, accepted.path, seq.committed, step_hidden))
            seq.schedule.observe(len(draft.tokens), accepted.num_accepted, draft_seconds[i], verify_seconds)
            seq.recorder.step(draft.depth, accepted.num_accepted, draft_seconds[i], verify_seconds, requested[i])
            kept_rows.append(rows)
        self._retire(state, kept_rows, running)
        if not state.active:
            self.state = None
        return running

    def _features(self, sequences: list[BatchSequence]) -> tuple[bool, tuple[int, ...] | None]:
        """Whether the target must return hidden states, and which (one choice for the whole batch)."""
        wanted = {s.drafter.feature_layers for s in sequences if s.drafter.needs_target_hidden}
        if self.sequences:  # the running batch keeps its choice: all its steps return the same states
            wanted |= {s.drafter.feature_layers for s in self.sequences.values() if s.drafter.needs_target_hidden}
        if len(wanted) > 1:
            raise ValueError(
                f"One batch cannot serve drafters that read different target layers ({sorted(map(str, wanted))}); "
                "batch requests of one drafter together."
            )
        return bool(wanted), (next(iter(wanted)) if wanted else None)

    def cancel(self, keys: list[int]) -> None:
        """Drop running sequences now (their cache rows are freed; their results stay as they are)."""
        keys = [k for k in keys if k in self.sequences]
        if not keys or self.state is None:
            return
        gone = set(keys)
        running = self.active
        self.batch_target.keep(self.state, [[] for _ in running], [k not in gone for k in running])
        for key in keys:
            self.sequences.pop(key).drafter.end()
        if not self.state.active:
            self.state = None

    def close(self) -> None:
        """End every drafter still running (the decoder is not used afterwards)."""
        for seq in self.sequences.values():
            seq.drafter.end()
        self.sequences.clear()
        self.state = None

    def _retire(self, state, kept_rows: list[list[int]], keys: list[int]) -> None:
        """Keep each sequence's accepted rows; finished sequences leave the batch and end their drafter."""
        alive = [not self.sequences[key].stop.done for key in keys]
        self.batch_target.keep(state, kept_rows, alive)
        for key, still in zip(keys, alive):
            if not still:
                self.sequences.pop(key).drafter.end()


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
    decoder = BatchDecoder(batch_target)
    sequences = [BatchSequence(sample, drafter, sampling, schedule, stop, recorder, generator)
                 for sample, drafter, schedule, stop, recorder, generator
                 in zip(samples, drafters, schedules, stops, recorders, generators)]
    try:
        keys = decoder.join(sequences)
        index = {key: i for i, key in enumerate(keys)}
        yield list(range(len(samples)))
        while decoder.active:
            yield [index[key] for key in decoder.step()]
    finally:
        decoder.close()
