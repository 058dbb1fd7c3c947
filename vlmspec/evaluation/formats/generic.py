"""The ``generic`` format: rows of your own in a JSONL / JSON list / TSV / parquet /
``save_to_disk`` / ``imagefolder`` source.

Fields: ``image`` (alias ``image_path``/``file_name``: a path relative to the file,
``images/`` or ``--image-root``, or image bytes), ``question`` (alias ``text``/``query``),
optional ``answers`` (a string or a list) or ``answer``, ``choices`` (with ``answer`` an
index, letter or option text), ``id`` (alias ``question_id``/``sample_id``) and ``category``.
"""

from __future__ import annotations

from pathlib import Path

from ..samples import BenchmarkConfig, Record
from .files import answer_index, answer_list, base_dir, dirs, need, root, rows


def generic_record(where: str, row: dict, index: int, image_dirs: tuple[Path, ...]) -> Record:
    image = need(row, where, "image", "image_path", "file_name")
    question = str(need(row, where, "question", "text", "query"))
    choices = tuple(str(c) for c in row.get("choices") or ())
    index_of_answer = None
    answers: tuple[str, ...] = ()
    if choices:
        index_of_answer = answer_index(row["answer"], choices, where) if row.get("answer") is not None else None
    else:
        answers = answer_list(row.get("answers", row.get("answer")), where)
    sample_id = str(row.get("id", row.get("question_id", row.get("sample_id", index))))
    category = str(row["category"]) if row.get("category") is not None else None
    return Record(where, sample_id, image, question, answers, choices, index_of_answer, image_dirs,
                  category=category)


def read_generic(path: Path, config: BenchmarkConfig):
    base = base_dir(path)
    image_dirs = dirs(root(config), base, base / "images")
    return [generic_record(where, row, i, image_dirs) for i, (where, row) in enumerate(rows(path, config))], 0
