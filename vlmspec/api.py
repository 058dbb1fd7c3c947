"""The public entry points: `vlmspec.load(...)` -> Pipeline, and one-shot `vlmspec.generate(...)`.

Inputs are validated here so users get one clear error instead of a stack trace from
inside torch: images (missing, corrupt, 0-pixel), prompt (empty, past the context),
`max_new_tokens`, sampling parameters, drafter/target mismatch.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from .batching import BatchTarget
from .core.batch_loop import BatchSequence, speculative_decode_batch
from .core.loop import speculative_decode
from .core.metrics import Metrics, MetricsRecorder
from .core.sampling import SamplingParams
from .core.schedule import DEFAULT_DRAFT_LENGTH, ScheduleConfig
from .core.stopping import StopCriteria, StopTracker
from .core.drafter import Drafter
from .drafters.registry import build_drafter, drafter_name
from .errors import DraftDepthWarning, InputError, PromptError
from .images import ImageLike, load_image
from .inputs import check_inputs, split_padded_batch, stop_strings
from .target import Target, TargetConfig, check_generation_config, refuse_generate_kwargs


@dataclass
class Result:
    text: str
    token_ids: list[int]  # new tokens only; EOS included when it was generated (as transformers does)
    metrics: Metrics
    finish_reason: str  # "eos" | "stop_string" | "length"
    drafter: str = ""  # the drafter that ran, as its resolved spec ("auto -> eagle:DIR")

    @property
    def lossless(self) -> bool:
        """False when approximate verification (SPRINTER) produced it: then it is NOT the target's own output."""
        return self.metrics.lossless

    @property
    def verification(self) -> str:
        """"exact (lossless)" or "approximate (not lossless)"."""
        return self.metrics.verification_label

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "token_ids": self.token_ids,
            "finish_reason": self.finish_reason,
            "drafter": self.drafter,
            "verification": self.verification,
            "lossless": self.lossless,
            "metrics": self.metrics.to_dict(),
        }


@dataclass
class TextStream:
    """Iterate to receive text pieces as tokens are accepted; `.result` is set when it ends."""

    _pieces: Iterator[str]
    result: Result | None = field(default=None)

    def __iter__(self) -> Iterator[str]:
        return self._pieces


@dataclass
class BatchStream:
    """Iterate to receive ``(index, text piece)`` events as each sequence of a batch accepts
    tokens (``index``: the pair's position in the batch); ``.results`` is set when it ends."""

    _events: Iterator[tuple[int, str]]
    results: list[Result] | None = field(default=None)

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return self._events


class _TextDelta:
    """The new text of a growing token list since the last call (whole characters only)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.printed = tokenizer, 0

    def __call__(self, token_ids: list[int], final: str | None = None) -> str:
        text = final if final is not None else self.tokenizer.decode(token_ids, skip_special_tokens=True)
        if final is None and text.endswith("\ufffd"):
            return ""  # an incomplete multi-byte character: wait for the next tokens
        if len(text) <= self.printed:
            return ""
        piece, self.printed = text[self.printed :], len(text)
        return piece


class Pipeline:
    """A loaded target + drafter, reused across calls."""

    def __init__(self, target: Target, drafter: Drafter, schedule: ScheduleConfig | None = None,
                 gate: "GateSetup | None" = None) -> None:
        """`schedule` None: a fixed length, the drafter's own depth cap where it has one, else 5.
        `gate` (vlmspec.gating.setup_gate): the learned stop rule, or approximate verification (NOT
        lossless); it replaces the schedule and needs the chain drafter setup_gate returned."""
        self.target = target
        self.drafter = drafter
        self.schedule = schedule or ScheduleConfig(draft_length=drafter.max_depth or DEFAULT_DRAFT_LENGTH)
        self.gate = gate
        self._warned_caps: set = set()

    @property
    def verification(self) -> str:
        """"exact" (lossless) or "approximate" (SPRINTER, not lossless)."""
        return "exact" if self.gate is None else self.gate.verification

    def _schedule(self):
        return self.schedule.build() if self.gate is None else self.gate.schedule()

    def prepare(self, image: "ImageLike | Sequence[ImageLike] | None", prompt: str) -> dict:
        """Processor outputs for `target.model.generate(**inputs)`; the prompt goes through the chat template."""
        if not isinstance(prompt, str):
            raise PromptError(f"The prompt must be a string, got {type(prompt).__name__} ({prompt!r:.40}); "
                              "pass the question or instruction as prompt='...'.")
        if not prompt.strip():
            raise PromptError("The prompt is empty; pass the question or instruction as prompt='...'.")
        if image is None:
            images = []
        elif isinstance(image, (list, tuple)):
            images = [load_image(item) for item in image]
        else:
            images = [load_image(image)]
        return self.target.prepare(images, prompt)

    def prepare_chat(self, messages: Sequence[dict]) -> dict:
        """Processor outputs for a chat: ``[{"role": "system" | "user" | "assistant", "content": str |
        [{"type": "text", "text": ...} | {"type": "image", "image": ImageLike}]}]``, the last one from the
        user. A single user message with its images first equals `prepare(images, text)`."""
        if not messages:
            raise PromptError("The conversation is empty; send at least one user message.")
        chat, images = [], []
        for i, message in enumerate(messages):
            role, content = message.get("role"), message.get("content")
            if role not in ("system", "user", "assistant"):
                raise PromptError(f"messages[{i}].role is {role!r}; use 'system', 'user' or 'assistant'.")
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
            out = []
            for part in parts:
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    out.append({"type": "text", "text": part["text"]})
                elif part.get("type") == "image" and role == "user":
                    images.append(load_image(part["image"]))
                    out.append({"type": "image"})
                else:
                    raise PromptError(f"messages[{i}] holds a part of type {part.get('type')!r}; a message holds "
                                      "text parts, and user messages image parts too.")
            chat.append({"role": role, "content": out})
        if chat[-1]["role"] != "user":
            raise PromptError("The last message must come from the user (the model answers it).")
        if not any(p["type"] == "text" and p["text"].strip() for p in chat[-1]["content"]):
            raise PromptError("The last user message has no text; add the question or instruction.")
        return self.target.prepare_chat(chat, images)

    def generate(
        self,
        image: "ImageLike | Sequence[ImageLike] | None" = None,
        prompt: str | None = None,
        *,
        inputs: dict | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        stop: Sequence[str] = (),
        stream: bool = False,
        **unsupported,
    ) -> "Result | TextStream":
        refuse_generate_kwargs(unsupported)
        sampling, criteria = self._decoding_options(max_new_tokens, temperature, top_p, top_k, stop)
        model_inputs = self._model_inputs(image, prompt, inputs)
        self.target.check_context(model_inputs["input_ids"].shape[1], max_new_tokens)
        tracker = StopTracker(criteria)
        recorder = self._recorder()
        steps = speculative_decode(
            self.target,
            self.drafter,
            model_inputs,
            sampling,
            self._schedule(),
            tracker,
            recorder,
            self._generator(sampling, seed),
        )
        if not stream:
            for _ in steps:
                pass
            return self._result(tracker, recorder)
        text_stream = TextStream(iter(()))
        text_stream._pieces = self._stream_text(steps, tracker, recorder, text_stream)
        return text_stream

    def generate_batch(
        self,
        pairs: Sequence[tuple] | None = None,
        *,
        inputs: dict | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        stop: Sequence[str] = (),
        stream: bool = False,
        **unsupported,
    ) -> "list[Result] | BatchStream":
        """Generate for several (image, prompt) pairs at once: one target forward per step for
        the whole batch, each sequence accepting its own number of tokens. Each output equals
        the output of `generate` on that pair alone (with sampling: with the same seed).
        ``inputs=``: instead of pairs, one left-padded processor batch (input_ids [batch, len],
        attention_mask, pixel_values): each row is generated as `model.generate(**inputs)` would.
        ``stream=True``: a `BatchStream` of ``(index, text piece)`` events, results at its end."""
        refuse_generate_kwargs(unsupported)
        sampling, criteria = self._decoding_options(max_new_tokens, temperature, top_p, top_k, stop)
        if inputs is not None:
            if pairs is not None:
                raise InputError("Pass either (image, prompt) pairs or inputs=processor_batch to generate_batch, not both.")
            samples = split_padded_batch(inputs, self.target)
        else:
            if not pairs:
                raise InputError("generate_batch needs at least one (image, prompt) pair.")
            samples = []
            for pair in pairs:
                if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                    raise InputError(f"generate_batch takes (image, prompt) pairs; got {type(pair).__name__}.")
                samples.append(self.prepare(*pair))
        sequences = [self._batch_sequence(sample, sampling, criteria, seed, max_new_tokens) for sample in samples]
        stops, recorders = [s.stop for s in sequences], [s.recorder for s in sequences]
        steps = speculative_decode_batch(
            BatchTarget(self.target),
            [s.drafter for s in sequences],
            samples,
            sampling,
            [s.schedule for s in sequences],
            stops,
            recorders,
            [s.generator for s in sequences],
        )
        if not stream:
            for _ in steps:
                pass
            return [self._result(tracker, recorder) for tracker, recorder in zip(stops, recorders)]
        batch_stream = BatchStream(iter(()))
        batch_stream._events = self._stream_batch(steps, stops, recorders, batch_stream)
        return batch_stream

    def batch_sequence(
        self,
        sample: dict,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> BatchSequence:
        """One sequence for a `BatchDecoder` (continuous batching, e.g. `vlmspec serve`): its own
        drafter fork, schedule, stop rule and random stream, exactly as `generate` would run it.
        ``sample``: processor outputs for one prompt (`prepare` / `prepare_chat`). Checks the options
        and the context length; `result_of` turns the finished sequence into a `Result`."""
        sampling, criteria = self._decoding_options(max_new_tokens, temperature, top_p, top_k, stop)
        return self._batch_sequence(sample, sampling, criteria, seed, max_new_tokens)

    def result_of(self, sequence: BatchSequence) -> Result:
        return self._result(sequence.stop, sequence.recorder)

    def _batch_sequence(self, sample, sampling, criteria, seed, max_new_tokens) -> BatchSequence:
        if self.gate is not None:
            raise InputError("draft_length='learned' and verification='approximate' run one sequence at a time "
                             "(generate); batched decoding and the server use the lossless schedules.")
        self.target.check_context(sample["input_ids"].shape[1], max_new_tokens)
        return BatchSequence(sample, self.drafter.fork(), sampling, self.schedule.build(), StopTracker(criteria),
                             self._recorder(), self._generator(sampling, seed))

    def autotune(self, pairs: Sequence[tuple], *, max_new_tokens: int = 48) -> str:
        """Fit the drafting to this machine (chain length, or chain vs dynamic tree): see
        `vlmspec.tuning.autotune`. Returns a one-line summary; outputs stay exact."""
        from .tuning import autotune

        return autotune(self, pairs, max_new_tokens=max_new_tokens)

    def _decoding_options(self, max_new_tokens, temperature, top_p, top_k, stop) -> tuple[SamplingParams, StopCriteria]:
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens <= 0:
            raise InputError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}.")
        check_generation_config(self.target.model)  # read per call: users edit it after loading
        sampling = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
        tokenizer = self.target.tokenizer
        criteria = StopCriteria(
            max_new_tokens=max_new_tokens,
            eos_token_ids=frozenset(self.target.eos_token_ids),
            stop_strings=stop_strings(stop),
            # Matched on the text with special tokens written out, as transformers' stop_strings
            # matches token strings: a stop string never matches across a <pad> or <image>.
            decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=False),
        )
        return sampling, criteria

    def _generator(self, sampling: SamplingParams, seed: int | None) -> torch.Generator | None:
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63):
            raise InputError(f"seed must be an integer in [0, 2**63) or None, got {seed!r}.")
        if sampling.greedy:
            return None
        generator = torch.Generator(device=self.target.device)
        generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, ()).item()))
        return generator

    def _model_inputs(self, image, prompt, inputs: dict | None) -> dict:
        if inputs is not None:
            if image is not None or prompt is not None:
                raise InputError("Pass either image/prompt or inputs=processor_outputs, not both.")
            check_inputs(inputs, self.target)
            device = self.target.device
            return {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
        if prompt is None:
            raise PromptError("No prompt given; pass prompt='...' (and an image) or inputs=processor_outputs.")
        return self.prepare(image, prompt)

    def _recorder(self) -> MetricsRecorder:
        """A metrics recorder; warns once when the drafter's own depth cap overrides the schedule."""
        if self.gate is not None:
            return MetricsRecorder(depth_cap=self.drafter.max_depth, verification=self.verification)
        cap, longest = self.drafter.max_depth, self.schedule.longest()
        if cap is not None and longest > cap and (cap, longest) not in self._warned_caps:
            self._warned_caps.add((cap, longest))
            asked = (f"draft_length={longest}" if self.schedule.kind == "fixed"
                     else f"the {self.schedule.kind} schedule (up to {longest})")
            warnings.warn(
                f"{drafter_name(self.drafter)} drafts at most {cap} tokens deep (its config), so {asked} "
                f"is capped at {cap}; the effective depth is in metrics.mean_draft_length. To draft deeper, "
                "set depth in the drafter spec, e.g. 'eagle:DIR?depth=6'.",
                DraftDepthWarning, stacklevel=3,
            )
        return MetricsRecorder(depth_cap=cap)

    def _result(self, tracker: StopTracker, recorder: MetricsRecorder) -> Result:
        metrics = recorder.finish(len(tracker.generated))
        text = self.target.tokenizer.decode(tracker.generated, skip_special_tokens=True)
        return Result(text, list(tracker.generated), metrics, tracker.finish_reason or "length",
                      drafter_name(self.drafter))

    def _stream_text(self, steps, tracker: StopTracker, recorder, text_stream: TextStream) -> Iterator[str]:
        delta = _TextDelta(self.target.tokenizer)
        for _ in steps:
            if piece := delta(tracker.generated):
                yield piece
        text_stream.result = self._result(tracker, recorder)
        if piece := delta(tracker.generated, final=text_stream.result.text):
            yield piece

    def _stream_batch(self, steps, stops: list[StopTracker], recorders, batch_stream: BatchStream):
        deltas = [_TextDelta(self.target.tokenizer) for _ in stops]
        for stepped in steps:
            for b in stepped:
                if piece := deltas[b](stops[b].generated):
                    yield b, piece
        batch_stream.results = [self._result(t, r) for t, r in zip(stops, recorders)]
        for b, result in enumerate(batch_stream.results):
            if piece := deltas[b](stops[b].generated, final=result.text):
                yield b, piece


def load(
    target: "str | os.PathLike | Target | tuple | None" = None,
    drafter: "str | Drafter | None" = "auto",
    *,
    device: str | None = None,
    dtype: "str | torch.dtype | None" = None,
    draft_length: "int | str | ScheduleConfig | None" = None,
    trust_remote_code: bool = False,
    fast_cpu: bool | str = "auto",
    verification: str = "exact",
    acceptance_threshold: float | None = None,
    predictor: "str | os.PathLike | None" = None,
) -> Pipeline:
    """Load a target (path, checkpoint name, `Target`, or `(model, processor)`; None = the default model).

    `fast_cpu` applies to targets vlmspec loads itself (see `TargetConfig.fast_cpu`); a model
    you pass in is left as it is (call `Target.enable_fast_cpu` yourself).
    ``draft_length="learned"``: the drafter's AcceptancePredictor stops each draft (lossless).
    ``verification="approximate"``: SPRINTER, NOT lossless, opt-in only: tokens the predictor
    approves are kept without the target's check. Both read the predictor beside the drafter's
    weights unless `predictor` names its directory; `acceptance_threshold` overrides the default
    (learned: from measured costs; approximate: 0.5)."""
    from .gating import check_verification, setup_gate

    check_verification(verification)
    config = TargetConfig(device=device, dtype=dtype, trust_remote_code=trust_remote_code, fast_cpu=fast_cpu)
    loaded = _load_target(target, config)
    built = build_drafter(drafter, loaded)
    learned = isinstance(draft_length, str) and draft_length.strip().lower() == "learned"
    if learned or verification == "approximate":
        if draft_length is not None and not learned:
            raise InputError("verification='approximate' sets its own draft length (it drafts until the predictor "
                             f"flags a token); drop draft_length={draft_length!r}.")
        chain, gate = setup_gate(loaded, built, learned=learned, verification=verification,
                                 threshold=acceptance_threshold, predictor=predictor)
        return Pipeline(loaded, chain, gate=gate)
    if acceptance_threshold is not None or predictor is not None:
        raise InputError("acceptance_threshold / predictor apply to draft_length='learned' or "
                         "verification='approximate' only.")
    if draft_length is None:  # the drafter's own depth cap where it has one, else 5
        return Pipeline(loaded, built)
    schedule = ScheduleConfig.parse(draft_length)
    if schedule.kind == "cost-aware" and not schedule.verify_costs:
        from .core.autotune import load_or_measure

        costs = load_or_measure(loaded, tuple(range(1, schedule.max_length + 2)))  # cached per machine and model
        schedule = dataclasses.replace(schedule, verify_costs=tuple(sorted(costs.items())))
    return Pipeline(loaded, built, schedule)


def _load_target(target, config: TargetConfig) -> Target:
    if isinstance(target, Target):
        return target
    if isinstance(target, tuple) and len(target) == 2:
        model, processor = target
        return Target(model, processor)
    if isinstance(target, torch.nn.Module):  # a bare transformers model: its processor from where it came
        return Target(target, _processor_for(target, config))
    if not (target is None or isinstance(target, (str, os.PathLike))):
        raise InputError(
            f"target={type(target).__name__} is not a target; pass a local directory, a checkpoint name, a "
            "(model, processor) pair, a loaded model, a vlmspec.Target, or None for the default model."
        )
    if target is None or (not os.path.isdir(target) and str(target) == _default_model_name()):
        from .models.default import default_model_dir

        target = default_model_dir()
    elif not os.path.isdir(target) and str(target).startswith(_default_model_name() + "@"):
        from .models.default import default_model_dir  # the default model built from other weights

        target = default_model_dir(weights=os.path.expanduser(str(target).split("@", 1)[1]))
    return Target.load(target, config)


def _processor_for(model, config: TargetConfig):
    """The processor saved beside a bare model (``model.name_or_path``, looked up locally only)."""
    from transformers import AutoProcessor

    from .errors import ModelLoadError

    source = getattr(model, "name_or_path", "") or getattr(getattr(model, "config", None), "_name_or_path", "")
    try:
        if source:
            return AutoProcessor.from_pretrained(source, trust_remote_code=config.trust_remote_code,
                                                 local_files_only=True)
    except (OSError, ValueError):
        pass
    raise ModelLoadError(
        f"target is a bare {type(model).__name__} whose processor could not be found locally "
        f"(name_or_path={source!r}); pass target=(model, processor), a checkpoint directory, or a vlmspec.Target "
        "(the processor decodes the output text, so it is needed with inputs= too)."
    )


def _default_model_name() -> str:
    from .models.default import DEFAULT_MODEL

    return DEFAULT_MODEL


@functools.lru_cache(maxsize=2)
def _cached_pipeline(target, drafter, device, dtype, draft_length, trust_remote_code, verification="exact",
                     acceptance_threshold=None, predictor=None) -> Pipeline:
    return load(
        target, drafter, device=device, dtype=dtype, draft_length=draft_length, trust_remote_code=trust_remote_code,
        verification=verification, acceptance_threshold=acceptance_threshold, predictor=predictor,
    )


def generate(
    image: "ImageLike | Sequence[ImageLike] | None" = None,
    prompt: str | None = None,
    *,
    target: "str | os.PathLike | Target | tuple | None" = None,
    drafter: "str | Drafter | None" = "auto",
    inputs: dict | None = None,
    device: str | None = None,
    dtype: "str | torch.dtype | None" = None,
    draft_length: "int | str | None" = None,
    trust_remote_code: bool = False,
    verification: str = "exact",
    acceptance_threshold: float | None = None,
    predictor: "str | os.PathLike | None" = None,
    **generate_kwargs,
) -> "Result | TextStream":
    """One call: load (cached for string specs) and generate. See `Pipeline.generate` for the options;
    `verification="approximate"` (SPRINTER) is NOT lossless and only runs when asked for by name."""
    gate_options = dict(verification=verification, acceptance_threshold=acceptance_threshold,
                        predictor=None if predictor is None else os.fspath(predictor))
    if isinstance(target, (str, os.PathLike, type(None))) and isinstance(drafter, (str, type(None))):
        key = None if target is None else os.fspath(target)
        pipe = _cached_pipeline(key, drafter, device, dtype, draft_length, trust_remote_code, **gate_options)
    else:
        pipe = load(target, drafter, device=device, dtype=dtype, draft_length=draft_length,
                    trust_remote_code=trust_remote_code, **gate_options)
    return pipe.generate(image, prompt, inputs=inputs, **generate_kwargs)
