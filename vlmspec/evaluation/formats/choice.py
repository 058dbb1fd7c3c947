"""Multiple-choice formats: ScienceQA, MMMU and MMBench (scored by option letter or text).

* ScienceQA: the official ``problems.json`` (image questions of one split) or a table with
  image, question, choices, answer (index), hint (lmms-lab/ScienceQA, ``ScienceQA-IMG``);
* MMMU: tables of the MMMU/MMMU or lmms-lab/MMMU parquet releases: id, question, options
  (a list, or its Python-literal string), answer (a letter; open questions: the answer
  text), question_type (``multiple-choice`` / ``open``), image_1 .. image_7. The harness sends
  one image per question, so questions with more than one image (or none) are skipped and
  counted as skipped rows;
* MMBench: lmms-lab/MMBench tables or the official TSV (base64 images): index, question,
  hint, A, B, C, D (absent options empty / NaN), answer (a letter), category.
"""

from __future__ import annotations

import ast
import base64
import binascii
import re
from pathlib import Path
from typing import Any

from ..metrics import OPTION_LETTERS
from ..samples import BenchmarkConfig, BenchmarkFormatError, Record
from .files import answer_index, base_dir, dirs, is_missing, keyed_records, need, read_json, root, rows

MMMU_IMAGE_COLUMNS = tuple(f"image_{k}" for k in range(1, 8))


# ------------------------------------------------------------------------ ScienceQA
def read_scienceqa(path: Path, config: BenchmarkConfig):
    split = config.split or "test"
    image_root = root(config)
    records, skipped = [], 0
    if path.suffix == ".json":
        data = read_json(path)
        keyed = keyed_records(path, data, "a ScienceQA problems file maps problem ids to objects")
        for where, key, row in keyed:
            if row.get("split", split) != split or not row.get("image"):
                skipped += 1  # other split, or a text-only question (the harness needs an image)
                continue
            image_dirs = dirs(image_root and image_root / split / key, path.parent / "images" / split / key,
                              path.parent / split / key)
            records.append(_scienceqa_record(where, key, row, row["image"], image_dirs))
    else:
        for i, (where, row) in enumerate(rows(path, config)):
            if is_missing(row.get("image")):
                skipped += 1
                continue
            records.append(_scienceqa_record(where, str(row.get("id", i)), row, row["image"],
                                             dirs(image_root, base_dir(path))))
    return records, skipped


def _with_hint(question: str, hint: Any) -> str:
    hint = "" if is_missing(hint) else str(hint).strip()
    return f"Context: {hint}\n{question}" if hint else question


def _scienceqa_record(where: str, key: str, row: dict, image: Any, image_dirs) -> Record:
    choices = tuple(str(c) for c in need(row, where, "choices"))
    question = _with_hint(str(need(row, where, "question")), row.get("hint"))
    index = answer_index(need(row, where, "answer"), choices, where)
    category = str(row["subject"]) if row.get("subject") is not None else None
    return Record(where, key, image, question, (), choices, index, image_dirs, category=category)


# ----------------------------------------------------------------------------- MMMU
def _literal_list(value: Any, where: str, field: str) -> list[str] | None:
    """A list cell, or a string holding a Python/JSON list literal ("['a', 'b']"); None if not a list."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            parsed = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise BenchmarkFormatError(f"{where}: {field!r} {value[:80]!r} is not a readable list") from None
        if isinstance(parsed, (list, tuple)):
            return [str(v) for v in parsed]
    return None


def read_mmmu(path: Path, config: BenchmarkConfig):
    image_dirs = dirs(root(config), base_dir(path), base_dir(path) / "images")
    records, skipped = [], 0
    for i, (where, row) in enumerate(rows(path, config)):
        images = [row[c] for c in ("image", *MMMU_IMAGE_COLUMNS) if c in row and not is_missing(row[c])]
        if len(images) != 1:
            skipped += 1  # several images (or none): the harness sends exactly one
            continue
        question = str(need(row, where, "question"))
        options = _literal_list(row.get("options"), where, "options") or []
        question_type = str(row.get("question_type") or ("multiple-choice" if options else "open"))
        answer = row.get("answer")
        unanswered = is_missing(answer) or str(answer).strip() == "?"  # the test split hides answers
        sample_id = str(row.get("id", i))
        category = _mmmu_subject(sample_id)
        if question_type != "open" and options:
            choices = tuple(options)
            index = None if unanswered else answer_index(str(answer).strip(), choices, where)
            records.append(Record(where, sample_id, images[0], question, (), choices, index, image_dirs,
                                  category=category))
        else:
            answers = () if unanswered else tuple(_literal_list(answer, where, "answer") or [str(answer)])
            records.append(Record(where, sample_id, images[0], question, answers, image_dirs=image_dirs,
                                  category=category))
    return records, skipped


def _mmmu_subject(sample_id: str) -> str | None:
    """validation_Art_Theory_12 -> Art_Theory (MMMU ids are SPLIT_SUBJECT_NUMBER)."""
    parts = sample_id.split("_")
    return "_".join(parts[1:-1]) if len(parts) >= 3 else None


# -------------------------------------------------------------------------- MMBench
def read_mmbench(path: Path, config: BenchmarkConfig):
    image_dirs = dirs(root(config), base_dir(path), base_dir(path) / "images")
    records = []
    for i, (where, row) in enumerate(rows(path, config)):
        choices = []
        for letter in OPTION_LETTERS:
            if letter not in row or is_missing(row[letter]):
                break  # options are A, B, ... up to the first absent one
            choices.append(str(row[letter]))
        if len(choices) < 2:
            raise BenchmarkFormatError(
                f"{where}: an MMBench row needs option columns 'A' and 'B' (and optionally C, D, ...); "
                f"fields present: {', '.join(sorted(map(str, row)))}"
            )
        question = _with_hint(str(need(row, where, "question")), row.get("hint"))
        answer = row.get("answer")
        index = None if is_missing(answer) else answer_index(str(answer).strip(), tuple(choices), where)
        image = need(row, where, "image")
        if path.suffix == ".tsv" and isinstance(image, str) and not _IMAGE_PATH.fullmatch(image.strip()):
            image = _base64_image(image, where)  # the official TSVs inline the images
        category = None if is_missing(row.get("category")) else str(row["category"])
        records.append(Record(where, str(row.get("index", i)), image, question, (), tuple(choices), index,
                              image_dirs, category=category))
    return records, 0


_IMAGE_PATH = re.compile(r"\S{1,255}\.(?:png|jpe?g|gif|bmp|webp|tiff?)", re.IGNORECASE)


def _base64_image(text: str, where: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BenchmarkFormatError(f"{where}: the 'image' cell is neither a file path nor base64 image data") from None
