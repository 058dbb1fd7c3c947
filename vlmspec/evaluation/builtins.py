"""The built-in benchmarks, generated in memory (no files): ``synthetic-long`` (scene
descriptions, long-form, ROUGE-L against the reference description) and ``synthetic-qa``
(one short question per scene, exact match), both rendered from
:mod:`vlmspec.data.synthetic`; ``prompt-mix`` (held out: test scenes, held-out wordings,
instructions and photos) and ``prompt-mix-indist`` (the training distribution's wordings on
fresh scenes, rows no drafter recipe trains on) from :mod:`vlmspec.data.prompt_mix`, each
sample's category its prompt style (describe, open, short, chat, chat_image, photo); these
two have no references (speed only), and chat samples have no image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from .formats.files import undecoded_images
from .samples import BenchmarkConfig, Record


def _synthetic_rows(config: BenchmarkConfig) -> Iterator[dict]:
    """Rows of :func:`vlmspec.data.synthetic.build_dataset` with images left encoded."""
    from vlmspec.data import build_dataset

    n = config.limit or config.synthetic_size
    dataset = undecoded_images(build_dataset(config.split or "test", n=n, seed=config.seed))
    yield from dataset


def _read_synthetic_long(config: BenchmarkConfig) -> list[Record]:
    from vlmspec.data import DESCRIBE_PROMPT

    return [
        Record(f"synthetic-long row {i}", row["id"], row["image"]["bytes"], DESCRIBE_PROMPT, (row["description"],))
        for i, row in enumerate(_synthetic_rows(config))
    ]


def _read_synthetic_qa(config: BenchmarkConfig) -> list[Record]:
    records = []
    for i, row in enumerate(_synthetic_rows(config)):
        qa = row["questions"][i % len(row["questions"])]  # rotate through the question types
        records.append(Record(f"synthetic-qa row {i}", f"{row['id']}#{qa['qtype']}", row["image"]["bytes"],
                              qa["question"], (qa["answer"],)))
    return records


INDIST_SEED_OFFSET = 1000  # prompt-mix-indist draws rows of seed + 1000: never the training rows (seed 0)


def _prompt_mix_records(config: BenchmarkConfig, heldout: bool) -> list[Record]:
    from vlmspec.data.prompt_mix import prompt_mix

    n = config.limit or config.synthetic_size
    seed = config.seed if heldout else config.seed + INDIST_SEED_OFFSET
    name = "prompt-mix" if heldout else "prompt-mix-indist"
    return [Record(f"{name} row {i}", p.id, p.images[0] if p.images else None, p.prompt, category=p.style)
            for i, p in enumerate(prompt_mix(n, seed, heldout=heldout))]


@dataclass(frozen=True)
class BuiltinSpec:
    """A built-in benchmark generated in memory."""

    name: str
    reader: Callable[[BenchmarkConfig], list[Record]]
    metric: str
    prompt_style: str
    description: str


BUILTINS: dict[str, BuiltinSpec] = {spec.name: spec for spec in (
    BuiltinSpec("synthetic-long", _read_synthetic_long, "rouge_l", "raw",
                "synthetic scenes, 'Describe the image in detail.' (long-form; ROUGE-L vs the reference)"),
    BuiltinSpec("synthetic-qa", _read_synthetic_qa, "exact", "raw",
                "synthetic scenes, one short question each with an exact answer"),
    BuiltinSpec("prompt-mix", lambda c: _prompt_mix_records(c, heldout=True), "none", "raw",
                "held-out prompt mix (describe / open / short / chat / chat with image / photo; speed per style)"),
    BuiltinSpec("prompt-mix-indist", lambda c: _prompt_mix_records(c, heldout=False), "none", "raw",
                "the training prompt mix's distribution on fresh scenes (the in-distribution figure)"),
)}
