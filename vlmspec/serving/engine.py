"""The serving engine: one thread runs continuous speculative batching over a `Pipeline`.

Requests are queued from any thread (`Engine.submit`); between decoding steps the engine
admits queued requests into the running batch (up to ``max_batch``), runs one
draft -> verify -> accept step for all of them, and reports each request's new tokens to its
`Handle` (with how many were accepted draft tokens and how many the target's own
correction / bonus). A request leaves the batch when it finishes or is cancelled (a client
that went away). Every tokenizer and torch call happens on the engine thread, so nothing
here has to be thread-safe but the queues.

Each request runs exactly as `Pipeline.generate` would run it alone (its own drafter fork,
sampling settings and seeded random stream; see `vlmspec.core.batch_loop.BatchDecoder`).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..api import Pipeline, Result, _TextDelta
from ..batching import BatchTarget
from ..core.batch_loop import BatchDecoder, BatchSequence
from ..errors import VlmspecError


@dataclass(frozen=True)
class EngineConfig:
    max_batch: int = 8  # sequences decoded together at most
    max_queue: int = 256  # requests waiting beyond that are refused (the server answers 503)

    def __post_init__(self) -> None:
        if not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, got {self.max_batch!r}")
        if not isinstance(self.max_queue, int) or self.max_queue < 1:
            raise ValueError(f"max_queue must be a positive integer, got {self.max_queue!r}")


@dataclass
class Token:
    id: int
    text: str  # its text piece ("" while a multi-byte character is incomplete)
    drafted: bool  # True: an accepted draft token; False: the target's own token (first, correction, bonus)


@dataclass
class Event:
    """What a request learns after a step: new tokens, or its end (``result``), or an ``error``."""

    tokens: list[Token] = field(default_factory=list)
    result: Result | None = None
    error: Exception | None = None
    prompt_tokens: int = 0  # set with the result: the prompt's length, image tokens included


@dataclass
class Job:
    """A request as submitted: chat messages (images inside) and generation options."""

    messages: list[dict]
    options: dict  # Pipeline.batch_sequence keyword arguments


class Handle:
    """The submitter's side of a request: events arrive through ``on_event`` (called on the
    engine thread) or, without one, through ``get()``."""

    def __init__(self, job: Job, on_event: Callable[[Event], None] | None = None) -> None:
        self.job = job
        self.submitted = time.perf_counter()
        self.cancelled = threading.Event()
        self._queue: queue.Queue[Event] = queue.Queue()
        self._on_event = on_event or self._queue.put

    def emit(self, event: Event) -> None:
        self._on_event(event)

    def get(self, timeout: float | None = None) -> Event:
        return self._queue.get(timeout=timeout)

    def cancel(self) -> None:
        """Free this request's batch slot at the next step."""
        self.cancelled.set()

    def wait(self, timeout: float | None = None) -> Result:
        """Block until the end (no ``on_event`` given); returns the Result or raises the error."""
        while True:
            event = self.get(timeout)
            if event.error is not None:
                raise event.error
            if event.result is not None:
                return event.result


class QueueFull(VlmspecError):
    """The engine's queue is full (the server answers 503: try again later)."""


class Engine:
    """Continuous speculative batching on a background thread."""

    def __init__(self, pipeline: Pipeline, config: EngineConfig = EngineConfig(),
                 on_step: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.pipeline = pipeline
        self.config = config
        self.on_step = on_step  # called after every step with counters (for /metrics)
        self._pending: queue.Queue[Handle] = queue.Queue()
        self._running: dict[int, tuple[Handle, BatchSequence, _TextDelta]] = {}
        self._decoder = BatchDecoder(BatchTarget(pipeline.target))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vlmspec-engine", daemon=True)

    # ------------------------------------------------------------------ public
    def start(self) -> "Engine":
        self._thread.start()
        return self

    def shutdown(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._pending.put(None)  # wake an idle loop
        self._thread.join(timeout)

    def submit(self, job: Job, on_event: Callable[[Event], None] | None = None) -> Handle:
        if self._pending.qsize() >= self.config.max_queue:
            raise QueueFull(f"{self._pending.qsize()} requests are waiting (max_queue={self.config.max_queue}); "
                            "retry later.")
        handle = Handle(job, on_event)
        self._pending.put(handle)
        return handle

    @property
    def queue_depth(self) -> int:
        return self._pending.qsize()

    @property
    def active(self) -> int:
        return len(self._running)

    # -------------------------------------------------------------------- loop
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._admit(block=not self._running)
            self._drop_cancelled()
            if not self._running:
                continue
            try:
                stepped = self._decoder.step()
            except Exception as exc:  # a failing forward fails the requests in it, not the server
                self._fail_all(exc)
                continue
            self._report(stepped)
        self._fail_all(VlmspecError("The server is shutting down."))

    def _admit(self, block: bool) -> None:
        joining: list[tuple[Handle, BatchSequence]] = []
        while len(self._running) + len(joining) < self.config.max_batch:
            try:
                handle = self._pending.get(block=block and not joining, timeout=0.5 if block else None)
            except queue.Empty:
                break
            if handle is None or self._stop.is_set():
                break
            if handle.cancelled.is_set():
                continue
            try:
                sample = self.pipeline.prepare_chat(handle.job.messages)
                joining.append((handle, self.pipeline.batch_sequence(sample, **handle.job.options)))
            except Exception as exc:  # bad input: told to that request alone
                handle.emit(Event(error=exc))
        if not joining:
            return
        try:
            keys = self._decoder.join([seq for _, seq in joining])
        except Exception as exc:
            for handle, _ in joining:
                handle.emit(Event(error=exc))
            return
        for key, (handle, seq) in zip(keys, joining):
            self._running[key] = (handle, seq, _TextDelta(self.pipeline.target.tokenizer))
        self._report(keys)

    def _drop_cancelled(self) -> None:
        gone = [key for key, (handle, _, _) in self._running.items() if handle.cancelled.is_set()]
        if gone:
            self._decoder.cancel(gone)
            for key in gone:
                self._running.pop(key)

    def _report(self, keys: list[int]) -> None:
        """Tell each stepped request its new tokens (and its end)."""
        tokens_out = 0
        for key in keys:
            handle, seq, delta = self._running[key]
            kept = seq.last_kept
            start = len(seq.stop.generated) - len(kept)
            tokens = [Token(tok, delta(seq.stop.generated[: start + i + 1]), i < seq.last_drafted)
                      for i, tok in enumerate(kept)]
            tokens_out += len(tokens)
            finished = seq.stop.done
            if finished:
                result = self.pipeline.result_of(seq)
                tail = delta(seq.stop.generated, final=result.text)
                if tail and tokens:
                    tokens[-1].text += tail
                handle.emit(Event(tokens=tokens))
                handle.emit(Event(result=result, prompt_tokens=int(seq.sample["input_ids"].shape[1])))
                self._running.pop(key)
            else:
                handle.emit(Event(tokens=tokens))
        if self.on_step is not None:
            self.on_step({"tokens": tokens_out, "active": len(self._running), "queued": self._pending.qsize()})

    def _fail_all(self, exc: Exception) -> None:
        """The running requests get ``exc``; on shutdown the queued ones too."""
        for handle, _, _ in self._running.values():
            handle.emit(Event(error=exc))
        self._running.clear()
        self._decoder.close()
        self._decoder = BatchDecoder(BatchTarget(self.pipeline.target))
        while self._stop.is_set():
            try:
                handle = self._pending.get_nowait()
            except queue.Empty:
                break
            if handle is not None:
                handle.emit(Event(error=exc))
