"""Raw file access for the format readers: JSON, JSONL, TSV and tables, with errors that name
the file and the line or record, and the small field helpers every reader shares.

Tables (a parquet file, a folder of parquet files such as a downloaded Hugging Face release,
a ``save_to_disk`` folder, an ``imagefolder``, an ``.arrow`` file) are read with ``datasets``
from local files only; image columns are left undecoded (``{"bytes", "path"}``) so images are
decoded only when a sample is used.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

from ..metrics import OPTION_LETTERS
from ..samples import BenchmarkConfig, BenchmarkFormatError

Rows = list[tuple[str, dict]]  # (where, row) pairs: where names the file and line/record/row


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise BenchmarkFormatError(
            f"{path}, line {err.lineno}, column {err.colno}: invalid JSON ({err.msg})"
        ) from None
    except UnicodeDecodeError as err:
        raise BenchmarkFormatError(f"{path}: not UTF-8 text ({err.reason})") from None


def read_jsonl(path: Path) -> Rows:
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


def read_tsv(path: Path) -> Rows:
    """A tab-separated file with a header line (the official MMBench TSVs: base64 images)."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # base64 image cells are large
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            if not reader.fieldnames:
                raise BenchmarkFormatError(f"{path}: empty TSV file (expected a header line of column names)")
            # the header is line 1; rows with embedded newlines would shift numbers, these files have none
            return [(f"{path}, line {i}", dict(row)) for i, row in enumerate(reader, 2)]
    except UnicodeDecodeError as err:
        raise BenchmarkFormatError(f"{path}: not UTF-8 text ({err.reason})") from None


def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and (
        (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
        or (path / "state.json").exists()
    )


def pick_split(dataset_dict, split: str | None, path: Path):
    if split is not None:
        for name in _split_synonyms(split):
            if name in dataset_dict:
                return dataset_dict[name]
        raise BenchmarkFormatError(
            f"{path}: no split {split!r}; it has {', '.join(dataset_dict)} (pick one with --split)"
        )
    for name in ("test", "validation", "val", "dev", "train"):
        if name in dataset_dict:
            return dataset_dict[name]
    return dataset_dict[next(iter(dataset_dict))]


_SYNONYMS = (("validation", "val", "dev"), ("test",), ("train",))


def _split_synonyms(split: str) -> list[str]:
    """``validation`` also matches ``val`` / ``dev`` (and back): releases name it differently."""
    for group in _SYNONYMS:
        if split in group:
            return [split] + [s for s in group if s != split]
    return [split]


def undecoded_images(dataset):
    """Keep image columns as {"bytes", "path"} so images are decoded only when used."""
    import datasets

    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
    return dataset


_SHARD = re.compile(r"^(?P<split>[A-Za-z][A-Za-z0-9_]*?)-\d+-of-\d+")  # test-00000-of-00004[-hash].parquet


def parquet_split_name(file: Path) -> str:
    """The split a parquet file belongs to: ``validation-00000-of-00003.parquet`` -> validation,
    ``test.parquet`` -> test, ``val/0000.parquet`` (the Hub's parquet conversion) -> val."""
    match = _SHARD.match(file.name)
    if match:
        return match.group("split")
    if file.stem.isdigit():
        return file.parent.name
    return file.stem


def parquet_files(folder: Path, split: str | None, subset: str | None) -> tuple[list[Path], str]:
    """The parquet files of one split (and subset sub-folder) of a downloaded release."""
    files = sorted(folder.glob("**/*.parquet"))
    if subset:
        wanted = subset.lower()
        inside = [f for f in files if any(p.lower() == wanted for p in f.relative_to(folder).parts[:-1])]
        files = inside or files  # no such sub-folder: PATH already is the subset
    by_split: dict[str, list[Path]] = {}
    for file in files:
        by_split.setdefault(parquet_split_name(file), []).append(file)
    chosen = pick_split(by_split, split, folder)
    return chosen, parquet_split_name(chosen[0])


def read_table(path: Path, config: BenchmarkConfig) -> Rows:
    """Rows of a parquet file / folder, a save_to_disk folder or an imagefolder, via `datasets`."""
    import datasets

    split = config.split
    if path.is_dir() and is_saved_dataset(path):
        loaded = datasets.load_from_disk(str(path))
        dataset = pick_split(loaded, split, path) if isinstance(loaded, datasets.DatasetDict) else loaded
    elif path.is_dir() and any(path.glob("**/*.parquet")):
        files, _ = parquet_files(path, split, config.subset)
        dataset = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    elif path.is_dir():
        if not any(path.glob("**/metadata.*")):
            raise BenchmarkFormatError(
                f"{path}: a folder must hold parquet files (e.g. a downloaded Hugging Face release), be a "
                "`save_to_disk` dataset, or be an imagefolder with a metadata.jsonl/metadata.csv giving "
                "file_name and question for each image"
            )
        loaded = datasets.load_dataset("imagefolder", data_dir=str(path))
        dataset = pick_split(loaded, split, path)
    elif path.suffix == ".parquet":
        dataset = datasets.load_dataset("parquet", data_files=str(path), split="train")
    elif path.suffix == ".arrow":
        dataset = datasets.Dataset.from_file(str(path))
    else:
        raise BenchmarkFormatError(
            f"{path}: unsupported file type {path.suffix!r} (expected .json, .jsonl, .tsv, .parquet, .arrow or a folder)"
        )
    dataset = undecoded_images(dataset)
    return [(f"{path}, row {i}", row) for i, row in enumerate(dataset)]


def rows(path: Path, config: BenchmarkConfig) -> Rows:
    """Rows of a JSONL / JSON-list / TSV / table file."""
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    if path.suffix == ".tsv":
        return read_tsv(path)
    if path.suffix == ".json":
        data = read_json(path)
        if isinstance(data, dict):
            for key in ("data", "questions", "rows"):
                if isinstance(data.get(key), list):
                    data = data[key]
                    break
        if not isinstance(data, list):
            raise BenchmarkFormatError(f"{path}: expected a JSON list of records")
        return enumerate_list(path, data)
    return read_table(path, config)


def enumerate_list(path: Path, items: list) -> Rows:
    out = []
    for i, row in enumerate(items):
        if not isinstance(row, dict):
            raise BenchmarkFormatError(f"{path}, record {i}: expected a JSON object, got {type(row).__name__}")
        out.append((f"{path}, record {i}", row))
    return out


def keyed_records(path: Path, data: Any, what: str) -> list[tuple[str, str, dict]]:
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise BenchmarkFormatError(f"{path}: {what}")
    return [(f"{path}, record {key!r}", str(key), row) for key, row in data.items()]


# ------------------------------------------------------------------------ fields
def is_missing(value: Any) -> bool:
    """None, NaN, or an empty / "nan" string (how pandas-made tables mark an absent cell)."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in ("", "nan", "none")


def need(row: dict, where: str, *keys: str) -> Any:
    """The first of `keys` present in `row`, or a clear error naming the field and place."""
    for key in keys:
        if key in row and row[key] is not None:
            return row[key]
    names = " or ".join(repr(k) for k in keys)
    present = ", ".join(sorted(map(str, row))) or "none"
    raise BenchmarkFormatError(f"{where}: missing field {names} (fields present: {present})")


def answer_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, int, float)):
        return (str(value),)
    if isinstance(value, (list, tuple)):
        out = []
        for item in value:
            if isinstance(item, dict):
                item = need(item, where, "answer")
            out.append(str(item))
        return tuple(out)
    raise BenchmarkFormatError(f"{where}: 'answers' must be a string or a list, got {type(value).__name__}")


def answer_index(answer: Any, choices: tuple[str, ...], where: str) -> int:
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


def dirs(*candidates: Path | None) -> tuple[Path, ...]:
    return tuple(c for c in candidates if c is not None)


def root(config: BenchmarkConfig) -> Path | None:
    return Path(config.image_root) if config.image_root else None


def base_dir(path: Path) -> Path:
    """The folder relative image paths of a file (or a folder source) start from."""
    return path if path.is_dir() else path.parent
