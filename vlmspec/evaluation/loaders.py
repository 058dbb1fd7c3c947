"""Benchmarks for the eval harness: local files in the formats users already have, plus
built-in synthetic sets that need no files.

``load_benchmark(BenchmarkConfig(source=...))`` returns a :class:`Benchmark`: a list of
:class:`Sample` (image reference, question, final prompt, references) with the metric and
prompt style of its format. ``source`` is one of

* a built-in name: ``synthetic-long`` (scene descriptions, long-form, ROUGE-L against the
  reference description) or ``synthetic-qa`` (one short question per scene, exact match),
  both from :mod:`vlmspec.data.synthetic`, rendered on the fly;
* ``FORMAT:PATH`` with FORMAT one of :data:`FORMATS` (``textvqa``, ``vqav2``, ``coco``,
  ``gqa``, ``scienceqa``, ``chartqa``, ``docvqa``, ``infovqa``, ``mmvet``, ``llava-bench``,
  ``generic``);
* a bare PATH: ``.jsonl`` / ``.parquet`` / a ``save_to_disk`` folder / an ``imagefolder``
  folder are read as ``generic`` rows; a ``.json`` file's format is recognised from its
  structure (the official TextVQA, VQAv2, Karpathy, GQA, ScienceQA, ChartQA, DocVQA and
  MM-Vet files all differ).

Tables (parquet, ``save_to_disk``, ``imagefolder``) are read through ``datasets``; JSON and
JSONL are parsed here so that a malformed file gives one :class:`BenchmarkFormatError` naming
the file and line. A missing field names the field, the file and the line or record.

Generic rows: ``image`` (path relative to the file or ``image_root``, or image bytes),
``question`` (alias ``text``/``query``), optional ``answers`` (a string or a list),
``answer``, ``choices`` (with ``answer`` an index, letter or option text) and ``id``.

Prompt styles (:data:`PROMPT_STYLES`): ``short`` appends the LLaVA-1.5 short-answer
instruction (or, with choices, the option-letter instruction), ``detailed`` asks for a
detailed explained answer (long outputs, as the speculative-decoding papers use to measure
speed), ``raw`` sends the question as is.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

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
    """One benchmark item. ``image`` is a path, encoded bytes or a PIL image (loaded lazily)."""

    sample_id: str
    image: Any = field(repr=False)
    question: str
    prompt: str
    answers: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    answer_index: int | None = None

    def load_image(self):
        """The image as an RGB PIL image (``vlmspec.errors.ImageError`` if unreadable)."""
        from vlmspec.images import load_image

        return load_image(self.image)


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to load. ``None`` for ``prompt_style`` / ``metric`` means the format's default."""

    source: str
    split: str | None = None
    limit: int | None = None
    image_root: str | None = None
    prompt_style: str | None = None
    metric: str | None = None
    seed: int = 0  # the synthetic sets' seed
    synthetic_size: int = 50  # rows of a built-in set when no limit is given

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise InputError("BenchmarkConfig.source must be a built-in name, FORMAT:PATH or a PATH")
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

    def describe(self) -> dict:
        return {
            "name": self.name, "format": self.format, "metric": self.metric,
            "prompt_style": self.prompt_style, "samples": len(self.samples),
            "source": self.source, "skipped_rows": self.skipped,
        }


# ------------------------------------------------------------------ raw file access
@dataclass
class _Record:
    """A row in the generic schema, with where it came from (for error messages)."""

    where: str
    sample_id: str
    image: Any
    question: str
    answers: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    answer_index: int | None = None
    image_dirs: tuple[Path, ...] = ()  # where a relative image path may live, in order


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise BenchmarkFormatError(
            f"{path}, line {err.lineno}, column {err.colno}: invalid JSON ({err.msg})"
        ) from None
    except UnicodeDecodeError as err:
        raise BenchmarkFormatError(f"{path}: not UTF-8 text ({err.reason})") from None


def _read_jsonl(path: Path) -> list[tuple[str, dict]]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise BenchmarkFormatError(
                    f"{path}, line {lineno}: invalid JSON ({err.msg} at column {err.colno})"
                ) from None
            if not isinstance(row, dict):
                raise BenchmarkFormatError(
                    f"{path}, line {lineno}: expected a JSON object per line, got {type(row).__name__}"
                )
            rows.append((f"{path}, line {lineno}", row))
    return rows


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and (
        (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
        or (path / "state.json").exists()
    )


def _pick_split(dataset_dict, split: str | None, path: Path):
    if split is not None:
        if split not in dataset_dict:
            raise BenchmarkFormatError(f"{path}: no split {split!r}; it has {', '.join(dataset_dict)}")
        return dataset_dict[split]
    for name in ("test", "validation", "val", "train"):
        if name in dataset_dict:
            return dataset_dict[name]
    return dataset_dict[next(iter(dataset_dict))]


def _undecoded_images(dataset):
    """Keep image columns as {"bytes", "path"} so images are decoded only when used."""
    import datasets

    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
    return dataset


def _read_table(path: Path, split: str | None) -> list[tuple[str, dict]]:
    """Rows of a parquet file, a save_to_disk folder or an imagefolder, through `datasets`."""
    import datasets

    if path.is_dir() and _is_saved_dataset(path):
        loaded = datasets.load_from_disk(str(path))
        dataset = _pick_split(loaded, split, path) if isinstance(loaded, datasets.DatasetDict) else loaded
    elif path.is_dir():
        if not any(path.glob("**/metadata.*")):
            raise BenchmarkFormatError(
                f"{path}: a folder must be a `save_to_disk` dataset or an imagefolder with a "
                "metadata.jsonl/metadata.csv giving file_name and question for each image"
            )
        loaded = datasets.load_dataset("imagefolder", data_dir=str(path))
        dataset = _pick_split(loaded, split, path)
    elif path.suffix == ".parquet":
        dataset = datasets.load_dataset("parquet", data_files=str(path), split="train")
    elif path.suffix == ".arrow":
        dataset = datasets.Dataset.from_file(str(path))
    else:
        raise BenchmarkFormatError(f"{path}: unsupported file type {path.suffix!r}")
    dataset = _undecoded_images(dataset)
    return [(f"{path}, row {i}", row) for i, row in enumerate(dataset)]


def _rows(path: Path, split: str | None) -> list[tuple[str, dict]]:
    """Rows of a JSONL / JSON-list / table file."""
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    if path.suffix == ".json":
        data = _read_json(path)
        if isinstance(data, dict):
            for key in ("data", "questions", "rows"):
                if isinstance(data.get(key), list):
                    data = data[key]
                    break
        if not isinstance(data, list):
            raise BenchmarkFormatError(f"{path}: expected a JSON list of records")
        return _enumerate_list(path, data)
    return _read_table(path, split)


def _enumerate_list(path: Path, items: list) -> list[tuple[str, dict]]:
    rows = []
    for i, row in enumerate(items):
        if not isinstance(row, dict):
            raise BenchmarkFormatError(f"{path}, record {i}: expected a JSON object, got {type(row).__name__}")
        rows.append((f"{path}, record {i}", row))
    return rows


def _need(row: dict, where: str, *keys: str) -> Any:
    """The first of `keys` present in `row`, or a clear error naming the field and place."""
    for key in keys:
        if key in row and row[key] is not None:
            return row[key]
    names = " or ".join(repr(k) for k in keys)
    present = ", ".join(sorted(map(str, row))) or "none"
    raise BenchmarkFormatError(f"{where}: missing field {names} (fields present: {present})")


def _answer_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, int, float)):
        return (str(value),)
    if isinstance(value, list):
        out = []
        for item in value:
            if isinstance(item, dict):
                item = _need(item, where, "answer")
            out.append(str(item))
        return tuple(out)
    raise BenchmarkFormatError(f"{where}: 'answers' must be a string or a list, got {type(value).__name__}")


def _answer_index(answer: Any, choices: tuple[str, ...], where: str) -> int:
    if isinstance(answer, bool) or answer is None:
        raise BenchmarkFormatError(f"{where}: 'answer' must be an option index, letter or option text")
    if isinstance(answer, int):
        index = answer
    elif isinstance(answer, str) and answer.strip().isdigit():
        index = int(answer.strip())
    elif isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().upper() in OPTION_LETTERS:
        index = OPTION_LETTERS.index(answer.strip().upper())
    elif isinstance(answer, str) and answer in choices:
        index = choices.index(answer)
    else:
        raise BenchmarkFormatError(f"{where}: 'answer' {answer!r} is not an index, letter or text of {list(choices)}")
    if not 0 <= index < len(choices):
        raise BenchmarkFormatError(f"{where}: 'answer' {answer!r} is outside the {len(choices)} choices")
    return index


def _dirs(*candidates: Path | None) -> tuple[Path, ...]:
    return tuple(c for c in candidates if c is not None)


# ----------------------------------------------------------------- format readers
# reader(path, config) -> (records, rows skipped)
Reader = Callable[[Path, BenchmarkConfig], "tuple[list[_Record], int]"]


def _root(config: BenchmarkConfig) -> Path | None:
    return Path(config.image_root) if config.image_root else None


def _generic_record(where: str, row: dict, index: int, dirs: tuple[Path, ...]) -> _Record:
    image = _need(row, where, "image", "image_path", "file_name")
    question = str(_need(row, where, "question", "text", "query"))
    choices = tuple(str(c) for c in row.get("choices") or ())
    answer_index = None
    answers: tuple[str, ...] = ()
    if choices:
        answer_index = _answer_index(row["answer"], choices, where) if row.get("answer") is not None else None
    else:
        answers = _answer_list(row.get("answers", row.get("answer")), where)
    sample_id = str(row.get("id", row.get("question_id", row.get("sample_id", index))))
    return _Record(where, sample_id, image, question, answers, choices, answer_index, dirs)


def _read_generic(path: Path, config: BenchmarkConfig):
    base = path if path.is_dir() else path.parent
    dirs = _dirs(_root(config), base, base / "images")
    rows = _rows(path, config.split)
    return [_generic_record(where, row, i, dirs) for i, (where, row) in enumerate(rows)], 0


def _read_textvqa(path: Path, config: BenchmarkConfig):
    data = _read_json(path)
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise BenchmarkFormatError(f"{path}: a TextVQA file is an object with a 'data' list")
    dirs = _dirs(_root(config), path.parent / "train_images", path.parent / "test_images", path.parent)
    records = []
    for where, row in _enumerate_list(path, items):
        image = row.get("image") or f"{_need(row, where, 'image_id')}.jpg"
        records.append(_Record(
            where, str(_need(row, where, "question_id")), image, str(_need(row, where, "question")),
            _answer_list(row.get("answers"), where), image_dirs=dirs,
        ))
    return records, 0


def _find_vqav2_annotations(path: Path, subtype: str) -> Path | None:
    candidates = sorted(p for p in path.parent.glob("*annotations*.json") if subtype in p.name)
    return candidates[0] if len(candidates) == 1 else None


def _read_vqav2(path: Path, config: BenchmarkConfig):
    data = _read_json(path)
    items = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise BenchmarkFormatError(f"{path}: a VQAv2 questions file is an object with a 'questions' list")
    subtype = str(data.get("data_subtype", "val2014"))
    answers_by_qid: dict[Any, tuple[str, ...]] = {}
    annotations = _find_vqav2_annotations(path, subtype)
    if annotations is not None:
        ann = _read_json(annotations)
        ann_items = ann.get("annotations") if isinstance(ann, dict) else None
        if not isinstance(ann_items, list):
            raise BenchmarkFormatError(f"{annotations}: a VQAv2 annotations file has an 'annotations' list")
        for where, row in _enumerate_list(annotations, ann_items):
            answers_by_qid[_need(row, where, "question_id")] = _answer_list(_need(row, where, "answers"), where)
    dirs = _dirs(_root(config), path.parent / subtype, path.parent)
    records = []
    for where, row in _enumerate_list(path, items):
        qid = _need(row, where, "question_id")
        image = row.get("image") or f"COCO_{subtype}_{int(_need(row, where, 'image_id')):012d}.jpg"
        records.append(_Record(where, str(qid), image, str(_need(row, where, "question")),
                               answers_by_qid.get(qid, ()), image_dirs=dirs))
    return records, 0


def _read_coco(path: Path, config: BenchmarkConfig):
    data = _read_json(path)
    items = data.get("images") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise BenchmarkFormatError(f"{path}: a Karpathy-split captions file is an object with an 'images' list")
    split = config.split or "test"
    dirs = _dirs(_root(config), path.parent)
    records, skipped = [], 0
    for where, row in _enumerate_list(path, items):
        if row.get("split", split) != split:
            skipped += 1
            continue
        filename = _need(row, where, "filename")
        image = str(Path(row.get("filepath", "")) / filename)
        captions = tuple(str(_need(s, where, "raw")) for s in _need(row, where, "sentences"))
        sample_id = str(row.get("cocoid", row.get("imgid", filename)))
        records.append(_Record(where, sample_id, image, CAPTION_QUESTION, captions, image_dirs=dirs))
    return records, skipped


def _keyed_records(path: Path, data: Any, what: str) -> list[tuple[str, str, dict]]:
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise BenchmarkFormatError(f"{path}: {what}")
    return [(f"{path}, record {key!r}", str(key), row) for key, row in data.items()]


def _read_gqa(path: Path, config: BenchmarkConfig):
    data = _read_json(path)
    dirs = _dirs(_root(config), path.parent / "images", path.parent)
    records = []
    for where, key, row in _keyed_records(path, data, "a GQA questions file maps question ids to objects"):
        image = f"{_need(row, where, 'imageId')}.jpg"
        answers = (str(row["answer"]),) if row.get("answer") is not None else ()
        records.append(_Record(where, key, image, str(_need(row, where, "question")), answers, image_dirs=dirs))
    return records, 0


def _read_scienceqa(path: Path, config: BenchmarkConfig):
    split = config.split or "test"
    root = _root(config)
    records, skipped = [], 0
    if path.suffix == ".json":
        data = _read_json(path)
        keyed = _keyed_records(path, data, "a ScienceQA problems file maps problem ids to objects")
        for where, key, row in keyed:
            if row.get("split", split) != split or not row.get("image"):
                skipped += 1  # other split, or a text-only question (the harness needs an image)
                continue
            dirs = _dirs(root and root / split / key, path.parent / "images" / split / key,
                         path.parent / split / key)
            records.append(_scienceqa_record(where, key, row, row["image"], dirs))
    else:
        for i, (where, row) in enumerate(_rows(path, config.split)):
            if row.get("image") is None:
                skipped += 1
                continue
            base = path if path.is_dir() else path.parent
            records.append(_scienceqa_record(where, str(row.get("id", i)), row, row["image"], _dirs(root, base)))
    return records, skipped


def _scienceqa_record(where: str, key: str, row: dict, image: Any, dirs) -> _Record:
    choices = tuple(str(c) for c in _need(row, where, "choices"))
    question = str(_need(row, where, "question"))
    hint = str(row.get("hint") or "").strip()
    if hint:
        question = f"Context: {hint}\n{question}"
    index = _answer_index(_need(row, where, "answer"), choices, where)
    return _Record(where, key, image, question, (), choices, index, dirs)


def _read_chartqa(path: Path, config: BenchmarkConfig):
    dirs = _dirs(_root(config), path.parent / "png", path.parent)
    records = []
    for i, (where, row) in enumerate(_rows(path, config.split)):
        image = _need(row, where, "imgname", "image")
        question = str(_need(row, where, "query", "question"))
        answers = _answer_list(_need(row, where, "label", "answer", "answers"), where)
        records.append(_Record(where, str(row.get("id", i)), image, question, answers, image_dirs=dirs))
    return records, 0


def _read_docvqa(path: Path, config: BenchmarkConfig):
    """DocVQA ("image": "documents/x.png") and InfographicVQA ("image_local_name")."""
    dirs = _dirs(_root(config), path.parent, path.parent / "infographicsvqa_images", path.parent / "images")
    records = []
    for i, (where, row) in enumerate(_rows(path, config.split)):
        image = _need(row, where, "image", "image_local_name")
        sample_id = str(row.get("questionId", row.get("question_id", i)))
        records.append(_Record(where, sample_id, image, str(_need(row, where, "question")),
                               _answer_list(row.get("answers"), where), image_dirs=dirs))
    return records, 0


def _read_mmvet(path: Path, config: BenchmarkConfig):
    data = _read_json(path)
    dirs = _dirs(_root(config), path.parent / "images", path.parent)
    records = []
    for where, key, row in _keyed_records(path, data, "an MM-Vet file maps sample ids to objects"):
        answers = (str(row["answer"]),) if row.get("answer") is not None else ()
        records.append(_Record(where, key, _need(row, where, "imagename"), str(_need(row, where, "question")),
                               answers, image_dirs=dirs))
    return records, 0


def _read_llava_bench(path: Path, config: BenchmarkConfig):
    dirs = _dirs(_root(config), path.parent / "images", path.parent)
    records = []
    for i, (where, row) in enumerate(_rows(path, config.split)):
        records.append(_Record(where, str(row.get("question_id", i)), _need(row, where, "image"),
                               str(_need(row, where, "text", "question")), image_dirs=dirs))
    return records, 0


@dataclass(frozen=True)
class FormatSpec:
    """A file format: how to read it, and its default metric and prompt style."""

    name: str
    reader: Reader
    metric: str
    prompt_style: str
    description: str


FORMATS: dict[str, FormatSpec] = {spec.name: spec for spec in (
    FormatSpec("generic", _read_generic, "exact", "short",
               "JSONL/JSON list/parquet/save_to_disk/imagefolder rows: image, question[, answers|choices+answer]"),
    FormatSpec("textvqa", _read_textvqa, "vqa", "short", "TextVQA json ('data': question, image_id, 10 answers)"),
    FormatSpec("vqav2", _read_vqav2, "vqa", "short",
               "VQAv2 questions json (+ the *annotations*.json of the same subtype beside it)"),
    FormatSpec("coco", _read_coco, "rouge_l", "raw", "COCO captions, Karpathy split json ('images' with 'sentences')"),
    FormatSpec("gqa", _read_gqa, "exact", "short", "GQA questions json ({qid: {imageId, question, answer}})"),
    FormatSpec("scienceqa", _read_scienceqa, "choice", "short",
               "ScienceQA problems.json (image questions of one split) or a table with image/choices/answer"),
    FormatSpec("chartqa", _read_chartqa, "relaxed", "short", "ChartQA json list (imgname, query, label)"),
    FormatSpec("docvqa", _read_docvqa, "anls", "short", "DocVQA json ('data': questionId, question, image, answers)"),
    FormatSpec("infovqa", _read_docvqa, "anls", "short",
               "InfographicVQA json ('data': questionId, question, image_local_name, answers)"),
    FormatSpec("mmvet", _read_mmvet, "none", "raw", "MM-Vet json ({id: {imagename, question, answer}}); GPT-graded, so not scored"),
    FormatSpec("llava-bench", _read_llava_bench, "none", "raw", "LLaVA-Bench questions.jsonl (image, text); long answers, not scored"),
)}


def _detect_json_format(path: Path) -> str:
    data = _read_json(path)
    if isinstance(data, dict):
        if isinstance(data.get("data"), list) and data["data"]:
            first = data["data"][0]
            if isinstance(first, dict) and "image_id" in first:
                return "textvqa"
            if isinstance(first, dict) and ("questionId" in first or "image_local_name" in first):
                return "docvqa"
        if isinstance(data.get("questions"), list):
            return "vqav2"
        if isinstance(data.get("images"), list):
            return "coco"
        values = list(data.values())
        if values and all(isinstance(v, dict) for v in values):
            first = values[0]
            if "imageId" in first:
                return "gqa"
            if "choices" in first:
                return "scienceqa"
            if "imagename" in first:
                return "mmvet"
    if isinstance(data, list) and data and isinstance(data[0], dict) and "imgname" in data[0]:
        return "chartqa"
    return "generic"


# ----------------------------------------------------------------------- built-ins
def _synthetic_rows(config: BenchmarkConfig) -> Iterator[dict]:
    """Rows of :func:`vlmspec.data.synthetic.build_dataset` with images left encoded."""
    from vlmspec.data import build_dataset

    n = config.limit or config.synthetic_size
    dataset = _undecoded_images(build_dataset(config.split or "test", n=n, seed=config.seed))
    yield from dataset


def _read_synthetic_long(config: BenchmarkConfig) -> list[_Record]:
    from vlmspec.data import DESCRIBE_PROMPT

    return [
        _Record(f"synthetic-long row {i}", row["id"], row["image"]["bytes"], DESCRIBE_PROMPT, (row["description"],))
        for i, row in enumerate(_synthetic_rows(config))
    ]


def _read_synthetic_qa(config: BenchmarkConfig) -> list[_Record]:
    records = []
    for i, row in enumerate(_synthetic_rows(config)):
        qa = row["questions"][i % len(row["questions"])]  # rotate through the question types
        records.append(_Record(f"synthetic-qa row {i}", f"{row['id']}#{qa['qtype']}", row["image"]["bytes"],
                               qa["question"], (qa["answer"],)))
    return records


@dataclass(frozen=True)
class BuiltinSpec:
    """A built-in benchmark generated in memory."""

    name: str
    reader: Callable[[BenchmarkConfig], list[_Record]]
    metric: str
    prompt_style: str
    description: str


BUILTINS: dict[str, BuiltinSpec] = {spec.name: spec for spec in (
    BuiltinSpec("synthetic-long", _read_synthetic_long, "rouge_l", "raw",
                "synthetic scenes, 'Describe the image in detail.' (long-form; ROUGE-L vs the reference)"),
    BuiltinSpec("synthetic-qa", _read_synthetic_qa, "exact", "raw",
                "synthetic scenes, one short question each with an exact answer"),
)}


# -------------------------------------------------------------------------- public
def _split_source(source: str) -> tuple[str | None, str]:
    head, sep, tail = source.partition(":")
    if sep and head in FORMATS and tail:
        return head, tail
    return None, source


def _resolve_image(record: _Record) -> Any:
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


def load_benchmark(config: BenchmarkConfig) -> Benchmark:
    """Load, cut to ``config.limit`` and prompt a benchmark (see the module docstring)."""
    skipped = 0
    if config.source in BUILTINS:
        spec = BUILTINS[config.source]
        fmt, name, source = spec.name, spec.name, spec.name
        metric, style = spec.metric, spec.prompt_style
        records = spec.reader(config)
    else:
        fmt, raw_path = _split_source(config.source)
        path = Path(raw_path).expanduser()
        if not path.exists():
            builtin = ", ".join(BUILTINS)
            raise BenchmarkFormatError(
                f"benchmark {config.source!r} is neither a built-in ({builtin}) nor an existing file or folder"
            )
        if fmt is None:
            fmt = _detect_json_format(path) if path.suffix == ".json" else "generic"
        spec = FORMATS[fmt]
        metric, style = spec.metric, spec.prompt_style
        name, source = path.stem if path.is_file() else path.name, str(path)
        records, skipped = spec.reader(path, config)
        if fmt == "generic" and any(r.choices for r in records):
            metric = "choice"
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
            choices=record.choices, answer_index=record.answer_index,
        ))
    return Benchmark(name=name, format=fmt, metric=metric, prompt_style=style, samples=samples,
                     source=source, skipped=skipped)


def with_prompt_style(sample: Sample, style: str) -> Sample:
    """The same sample prompted in another style."""
    return replace(sample, prompt=build_prompt(sample.question, sample.choices, style))
