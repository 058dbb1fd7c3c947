"""lmms-eval task names: ``--benchmark mme:PATH`` as lmms-eval users know them.

:data:`TASKS` maps each name (``textvqa_val``, ``docvqa_val``, ``chartqa``, ``mme``, ``pope``,
``mmmu_val``, ``mmbench_en_dev``, ``scienceqa_img``, ``coco2017_cap_val``, ``infovqa_val``
and the plain names ``textvqa``, ``docvqa``, ``mmmu``, ``mmbench``, ``scienceqa``, ...) to a
:class:`TaskSpec`: the format reader, hence the metric lmms-eval reports for that task, and
the split / subset of the Hugging Face parquet release it reads.

vlmspec never downloads a benchmark: the data must be on this machine, and a task name
without a path (or with a path that does not exist) raises a :class:`BenchmarkFormatError`
that says which layouts are read and how to pass them (:func:`missing_data_message`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .formats import FORMATS


@dataclass(frozen=True)
class TaskSpec:
    """An lmms-eval task: which format reads it and where its data is expected."""

    name: str
    format: str
    title: str
    hf_dataset: str  # the Hugging Face parquet release lmms-eval loads
    split: str | None  # the split of that release (applied to table sources only)
    subset: str | None = None  # its sub-folder, when the release holds several
    original: str | None = None  # the original (non-parquet) layout the format also reads
    aliases: tuple[str, ...] = ()

    @property
    def metric(self) -> str:
        return FORMATS[self.format].metric


_TASK_LIST = (
    TaskSpec("textvqa_val", "textvqa", "TextVQA validation", "lmms-lab/textvqa", "validation",
             original="TextVQA_0.5.1_val.json, with train_images/ beside it or --image-root",
             aliases=("textvqa",)),
    TaskSpec("docvqa_val", "docvqa", "DocVQA validation", "lmms-lab/DocVQA", "validation", subset="DocVQA",
             original="val_v1.0.json, with documents/ beside it", aliases=("docvqa",)),
    TaskSpec("infovqa_val", "infovqa", "InfographicVQA validation", "lmms-lab/DocVQA", "validation",
             subset="InfographicVQA",
             original="infographicsVQA_val_v1.0.json, with infographicsvqa_images/ beside it",
             aliases=("infovqa",)),
    TaskSpec("chartqa", "chartqa", "ChartQA test", "lmms-lab/ChartQA", "test",
             original="test_human.json or test_augmented.json, with png/ beside it"),
    TaskSpec("mme", "mme", "MME", "lmms-lab/MME", "test",
             original="a JSONL of question_id, image (a path), question, answer, category rows"),
    TaskSpec("pope", "pope", "POPE (adversarial + popular + random)", "lmms-lab/POPE", "test",
             original="the POPE repository's coco_pope_{adversarial,popular,random}.json, with --image-root "
                      "the COCO val2014 folder"),
    TaskSpec("mmmu_val", "mmmu", "MMMU validation", "lmms-lab/MMMU", "validation",
             original="the MMMU/MMMU release (one parquet folder per subject) also works",
             aliases=("mmmu",)),
    TaskSpec("mmbench_en_dev", "mmbench", "MMBench (English) dev", "lmms-lab/MMBench", "dev", subset="en",
             original="the official mmbench_dev_en_20231003.tsv (base64 images)",
             aliases=("mmbench", "mmbench_en")),
    TaskSpec("scienceqa_img", "scienceqa", "ScienceQA-IMG test", "lmms-lab/ScienceQA", "test",
             subset="ScienceQA-IMG", original="problems.json, with images/test/ID/image.png beside it",
             aliases=("scienceqa",)),
    TaskSpec("coco2017_cap_val", "coco", "COCO 2017 captions val", "lmms-lab/COCO-Caption2017", "val",
             original="annotations/captions_val2017.json, with val2017/ beside annotations/ (or the Karpathy "
                      "dataset_coco.json)",
             aliases=("coco2017_cap", "coco_cap")),
)

TASKS: dict[str, TaskSpec] = {name: task for task in _TASK_LIST for name in (task.name, *task.aliases)}
TASK_NAMES: tuple[str, ...] = tuple(task.name for task in _TASK_LIST)


def is_table_source(path: Path) -> bool:
    """A source a split / subset applies to: a parquet / arrow file or a folder."""
    return path.is_dir() or path.suffix in (".parquet", ".arrow")


def missing_data_message(name: str, path: str | None = None) -> str:
    """Where the data of benchmark ``name`` is expected and how to pass it (no download)."""
    task = TASKS.get(name)
    spec = FORMATS.get(task.format if task else name)
    head = f"benchmark {name!r}"
    if path is None:
        problem = f"{head} needs its data on this machine (vlmspec never downloads benchmarks)"
    else:
        absolute = Path(path).expanduser().absolute()
        problem = f"{head}: {path} does not exist" + (f" (looked for {absolute})" if str(absolute) != path else "")
    if task is None:
        fields = spec.description if spec else "see eval/README.md"
        return f"{problem}; pass --benchmark {name}:PATH with PATH a {fields}."
    folder = f"data/{task.hf_dataset.split('/')[-1]}"
    where = (f" (split {task.split!r}" + (f" of its {task.subset}/ sub-folder" if task.subset else "") + ")"
             if task.split else "")
    lines = [
        f"{problem}. {task.title} ({task.name}, metric {task.metric}) is read from a local copy; pass "
        f"--benchmark {name}:PATH where PATH is one of:",
        f"  - a folder or a .parquet file of the Hugging Face release {task.hf_dataset}{where}, e.g. downloaded "
        f"once on a machine with network: hf download {task.hf_dataset} --repo-type dataset --local-dir {folder}, "
        f"then --benchmark {name}:{folder}",
        f"  - a `datasets` save_to_disk folder of it: load_dataset({task.hf_dataset!r}"
        + (f", {task.subset!r}" if task.subset else "") + f", split={task.split!r}).save_to_disk({folder!r})",
    ]
    if task.original:
        lines.append(f"  - {task.original}")
    lines.append(f"Rows are read as: {spec.description}.")
    local = Path(name)
    if path is None and local.exists():
        lines.append(f"(./{name} exists here: to load it, pass --benchmark {name}:./{name})")
    return "\n".join(lines)
