"""Yes/no formats: MME and POPE. Each sample's reference is "yes" or "no"; their headline
scores (MME's per-image accuracy+, POPE's F1) are set-level, see
:mod:`vlmspec.evaluation.aggregates`.

* MME: rows of lmms-lab/MME (question_id = the image, e.g. ``code_reasoning/0020.png``,
  question, answer Yes/No, category, image), parquet or JSONL. The two questions of an image
  share its question_id: they become samples ``ID#1`` and ``ID#2`` of one group;
* POPE: rows of lmms-lab/POPE (question_id, question, answer, category = adversarial /
  popular / random, image), or the POPE repository's ``coco_pope_*.json`` files (one JSON
  object per line: question_id, image, text, label; the category is read from the file
  name; images from ``--image-root``, e.g. COCO ``val2014/``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ..samples import BenchmarkConfig, BenchmarkFormatError, Record
from .files import base_dir, dirs, need, read_jsonl, root, rows

POPE_CATEGORIES = ("adversarial", "popular", "random")


def _yes_no(value: Any, where: str, benchmark: str) -> str:
    text = str(value).strip().lower().rstrip(".")
    if text not in ("yes", "no"):
        raise BenchmarkFormatError(f"{where}: {benchmark} answers must be yes or no, got {value!r}")
    return text


def read_mme(path: Path, config: BenchmarkConfig):
    base = base_dir(path)
    image_dirs = dirs(root(config), base, base / "images")
    seen: Counter[str] = Counter()
    records = []
    for i, (where, row) in enumerate(rows(path, config)):
        category = str(need(row, where, "category"))
        question = str(need(row, where, "question"))
        answer = _yes_no(need(row, where, "answer"), where, "MME")
        image = need(row, where, "image")
        key = str(row.get("question_id") or _image_name(image) or i)
        group = key if key.startswith(category + "/") else f"{category}/{key}"
        seen[group] += 1
        records.append(Record(where, f"{group}#{seen[group]}", image, question, (answer,),
                              image_dirs=image_dirs, category=category, group=group))
    return records, 0


def _image_name(image: Any) -> str | None:
    if isinstance(image, str):
        return image
    if isinstance(image, dict) and image.get("path"):
        return str(image["path"])
    return None


def read_pope(path: Path, config: BenchmarkConfig):
    base = base_dir(path)
    image_dirs = dirs(root(config), base, base / "images", base / "val2014")
    if path.suffix == ".json":
        try:
            found = rows(path, config)
        except BenchmarkFormatError:
            found = read_jsonl(path)  # the POPE repository's .json files hold one object per line
    else:
        found = rows(path, config)
    from_name = next((c for c in POPE_CATEGORIES if c in path.name.lower()), None)
    records = []
    for i, (where, row) in enumerate(found):
        question = str(need(row, where, "question", "text"))
        answer = _yes_no(need(row, where, "answer", "label"), where, "POPE")
        category = str(row.get("category") or from_name or "") or None
        qid = row.get("question_id", row.get("id", i))
        sample_id = f"{category}/{qid}" if category else str(qid)
        records.append(Record(where, sample_id, need(row, where, "image"), question, (answer,),
                              image_dirs=image_dirs, category=category))
    return records, 0
