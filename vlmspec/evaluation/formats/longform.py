"""Long-answer sets graded by GPT in their papers, so not scored here: MM-Vet and LLaVA-Bench.
They are what speculative decoding is measured on (long outputs)."""

from __future__ import annotations

from pathlib import Path

from ..samples import BenchmarkConfig, Record
from .files import dirs, keyed_records, need, read_json, root, rows


def read_mmvet(path: Path, config: BenchmarkConfig):
    data = read_json(path)
    image_dirs = dirs(root(config), path.parent / "images", path.parent)
    records = []
    for where, key, row in keyed_records(path, data, "an MM-Vet file maps sample ids to objects"):
        answers = (str(row["answer"]),) if row.get("answer") is not None else ()
        records.append(Record(where, key, need(row, where, "imagename"), str(need(row, where, "question")),
                              answers, image_dirs=image_dirs))
    return records, 0


def read_llava_bench(path: Path, config: BenchmarkConfig):
    image_dirs = dirs(root(config), path.parent / "images", path.parent)
    records = []
    for i, (where, row) in enumerate(rows(path, config)):
        records.append(Record(where, str(row.get("question_id", i)), need(row, where, "image"),
                              str(need(row, where, "text", "question")), image_dirs=image_dirs))
    return records, 0
