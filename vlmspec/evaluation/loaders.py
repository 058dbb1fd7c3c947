"""Load a benchmark for the eval harness: resolve ``--benchmark``, read it, find its images,
prompt it.

``load_benchmark(BenchmarkConfig(source=...))`` returns a :class:`Benchmark`: a list of
:class:`Sample` (image reference, question, final prompt, references) with the metric and
prompt style of its format. ``source`` is one of

* a built-in name (:data:`BUILTINS`): ``synthetic-long``, ``synthetic-qa``, no files needed;
* ``TASK:PATH`` with TASK an lmms-eval task name of :data:`TASKS` (``textvqa_val``,
  ``docvqa_val``, ``chartqa``, ``mme``, ``pope``, ``mmmu_val``, ``mmbench_en_dev``,
  ``scienceqa_img``, ``coco2017_cap_val``, ...): its format and metric, and the split /
  subset of its Hugging Face parquet release when PATH is a table (:mod:`.tasks`);
* ``FORMAT:PATH`` with FORMAT one of :data:`FORMATS` (:mod:`.formats`);
* a bare PATH: ``.jsonl`` / ``.tsv`` / ``.parquet`` / a folder are read as ``generic`` rows;
  a ``.json`` file's format is recognised from its structure.

A task or format name without a path, or with a path that does not exist, raises a
:class:`BenchmarkFormatError` saying where the data is expected; nothing is downloaded.

This module also re-exports the public names of :mod:`.samples`, :mod:`.formats` and
:mod:`.builtins` (``Sample``, ``BenchmarkConfig``, ``build_prompt``, ``FORMATS``, ...), the
place they have always been imported from.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from .builtins import BUILTINS, BuiltinSpec
from .formats import FORMATS, FormatSpec, Reader, detect_json_format
from .samples import (
    CAPTION_QUESTION,
    CHOICE_ANSWER_INSTRUCTION,
    DETAILED_ANSWER_INSTRUCTION,
    PROMPT_STYLES,
    SHORT_ANSWER_INSTRUCTION,
    Benchmark,
    BenchmarkConfig,
    BenchmarkFormatError,
    Record,
    Sample,
    build_prompt,
    format_choices,
)
from .tasks import TASK_NAMES, TASKS, TaskSpec, is_table_source, missing_data_message

__all__ = [
    "BUILTINS", "CAPTION_QUESTION", "CHOICE_ANSWER_INSTRUCTION", "DETAILED_ANSWER_INSTRUCTION", "FORMATS",
    "PROMPT_STYLES", "SHORT_ANSWER_INSTRUCTION", "TASKS", "TASK_NAMES", "Benchmark", "BenchmarkConfig",
    "BenchmarkFormatError", "BuiltinSpec", "FormatSpec", "Reader", "Record", "Sample", "TaskSpec", "build_prompt",
    "format_choices", "load_benchmark", "resolve_source", "with_prompt_style",
]


def resolve_source(source: str) -> tuple[str | None, str | None, str | None]:
    """``(task, format, path)`` of a non-built-in source: ``"mme:data/MME"`` ->
    ``("mme", "mme", "data/MME")``; a bare name -> path None; a bare path -> names None."""
    head, sep, tail = source.partition(":")
    if sep and tail and (head in TASKS or head in FORMATS):
        task = TASKS.get(head)
        return head if task else None, task.format if task else head, tail
    if source in TASKS or source in FORMATS:
        return (source if source in TASKS else None), (TASKS[source].format if source in TASKS else source), None
    return None, None, source


def _resolve_image(record: Record) -> Any:
    image = record.image
    if isinstance(image, dict):  # a `datasets` Image cell left undecoded
        if image.get("bytes"):
            return image["bytes"]
        image = image.get("path")
    if not isinstance(image, (str, os.PathLike)):
        return image  # bytes / PIL / array: load_image handles them
    candidate = Path(image).expanduser()
    if candidate.is_absolute():
        if candidate.exists():
            return str(candidate)
        raise BenchmarkFormatError(f"{record.where}: image file not found: {candidate}")
    for directory in record.image_dirs:
        if (directory / candidate).exists():
            return str(directory / candidate)
    looked = ", ".join(str(d) for d in record.image_dirs) or "(no folder)"
    raise BenchmarkFormatError(
        f"{record.where}: image {str(candidate)!r} not found (looked in {looked}); "
        "pass the image folder with --image-root"
    )


def _read_files(config: BenchmarkConfig):
    """(records, skipped, format, metric, style, name, source, task) of a file source."""
    task_name, fmt, raw_path = resolve_source(config.source)
    if raw_path is None:  # a task or format name alone
        raise BenchmarkFormatError(missing_data_message(config.source))
    path = Path(raw_path).expanduser()
    if not path.exists():
        if fmt is not None:
            raise BenchmarkFormatError(missing_data_message(config.source.partition(":")[0], raw_path))
        raise BenchmarkFormatError(
            f"benchmark {config.source!r} is neither a built-in ({', '.join(BUILTINS)}) nor an existing file or "
            f"folder; for a known benchmark pass TASK:PATH with TASK one of {', '.join(TASK_NAMES)}, or "
            f"FORMAT:PATH with FORMAT one of {', '.join(FORMATS)} (see eval/README.md)"
        )
    task = TASKS.get(task_name) if task_name else None
    if task is not None and is_table_source(path):
        config = replace(config, split=config.split or task.split, subset=config.subset or task.subset)
    if fmt is None:
        fmt = detect_json_format(path) if path.suffix == ".json" else "generic"
    spec = FORMATS[fmt]
    records, skipped = spec.reader(path, config)
    metric = spec.metric
    if fmt == "generic" and any(r.choices for r in records):
        metric = "choice"
    name = task.name if task else (path.stem if path.is_file() else path.name)
    return records, skipped, fmt, metric, spec.prompt_style, name, str(path), task.name if task else None


def load_benchmark(config: BenchmarkConfig) -> Benchmark:
    """Load, cut to ``config.limit`` and prompt a benchmark (see the module docstring)."""
    skipped, task = 0, None
    if config.source in BUILTINS:
        spec = BUILTINS[config.source]
        fmt, name, source = spec.name, spec.name, spec.name
        metric, style = spec.metric, spec.prompt_style
        records = spec.reader(config)
    else:
        records, skipped, fmt, metric, style, name, source, task = _read_files(config)
    if not records:
        raise BenchmarkFormatError(f"benchmark {config.source!r} has no usable samples"
                                   + (f" ({skipped} rows skipped)" if skipped else ""))
    if config.limit is not None:
        records = records[: config.limit]
    metric = config.metric or metric
    style = config.prompt_style or style
    seen: set[str] = set()
    samples = []
    for record in records:
        if record.sample_id in seen:
            raise BenchmarkFormatError(f"{record.where}: duplicate sample id {record.sample_id!r}")
        seen.add(record.sample_id)
        samples.append(Sample(
            sample_id=record.sample_id, image=_resolve_image(record), question=record.question,
            prompt=build_prompt(record.question, record.choices, style), answers=record.answers,
            choices=record.choices, answer_index=record.answer_index, category=record.category,
            group=record.group,
        ))
    return Benchmark(name=name, format=fmt, metric=metric, prompt_style=style, samples=samples,
                     source=source, skipped=skipped, task=task)


def with_prompt_style(sample: Sample, style: str) -> Sample:
    """The same sample prompted in another style."""
    return replace(sample, prompt=build_prompt(sample.question, sample.choices, style))
