"""Short-answer VQA formats: TextVQA, VQAv2, GQA, ChartQA, DocVQA / InfographicVQA.

Each reads the official release files, and TextVQA, ChartQA and DocVQA also the tables of
their Hugging Face parquet releases (lmms-lab/textvqa, lmms-lab/ChartQA, lmms-lab/DocVQA:
a downloaded folder, one ``.parquet`` file or a ``save_to_disk`` folder), whose rows carry
the image bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..samples import BenchmarkConfig, BenchmarkFormatError, Record
from .files import answer_list, base_dir, dirs, enumerate_list, keyed_records, need, read_json, root, rows


def read_textvqa(path: Path, config: BenchmarkConfig):
    """``TextVQA_0.5.1_val.json`` ('data': question, image_id, 10 answers), or a table with
    question_id, question, image, answers (lmms-lab/textvqa)."""
    image_dirs = dirs(root(config), path.parent / "train_images", path.parent / "test_images", path.parent)
    if path.suffix == ".json":
        data = read_json(path)
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise BenchmarkFormatError(f"{path}: a TextVQA file is an object with a 'data' list")
        found = enumerate_list(path, items)
    else:
        found = rows(path, config)
        image_dirs = dirs(root(config), base_dir(path))
    records = []
    for where, row in found:
        image = row.get("image") or f"{need(row, where, 'image_id')}.jpg"
        records.append(Record(
            where, str(need(row, where, "question_id")), image, str(need(row, where, "question")),
            answer_list(row.get("answers"), where), image_dirs=image_dirs,
        ))
    return records, 0


def _find_vqav2_annotations(path: Path, subtype: str) -> Path | None:
    candidates = sorted(p for p in path.parent.glob("*annotations*.json") if subtype in p.name)
    return candidates[0] if len(candidates) == 1 else None


def read_vqav2(path: Path, config: BenchmarkConfig):
    data = read_json(path)
    items = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise BenchmarkFormatError(f"{path}: a VQAv2 questions file is an object with a 'questions' list")
    subtype = str(data.get("data_subtype", "val2014"))
    answers_by_qid: dict[Any, tuple[str, ...]] = {}
    annotations = _find_vqav2_annotations(path, subtype)
    if annotations is not None:
        ann = read_json(annotations)
        ann_items = ann.get("annotations") if isinstance(ann, dict) else None
        if not isinstance(ann_items, list):
            raise BenchmarkFormatError(f"{annotations}: a VQAv2 annotations file has an 'annotations' list")
        for where, row in enumerate_list(annotations, ann_items):
            answers_by_qid[need(row, where, "question_id")] = answer_list(need(row, where, "answers"), where)
    image_dirs = dirs(root(config), path.parent / subtype, path.parent)
    records = []
    for where, row in enumerate_list(path, items):
        qid = need(row, where, "question_id")
        image = row.get("image") or f"COCO_{subtype}_{int(need(row, where, 'image_id')):012d}.jpg"
        records.append(Record(where, str(qid), image, str(need(row, where, "question")),
                              answers_by_qid.get(qid, ()), image_dirs=image_dirs))
    return records, 0


def read_gqa(path: Path, config: BenchmarkConfig):
    data = read_json(path)
    image_dirs = dirs(root(config), path.parent / "images", path.parent)
    records = []
    for where, key, row in keyed_records(path, data, "a GQA questions file maps question ids to objects"):
        image = f"{need(row, where, 'imageId')}.jpg"
        answers = (str(row["answer"]),) if row.get("answer") is not None else ()
        records.append(Record(where, key, image, str(need(row, where, "question")), answers, image_dirs=image_dirs))
    return records, 0


def read_chartqa(path: Path, config: BenchmarkConfig):
    """``test_human.json`` (imgname, query, label) or a table with image, question, answer
    (lmms-lab/ChartQA; its ``type`` column, human/augmented, becomes the category)."""
    image_dirs = dirs(root(config), path.parent / "png", path.parent, base_dir(path))
    records = []
    for i, (where, row) in enumerate(rows(path, config)):
        image = need(row, where, "imgname", "image")
        question = str(need(row, where, "query", "question"))
        answers = answer_list(need(row, where, "label", "answer", "answers"), where)
        category = str(row["type"]) if row.get("type") is not None else None
        records.append(Record(where, str(row.get("id", i)), image, question, answers, image_dirs=image_dirs,
                              category=category))
    return records, 0


def read_docvqa(path: Path, config: BenchmarkConfig):
    """DocVQA ("image": "documents/x.png") and InfographicVQA ("image_local_name"); also the
    lmms-lab/DocVQA tables (questionId, question, image, answers)."""
    image_dirs = dirs(root(config), path.parent, path.parent / "infographicsvqa_images", path.parent / "images")
    records = []
    for i, (where, row) in enumerate(rows(path, config)):
        image = need(row, where, "image", "image_local_name")
        sample_id = str(row.get("questionId", row.get("question_id", i)))
        records.append(Record(where, sample_id, image, str(need(row, where, "question")),
                              answer_list(row.get("answers"), where), image_dirs=image_dirs))
    return records, 0
