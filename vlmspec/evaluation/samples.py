"""The eval harness's data types: what a benchmark is made of and how a question is prompted.

* :class:`Sample` (one item: image, question, final prompt, references, category),
  :class:`Benchmark` (loaded samples + metric + prompt style), :class:`BenchmarkConfig`
  (what to load), :class:`BenchmarkFormatError` (a file that cannot be read as asked);
* ``Record``: a row read by a format reader, before its image is resolved and it is
  prompted (internal to :mod:`vlmspec.evaluation.formats` and the loader);
* :func:`build_prompt` and the prompt styles of :data:`PROMPT_STYLES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from vlmspec.errors import InputError

from .metrics import METRIC_NAMES, OPTION_LETTERS


class BenchmarkFormatError(InputError):
    """A benchmark file is malformed, lacks a field, or its images cannot be found."""


# ------------------------------------------------------------------- prompt styles
PROMPT_STYLES = ("short", "detailed", "raw")
SHORT_ANSWER_INSTRUCTION = "Answer the question using a single word or phrase."
CHOICE_ANSWER_INSTRUCTION = "Answer with the option's letter from the given choices directly."
DETAILED_ANSWER_INSTRUCTION = "Answer in detail and explain your reasoning."
CAPTION_QUESTION = "Provide a one-sentence caption for the provided image."


def format_choices(choices: Iterable[str]) -> str:
    """ "A. cat\\nB. dog" """
    return "\n".join(f"{OPTION_LETTERS[i]}. {c}" for i, c in enumerate(choices))


def build_prompt(question: str, choices: Iterable[str] = (), style: str = "short") -> str:
    """The text sent with the image: question, lettered options if any, style instruction."""
    if style not in PROMPT_STYLES:
        raise InputError(f"unknown prompt style {style!r}; choose one of {', '.join(PROMPT_STYLES)}")
    choices = tuple(choices)
    parts = [question.strip()]
    if choices:
        parts.append(format_choices(choices))
    if style == "short":
        parts.append(CHOICE_ANSWER_INSTRUCTION if choices else SHORT_ANSWER_INSTRUCTION)
    elif style == "detailed":
        parts.append(DETAILED_ANSWER_INSTRUCTION)
    return "\n".join(parts)


# ------------------------------------------------------------------------- samples
@dataclass(frozen=True)
class Sample:
    """One benchmark item. ``image`` is a path, encoded bytes or a PIL image (loaded lazily).

    ``category`` is the benchmark's own category (MME subtask, POPE split, MMBench
    ability, ...); ``group`` ties items that are scored together (MME: the two questions
    of one image). Both only matter to the set-level scores of
    :func:`vlmspec.evaluation.aggregates.aggregate`.
    """

    sample_id: str
    image: Any = field(repr=False)
    question: str
    prompt: str
    answers: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    answer_index: int | None = None
    category: str | None = None
    group: str | None = None

    def load_image(self):
        """The image as an RGB PIL image (``vlmspec.errors.ImageError`` if unreadable); None
        for a text-only sample."""
        from vlmspec.images import load_image

        if self.image is None:
            return None
        return load_image(self.image)


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to load. ``None`` for ``prompt_style`` / ``metric`` means the format's default.

    ``split`` picks a split of a table source (a ``save_to_disk`` DatasetDict, a folder of
    parquet files named ``SPLIT-00000-of-0000N.parquet``) or of a file that holds several
    (Karpathy COCO, ScienceQA); ``subset`` a sub-folder of a parquet release holding several
    (MMBench's ``en``/``cn``, lmms-lab/ScienceQA's ``ScienceQA-IMG``). The task names of
    :mod:`vlmspec.evaluation.tasks` set both when they are not given.
    """

    source: str
    split: str | None = None
    limit: int | None = None
    image_root: str | None = None
    prompt_style: str | None = None
    metric: str | None = None
    seed: int = 0  # the synthetic sets' seed
    synthetic_size: int = 50  # rows of a built-in set when no limit is given
    subset: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise InputError("BenchmarkConfig.source must be a built-in name, a task name, FORMAT:PATH or a PATH")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"BenchmarkConfig.limit must be >= 1 (got {self.limit})")
        if self.prompt_style is not None and self.prompt_style not in PROMPT_STYLES:
            raise InputError(
                f"unknown prompt style {self.prompt_style!r}; choose one of {', '.join(PROMPT_STYLES)}"
            )
        if self.metric is not None and self.metric not in METRIC_NAMES:
            raise InputError(f"unknown metric {self.metric!r}; choose one of {', '.join(METRIC_NAMES)}")
        if self.synthetic_size < 1:
            raise InputError("BenchmarkConfig.synthetic_size must be >= 1")


@dataclass
class Benchmark:
    """Loaded samples plus how to prompt and score them."""

    name: str
    format: str
    metric: str
    prompt_style: str
    samples: list[Sample]
    source: str
    skipped: int = 0  # rows dropped by the format (e.g. ScienceQA questions without image)
    task: str | None = None  # the task name it was loaded by (e.g. "mmbench_en_dev"), if any

    def describe(self) -> dict:
        return {
            "name": self.name, "format": self.format, "metric": self.metric,
            "prompt_style": self.prompt_style, "samples": len(self.samples),
            "source": self.source, "skipped_rows": self.skipped, "task": self.task,
        }


@dataclass
class Record:
    """A row in the generic schema, with where it came from (for error messages)."""

    where: str
    sample_id: str
    image: Any
    question: str
    answers: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    answer_index: int | None = None
    image_dirs: tuple[Path, ...] = ()  # where a relative image path may live, in order
    category: str | None = None
    group: str | None = None
