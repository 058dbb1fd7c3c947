"""Image captioning: COCO captions in three layouts, scored against the reference captions.

* the Karpathy split ``dataset_coco.json`` ('images' with 'sentences'; ``--split``, default
  test);
* the official ``captions_val2017.json`` ('images' + 'annotations' with image_id, caption;
  images in ``val2017/`` beside it or ``--image-root``);
* a table (lmms-lab/COCO-Caption2017: question_id, image, question, answer = the captions).
"""

from __future__ import annotations

from pathlib import Path

from ..samples import CAPTION_QUESTION, BenchmarkConfig, BenchmarkFormatError, Record
from .files import answer_list, base_dir, dirs, enumerate_list, need, read_json, root, rows


def read_coco(path: Path, config: BenchmarkConfig):
    if path.suffix != ".json":
        return _read_caption_table(path, config)
    data = read_json(path)
    items = data.get("images") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise BenchmarkFormatError(
            f"{path}: a COCO captions file is an object with an 'images' list (Karpathy split "
            "dataset_coco.json or the official captions_*.json)"
        )
    if isinstance(data.get("annotations"), list) and not any("sentences" in i for i in items if isinstance(i, dict)):
        return _read_official(path, data, config)
    split = config.split or "test"
    image_dirs = dirs(root(config), path.parent)
    records, skipped = [], 0
    for where, row in enumerate_list(path, items):
        if row.get("split", split) != split:
            skipped += 1
            continue
        filename = need(row, where, "filename")
        image = str(Path(row.get("filepath", "")) / filename)
        captions = tuple(str(need(s, where, "raw")) for s in need(row, where, "sentences"))
        sample_id = str(row.get("cocoid", row.get("imgid", filename)))
        records.append(Record(where, sample_id, image, CAPTION_QUESTION, captions, image_dirs=image_dirs))
    return records, skipped


def _read_official(path: Path, data: dict, config: BenchmarkConfig):
    """captions_val2017.json: captions joined to their image by image_id."""
    captions: dict[object, list[str]] = {}
    for where, row in enumerate_list(path, data["annotations"]):
        captions.setdefault(need(row, where, "image_id"), []).append(str(need(row, where, "caption")))
    subtype = path.stem.replace("captions_", "")  # captions_val2017 -> val2017
    image_dirs = dirs(root(config), path.parent / subtype, path.parent.parent / subtype, path.parent / "images",
                      path.parent)
    records, skipped = [], 0
    for where, row in enumerate_list(path, data["images"]):
        image_id = need(row, where, "id")
        if image_id not in captions:
            skipped += 1  # an image without captions cannot be scored
            continue
        records.append(Record(where, str(image_id), need(row, where, "file_name"), CAPTION_QUESTION,
                              tuple(captions[image_id]), image_dirs=image_dirs))
    return records, skipped


def _read_caption_table(path: Path, config: BenchmarkConfig):
    image_dirs = dirs(root(config), base_dir(path), base_dir(path) / "images")
    records = []
    for i, (where, row) in enumerate(rows(path, config)):
        image = need(row, where, "image", "file_name")
        captions = answer_list(need(row, where, "answer", "answers", "captions"), where)
        question = str(row.get("question") or CAPTION_QUESTION)
        sample_id = str(row.get("question_id", row.get("id", row.get("file_name", i))))
        records.append(Record(where, sample_id, image, question, captions, image_dirs=image_dirs))
    return records, 0
