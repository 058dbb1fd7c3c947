"""The benchmark file formats: one reader per format, its default metric and prompt style.

:data:`FORMATS` maps a format name (the ``FORMAT`` of ``--benchmark FORMAT:PATH``) to its
:class:`FormatSpec`; :func:`detect_json_format` recognises a ``.json`` file's format from its
structure. A reader is ``reader(path, config) -> (records, rows skipped)``; the modules:

* :mod:`.files`    raw JSON / JSONL / TSV / table access and field helpers;
* :mod:`.generic`  your own rows;
* :mod:`.vqa`      TextVQA, VQAv2, GQA, ChartQA, DocVQA / InfographicVQA;
* :mod:`.captions` COCO captions;
* :mod:`.choice`   ScienceQA, MMMU, MMBench;
* :mod:`.yesno`    MME, POPE;
* :mod:`.longform` MM-Vet, LLaVA-Bench.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..samples import BenchmarkConfig, Record
from .captions import read_coco
from .choice import read_mmbench, read_mmmu, read_scienceqa
from .files import read_json
from .generic import read_generic
from .longform import read_llava_bench, read_mmvet
from .vqa import read_chartqa, read_docvqa, read_gqa, read_textvqa, read_vqav2
from .yesno import read_mme, read_pope

Reader = Callable[[Path, BenchmarkConfig], "tuple[list[Record], int]"]


@dataclass(frozen=True)
class FormatSpec:
    """A file format: how to read it, and its default metric and prompt style."""

    name: str
    reader: Reader
    metric: str
    prompt_style: str
    description: str


FORMATS: dict[str, FormatSpec] = {spec.name: spec for spec in (
    FormatSpec("generic", read_generic, "exact", "short",
               "JSONL/JSON list/TSV/parquet/save_to_disk/imagefolder rows: image, question[, answers|choices+answer]"),
    FormatSpec("textvqa", read_textvqa, "vqa", "short",
               "TextVQA json ('data': question, image_id, 10 answers) or a table (question_id, question, image, answers)"),
    FormatSpec("vqav2", read_vqav2, "vqa", "short",
               "VQAv2 questions json (+ the *annotations*.json of the same subtype beside it)"),
    FormatSpec("coco", read_coco, "rouge_l", "raw",
               "COCO captions: Karpathy dataset_coco.json, official captions_*.json, or a table (image, answer = captions)"),
    FormatSpec("gqa", read_gqa, "exact", "short", "GQA questions json ({qid: {imageId, question, answer}})"),
    FormatSpec("scienceqa", read_scienceqa, "choice", "short",
               "ScienceQA problems.json (image questions of one split) or a table with image/choices/answer"),
    FormatSpec("chartqa", read_chartqa, "relaxed", "short",
               "ChartQA json list (imgname, query, label) or a table (image, question, answer)"),
    FormatSpec("docvqa", read_docvqa, "anls", "short",
               "DocVQA json ('data': questionId, question, image, answers) or a table of the same fields"),
    FormatSpec("infovqa", read_docvqa, "anls", "short",
               "InfographicVQA json ('data': questionId, question, image_local_name, answers)"),
    FormatSpec("mme", read_mme, "mme", "short",
               "MME rows (question_id, image, question, answer Yes/No, category); parquet or JSONL"),
    FormatSpec("pope", read_pope, "pope", "short",
               "POPE rows (question_id, image, question, answer yes/no, category) or coco_pope_*.json lines"),
    FormatSpec("mmmu", read_mmmu, "mmmu", "short",
               "MMMU rows (id, question, options, answer, question_type, image_1..image_7); single-image questions"),
    FormatSpec("mmbench", read_mmbench, "choice", "short",
               "MMBench rows (index, question, hint, A-D, answer letter, category, image); parquet or the official TSV"),
    FormatSpec("mmvet", read_mmvet, "none", "raw", "MM-Vet json ({id: {imagename, question, answer}}); GPT-graded, so not scored"),
    FormatSpec("llava-bench", read_llava_bench, "none", "raw", "LLaVA-Bench questions.jsonl (image, text); long answers, not scored"),
)}


def detect_json_format(path: Path) -> str:
    """The format of a ``.json`` file, from its structure ("generic" when nothing matches)."""
    data = read_json(path)
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
