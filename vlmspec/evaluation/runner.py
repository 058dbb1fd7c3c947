"""The side-by-side runner: every method on the same samples, interleaved, in one process.

For each sample the prepared inputs (``pipe.prepare``: chat template + processor, done once)
go to each method in turn (sample 1: plain, A, B; sample 2: plain, A, B; ...), so slow
drifts of the machine hit all methods alike. Each method first runs one un-recorded
warm-up generation. Every finished (sample, method, repeat) is appended to
``samples.jsonl`` in the output folder (flush + fsync); a restarted run skips the pairs
already there, and refuses to mix results of a different configuration.

Methods (``parse_method``):

* ``plain``                 ``model.generate`` greedy/sampled, the baseline (always run);
* ``hf-assisted[:PATH|self]`` transformers assisted generation with a text-only assistant
  causal LM sharing the tokenizer (``self`` = the target's own language model, sharing its
  weights; bare ``hf-assisted`` uses ``EvalConfig.assistant`` or is skipped). transformers
  gives the assistant no pixel values, which is the point of the comparison;
* ``hf-prompt-lookup[:N]``  transformers prompt-lookup decoding, N candidate tokens;
* ``verdict:CONFIG``        Speculative Verdict (``vlmspec.verdict``) with the JSON VerdictConfig
  at CONFIG: ACCURACY MODE, NOT LOSSLESS. It answers the sample's raw question (its own
  prompts and token limits, greedy) and adds a row per single expert (``NAME [expert i]``,
  its stage-1 answer) and for the verdict model alone (``NAME [verdict alone]``), each
  with its accuracy and cost; records carry ``mode`` so losslessness is n/a for them;
* ``learned:SPEC``          vlmspec with that drafter and ``draft_length="learned"`` (its acceptance
  predictor stops each draft; lossless, compared with the baseline like any drafter);
* ``approximate[@T]:SPEC``  ``verification="approximate"`` (SPRINTER) at threshold T (default 0.5):
  NOT LOSSLESS; records carry ``mode`` "approximate (not lossless)", so losslessness is n/a;
* anything else             a vlmspec drafter spec for ``vlmspec.load(drafter=...)``:
  ``none`` (vlmspec's own loop, no drafts), ``prompt-lookup[:N]``, ``model:PATH``, ...

A method that cannot be built or fails its warm-up is reported as skipped with the
reason; a sample that fails is recorded with its error; neither stops the run.

Timing: ``time.perf_counter`` around each call (wall time), on CUDA after a synchronize.
Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` during the call; on CPU the
process's peak RSS (``resource.getrusage(...).ru_maxrss``) after the call and its growth
during the call.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from vlmspec.core.schedule import DEFAULT_DRAFT_LENGTH
from vlmspec.errors import InputError, VlmspecError

from .loaders import Benchmark, BenchmarkConfig, Sample, load_benchmark
from .metrics import score_prediction
from .report import summarize, write_outputs

BASELINE = "plain"
RESULTS_FILE = "samples.jsonl"
RUN_FILE = "run.json"
# EvalConfig fields that change what a (sample, method) record means: a resumed run must match.
_RESULT_KEYS = ("benchmark", "target", "split", "prompt_style", "metric", "max_new_tokens",
                "temperature", "top_p", "top_k", "seed", "draft_length", "assistant", "dtype")


class EvalError(VlmspecError):
    """The evaluation cannot run as configured (e.g. the output folder holds another run)."""


# -------------------------------------------------------------------------- config
@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run. ``methods`` always gets the ``plain`` baseline first."""

    benchmark: str
    out_dir: str
    target: str | None = None  # None: vlmspec's default model
    methods: tuple[str, ...] = (BASELINE, "prompt-lookup")
    limit: int | None = None
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    seed: int = 0
    repeats: int = 1
    warmup: int = 1  # un-recorded generations per method before measuring
    warmup_max_new_tokens: int = 32
    draft_length: int | str | None = None  # None: the drafter's own depth cap, else 5
    assistant: str | None = None  # PATH or "self": the assistant of a bare "hf-assisted"
    split: str | None = None
    image_root: str | None = None
    prompt_style: str | None = None
    metric: str | None = None
    device: str | None = None
    dtype: str | None = None
    overwrite: bool = False  # start afresh even if out_dir holds results

    def __post_init__(self) -> None:
        if not self.benchmark:
            raise InputError("EvalConfig.benchmark is empty: give a built-in name, FORMAT:PATH or a PATH")
        if not self.out_dir:
            raise InputError("EvalConfig.out_dir is empty: give the folder for the results")
        methods = tuple(m.strip() for m in self.methods if m and m.strip())
        if not methods:
            raise InputError("EvalConfig.methods is empty: give at least one method, e.g. plain,prompt-lookup")
        duplicates = sorted({m for m in methods if methods.count(m) > 1})
        if duplicates:
            raise InputError(f"EvalConfig.methods lists {', '.join(duplicates)} more than once")
        for method in methods:
            parse_method(method)
        methods = (BASELINE,) + tuple(m for m in methods if m != BASELINE)
        object.__setattr__(self, "methods", methods)
        if self.limit is not None and self.limit < 1:
            raise InputError(f"EvalConfig.limit must be >= 1, got {self.limit}")
        if self.max_new_tokens < 1:
            raise InputError(f"EvalConfig.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise InputError(f"EvalConfig.temperature must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise InputError(f"EvalConfig.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise InputError(f"EvalConfig.top_k must be >= 1, got {self.top_k}")
        if self.repeats < 1:
            raise InputError(f"EvalConfig.repeats must be >= 1, got {self.repeats}")
        if self.warmup < 0 or self.warmup_max_new_tokens < 1:
            raise InputError("EvalConfig.warmup must be >= 0 and warmup_max_new_tokens >= 1")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def benchmark_config(self) -> BenchmarkConfig:
        return BenchmarkConfig(source=self.benchmark, split=self.split, limit=self.limit,
                               image_root=self.image_root, prompt_style=self.prompt_style,
                               metric=self.metric, seed=self.seed)

    def fingerprint(self) -> dict:
        return {key: getattr(self, key) for key in _RESULT_KEYS}

    def to_dict(self) -> dict:
        data = asdict(self)
        data["methods"] = list(self.methods)
        return data


# ------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class MethodSpec:
    """A parsed ``--methods`` entry. ``kind``: plain | hf-assisted | hf-prompt-lookup | verdict | learned |
    approximate (NOT lossless) | vlmspec."""

    name: str
    kind: str
    argument: str | None = None


def parse_method(text: str) -> MethodSpec:
    """``"hf-prompt-lookup:5"`` -> MethodSpec("hf-prompt-lookup:5", "hf-prompt-lookup", "5")."""
    name = text.strip()
    head, _, argument = name.partition(":")
    if name == BASELINE:
        return MethodSpec(name, BASELINE)
    if head == "hf-assisted":
        return MethodSpec(name, head, argument or None)
    if head == "hf-prompt-lookup":
        if argument and not (argument.isdigit() and int(argument) > 0):
            raise InputError(f"method {name!r}: the part after the colon is the number of candidate tokens, "
                             "e.g. hf-prompt-lookup:10")
        return MethodSpec(name, head, argument or None)
    if head == "learned" or head.startswith("approximate"):
        if not argument:
            raise InputError(f"method {name!r}: name the drafter after the colon, e.g. learned:auto, "
                             "approximate:auto or approximate@0.7:vispec:DIR")
        if head.startswith("approximate") and head != "approximate":
            threshold = head.partition("@")[2]
            try:
                if not 0.0 <= float(threshold) <= 1.0:
                    raise ValueError
            except ValueError:
                raise InputError(f"method {name!r}: the threshold after '@' must be a number in [0, 1], "
                                 "e.g. approximate@0.7:auto") from None
        return MethodSpec(name, "learned" if head == "learned" else "approximate", argument)
    if head == "verdict":
        if not argument:
            raise InputError(f"method {name!r}: give the Speculative Verdict config file, e.g. verdict:verdict.json")
        return MethodSpec(name, head, argument)
    if not name:
        raise InputError("empty method name in --methods")
    return MethodSpec(name, "vlmspec", name)


@dataclass
class Generation:
    """What one measured call produced and cost."""

    token_ids: list[int]
    text: str
    wall_seconds: float
    time_to_first_token: float | None
    target_forwards: int | None
    acceptance_per_position: list[float] | None
    peak_memory_bytes: int | None
    memory_delta_bytes: int | None
    new_tokens: int | None = None  # when not len(token_ids): a verdict row has no token ids
    extra: dict = field(default_factory=dict)  # more fields for its record


@dataclass(frozen=True)
class Sampling:
    """Decoding settings shared by all methods for one call."""

    max_new_tokens: int
    temperature: float
    top_p: float | None
    top_k: int | None
    seed: int


class Method(Protocol):
    name: str

    def generate(self, inputs: dict, sampling: Sampling) -> Generation: ...


class MemoryProbe:
    """Peak memory of one call: CUDA max allocated, or the CPU process peak RSS."""

    def __init__(self, device) -> None:
        import torch

        self.device = device
        self.cuda = getattr(device, "type", "cpu") == "cuda" and torch.cuda.is_available()
        self.description = (
            "torch.cuda.max_memory_allocated during the call (delta: above the memory allocated before it)"
            if self.cuda else
            "CPU process peak RSS (resource ru_maxrss) after the call (delta: its growth during the call)"
        )
        self._before = 0

    def start(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
        else:
            self._before = _max_rss_bytes()

    def stop(self) -> tuple[int, int]:
        import torch

        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _max_rss_bytes()
        return peak, max(0, peak - self._before)


def _max_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # kilobytes on Linux


def _timed(call: Callable[[], Any], memory: MemoryProbe) -> tuple[Any, float, int, int]:
    memory.start()
    start = time.perf_counter()
    result = call()
    if memory.cuda:
        import torch

        torch.cuda.synchronize(memory.device)
    wall = time.perf_counter() - start
    peak, delta = memory.stop()
    return result, wall, peak, delta


class _FirstTokenTimer:
    """A transformers streamer that notes when the first new token arrives."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first_token_at: float | None = None
        self._seen_prompt = False

    def put(self, value) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True  # generate() first streams the prompt
        elif self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def end(self) -> None:
        pass


class HFGenerateMethod:
    """``target.model.generate`` with optional extra kwargs (assistant, prompt lookup)."""

    def __init__(self, name: str, model, tokenizer, memory: MemoryProbe, extra: dict | None = None) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.memory = memory
        self.extra = dict(extra or {})

    def generate(self, inputs: dict, sampling: Sampling) -> Generation:
        import torch

        kwargs = dict(inputs, max_new_tokens=sampling.max_new_tokens, **self.extra)
        if sampling.temperature > 0:
            torch.manual_seed(sampling.seed)
            kwargs.update(do_sample=True, temperature=sampling.temperature,
                          top_p=sampling.top_p if sampling.top_p is not None else 1.0,
                          top_k=sampling.top_k if sampling.top_k is not None else 0)
        else:
            kwargs.update(do_sample=False)
        timer = _FirstTokenTimer()
        forwards = [0]
        hook = self.model.register_forward_pre_hook(lambda module, args: forwards.__setitem__(0, forwards[0] + 1))
        try:
            def call():
                timer.start = time.perf_counter()
                with torch.inference_mode():
                    return self.model.generate(**kwargs, streamer=timer)
            output, wall, peak, delta = _timed(call, self.memory)
        finally:
            hook.remove()
        prompt_length = inputs["input_ids"].shape[1]
        token_ids = output[0, prompt_length:].tolist()
        ttft = timer.first_token_at - timer.start if timer.first_token_at is not None else None
        return Generation(
            token_ids=token_ids, text=self.tokenizer.decode(token_ids, skip_special_tokens=True),
            wall_seconds=wall, time_to_first_token=ttft, target_forwards=forwards[0] or None,
            acceptance_per_position=None, peak_memory_bytes=peak, memory_delta_bytes=delta,
        )


class VlmspecMethod:
    """``vlmspec.load(target=(model, processor), drafter=spec).generate(inputs=...)``."""

    def __init__(self, name: str, pipe, memory: MemoryProbe) -> None:
        self.name = name
        self.pipe = pipe
        self.memory = memory

    def generate(self, inputs: dict, sampling: Sampling) -> Generation:
        def call():
            return self.pipe.generate(
                inputs=inputs, max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                top_p=sampling.top_p, top_k=sampling.top_k,
                seed=sampling.seed if sampling.temperature > 0 else None,
            )
        result, wall, peak, delta = _timed(call, self.memory)
        metrics = result.metrics
        return Generation(
            token_ids=list(result.token_ids), text=result.text, wall_seconds=wall,
            time_to_first_token=metrics.time_to_first_token, target_forwards=metrics.target_forwards,
            acceptance_per_position=list(metrics.acceptance_per_position), peak_memory_bytes=peak,
            memory_delta_bytes=delta,
            extra={"drafter": result.drafter, "mean_draft_length": metrics.mean_draft_length,
                   "draft_depth_cap": metrics.draft_depth_cap,
                   "drafter_fast_cpu": getattr(self.pipe.drafter, "fast_cpu_report", None),
                   **({} if result.lossless else {"mode": result.verification,
                                                  "unchecked_tokens": metrics.unchecked_tokens})},
        )


class VerdictMethod:
    """``verdict:CONFIG``: Speculative Verdict on the sample's image and raw question.

    ``run_sample`` (used instead of ``generate``) returns one generation per report row: each
    single expert's brief answer (stage 1), the verdict model answering alone, then the
    verdict itself, whose wall time is the sum of its four stages (the verdict-alone
    baseline it also runs is not counted) and whose peak memory covers the whole call.
    """

    def __init__(self, name: str, runner, memory: MemoryProbe) -> None:
        self.name = name
        self.runner = runner
        self.memory = memory

    def run_sample(self, sample: Sample) -> list[tuple[str, Generation]]:
        from vlmspec.verdict import MODE_LABEL, run_verdict_method

        image = sample.load_image()
        (answer, cost), _, peak, delta = _timed(
            lambda: run_verdict_method(None, image, sample.question, runner=self.runner, baselines=True), self.memory)

        def row(text, seconds, forwards, tokens, peak=None, delta=None, **extra) -> Generation:
            return Generation(token_ids=[], text=text, wall_seconds=seconds, time_to_first_token=None,
                              target_forwards=forwards, acceptance_per_position=None, peak_memory_bytes=peak,
                              memory_delta_bytes=delta, new_tokens=tokens, extra={"mode": MODE_LABEL, **extra})

        rows = [(f"{self.name} [expert {i}]",
                 row(e["answer"], e["seconds"], e["forwards"], e["tokens"], group=self.name, model=e["expert"]))
                for i, e in enumerate(cost["experts"])]
        alone = cost["verdict_alone"]["cost"]
        rows.append((f"{self.name} [verdict alone]",
                     row(cost["verdict_alone"]["answer"], alone["seconds"], alone["forwards"], alone["tokens"],
                         group=self.name, model=self.runner.config.verdict_name)))
        rows.append((self.name, row(answer, cost["seconds"], cost["forwards"], cost["tokens"], peak, delta,
                                    stages=cost["stages"], selected_experts=cost["selected_experts"],
                                    boxed_found=cost["boxed_found"])))
        return rows


def _build_verdict(spec: MethodSpec, config: EvalConfig, memory: MemoryProbe) -> VerdictMethod:
    """A VerdictMethod; the eval's --device / --dtype apply where the verdict config sets none."""
    from vlmspec.verdict import VerdictConfig, VerdictRunner

    try:
        verdict_config = VerdictConfig.from_file(spec.argument)
        verdict_config = dataclasses.replace(verdict_config, device=verdict_config.device or config.device,
                                             dtype=verdict_config.dtype or config.dtype)
        return VerdictMethod(spec.name, VerdictRunner(verdict_config), memory)
    except VlmspecError as err:
        raise MethodUnavailable(str(err)) from None


class MethodUnavailable(Exception):
    """Raised while building a method that cannot run for this target; the message is the reason."""


def self_assistant(model):
    """A causal LM over the target's own language model and LM head (weights shared, no copy)."""
    import torch
    from transformers import AutoModelForCausalLM

    decoder, head = model.get_decoder(), model.get_output_embeddings()
    text_config = getattr(model.config, "text_config", None)
    if decoder is None or head is None or text_config is None:
        raise MethodUnavailable("the target exposes no text decoder / LM head to use as its own assistant")
    with torch.device("meta"):
        assistant = AutoModelForCausalLM.from_config(text_config)
    assistant.model = decoder
    assistant.lm_head = head
    assistant.generation_config.eos_token_id = model.generation_config.eos_token_id
    assistant.generation_config.pad_token_id = model.generation_config.pad_token_id
    return assistant.eval()


def _load_assistant(argument: str, model):
    if argument == "self":
        return self_assistant(model)
    from transformers import AutoModelForCausalLM

    try:
        assistant = AutoModelForCausalLM.from_pretrained(argument, dtype=model.dtype)
    except Exception as err:  # noqa: BLE001 - any load failure makes the method unavailable
        raise MethodUnavailable(f"cannot load assistant model {argument!r}: {err}") from None
    return assistant.to(model.device).eval()


def build_method(spec: MethodSpec, base_pipe, config: EvalConfig, memory: MemoryProbe) -> Method:
    """Build one method around the shared target; MethodUnavailable says why it cannot run."""
    model, processor = base_pipe.target.model, base_pipe.target.processor
    tokenizer = base_pipe.target.tokenizer
    if spec.kind == BASELINE:
        return HFGenerateMethod(spec.name, model, tokenizer, memory)
    if spec.kind == "hf-prompt-lookup":
        if isinstance(config.draft_length, int):
            default = config.draft_length
        else:  # None: vlmspec's default length; a schedule name: transformers' own default (10)
            default = DEFAULT_DRAFT_LENGTH if config.draft_length is None else 10
        tokens = int(spec.argument) if spec.argument else default
        return HFGenerateMethod(spec.name, model, tokenizer, memory, {"prompt_lookup_num_tokens": tokens})
    if spec.kind == "hf-assisted":
        argument = spec.argument or config.assistant
        if not argument:
            raise MethodUnavailable("no assistant model given: use hf-assisted:PATH, hf-assisted:self or --assistant")
        return HFGenerateMethod(spec.name, model, tokenizer, memory, {"assistant_model": _load_assistant(argument, model)})
    if spec.kind == "verdict":
        return _build_verdict(spec, config, memory)
    import vlmspec

    options = {"draft_length": config.draft_length}
    if spec.kind == "learned":
        options = {"draft_length": "learned"}
    elif spec.kind == "approximate":  # SPRINTER: NOT lossless; its rows carry the label
        head = spec.name.partition(":")[0]
        threshold = float(head.partition("@")[2]) if "@" in head else None
        options = {"verification": "approximate", "acceptance_threshold": threshold}
    try:
        pipe = vlmspec.load(target=(model, processor), drafter=spec.argument, **options)
    except VlmspecError as err:
        raise MethodUnavailable(str(err)) from None
    return VlmspecMethod(spec.name, pipe, memory)


# ----------------------------------------------------------------------- results log
class ResultsLog:
    """Append-only JSONL of finished (sample, method, repeat) records, durable per line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[dict]:
        """Records written so far; a torn last line (interrupted write) is cut off."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        records, good_end = [], 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
            good_end += len(line)
        if good_end < len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(good_end)
        return records

    def append(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def _record_key(record: dict) -> tuple[str, str, int]:
    return record["sample_id"], record["method"], int(record["repeat"])


def _prepare_out_dir(config: EvalConfig) -> ResultsLog:
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = ResultsLog(out / RESULTS_FILE)
    run_file = out / RUN_FILE
    if config.overwrite:
        for name in (RESULTS_FILE, RUN_FILE):
            (out / name).unlink(missing_ok=True)
    elif run_file.exists():
        previous = json.loads(run_file.read_text()).get("fingerprint", {})
        current = json.loads(json.dumps(config.fingerprint()))
        differing = [f"{k}: {previous.get(k)!r} -> {current[k]!r}" for k in current if previous.get(k) != current[k]]
        if differing:
            raise EvalError(
                f"{out} holds results of a different run ({'; '.join(differing)}); "
                "use another --out folder or pass --overwrite to start afresh"
            )
    elif log.path.exists():
        raise EvalError(f"{log.path} exists without {RUN_FILE}; use another --out folder or pass --overwrite")
    from ..atomic import atomic_write_text

    atomic_write_text(run_file, json.dumps({"fingerprint": config.fingerprint(), "config": config.to_dict()},
                                           indent=2) + "\n")
    return log


# ---------------------------------------------------------------------------- runner
@dataclass
class EvalRun:
    """The outcome of :func:`run_eval`: records, skipped methods and where things were written."""

    config: EvalConfig
    benchmark: Benchmark
    records: list[dict]
    skipped: dict[str, str]
    device: str
    memory_measure: str
    summary: dict = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    newly_run: int = 0


def _sampling(config: EvalConfig, sample_index: int, repeat: int, max_new_tokens: int | None = None) -> Sampling:
    return Sampling(max_new_tokens=max_new_tokens or config.max_new_tokens, temperature=config.temperature,
                    top_p=config.top_p, top_k=config.top_k, seed=config.seed + 100_003 * repeat + sample_index)


def _record(sample: Sample, index: int, method: str, repeat: int, metric: str,
            generation: Generation | None, error: str | None) -> dict:
    record: dict[str, Any] = {"sample_id": sample.sample_id, "sample_index": index, "method": method,
                              "repeat": repeat}
    if generation is None:
        record["error"] = error
        return record
    new_tokens = len(generation.token_ids) if generation.new_tokens is None else generation.new_tokens
    ttft = generation.time_to_first_token
    tpot = (generation.wall_seconds - ttft) / (new_tokens - 1) if ttft is not None and new_tokens > 1 else None
    forwards = generation.target_forwards
    record.update(
        text=generation.text, token_ids=generation.token_ids, new_tokens=new_tokens,
        wall_seconds=generation.wall_seconds, time_to_first_token=ttft, time_per_output_token=tpot,
        tokens_per_second=new_tokens / generation.wall_seconds if generation.wall_seconds > 0 else None,
        target_forwards=forwards, tau=new_tokens / forwards if forwards else None,
        acceptance_per_position=generation.acceptance_per_position,
        peak_memory_bytes=generation.peak_memory_bytes, memory_delta_bytes=generation.memory_delta_bytes,
        score=score_prediction(metric, generation.text, sample.answers, sample.choices, sample.answer_index),
        error=None,
        **generation.extra,
    )
    if method == BASELINE:
        record.update(prompt=sample.prompt, answers=list(sample.answers), choices=list(sample.choices),
                      answer_index=sample.answer_index)
    return record


def _run_method(method: Method, name: str, sample: Sample, inputs: Callable[[], dict],
                sampling: Sampling) -> list[tuple[str, Generation]]:
    """(row name, generation) pairs of one call: one row, or a verdict method's rows."""
    if isinstance(method, VerdictMethod):
        return method.run_sample(sample)
    return [(name, method.generate(inputs(), sampling))]


def _describe_device(target) -> str:
    """The target's device, dtype, and on CPU what ``fast_cpu`` decided for it: speed-ups depend on it."""
    describe = getattr(target, "describe_device", None)
    if describe is not None:
        return describe()
    import torch

    device = getattr(target, "device", "cpu")  # a stand-in target (tests): threads, and fast_cpu if it says
    fast = getattr(target, "fast_cpu_report", None)
    threads = f"{device} ({torch.get_num_threads()} threads)"
    return f"{threads}; fast_cpu: {fast}" if fast else threads


def run_eval(
    config: EvalConfig,
    *,
    progress: bool = True,
    write_report: bool = True,
    pipe_factory: Callable[..., Any] | None = None,
    method_factory: Callable[[MethodSpec, Any, EvalConfig, MemoryProbe], Method] | None = None,
) -> EvalRun:
    """Run every method of ``config`` on the benchmark and write the outputs.

    ``pipe_factory`` (default ``vlmspec.load``) builds the base pipeline that loads the target
    and prepares inputs; ``method_factory`` (default :func:`build_method`) builds each method.
    Both are parameters so tests can substitute fakes.
    """
    from tqdm.auto import tqdm

    benchmark = load_benchmark(config.benchmark_config())
    log = _prepare_out_dir(config)
    records = log.read()
    done = {_record_key(r) for r in records}
    samples = benchmark.samples
    todo = [(i, s, r, m) for i, s in enumerate(samples) for r in range(config.repeats)
            for m in config.methods if (s.sample_id, m, r) not in done]

    if pipe_factory is None:
        import vlmspec

        pipe_factory = vlmspec.load
    base_pipe = pipe_factory(target=config.target, drafter="none", device=config.device, dtype=config.dtype)
    device = base_pipe.target.device
    memory = MemoryProbe(device)
    method_factory = method_factory or build_method

    methods: dict[str, Method] = {}
    skipped: dict[str, str] = {}
    pending_methods = {m for _, _, _, m in todo}
    for name in config.methods:
        if name not in pending_methods:
            continue
        try:
            methods[name] = method_factory(parse_method(name), base_pipe, config, memory)
        except MethodUnavailable as err:
            skipped[name] = str(err)
    if BASELINE in skipped:
        raise EvalError(f"the baseline cannot run: {skipped[BASELINE]}")

    inputs_cache: dict[int, dict] = {}

    def inputs_for(index: int) -> dict:
        if index not in inputs_cache:
            inputs_cache.clear()
            sample = samples[index]
            inputs_cache[index] = base_pipe.prepare(sample.load_image(), sample.prompt)
        return inputs_cache[index]

    # Warm-up: un-recorded generations on the first pending sample.
    if todo and config.warmup:
        warm_index = todo[0][0]
        for name, method in list(methods.items()):
            sampling = _sampling(config, warm_index, 0, min(config.max_new_tokens, config.warmup_max_new_tokens))
            try:
                for _ in range(config.warmup):
                    _run_method(method, name, samples[warm_index], lambda: inputs_for(warm_index), sampling)
            except Exception as err:  # noqa: BLE001 - a method failing its warm-up is skipped, not fatal
                if name == BASELINE:
                    raise EvalError(f"the baseline failed during warm-up: {type(err).__name__}: {err}") from err
                skipped[name] = f"failed during warm-up: {type(err).__name__}: {err}"
                del methods[name]

    todo = [t for t in todo if t[3] in methods]
    newly_run = 0
    with tqdm(total=len(todo), desc=f"eval {benchmark.name}", unit="gen", disable=not progress,
              dynamic_ncols=True) as bar:
        for index, sample, repeat, name in todo:
            bar.set_postfix_str(f"{name} on {sample.sample_id}", refresh=False)
            try:
                rows = _run_method(methods[name], name, sample, lambda: inputs_for(index),
                                   _sampling(config, index, repeat))
                error = None
            except Exception as err:  # noqa: BLE001 - recorded with the sample; the run goes on
                rows, error = [(name, None)], f"{type(err).__name__}: {err}"
            for row_name, generation in rows:  # a verdict method's own row comes last: resume keys on it
                record = _record(sample, index, row_name, repeat, benchmark.metric, generation, error)
                log.append(record)
                records.append(record)
                newly_run += 1
            bar.update(1)

    run = EvalRun(config=config, benchmark=benchmark, records=records, skipped=skipped,
                  device=_describe_device(base_pipe.target), memory_measure=memory.description, newly_run=newly_run)
    run.summary = summarize(run)
    if write_report:
        run.outputs = write_outputs(run)
    return run
