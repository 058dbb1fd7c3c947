"""The drafter trainer: online distillation from a frozen target, driven by accelerate.

Each micro-step: draw the micro-batch (curriculum sampler), run the frozen target on it
(no grad: last-layer states, logits, projected image features), then the drafter through
its adapter - step 0 on the target's states plus uniform noise (with EAGLE-3 features:
the named layers' states fused by the drafter's own fc, trained with it), then `ttt_steps`
"training-time test" steps on its own predicted states shifted one position - and
    loss = sum_k decay**k * (w_ce * softCE_k + w_feat * SmoothL1_k) + aux losses.
The unrolled steps run inside ONE module forward (`DraftUnroll`) so DDP / FSDP /
DeepSpeed wrap it like any model. AdamW, gradient clipping, gradient accumulation and
mixed precision come from accelerate; `accelerate launch` runs it unchanged on CPU, one
or several GPUs and several nodes (checkpoints need a folder all nodes share).

Output folder:
    drafter/                      the final drafter (save_pretrained; load with KIND:PATH, e.g. specvlm:PATH)
    checkpoints/step-00000100/    state/ (accelerate: weights, optimizer, RNG), drafter/,
                                  trainer_state.json; written in a temp folder + os.replace
    checkpoints/latest            name of the newest complete checkpoint (atomic)
    metrics.jsonl                 one JSON object per logged step / evaluation
    bad_samples.jsonl             every bad sample: id, reason, action
    config.json                   the resolved config
Resuming (`resume: "latest"` or a folder) restores weights, optimizer, RNG, the step and
the sampler's counters: the run continues with the same data order and the same losses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_replace_dir, atomic_write_text
from ..errors import InputError, ModelLoadError
from .adapters import DrafterTrainingAdapter, StepContext, TeacherOutputs, build_adapter
from .config import SourceConfig, TrainConfig
from .data import (
    CurriculumSampler,
    DataReport,
    RawSample,
    TokenizedSample,
    collate,
    load_source,
    self_distill,
    tokenize_samples,
)
from ..core.features import select_features
from .losses import expected_tau, feature_loss, soft_cross_entropy, top1_agreement, uniform_noise

logger = logging.getLogger("vlmspec.training")

STATE_NAME = "trainer_state.json"
LATEST_NAME = "latest"
METRICS_NAME = "metrics.jsonl"


# ------------------------------------------------------------------ the unrolled step
class DraftUnroll(nn.Module):
    """Drafter steps of one micro-batch and their loss, as one forward (what accelerate wraps)."""

    def __init__(self, adapter: DrafterTrainingAdapter, config: TrainConfig) -> None:
        super().__init__()
        self.drafter = adapter.drafter  # registered: its parameters are this module's
        self._adapter = adapter
        self.loss_config = config.loss
        self.touch_all_parameters = False  # set when DDP wraps it (see forward)
        # Several processes: sum of a tensor over all of them (set by the Trainer). The CE / feature
        # means are then taken over the response positions of the whole global micro-batch, as one
        # process with the same global batch takes them (not a mean of per-process means).
        self.sum_over_processes = None
        self.num_processes = 1

    def forward(self, batch, teacher: TeacherOutputs, context: StepContext) -> dict:
        cfg = self.loss_config
        target_hidden = teacher.hidden[:, 1:]  # [B, T, H] what each position must predict
        target_logits = self._adapter.teacher_logits(teacher.logits[:, 1:])  # [B, T, V']
        mask = batch.loss_mask[:, 1:]  # [B, T] response positions
        states = teacher.hidden if teacher.features is None else teacher.features  # [B, L, F]
        features = self.drafter.fuse_features(states[:, :-1])  # [B, T, H] h_i (EAGLE-3: fused, trained here)
        if cfg.input_noise > 0:
            features = features + uniform_noise(
                features.shape, cfg.input_noise, context.generator, features.device, features.dtype
            )
        total = features.new_zeros(())
        parts: dict = {}
        for k in range(cfg.ttt_steps + 1):
            context.ttt_step = k
            out = self._adapter.compute(batch, teacher, features, context)
            draft_hidden, draft_logits = out["draft_hidden"], out["draft_logits"]  # [B, T, H], [B, T, V']
            step_mask = mask if out.get("loss_mask") is None else mask & out["loss_mask"].bool()  # [B, T]
            ce = soft_cross_entropy(draft_logits, target_logits, step_mask, cfg.ce_temperature)
            feat = feature_loss(draft_hidden, target_hidden, step_mask, cfg.smooth_l1_beta)
            if self.sum_over_processes is not None:  # local mean -> this process's share of the global mean
                local = step_mask.sum().to(torch.float32)
                total_positions = self.sum_over_processes(local.detach()).clamp_min(1.0)
                share = local * self.num_processes / total_positions  # DDP averages: sum_r share_r / W = 1
                ce, feat = ce * share, feat * share
            weight = cfg.ttt_decay**k
            step_loss = cfg.w_ce * ce + cfg.w_feat * feat
            for key, value in out.items():
                if key.startswith("aux_loss/"):
                    step_loss = step_loss + value
                    parts[f"{key}@{k}"] = value.detach()
                elif key.startswith("metric/"):  # [value, 1], or [0, 0] when not measured (NaN)
                    value = value.detach().to("cpu", torch.float64).reshape(())
                    measured = bool(torch.isfinite(value))
                    parts[f"{key}@{k}"] = torch.stack([value if measured else value.new_zeros(()),
                                                       value.new_tensor(float(measured))])
            total = total + weight * step_loss
            agree, counted = top1_agreement(draft_logits, target_logits, step_mask)
            suffix = "" if k == 0 else f"@{k}"
            parts[f"ce{suffix}"] = ce.detach()
            parts[f"feat{suffix}"] = feat.detach()
            parts[f"agree{suffix}"] = torch.tensor([agree, counted], dtype=torch.float64)
            if k < cfg.ttt_steps:  # next step: position i gets the prediction made at i - 1
                features = torch.cat([features[:, :1], draft_hidden[:, :-1].to(features.dtype)], dim=1)
        if self.touch_all_parameters:
            # DDP needs a gradient for every parameter on every process: a text-only batch never
            # reaches a vision module, and SpecVLM's top-1 gate leaves the other operators unused.
            total = total + sum(p.sum() for p in self._adapter.trainable_parameters()) * 0.0
        parts["loss"] = total
        return parts


# ------------------------------------------------------------------ results
@dataclass
class TrainResult:
    drafter_dir: Path
    steps: int
    history: list = field(default_factory=list)  # the metrics records of this process's run
    final_eval: dict | None = None


class Trainer:
    """`Trainer(config).train()`; or `setup()`, `evaluate_tau()`, `train()` step by step."""

    def __init__(self, config: TrainConfig, accelerator=None, target=None) -> None:
        if not isinstance(config, TrainConfig):
            raise InputError(f"Trainer needs a TrainConfig; got {type(config).__name__}.")
        self.config = config
        self._accelerator = accelerator
        self._target = target
        self.output_dir = Path(config.output_dir)
        self.history: list[dict] = []
        self._ready = False

    # ------------------------------------------------------------------ setup
    def setup(self) -> "Trainer":
        if self._ready:
            return self
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        cfg = self.config
        self.accelerator = self._accelerator or Accelerator(
            mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum
        )
        acc = self.accelerator
        launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if launched > 1 and acc.num_processes == 1:  # every process would train alone, into one output_dir
            raise InputError(
                f"Launched as {launched} processes (WORLD_SIZE) but accelerate set up a single-process run; "
                "without a GPU every process would train alone. On CPU set ACCELERATE_USE_CPU=1 (DDP over gloo): "
                "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N ... (note: `accelerate "
                "launch --cpu --num_processes N` starts ONE process unless given an mpirun hostfile)."
            )
        if acc.gradient_accumulation_steps != cfg.grad_accum:
            raise InputError(
                f"The Accelerator accumulates {acc.gradient_accumulation_steps} steps but the config says grad_accum="
                f"{cfg.grad_accum}; build it with Accelerator(gradient_accumulation_steps={cfg.grad_accum})."
            )
        set_seed(cfg.seed)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.target = self._target or _load_target(cfg, acc.device)
        self.target.model.requires_grad_(False)
        self.target.model.eval()
        target_dtype = next(self.target.model.parameters()).dtype
        if target_dtype != torch.float32 and cfg.mixed_precision == "no":
            raise InputError(
                f"The target is in {target_dtype}; the drafter trains in float32, so set mixed_precision to "
                '"bf16" (or "fp16"), or load the target in float32 (target_dtype: "float32").'
            )
        report_path = self.output_dir / "bad_samples.jsonl"
        if acc.is_main_process and report_path.exists():
            report_path.unlink()  # the data is rebuilt (and re-checked) by every run
        acc.wait_for_everyone()
        self.report = DataReport(path=report_path if acc.is_main_process else None)
        self._build_data()
        draft_vocab = self._draft_vocab()
        self.adapter = build_adapter(
            cfg.drafter, self.target, cfg.drafter_config, init_from=cfg.init_from, draft_vocab=draft_vocab,
            init_layer_from_target=cfg.init_layer_from_target, seed=cfg.seed, warm_start_from=cfg.warm_start_from,
        )
        drafter = self.adapter.drafter
        drafter.float().train()
        params = self.adapter.trainable_parameters()
        if not params:
            raise InputError(f"The {cfg.drafter} drafter has no trainable parameters.")
        plugin = getattr(acc.state, "deepspeed_plugin", None)
        if plugin is not None:  # no prepared DataLoader tells DeepSpeed the micro-batch size
            plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.batch_size
        optimizer = torch.optim.AdamW(
            params, lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay
        )
        unroll = DraftUnroll(self.adapter, cfg)
        if acc.num_processes > 1:
            unroll.num_processes = acc.num_processes
            unroll.sum_over_processes = lambda t: acc.reduce(t.to(acc.device), reduction="sum")
        self.unroll, self.optimizer = acc.prepare(unroll, optimizer)
        if isinstance(self.unroll, nn.parallel.DistributedDataParallel):
            self.unroll.module.touch_all_parameters = True
        self.step = 0
        self._saved_step = None
        if acc.is_main_process:
            atomic_write_text(self.output_dir / "config.json", cfg.to_json())
        self._resume()
        self._ready = True
        return self

    def _build_data(self) -> None:
        cfg, acc = self.config, self.accelerator
        data = cfg.data
        groups = [(source, load_source(source)) for source in data.sources]  # (source, its rows)
        text_groups = [(source, load_source(source)) for source in data.text_sources]
        raw: list[RawSample] = [s for _, rows in groups for s in rows]
        text_raw: list[RawSample] = [s for _, rows in text_groups for s in rows]
        _check_unique_ids(raw + text_raw)
        if data.self_distill.enabled:
            cache = Path(data.self_distill.cache_dir) if data.self_distill.cache_dir else self.output_dir / "self_distill"

            def distill(source_groups) -> list[RawSample]:
                """The target's answers, at each source's own temperature where it sets one, in the sources' order."""
                answered: dict[str, RawSample] = {}
                for temperature in dict.fromkeys(s.self_distill_temperature for s, _ in source_groups):
                    rows = [r for s, group in source_groups if s.self_distill_temperature == temperature for r in group]
                    settings = data.self_distill if temperature is None else \
                        dataclasses.replace(data.self_distill, temperature=float(temperature))
                    answered.update((r.id, r) for r in self_distill(
                        rows, self.target, cfg.target, settings, cache,
                        rank=acc.process_index, world_size=acc.num_processes, barrier=acc.wait_for_everyone,
                        progress=cfg.progress_bar and acc.is_local_main_process,
                    ))
                return [answered[r.id] for _, group in source_groups for r in group]

            raw = distill(groups)
            if text_raw:
                text_raw = distill(text_groups)
        samples = tokenize_samples(raw, self.target, data, self.report)
        text_samples = tokenize_samples(text_raw, self.target, data, self.report)
        global_batch = cfg.batch_size * acc.num_processes
        if data.curriculum.active:
            multimodal = [s for s in samples if s.has_images]
            text = [s for s in samples if not s.has_images] + text_samples
            if not data.text_sources:  # MSD stage 1 from the same rows, images dropped
                dropped = [r.without_images() for r in raw if r.images]
                text += tokenize_samples(dropped, self.target, data, self.report)
            self.pools = {"multimodal": multimodal, "text": text}
            self.sampler = CurriculumSampler(
                {k: len(v) for k, v in self.pools.items()}, global_batch, cfg.seed, data.curriculum
            )
        else:
            self.pools = {"all": samples + text_samples}
            self.sampler = CurriculumSampler({"all": len(self.pools["all"])}, global_batch, cfg.seed)
        logger.info("training samples: %s; bad samples: %s",
                    {k: len(v) for k, v in self.pools.items()}, self.report.summary())
        self.eval_samples = self._eval_samples()

    def _eval_samples(self) -> list[tuple[str, list, str]]:
        """(id, images, prompt) of the held-out prompts for tau."""
        cfg = self.config.eval
        if cfg.num_prompts == 0:
            return []
        source = cfg.source or SourceConfig(kind="synthetic", split="val", n=cfg.num_prompts, seed=self.config.seed)
        from ..images import load_image

        out = []
        for sample in load_source(source)[: cfg.num_prompts]:
            try:
                if sample.problem is not None or not sample.prompt.strip():
                    raise InputError(sample.problem or "empty prompt")
                images = [load_image(i) for i in sample.images]
            except InputError as exc:
                self.report.add(sample.id, f"evaluation prompt unusable: {exc}", "skipped")
                continue
            out.append((sample.id, images, sample.prompt))
        return out

    def _draft_vocab(self):
        size = self.config.draft_vocab_size
        if size is None or self.config.init_from or self.config.warm_start_from:  # the loaded drafter's own
            return None
        from ..drafters.eagle import frequent_tokens

        responses = [s.input_ids[s.response_start :] for pool in self.pools.values() for s in pool]
        return frequent_tokens(responses, size, include=self.target.eos_token_ids)

    # ------------------------------------------------------------------ teacher
    @torch.no_grad()
    def teacher(self, batch) -> TeacherOutputs:
        """Run the frozen target on the batch: states, logits and per-sample image features."""
        from ..target import image_spans

        model = self.target.model
        forward_inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        per_sample_features: list[list[torch.Tensor]] = [[] for _ in batch.ids]
        if batch.encoder_inputs:
            encoded = model.get_image_features(**batch.encoder_inputs, return_dict=True)
            features = list(encoded.pooler_output)  # per image: [n_image_tokens, H]
            forward_inputs["mm_encoder_outputs"] = {"image": encoded}
            cursor = 0
            for row, count in enumerate(batch.images_per_sample):
                per_sample_features[row] = features[cursor : cursor + count]
                cursor += count
        out = model(**forward_inputs, output_hidden_states=True, use_cache=False)
        spans = [
            image_spans(batch.input_ids[row], self.target.image_token_id, [f.shape[0] for f in feats])
            for row, feats in enumerate(per_sample_features)
        ]
        hidden = out.hidden_states[-1].float()  # [B, L, H]
        layers = getattr(self.adapter.drafter, "feature_layers", None)
        features = None if layers is None else select_features(out.hidden_states, layers).float()  # [B, L, nH]
        return TeacherOutputs(hidden, out.logits, per_sample_features, spans, features)

    # ------------------------------------------------------------------ training
    def _micro_batch(self, optimizer_step: int):
        acc, cfg = self.accelerator, self.config
        picks = self.sampler.draw(optimizer_step)
        mine = picks[acc.process_index * cfg.batch_size : (acc.process_index + 1) * cfg.batch_size]
        samples: list[TokenizedSample] = [self.pools[pool][index] for pool, index in mine]
        return collate(samples, self.target).to(acc.device)

    def _generator(self, step: int, micro: int) -> torch.Generator:
        key = f"{self.config.seed}:{step}:{micro}:{self.accelerator.process_index}".encode()
        generator = torch.Generator()
        generator.manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
        return generator

    def train(self) -> TrainResult:
        self.setup()
        cfg, acc = self.config, self.accelerator
        progress = None
        if cfg.progress_bar and acc.is_local_main_process:
            from tqdm.auto import tqdm

            progress = tqdm(total=cfg.max_steps, initial=self.step, desc=f"train {cfg.drafter}", unit="step")
        last_eval = None
        while self.step < cfg.max_steps:
            _fault_point("step", self.step + 1, acc.process_index)
            record = self._optimizer_step()
            self.step += 1
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                self._log(record)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{record['loss']:.4f}", agree=f"{record['top1']:.3f}")
            if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < cfg.max_steps:
                self.evaluate_tau(log=True)
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.max_steps:
                self.save_checkpoint()
        if progress is not None:
            progress.close()
        if self._saved_step != self.step:
            self.save_checkpoint()
        if cfg.eval.at_end and self.eval_samples:
            last_eval = self.evaluate_tau(log=True)
        drafter_dir = self.output_dir / "drafter"
        self._export_drafter(drafter_dir)
        self._shut_down_process_group()
        return TrainResult(drafter_dir, self.step, list(self.history), last_eval)

    def _shut_down_process_group(self) -> None:
        """End a multi-process run in order: every process reaches one last barrier, then each
        destroys its process group (`end_training`), unless the caller passed its own accelerator
        (then the group is the caller's). Left to interpreter exit, gloo's worker threads
        could be torn down while still joinable, and a process aborted ("terminate called without
        an active exception") after the run had finished and saved."""
        if self._accelerator is not None:
            return  # the caller's accelerator: its process group is the caller's to end
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()

    def _export_drafter(self, directory: Path) -> None:
        """Save the drafter in its own format (main process); FSDP shards are gathered first."""
        from accelerate.utils import DistributedType

        acc, cfg = self.accelerator, self.config
        if acc.distributed_type == DistributedType.FSDP:
            full = acc.get_state_dict(self.unroll)  # collective: every process takes part
            if acc.is_main_process:
                config = getattr(self.adapter.drafter, "config", None)  # init_from: the loaded drafter's config
                fields = config.to_dict() if config is not None else cfg.drafter_config
                copy = build_adapter(cfg.drafter, self.target, fields,
                                     draft_vocab=getattr(self.adapter.drafter, "draft_vocab", None))
                prefix = "drafter."
                copy.drafter.load_state_dict({k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)})
                copy.save_pretrained(directory)
        elif acc.is_main_process:
            self.adapter.save_pretrained(directory)
        acc.wait_for_everyone()

    def _optimizer_step(self) -> dict:
        cfg, acc = self.config, self.accelerator
        sums: dict[str, torch.Tensor] = {}
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.optim.lr_at(self.step, cfg.max_steps)
        share = self.sampler.share(self.step)
        started = time.perf_counter()
        grad_norm = None
        for micro in range(cfg.grad_accum):
            batch = self._micro_batch(self.step)
            teacher = self.teacher(batch)
            context = StepContext(
                optimizer_step=self.step, total_steps=cfg.max_steps, ttt_step=0,
                gumbel_temperature=cfg.loss.gumbel_at(self.step, cfg.max_steps),
                generator=self._generator(self.step, micro),
            )
            with acc.accumulate(self.unroll):
                parts = self.unroll(batch, teacher, context)
                acc.backward(parts["loss"])
                if acc.sync_gradients:
                    if cfg.optim.grad_clip > 0:
                        grad_norm = acc.clip_grad_norm_(self.unroll.parameters(), cfg.optim.grad_clip)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
            for key, value in parts.items():
                value = value.detach().to("cpu", torch.float64)
                sums[key] = sums[key] + value if key in sums else value
        if not acc.sync_gradients:
            raise RuntimeError("gradient accumulation fell out of step with the optimizer steps.")
        return self._record(sums, grad_norm, share, time.perf_counter() - started)

    def _record(self, sums: dict, grad_norm, share: float, seconds: float) -> dict:
        cfg, acc = self.config, self.accelerator
        counted_keys = sorted(k for k in sums if k.startswith(("agree", "metric/")))  # [sum, count] pairs
        scalar_keys = sorted(k for k in sums if k not in counted_keys)
        scalars = torch.stack([sums[k].reshape(()) / cfg.grad_accum for k in scalar_keys])  # [n] micro-step means
        counted = torch.stack([sums[k] for k in counted_keys])  # [m, 2] (agreeing / metric sum, counted)
        if acc.num_processes > 1:
            scalars = acc.reduce(scalars.to(acc.device), reduction="mean").cpu()
            counted = acc.reduce(counted.to(acc.device), reduction="sum").cpu()
        record: dict = {"step": self.step + 1}
        record.update(zip(scalar_keys, scalars.tolist()))
        for key, (total, count) in zip(counted_keys, counted.tolist()):
            if key.startswith("agree"):
                record["top1" + key[len("agree"):]] = total / count if count > 0 else float("nan")
            elif count > 0:  # a metric no micro-batch measured (e.g. no image) is left out
                record[key] = total / count
        record["tau_est"] = expected_tau(record.get("top1", 0.0), cfg.eval.draft_length)
        record["lr"] = cfg.optim.lr_at(self.step, cfg.max_steps)
        record["multimodal_share"] = share
        if grad_norm is not None:
            record["grad_norm"] = float(grad_norm)
        record["seconds"] = seconds
        record["w_ce"], record["w_feat"] = cfg.loss.w_ce, cfg.loss.w_feat
        for key in ("loss", "ce", "feat"):
            if key in record and not math.isfinite(record[key]):
                raise FloatingPointError(
                    f"Training diverged at step {self.step + 1}: {key} = {record[key]}. Lower optim.lr, keep "
                    "optim.grad_clip on, or use mixed_precision bf16 instead of fp16."
                )
        return record

    def _log(self, record: dict) -> None:
        self.history.append(record)
        if self.accelerator.is_main_process:
            _append_line(self.output_dir / METRICS_NAME, record)

    # ------------------------------------------------------------------ evaluation
    def evaluate_tau(self, log: bool = False) -> dict | None:
        """Mean tau (greedy speculative decoding with the current drafter) on the held-out prompts."""
        self.setup()
        acc = self.accelerator
        result = None
        if acc.is_main_process and self.eval_samples:
            from ..api import Pipeline
            from ..core.schedule import ScheduleConfig

            cfg = self.config.eval
            drafter = self.adapter.drafter
            drafter.eval()
            try:
                pipe = Pipeline(self.target, self.adapter.inference_drafter(), ScheduleConfig.parse(str(cfg.draft_length)))
                taus, tokens, forwards = [], 0, 0
                for _, images, prompt in self.eval_samples:
                    out = pipe.generate(images or None, prompt, max_new_tokens=cfg.max_new_tokens)
                    taus.append(out.metrics.tau)
                    tokens += out.metrics.new_tokens
                    forwards += out.metrics.target_forwards
            finally:
                drafter.train()
            result = {
                "step": self.step, "eval_tau": sum(taus) / len(taus), "eval_tau_pooled": tokens / max(forwards, 1),
                "eval_prompts": len(taus),
            }
            if log:
                self._log(result)
        acc.wait_for_everyone()
        return result

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """checkpoints/step-N: written into a temp folder, renamed into place, then `latest` updated."""
        acc = self.accelerator
        root = self.output_dir / "checkpoints"
        final = root / f"step-{self.step:08d}"
        staging = root / f".step-{self.step:08d}.tmp"
        if acc.is_main_process:
            root.mkdir(parents=True, exist_ok=True)
            if staging.exists():
                shutil.rmtree(staging)
        acc.wait_for_everyone()
        acc.save_state(str(staging / "state"), safe_serialization=True)
        _fault_point("checkpoint", self.step, acc.process_index)  # the staging folder is half written here
        self._export_drafter(staging / "drafter")
        if acc.is_main_process:
            state = {"step": self.step, "sampler": self.sampler.state_dict(), "config": self.config.to_dict(),
                     "num_processes": acc.num_processes}
            (staging / STATE_NAME).write_text(json.dumps(state, indent=2) + "\n")
            atomic_replace_dir(staging, final)  # same step saved before: replaced, `latest` never dangles long
            atomic_write_text(root / LATEST_NAME, final.name + "\n")
            self._prune(root, keep=final.name)
            logger.info("checkpoint saved: %s", final)
        acc.wait_for_everyone()
        self._saved_step = self.step
        return final

    def _prune(self, root: Path, keep: str) -> None:
        done = sorted(p for p in root.glob("step-*") if p.is_dir())
        for old in done[: max(0, len(done) - self.config.keep_checkpoints)]:
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)
        for stale in root.glob(".step-*.tmp"):  # staging folders of a run killed mid-checkpoint
            shutil.rmtree(stale, ignore_errors=True)

    def _resume(self) -> None:
        cfg, acc = self.config, self.accelerator
        if cfg.resume is None:
            return
        root = self.output_dir / "checkpoints"
        if cfg.resume == "latest":
            pointer = root / LATEST_NAME
            if not pointer.is_file():
                logger.info("resume=latest: no checkpoint in %s yet, starting from step 0", root)
                return
            folder = root / pointer.read_text().strip()
        else:
            folder = Path(cfg.resume)
        state_path = folder / STATE_NAME
        if not state_path.is_file():
            raise ModelLoadError(
                f"{folder} is not a complete training checkpoint (no {STATE_NAME}); pass a checkpoints/step-N "
                'folder or resume: "latest".'
            )
        state = json.loads(state_path.read_text())
        saved, current = state.get("config", {}), json.loads(cfg.to_json())
        changed = [k for k in ("drafter", "drafter_config", "grad_accum", "seed", "data", "loss", "optim")
                   if k in saved and saved[k] != current[k]]
        if "num_processes" in state and "batch_size" in saved:  # the same global batch repeats the run
            before, now = saved["batch_size"] * state["num_processes"], cfg.batch_size * acc.num_processes
            if before != now:
                changed.append(f"global batch (batch_size x processes: {saved['batch_size']} x "
                               f"{state['num_processes']} -> {cfg.batch_size} x {acc.num_processes})")
        elif saved.get("batch_size", cfg.batch_size) != cfg.batch_size:
            changed.append("batch_size")
        if changed:
            logger.warning("resuming from %s with changed %s: the run will not repeat the interrupted one exactly",
                           folder, ", ".join(changed))
        acc.load_state(str(folder / "state"))
        self.sampler.load_state_dict(state["sampler"])
        self.step = int(state["step"])
        self._saved_step = self.step
        if acc.is_main_process:
            _truncate_metrics(self.output_dir / METRICS_NAME, self.step)
        acc.wait_for_everyone()
        logger.info("resumed from %s at step %d", folder, self.step)


# ------------------------------------------------------------------ helpers
def _fault_point(where: str, step: int, rank: int) -> None:
    """Test-only crash injection: VLMSPEC_FAULT_STEP=N (VLMSPEC_FAULT_RANK, default 0;
    VLMSPEC_FAULT_AT "step" (default: before optimizer step N) or "checkpoint" (while checkpoint
    N is being written)) ends that process at once with exit status 17, like a kill: no cleanup."""
    wanted = os.environ.get("VLMSPEC_FAULT_STEP")
    if not wanted:
        return
    if (os.environ.get("VLMSPEC_FAULT_AT", "step") == where and int(wanted) == step
            and int(os.environ.get("VLMSPEC_FAULT_RANK", "0")) == rank):
        logger.error("VLMSPEC_FAULT_STEP: injected crash of process %d at %s %d", rank, where, step)
        os._exit(17)


def _load_target(config: TrainConfig, device):
    from ..api import _load_target as load_target
    from ..target import TargetConfig

    name = None if config.target == "vlmspec-default" else config.target
    try:
        return load_target(name, TargetConfig(device=str(device), dtype=config.target_dtype))
    except ImportError as exc:
        raise ModelLoadError(
            f"The default model is not available in this vlmspec ({exc}); pass target: a LLaVA checkpoint folder."
        ) from None


def _check_unique_ids(samples: list[RawSample]) -> None:
    seen: set[str] = set()
    for sample in samples:
        if sample.id in seen:
            raise InputError(
                f"Sample id {sample.id!r} occurs twice in the training sources; ids must be unique (they name bad "
                "samples and self-distillation cache entries)."
            )
        seen.add(sample.id)


def _append_line(path: Path, record: dict) -> None:
    """One JSON line per write (a single O_APPEND write), flushed to disk."""
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _truncate_metrics(path: Path, step: int) -> None:
    """After resuming at `step`, drop the records a killed run logged past it (atomically)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by the interruption
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def train(config: TrainConfig) -> TrainResult:
    """Train a drafter as `config` says; returns where it was saved and the metrics."""
    return Trainer(config).train()
