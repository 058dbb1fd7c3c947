"""TrainConfig: everything one drafter-training run needs, validated when it is built.

A config is plain JSON (no YAML dependency): `TrainConfig.from_json(path)` /
`TrainConfig.from_dict(d)`, with `overrides=["loss.w_ce=0.2", "max_steps=50"]` applied on
top (dotted keys, JSON values). Every field has a default except `target` and `output_dir`.
Sections:

    data        DataConfig   sources, curriculum, self-distillation, bad-sample policy
    loss        LossConfig   w_ce / w_feat (SpecVLM 0.1 / 1.0), CE temperature, input noise,
                             training-time-test steps, Gumbel temperature schedule
    optim       OptimConfig  AdamW (0.9, 0.95), lr schedule, grad clip 0.5
    eval        EvalConfig   held-out prompts for tau, how often

Errors name the field, the bad value and what to write instead (`InputError`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

DRAFTER_KINDS = ("eagle", "vispec", "msd", "specvlm")
SOURCE_KINDS = ("synthetic", "jsonl", "hf_disk")
SYNTHETIC_TASKS = ("describe", "questions", "mixed", "prompt_mix")
MIXED_PRECISION = ("no", "bf16", "fp16")
BAD_SAMPLE_POLICIES = ("skip", "raise")
OVERLONG_POLICIES = ("skip", "truncate", "raise")
LR_SCHEDULES = ("constant", "linear", "cosine")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)


def _need_int(owner: str, name: str, value: Any, minimum: int) -> None:
    _need(_is_int(value) and value >= minimum, f"{owner}.{name} must be an integer >= {minimum}; got {value!r}.")


def _need_number(owner: str, name: str, value: Any, minimum: float, strict: bool = False) -> None:
    ok = _is_number(value) and (value > minimum if strict else value >= minimum)
    relation = ">" if strict else ">="
    _need(ok, f"{owner}.{name} must be a finite number {relation} {minimum}; got {value!r}.")


def _need_choice(owner: str, name: str, value: Any, choices: tuple) -> None:
    _need(value in choices, f"{owner}.{name} must be one of {', '.join(map(str, choices))}; got {value!r}.")


class _Section:
    """from_dict / to_dict for the config dataclasses (unknown keys are errors, with the known ones)."""

    @classmethod
    def from_dict(cls, data: Any):
        if isinstance(data, cls):
            return data
        _need(isinstance(data, dict), f"{cls.__name__} must be a JSON object; got {type(data).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        _need(not unknown, f"Unknown {cls.__name__} fields {unknown}; known fields: {', '.join(sorted(known))}.")
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            nested = _NESTED.get((cls.__name__, f.name))
            if nested is not None:
                if f.name in ("sources", "text_sources"):
                    _need(isinstance(value, (list, tuple)), f"DataConfig.{f.name} must be a list of source objects.")
                    value = tuple(nested.from_dict(item) for item in value)
                elif value is not None:
                    value = nested.from_dict(value)
            kwargs[f.name] = value
        return cls(**kwargs)

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, _Section):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = [v.to_dict() if isinstance(v, _Section) else v for v in value]
            out[f.name] = value
        return out


@dataclass(frozen=True)
class SourceConfig(_Section):
    """One data source. Rows become samples {id, images, prompt, response}.

    kind "synthetic": the built-in scenes (`vlmspec.data.synthetic`), `split`/`n`/`seed`;
        task "describe" (DESCRIBE_PROMPT -> description), "questions" (each question ->
        its answer), "mixed" (both) or "prompt_mix" (`vlmspec.data.prompt_mix`: describe,
        open, short, chat, chat-with-image and photo prompts with no answers, for
        `data.self_distill`; `heldout: true` draws the disjoint measuring set).
    kind "jsonl": `path` to JSON lines {"id", "image" (path, list of paths or null),
        "prompt", "response" (may be absent with self-distillation)}; relative image
        paths are resolved against `image_root` (default: the file's folder).
    kind "hf_disk": a `datasets.save_to_disk` folder with the same columns.
    `text_only: true` drops the images (a text-only pool for the curriculum).
    """

    kind: str = "synthetic"
    path: str | None = None
    image_root: str | None = None
    split: str = "train"
    n: int = 1000
    seed: int = 0
    task: str = "describe"
    text_only: bool = False
    limit: int | None = None  # at most this many rows from the source
    heldout: bool = False  # task "prompt_mix": the held-out set (never for training)
    # data.self_distill.temperature for this source only (e.g. sampled T=0.7 / 1.0 answers beside greedy ones)
    self_distill_temperature: float | None = None

    def __post_init__(self) -> None:
        _need_choice("source", "kind", self.kind, SOURCE_KINDS)
        if self.kind == "synthetic":
            _need(self.split in ("train", "val", "test"), f"source.split must be train, val or test; got {self.split!r}.")
            _need_int("source", "n", self.n, 1)
            _need_int("source", "seed", self.seed, 0)
            _need_choice("source", "task", self.task, SYNTHETIC_TASKS)
        else:
            _need(
                isinstance(self.path, str) and bool(self.path),
                f"source kind {self.kind!r} needs `path` (a .jsonl file or a save_to_disk folder).",
            )
        _need(isinstance(self.text_only, bool), f"source.text_only must be true or false; got {self.text_only!r}.")
        if self.limit is not None:
            _need_int("source", "limit", self.limit, 1)
        if self.self_distill_temperature is not None:
            _need_number("source", "self_distill_temperature", self.self_distill_temperature, 0.0)


@dataclass(frozen=True)
class SelfDistillConfig(_Section):
    """ViSpec-style data: the target regenerates every response, cached under
    `output_dir/self_distill`, or under `cache_dir` when set, so staged recipes and several
    drafters trained on the same rows share one set of answers (records are keyed by the
    target's fingerprint, these generation settings and each row's prompt and images)."""

    enabled: bool = False
    drafter: str = "prompt-lookup"  # lossless: same tokens as plain decoding, fewer target forwards
    temperature: float = 0.0  # 0 = greedy; > 0 samples (seeded per sample id)
    top_p: float | None = None
    max_new_tokens: int = 256
    prompt_suffix: str = ""  # e.g. " Please answer with at least 1000 words." (ViSpec)
    seed: int = 0
    batch_size: int = 8  # greedy: this many answers per batched target forward (same tokens as one at a time)
    cache_dir: str | None = None  # None = output_dir/self_distill

    def __post_init__(self) -> None:
        _need(isinstance(self.enabled, bool), f"self_distill.enabled must be true or false; got {self.enabled!r}.")
        _need(self.cache_dir is None or (isinstance(self.cache_dir, str) and bool(self.cache_dir)),
              f"self_distill.cache_dir must be a folder path or null; got {self.cache_dir!r}.")
        _need_int("self_distill", "batch_size", self.batch_size, 1)
        _need(self.drafter in ("none", "prompt-lookup") or self.drafter.startswith(("prompt-lookup:", "eagle:")),
              f"self_distill.drafter must be 'none', 'prompt-lookup[:N]' or 'eagle:PATH' (lossless); got {self.drafter!r}.")
        _need_number("self_distill", "temperature", self.temperature, 0.0)
        if self.top_p is not None:
            _need(_is_number(self.top_p) and 0 < self.top_p <= 1, f"self_distill.top_p must be in (0, 1]; got {self.top_p!r}.")
        _need_int("self_distill", "max_new_tokens", self.max_new_tokens, 1)
        _need(isinstance(self.prompt_suffix, str), "self_distill.prompt_suffix must be a string.")
        _need_int("self_distill", "seed", self.seed, 0)


@dataclass(frozen=True)
class CurriculumConfig(_Section):
    """MSD two-stage curriculum over optimizer steps: text-only for `text_only_steps`, then the
    multimodal share rises linearly from `start_share` to 1.0 over `ramp_steps`."""

    text_only_steps: int = 0
    ramp_steps: int = 0
    start_share: float = 0.0

    def __post_init__(self) -> None:
        _need_int("curriculum", "text_only_steps", self.text_only_steps, 0)
        _need_int("curriculum", "ramp_steps", self.ramp_steps, 0)
        _need(_is_number(self.start_share) and 0 <= self.start_share <= 1,
              f"curriculum.start_share must be in [0, 1]; got {self.start_share!r}.")

    @property
    def active(self) -> bool:
        return self.text_only_steps > 0 or self.ramp_steps > 0

    def multimodal_share(self, step: int) -> float:
        """Share of multimodal samples in the batches of optimizer step `step` (0-based)."""
        if step < self.text_only_steps:
            return 0.0
        if self.ramp_steps == 0:
            return 1.0
        progress = min(1.0, (step - self.text_only_steps + 1) / self.ramp_steps)
        return self.start_share + (1.0 - self.start_share) * progress


@dataclass(frozen=True)
class DataConfig(_Section):
    sources: tuple = ()
    text_sources: tuple = ()  # the curriculum's text-only pool (default: the sources with images dropped)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    self_distill: SelfDistillConfig = field(default_factory=SelfDistillConfig)
    max_length: int = 2048  # prompt (image tokens included) + response tokens
    on_bad_sample: str = "skip"  # missing image, empty prompt/response: "skip" (reported) | "raise"
    on_overlong: str = "truncate"  # longer than max_length: "skip" | "truncate" (cut the response) | "raise"
    min_response_tokens: int = 1

    def __post_init__(self) -> None:
        for name in ("sources", "text_sources"):
            value = getattr(self, name)
            if isinstance(value, list):
                value = tuple(SourceConfig.from_dict(v) for v in value)
                object.__setattr__(self, name, value)
            _need(all(isinstance(v, SourceConfig) for v in value), f"data.{name} must be a list of source objects.")
        _need(len(self.sources) > 0, 'data.sources is empty; add at least one, e.g. {"kind": "synthetic", "n": 1000}.')
        _need_int("data", "max_length", self.max_length, 8)
        _need_choice("data", "on_bad_sample", self.on_bad_sample, BAD_SAMPLE_POLICIES)
        _need_choice("data", "on_overlong", self.on_overlong, OVERLONG_POLICIES)
        _need_int("data", "min_response_tokens", self.min_response_tokens, 1)
        answerless = [s for s in self.sources + self.text_sources if s.kind == "synthetic" and s.task == "prompt_mix"]
        _need(self.self_distill.enabled or all(s.self_distill_temperature is None for s in self.sources + self.text_sources),
              "data.sources sets self_distill_temperature but data.self_distill is not enabled; enable it or drop the field.")
        _need(not answerless or self.self_distill.enabled,
              'data.sources has task "prompt_mix", whose prompts have no answers; set "self_distill": '
              '{"enabled": true} so the target writes them.')
        _need(not any(s.heldout for s in answerless),
              'a "prompt_mix" source has heldout: true; the held-out prompts are for measuring, never train on them.')


@dataclass(frozen=True)
class LossConfig(_Section):
    w_ce: float = 0.1  # soft cross-entropy to the target's next-token distribution
    w_feat: float = 1.0  # SmoothL1 to the target's next hidden state
    ce_temperature: float = 1.0  # teacher and draft logits are divided by it
    smooth_l1_beta: float = 1.0
    input_noise: float = 0.2  # uniform noise U(-a/2, a/2) added to the input features (EAGLE); 0 = off
    ttt_steps: int = 0  # extra "training-time test" steps fed the drafter's own predicted features
    ttt_decay: float = 0.8  # step k is weighted decay**k (EAGLE-3)
    gumbel_temperature: float = 1.0  # SpecVLM gate: Gumbel-softmax temperature at step 0 ...
    gumbel_temperature_end: float = 0.5  # ... annealed linearly to this at the last step

    def __post_init__(self) -> None:
        _need_number("loss", "w_ce", self.w_ce, 0.0)
        _need_number("loss", "w_feat", self.w_feat, 0.0)
        _need(self.w_ce > 0 or self.w_feat > 0, "loss.w_ce and loss.w_feat are both 0; nothing would be trained.")
        _need_number("loss", "ce_temperature", self.ce_temperature, 0.0, strict=True)
        _need_number("loss", "smooth_l1_beta", self.smooth_l1_beta, 0.0, strict=True)
        _need_number("loss", "input_noise", self.input_noise, 0.0)
        _need_int("loss", "ttt_steps", self.ttt_steps, 0)
        _need(_is_number(self.ttt_decay) and 0 < self.ttt_decay <= 1, f"loss.ttt_decay must be in (0, 1]; got {self.ttt_decay!r}.")
        _need_number("loss", "gumbel_temperature", self.gumbel_temperature, 0.0, strict=True)
        _need_number("loss", "gumbel_temperature_end", self.gumbel_temperature_end, 0.0, strict=True)

    def gumbel_at(self, step: int, total: int) -> float:
        progress = 0.0 if total <= 1 else min(1.0, step / (total - 1))
        return self.gumbel_temperature + (self.gumbel_temperature_end - self.gumbel_temperature) * progress


@dataclass(frozen=True)
class OptimConfig(_Section):
    lr: float = 1e-4
    betas: tuple = (0.9, 0.95)
    weight_decay: float = 0.0
    grad_clip: float = 0.5  # 0 = off
    warmup_steps: int = 0
    schedule: str = "constant"

    def __post_init__(self) -> None:
        _need_number("optim", "lr", self.lr, 0.0, strict=True)
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else None
        _need(betas is not None and len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas),
              f"optim.betas must be two numbers in [0, 1), e.g. [0.9, 0.95]; got {self.betas!r}.")
        object.__setattr__(self, "betas", betas)
        _need_number("optim", "weight_decay", self.weight_decay, 0.0)
        _need_number("optim", "grad_clip", self.grad_clip, 0.0)
        _need_int("optim", "warmup_steps", self.warmup_steps, 0)
        _need_choice("optim", "schedule", self.schedule, LR_SCHEDULES)

    def lr_at(self, step: int, total: int) -> float:
        """Learning rate of optimizer step `step` (0-based) of `total`."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.schedule == "constant" or total <= self.warmup_steps:
            return self.lr
        progress = (step - self.warmup_steps) / max(1, total - self.warmup_steps)
        if self.schedule == "linear":
            return self.lr * max(0.0, 1.0 - progress)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass(frozen=True)
class EvalConfig(_Section):
    """tau on held-out prompts: greedy speculative generation with the current drafter."""

    every: int = 0  # optimizer steps between evaluations; 0 = only at the end
    source: SourceConfig | None = None  # default: synthetic val split
    num_prompts: int = 8
    max_new_tokens: int = 64
    draft_length: int = 5
    at_end: bool = True

    def __post_init__(self) -> None:
        _need_int("eval", "every", self.every, 0)
        _need_int("eval", "num_prompts", self.num_prompts, 0)
        _need_int("eval", "max_new_tokens", self.max_new_tokens, 1)
        _need_int("eval", "draft_length", self.draft_length, 1)
        _need(isinstance(self.at_end, bool), f"eval.at_end must be true or false; got {self.at_end!r}.")


_NESTED: dict = {}

# The config class of each drafter kind (module, class): drafter_config holds its fields.
DRAFTER_CONFIG_CLASSES = {
    "eagle": ("vlmspec.drafters.eagle", "EagleConfig"),
    "vispec": ("vlmspec.drafters.vispec", "ViSpecConfig"),
    "msd": ("vlmspec.drafters.msd", "MSDConfig"),
    "specvlm": ("vlmspec.drafters.specvlm", "SpecVLMConfig"),
}


def _check_drafter_config(kind: str, data: dict) -> None:
    """drafter_config must build the kind's config class (unknown fields and bad values are errors)."""
    import importlib

    module_name, class_name = DRAFTER_CONFIG_CLASSES[kind]
    try:
        config_cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):  # checked again when the drafter is built
        return
    try:
        config_cls.from_dict(dict(data))
    except InputError as exc:
        raise InputError(f"TrainConfig.drafter_config (a {class_name} for drafter {kind!r}): {exc}") from None
    except TypeError as exc:
        raise InputError(f"TrainConfig.drafter_config (a {class_name} for drafter {kind!r}): {exc}") from None


@dataclass(frozen=True)
class TrainConfig(_Section):
    target: str = ""  # LLaVA-style checkpoint dir/name, or "vlmspec-default"
    output_dir: str = ""
    drafter: str = "eagle"  # eagle | vispec | msd | specvlm
    drafter_config: dict = field(default_factory=dict)  # fields of the drafter kind's config (EagleConfig, ...)
    init_from: str | None = None  # a saved drafter to continue from
    warm_start_from: str | None = None  # a drafter of another fine-tune of the same base model (e.g. the previous
    # default model's): its weights and draft vocabulary start this run, which saves it for this target
    init_layer_from_target: bool = False
    draft_vocab_size: int | None = None  # VocabTrim: keep the N most frequent response tokens
    data: DataConfig = field(default_factory=lambda: DataConfig(sources=(SourceConfig(),)))
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    batch_size: int = 4  # per process, per micro-step
    grad_accum: int = 1
    max_steps: int = 1000  # optimizer steps
    mixed_precision: str = "no"  # no | bf16 | fp16 (where the device supports it)
    target_dtype: str | None = None  # e.g. "bfloat16" on GPU; default: float32 on CPU, checkpoint dtype on GPU
    seed: int = 0
    checkpoint_every: int = 500  # optimizer steps; 0 = only at the end
    keep_checkpoints: int = 2
    resume: str | None = None  # "latest", a checkpoint folder, or None
    log_every: int = 10
    progress_bar: bool = True

    def __post_init__(self) -> None:
        _need(isinstance(self.target, str) and bool(self.target),
              'TrainConfig.target is missing; set it to a LLaVA-style checkpoint dir or "vlmspec-default".')
        _need(isinstance(self.output_dir, str) and bool(self.output_dir),
              "TrainConfig.output_dir is missing; set it to the folder for checkpoints, logs and the drafter.")
        _need_choice("TrainConfig", "drafter", self.drafter, DRAFTER_KINDS)
        _need(isinstance(self.drafter_config, dict), "TrainConfig.drafter_config must be a JSON object.")
        _check_drafter_config(self.drafter, self.drafter_config)
        if self.draft_vocab_size is not None:
            _need_int("TrainConfig", "draft_vocab_size", self.draft_vocab_size, 1)
        _need(not (self.init_from and self.warm_start_from),
              "TrainConfig.init_from (continue a drafter of this target) and warm_start_from (start from a drafter "
              "of another fine-tune of the same base model) are exclusive; set one.")
        for name in ("batch_size", "grad_accum", "max_steps", "log_every", "keep_checkpoints"):
            _need_int("TrainConfig", name, getattr(self, name), 1)
        _need_int("TrainConfig", "checkpoint_every", self.checkpoint_every, 0)
        _need_int("TrainConfig", "seed", self.seed, 0)
        _need_choice("TrainConfig", "mixed_precision", self.mixed_precision, MIXED_PRECISION)
        if self.target_dtype is not None:
            _need_choice("TrainConfig", "target_dtype", self.target_dtype, ("float32", "bfloat16", "float16", "auto"))
        if self.resume is not None:
            _need(isinstance(self.resume, str) and bool(self.resume),
                  'TrainConfig.resume must be "latest" or a checkpoint folder.')
        for name, cls in (("data", DataConfig), ("loss", LossConfig), ("optim", OptimConfig), ("eval", EvalConfig)):
            _need(isinstance(getattr(self, name), cls), f"TrainConfig.{name} must be a {cls.__name__}.")
        if self.drafter_config.get("feature_layers") is not None:  # EAGLE-3: fused features, no regression
            _need(self.loss.w_feat == 0 and self.loss.ttt_steps >= 1,
                  "drafter_config.feature_layers (EAGLE-3 fused features) trains without the feature regression "
                  "and with training-time test: set loss.w_feat to 0 and loss.ttt_steps >= 1 (EAGLE-3 uses 6); "
                  f"got w_feat={self.loss.w_feat}, ttt_steps={self.loss.ttt_steps}.")

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_json(cls, path: str | Path, overrides: list[str] | tuple = ()) -> "TrainConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"Training config {path} not found; pass the path of a JSON config (see train/drafters/).") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"Training config {path} is not valid JSON: {exc}.") from None
        _need(isinstance(data, dict), f"Training config {path} must hold one JSON object.")
        data.pop("_comment", None)
        return cls.from_dict(apply_overrides(data, overrides))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    @property
    def total_steps(self) -> int:
        return self.max_steps


_NESTED.update({
    ("DataConfig", "sources"): SourceConfig,
    ("DataConfig", "text_sources"): SourceConfig,
    ("DataConfig", "curriculum"): CurriculumConfig,
    ("DataConfig", "self_distill"): SelfDistillConfig,
    ("EvalConfig", "source"): SourceConfig,
    ("TrainConfig", "data"): DataConfig,
    ("TrainConfig", "loss"): LossConfig,
    ("TrainConfig", "optim"): OptimConfig,
    ("TrainConfig", "eval"): EvalConfig,
})


def apply_overrides(data: dict, overrides: list[str] | tuple) -> dict:
    """Apply "a.b.c=VALUE" strings (VALUE parsed as JSON, else kept as a string) to a config dict."""
    data = json.loads(json.dumps(data))  # deep copy
    for item in overrides:
        key, sep, raw = item.partition("=")
        _need(bool(sep) and bool(key), f"Override {item!r} must look like key=value, e.g. loss.w_ce=0.2.")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            _need(isinstance(child, dict), f"Override {item!r}: {part!r} is not a section.")
            node = child
        node[parts[-1]] = value
    return data
