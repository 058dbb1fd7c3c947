"""Training data for drafters: sources -> checked, tokenized samples -> curriculum batches.

Pipeline (all deterministic for a given config and seed):

1. `load_source(SourceConfig)` reads rows through `datasets` (the built-in synthetic scenes,
   a JSON-lines file, or a `save_to_disk` folder) into `RawSample`s {id, images, prompt,
   response}. Malformed JSON lines become bad samples with id "file:line".
2. `self_distill(...)` (ViSpec) replaces every response by the target's own generation
   (greedy or seeded sampling) through `vlmspec` speculative decoding with a lossless
   drafter (prompt-lookup by default: the same tokens as plain decoding, fewer forwards).
   Results are cached as JSON lines in the run's folder, one shard per process.
3. `tokenize_samples(...)` loads the images, runs the target's processor (chat template,
   image tokens expanded) and appends the response ids + EOS. Bad samples - missing or
   unreadable image, empty prompt, empty response, longer than `max_length` - are
   reported by id (`DataReport`: a warning per sample and `bad_samples.jsonl`) and skipped,
   truncated or raised (`BadSampleError`) as the config says; never dropped silently.
4. `CurriculumSampler` draws each micro-batch: with a curriculum (MSD) every slot is
   multimodal with probability `multimodal_share(step)` (0 while text-only, then rising to
   1), else text-only; pools are walked in seeded per-epoch permutations. Its state (draw
   counters) is saved in checkpoints, so a resumed run sees the same data order.
5. `collate(...)` builds a `TrainBatch`: right-padded ids, attention and loss masks, the
   processor's pixel values for the images of the batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from ..errors import ImageError, InputError
from .config import DataConfig, SelfDistillConfig, SourceConfig

logger = logging.getLogger("vlmspec.training")


class BadSampleError(InputError):
    """A training sample is unusable and the config says to stop (`on_bad_sample`/`on_overlong` = "raise")."""


# ------------------------------------------------------------------ samples
@dataclass
class RawSample:
    """One row before tokenization. `images` holds paths, PIL images or encoded bytes."""

    id: str
    prompt: str
    response: str | None
    images: list = field(default_factory=list)
    response_ids: list[int] | None = None  # set by self-distillation (the target's exact tokens)
    problem: str | None = None  # set when the row itself is malformed

    def without_images(self, suffix: str = ":text") -> "RawSample":
        return RawSample(self.id + suffix, self.prompt, self.response, [], self.response_ids, self.problem)


@dataclass
class TokenizedSample:
    """A checked sample: prompt ids (image tokens expanded) + response ids (EOS included)."""

    id: str
    prompt_text: str  # the chat-formatted prompt the processor saw
    images: list  # in order: file paths / encoded bytes (decoded again per batch, so a large set's decoded
    #               images need not fit in memory) or PIL images (as given); `collate` loads them
    input_ids: list[int]  # [L] prompt + response
    response_start: int  # index of the first response token in input_ids

    @property
    def has_images(self) -> bool:
        return bool(self.images)


@dataclass
class DataReport:
    """Every bad sample: id, what is wrong, what was done. Written to `bad_samples.jsonl`."""

    entries: list[dict] = field(default_factory=list)
    path: Path | None = None

    def add(self, sample_id: str, reason: str, action: str) -> None:
        entry = {"id": sample_id, "reason": reason, "action": action}
        self.entries.append(entry)
        logger.warning("bad training sample %s: %s (%s)", sample_id, reason, action)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")
                handle.flush()

    def ids(self, action: str | None = None) -> list[str]:
        return [e["id"] for e in self.entries if action is None or e["action"] == action]

    def summary(self) -> str:
        if not self.entries:
            return "no bad samples"
        counts: dict[str, int] = {}
        for entry in self.entries:
            counts[entry["action"]] = counts.get(entry["action"], 0) + 1
        return ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) + (
            f" (see {self.path})" if self.path else ""
        )


# ------------------------------------------------------------------ sources
def load_source(source: SourceConfig) -> list[RawSample]:
    """Rows of one source as RawSamples (images dropped when source.text_only)."""
    if source.kind == "synthetic":
        samples = _synthetic_samples(source)
    elif source.kind == "jsonl":
        samples = _jsonl_samples(source)
    else:
        samples = _disk_samples(source)
    if source.limit is not None:
        samples = samples[: source.limit]
    if source.text_only:
        samples = [s.without_images() for s in samples]
    return samples


def _synthetic_samples(source: SourceConfig) -> list[RawSample]:
    from ..data.synthetic import DESCRIBE_PROMPT, build_dataset

    if source.task == "prompt_mix":  # prompts only: the target writes the answers (self_distill)
        from ..data.prompt_mix import prompt_mix

        return [RawSample(p.id, p.prompt, None, p.images) for p in prompt_mix(source.n, source.seed, source.heldout)]

    dataset = build_dataset(source.split, source.n, seed=source.seed)
    samples = []
    for row in dataset:
        base = f"synthetic/{source.split}/{row['id']}"
        if source.task in ("describe", "mixed"):
            samples.append(RawSample(f"{base}/describe", DESCRIBE_PROMPT, row["description"], [row["image"]]))
        if source.task in ("questions", "mixed"):
            for k, qa in enumerate(row["questions"]):
                samples.append(RawSample(f"{base}/q{k}", qa["question"], qa["answer"], [row["image"]]))
    return samples


def _row_to_sample(row: dict, default_id: str, image_root: Path | None) -> RawSample:
    sample_id = str(row.get("id") if row.get("id") is not None else default_id)
    prompt = row.get("prompt")
    response = row.get("response")
    image = row.get("image", row.get("images"))
    images = [] if image is None else list(image) if isinstance(image, (list, tuple)) else [image]
    resolved = []
    for item in images:
        if isinstance(item, str) and image_root is not None and not os.path.isabs(item):
            item = str(image_root / item)
        resolved.append(item)
    problem = None
    if not isinstance(prompt, str):
        problem = "the row has no 'prompt' string"
    elif response is not None and not isinstance(response, str):
        problem = "'response' must be a string"
    return RawSample(sample_id, prompt if isinstance(prompt, str) else "", response, resolved, problem=problem)


def _jsonl_samples(source: SourceConfig) -> list[RawSample]:
    import datasets

    path = Path(source.path)
    if not path.is_file():
        raise InputError(f"Data source {path} does not exist; pass the path of a JSON-lines file.")
    image_root = Path(source.image_root) if source.image_root else path.parent
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                rows.append({"id": f"{path.name}:{number}", "prompt": "", "response": None, "images": [],
                             "problem": f"malformed JSON line ({exc})"})
                continue
            sample = _row_to_sample(row, f"{path.name}:{number}", image_root)
            rows.append({
                "id": sample.id, "prompt": sample.prompt, "response": sample.response,
                "images": [str(i) for i in sample.images], "problem": sample.problem,
            })
    features = datasets.Features({
        "id": datasets.Value("string"), "prompt": datasets.Value("string"), "response": datasets.Value("string"),
        "images": datasets.List(datasets.Value("string")), "problem": datasets.Value("string"),
    })
    table = datasets.Dataset.from_list(rows, features=features)
    samples = [RawSample(r["id"], r["prompt"], r["response"], list(r["images"]), problem=r["problem"]) for r in table]
    return samples


def _disk_samples(source: SourceConfig) -> list[RawSample]:
    import datasets

    path = Path(source.path)
    if not path.is_dir():
        raise InputError(f"Data source {path} is not a datasets.save_to_disk folder.")
    table = datasets.load_from_disk(str(path))
    if isinstance(table, datasets.DatasetDict):
        table = table["train"] if "train" in table else next(iter(table.values()))
    image_root = Path(source.image_root) if source.image_root else path
    return [_row_to_sample(dict(row), f"{path.name}:{i}", image_root) for i, row in enumerate(table)]


# ------------------------------------------------------------- self-distillation
def _distill_key(target, target_name: str, config: SelfDistillConfig) -> str:
    """Cache key: the target's fingerprint (weights' embedding hash, sizes) + the generation settings."""
    from ..drafters.eagle import target_fingerprint

    settings = {k: v for k, v in config.to_dict().items()
                if k not in ("batch_size", "cache_dir")}  # neither batching nor where it is kept changes a token
    settings["temperature"] = float(settings["temperature"])  # 1 and 1.0 from JSON are one setting
    if config.temperature == 0:  # greedy: every allowed drafter is lossless, so all give the same tokens
        # keyed as the default drafter, so caches made with it keep their keys (those made with another get new ones)
        settings["drafter"] = SelfDistillConfig().drafter
    payload = json.dumps({"target": target_fingerprint(target), **settings}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def self_distill(
    samples: list[RawSample],
    target,
    target_name: str,
    config: SelfDistillConfig,
    cache_dir: Path,
    rank: int = 0,
    world_size: int = 1,
    barrier=None,
    progress: bool = False,
) -> list[RawSample]:
    """Replace each sample's response with the target's own generation (ViSpec stage 2).

    Process `rank` generates samples rank, rank + world, ...; each shard is cached as JSON
    lines in `cache_dir` (appended per sample, so an interrupted run continues where it
    stopped); after `barrier()` every process reads all shards. Samples whose generation is
    empty, or that cannot be generated (bad image), are reported and left out. Every record
    carries a digest of its prompt and images, and is reused only for a sample with the same
    digest, so one cache can serve several recipes (`self_distill.cache_dir`) whose rows share
    ids but not necessarily content.
    """
    from ..api import Pipeline
    from ..drafters.registry import build_drafter

    key = _distill_key(target, target_name, config)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # one shard per process and run: two runs sharing a cache_dir never interleave lines in one file
    shard = cache_dir / f"selfdistill-{key}-rank{rank}-pid{os.getpid()}.jsonl"
    digests = {s.id: _sample_digest(s) for s in samples if s.problem is None}
    done = _read_distilled(cache_dir, key, digests)
    todo = [s for i, s in enumerate(samples) if i % world_size == rank and s.id not in done and s.problem is None]
    if todo:
        pipe = Pipeline(target, build_drafter(config.drafter, target))
        batch = config.batch_size if config.temperature == 0 else 1  # seeded sampling: one sample at a time
        with open(shard, "a", encoding="utf-8") as handle:
            chunks = [todo[i : i + batch] for i in range(0, len(todo), batch)]
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(todo), desc=f"self-distillation (rank {rank})", unit="sample")
            for chunk in chunks:
                for record in _distill_chunk(pipe, chunk, config):
                    handle.write(json.dumps({**record, "digest": digests[record["id"]]}) + "\n")
                handle.flush()
                if bar is not None:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
    if barrier is not None:
        barrier()
    done = _read_distilled(cache_dir, key, digests)
    out = []
    for sample in samples:
        if sample.problem is not None:
            out.append(sample)  # reported later, with the other row problems
            continue
        record = done.get(sample.id)
        if record is None:
            raise RuntimeError(f"self-distillation produced nothing for sample {sample.id}; rerun to continue it.")
        if "error" in record:
            out.append(RawSample(sample.id, sample.prompt, None, sample.images, problem=record["error"]))
            continue
        out.append(RawSample(sample.id, sample.prompt, record["text"], sample.images, response_ids=record["token_ids"]))
    return out


def _distill_chunk(pipe, chunk: list[RawSample], config: SelfDistillConfig) -> list[dict]:
    """The target's answers to a few samples: one batch when greedy, else one seeded call each.
    A sample that cannot be generated (bad image, prompt past the context) gets an error record."""
    from ..images import load_image

    records, ready = [], []
    for sample in chunk:
        try:
            images = [load_image(i) for i in sample.images]
            prompt = sample.prompt + config.prompt_suffix
            pipe.target.check_context(pipe.prepare(images or None, prompt)["input_ids"].shape[1],
                                      config.max_new_tokens)
            ready.append((sample, images or None, prompt))
            records.append({"id": sample.id})
        except ImageError as exc:
            records.append({"id": sample.id, "error": f"image: {exc}"})
        except InputError as exc:
            records.append({"id": sample.id, "error": str(exc)})
    if not ready:
        return records
    options = dict(max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p)
    if len(ready) > 1:
        results = pipe.generate_batch([(images, prompt) for _, images, prompt in ready], **options)
    else:
        sample, images, prompt = ready[0]
        results = [pipe.generate(images, prompt, seed=_sample_seed(config.seed, sample.id), **options)]
    by_id = {sample.id: result for (sample, _, _), result in zip(ready, results)}
    for record in records:
        if "error" not in record:
            result = by_id[record["id"]]
            record.update(text=result.text, token_ids=result.token_ids)
    return records


def _sample_seed(seed: int, sample_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()[:6], "big")


def _sample_digest(sample: RawSample) -> str:
    """SHA-256 (16 hex) of a sample's prompt and image contents: files are read, PIL images,
    arrays and tensors hashed with their shape; anything else by its type and text. Never raises
    (a row whose image cannot be read gets its error record later, as before)."""
    import io

    from PIL import Image

    digest = hashlib.sha256(sample.prompt.encode())
    for image in sample.images:
        try:
            if isinstance(image, Image.Image):
                digest.update(f"{image.mode}{image.size}".encode())
                digest.update(image.tobytes())
                if image.mode == "P" and image.getpalette() is not None:
                    digest.update(bytes(image.getpalette()))
            elif isinstance(image, (bytes, bytearray, memoryview)):
                digest.update(bytes(image))
            elif isinstance(image, io.BytesIO):
                digest.update(image.getvalue())
            elif isinstance(image, (str, os.PathLike)):
                path = Path(image)
                digest.update(path.read_bytes() if path.is_file() else str(image).encode())
            elif hasattr(image, "shape") and hasattr(image, "dtype"):  # numpy array or torch tensor
                import numpy as np

                array = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
                digest.update(f"{array.shape}{array.dtype}".encode())
                digest.update(np.ascontiguousarray(array).tobytes())
            else:
                digest.update(f"{type(image).__name__}:{image!r}".encode())
        except (OSError, TypeError, ValueError):
            digest.update(f"unreadable:{type(image).__name__}:{str(image)[:200]}".encode())
    return digest.hexdigest()[:16]


def _read_distilled(cache_dir: Path, key: str, digests: dict[str, str] | None = None) -> dict[str, dict]:
    """Cached records by id; with `digests`, only those whose prompt and images match. Records
    written before digests were stored (older caches under a run's own output_dir, whose rows
    are that recipe's own) are taken as they are."""
    records: dict[str, dict] = {}
    for shard in sorted(cache_dir.glob(f"selfdistill-{key}-rank*.jsonl")):
        with open(shard, encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by an interruption: regenerated
                wanted = None if digests is None else digests.get(record["id"])
                if wanted is not None and record.get("digest", wanted) != wanted:
                    continue  # another recipe's row under the same id: regenerated for this one
                records[record["id"]] = record
    return records


# ------------------------------------------------------------------ tokenizing
def tokenize_samples(
    samples: Iterable[RawSample], target, config: DataConfig, report: DataReport
) -> list[TokenizedSample]:
    """Check and tokenize samples; bad ones are reported by id and skipped or raised as configured."""
    from ..images import load_image

    eos = target.eos_token_ids[0] if target.eos_token_ids else None
    out = []
    for sample in samples:
        try:
            if sample.problem is not None:
                raise _Bad(sample.problem)
            if not sample.prompt.strip():
                raise _Bad("empty prompt")
            images, kept = [], []
            for item in sample.images:
                try:
                    images.append(load_image(item))
                    kept.append(item if isinstance(item, (str, os.PathLike, bytes)) else images[-1])
                except ImageError as exc:
                    raise _Bad(f"image {item if isinstance(item, str) else '(in memory)'} unusable: {exc}") from None
            if sample.response_ids is not None:
                response_ids = list(sample.response_ids)
            else:
                if sample.response is None or not sample.response.strip():
                    raise _Bad("empty response (no text to learn; enable data.self_distill or fix the row)")
                response_ids = target.tokenizer(sample.response, add_special_tokens=False)["input_ids"]
                if eos is not None:
                    response_ids = response_ids + [eos]
            if target.image_token_id in response_ids:
                raise _Bad("the response contains the image placeholder token (the target cannot be run on it)")
            real = [t for t in response_ids if t not in target.eos_token_ids]
            if len(real) < config.min_response_tokens:
                raise _Bad(f"empty response ({len(real)} tokens besides EOS, need {config.min_response_tokens})")
            prompt_text = target.format_prompt(sample.prompt, len(images))
            prompt_ids = _prompt_ids(target, prompt_text, images)
        except _Bad as bad:
            _handle(report, sample.id, str(bad), config.on_bad_sample)
            continue
        total = len(prompt_ids) + len(response_ids)
        if total > config.max_length:
            reason = f"too long: {total} tokens (prompt {len(prompt_ids)}, image tokens included) > max_length {config.max_length}"
            keep = config.max_length - len(prompt_ids)
            if config.on_overlong == "truncate" and keep >= config.min_response_tokens:
                report.add(sample.id, reason, f"truncated to {config.max_length}")
                response_ids = response_ids[:keep]
            else:
                policy = "raise" if config.on_overlong == "raise" else "skip"
                _handle(report, sample.id, reason, policy)
                continue
        out.append(TokenizedSample(sample.id, prompt_text, kept, prompt_ids + response_ids, len(prompt_ids)))
    return out


class _Bad(Exception):
    pass


def _handle(report: DataReport, sample_id: str, reason: str, policy: str) -> None:
    if policy == "raise":
        report.add(sample_id, reason, "raised")
        raise BadSampleError(
            f"Training sample {sample_id!r}: {reason}. Fix or remove it, or set data.on_bad_sample / "
            "data.on_overlong to \"skip\" to leave such samples out (they are then listed in bad_samples.jsonl)."
        )
    report.add(sample_id, reason, "skipped")


def _prompt_ids(target, prompt_text: str, images: list) -> list[int]:
    encoded = target.processor(images=images or None, text=prompt_text, return_tensors="pt")
    return encoded["input_ids"][0].tolist()


# ------------------------------------------------------------------ sampling
class CurriculumSampler:
    """Which samples each micro-batch holds; deterministic in (seed, micro-step) + saved counters.

    Without a curriculum, one pool (every sample). With one, a multimodal pool and a text
    pool; slot s of micro-step m is multimodal with probability share(optimizer step).
    `draw(step)` returns the global micro-batch (batch_size * world_size entries); process
    r trains on entries [r * batch_size, (r + 1) * batch_size).
    """

    def __init__(self, pools: dict[str, int], global_batch: int, seed: int, curriculum=None) -> None:
        for name, size in pools.items():
            if size == 0 and (curriculum is None or name == "all"):
                raise InputError(f"The {name!r} training pool is empty; check data.sources and the bad-sample report.")
        self.pools = pools
        self.global_batch = global_batch
        self.seed = seed
        self.curriculum = curriculum
        self.drawn = {name: 0 for name in pools}
        self.micro_step = 0

    def _index(self, pool: str, k: int) -> int:
        size = self.pools[pool]
        epoch, offset = divmod(k, size)
        order = list(range(size))
        random.Random(f"{self.seed}:{pool}:{epoch}").shuffle(order)
        return order[offset]

    def draw(self, optimizer_step: int) -> list[tuple[str, int]]:
        rng = random.Random(f"{self.seed}:micro:{self.micro_step}")
        share = self.share(optimizer_step)
        picks = []
        for _ in range(self.global_batch):
            if self.curriculum is None:
                pool = "all"
            else:
                pool = "multimodal" if rng.random() < share else "text"
                if self.pools[pool] == 0:
                    pool = "text" if pool == "multimodal" else "multimodal"
            picks.append((pool, self._index(pool, self.drawn[pool])))
            self.drawn[pool] += 1
        self.micro_step += 1
        return picks

    def share(self, optimizer_step: int) -> float:
        return 1.0 if self.curriculum is None else self.curriculum.multimodal_share(optimizer_step)

    def state_dict(self) -> dict:
        return {"drawn": dict(self.drawn), "micro_step": self.micro_step, "pools": dict(self.pools)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("pools") != self.pools:
            raise InputError(
                f"The checkpoint's data pools {state.get('pools')} differ from this run's {self.pools}: the data "
                "changed since the checkpoint was written. Resume with the same data, or start a new output_dir."
            )
        self.drawn = dict(state["drawn"])
        self.micro_step = int(state["micro_step"])


# ------------------------------------------------------------------ batches
@dataclass
class TrainBatch:
    """One micro-batch on the training device (right-padded)."""

    ids: list[str]
    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L] 1 = real token
    loss_mask: torch.Tensor  # [B, L] bool: the target's prediction at j is of a response token (j + 1)
    encoder_inputs: dict  # pixel_values [n_images, ...] (+ image_sizes) for the batch's images, or {}
    images_per_sample: list[int]  # [B]
    response_starts: list[int] = field(default_factory=list)  # [B] prompt length P (first response index)

    def to(self, device) -> "TrainBatch":
        moved = {k: v.to(device) if torch.is_tensor(v) else v for k, v in self.encoder_inputs.items()}
        return TrainBatch(
            self.ids, self.input_ids.to(device), self.attention_mask.to(device), self.loss_mask.to(device),
            moved, self.images_per_sample, self.response_starts,
        )


def collate(samples: Sequence[TokenizedSample], target) -> TrainBatch:
    """Right-pad the samples into one batch and run the processor for their images."""
    pad_id = target.tokenizer.pad_token_id
    pad_id = 0 if pad_id is None else int(pad_id)
    length = max(len(s.input_ids) for s in samples)
    batch = len(samples)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)  # [B, L]
    attention_mask = torch.zeros(batch, length, dtype=torch.long)  # [B, L]
    loss_mask = torch.zeros(batch, length, dtype=torch.bool)  # [B, L]
    pixel_parts, size_parts = [], []
    for row, sample in enumerate(samples):
        n = len(sample.input_ids)
        input_ids[row, :n] = torch.tensor(sample.input_ids)
        attention_mask[row, :n] = 1
        loss_mask[row, sample.response_start - 1 : n - 1] = True
        if sample.images:
            from ..images import load_image

            images = [load_image(item) for item in sample.images]  # a path is read and decoded again here
            encoded = target.processor(images=images, text=sample.prompt_text, return_tensors="pt")
            prompt_ids = encoded["input_ids"][0].tolist()
            if prompt_ids != sample.input_ids[: sample.response_start]:
                raise RuntimeError(f"The processor tokenized sample {sample.id} differently on a second call.")
            pixel_parts.append(encoded["pixel_values"])
            if "image_sizes" in encoded:
                size_parts.append(encoded["image_sizes"])
    encoder_inputs: dict[str, Any] = {}
    if pixel_parts:
        encoder_inputs["pixel_values"] = _cat_padded(pixel_parts)  # [n_images, ...]
        if size_parts:
            encoder_inputs["image_sizes"] = torch.cat(size_parts)  # [n_images, 2]
    return TrainBatch(
        [s.id for s in samples], input_ids, attention_mask, loss_mask, encoder_inputs, [len(s.images) for s in samples],
        [s.response_start for s in samples],
    )


def _cat_padded(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along dim 0, zero-padding the other dims to the largest (LLaVA-NeXT patch counts)."""
    shape = [max(p.shape[d] for p in parts) for d in range(1, parts[0].dim())]
    padded = []
    for part in parts:
        if list(part.shape[1:]) != shape:
            grown = part.new_zeros((part.shape[0], *shape))
            grown[tuple(slice(0, s) for s in part.shape)] = part
            part = grown
        padded.append(part)
    return torch.cat(padded)
