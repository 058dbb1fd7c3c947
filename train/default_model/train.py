"""Train the default model's vision tower, projector and LM deltas on synthetic scenes.

Two stages, fixed seeds, progress bars, on CPU in well under 90 minutes (2 cores):

1. Vision pre-training (no language model): a small SigLIP-style ViT learns the scene
   labels (shape / colour / size per 3x3 cell, shape count, word or number, text colour,
   chart type and per-bar values) through linear heads on its 16 output tokens.
2. Alignment through the language model, LLaVA-style: the real SmolLM2-135M-Instruct
   stays frozen except rank-8 LoRA deltas; the ViT (small LR), a fresh MLP projector and
   the deltas learn to answer the short questions and to write the long descriptions.
   The loss is cross-entropy on the answer tokens only (the LM head runs on those alone).

Then the held-out test split is scored (exact match per question type, and the same
model with a blank image as the chance line) and the weights are exported (fp16
safetensors) to `vlmspec/models/default_weights/`, with the numbers in a JSON beside them.

    python train/default_model/train.py                 # full recipe
    python train/default_model/train.py --quick         # a minutes-long smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vlmspec.data.synthetic import (
    CELL_NAMES,
    COLORS,
    DESCRIBE_PROMPT,
    SHAPE_KINDS,
    SIZES,
    WORDS,
    generate_scene,
    split_seed,
)
from vlmspec.models.default import WEIGHTS_FILE, DefaultModelConfig, assemble, lora_delta_name
from vlmspec.models.smollm import load_language_model

COLOR_NAMES = sorted(COLORS)
SIZE_NAMES = list(SIZES)
CELLS = sorted(CELL_NAMES)
TEXT_CLASSES = ["none"] + list(WORDS) + [str(i) for i in range(100)]


@dataclass(frozen=True)
class RecipeConfig:
    seed: int = 0
    train_scenes: int = 16000
    vision_steps: int = 2000
    vision_batch: int = 64
    vision_lr: float = 1e-3
    align_steps: int = 500
    qa_batch: int = 8
    description_batch: int = 4
    description_every: int = 4  # every 4th alignment step is a description batch
    projector_lr: float = 1e-3
    tower_lr: float = 1e-4
    lora_lr: float = 1e-3
    test_scenes: int = 100
    description_eval_scenes: int = 10
    threads: int = 2
    align_minutes: float = 0.0  # > 0: cap stage 2 to this wall time (steps fixed after 5 timed steps)
    description_max_tokens: int = 140
    init_from: str = ""  # continue from exported weights (skips stage 1)
    stage_seed: int = 0  # > 0: a different example order / LoRA init for a continuation
    init_vision_only: bool = False  # with init_from: take only the vision tower; fresh projector + LoRA


# ------------------------------------------------------------------------------ data
def scene_labels(scene) -> dict[str, torch.Tensor]:
    """Classification targets of stage 1 (index 0 = none everywhere)."""
    kinds = ("shapes", "text", "chart")
    cell_shape = torch.zeros(9, dtype=torch.long)
    cell_color = torch.zeros(9, dtype=torch.long)
    cell_size = torch.zeros(9, dtype=torch.long)
    for sh in scene.shapes:
        i = CELLS.index(tuple(sh.cell))
        cell_shape[i] = SHAPE_KINDS.index(sh.kind) + 1
        cell_color[i] = COLOR_NAMES.index(sh.color) + 1
        cell_size[i] = SIZE_NAMES.index(sh.size) + 1
    text_id, text_color = 0, 0
    if scene.text is not None:
        text_id = TEXT_CLASSES.index(scene.text.text)
        text_color = COLOR_NAMES.index(scene.text.color) + 1
    chart_type, values = 0, torch.zeros(5, dtype=torch.long)
    if scene.chart is not None:
        chart_type = 1 + (scene.chart.chart == "line")
        for j, v in enumerate(scene.chart.values):
            values[j] = v
    return {
        "kind": torch.tensor(kinds.index(scene.kind)),
        "cell_shape": cell_shape, "cell_color": cell_color, "cell_size": cell_size,
        "count": torch.tensor(len(scene.shapes)),
        "text": torch.tensor(text_id), "text_color": torch.tensor(text_color),
        "chart_type": torch.tensor(chart_type), "chart_values": values,
    }


HEADS = {  # name -> (slots, classes)
    "kind": (1, 3), "cell_shape": (9, 6), "cell_color": (9, 8), "cell_size": (9, 4), "count": (1, 6),
    "text": (1, len(TEXT_CLASSES)), "text_color": (1, 8), "chart_type": (1, 3), "chart_values": (5, 21),
}


def render_pool(split: str, n: int, seed: int, image_size: int) -> tuple[torch.Tensor, list]:
    """n scenes of a split: images as uint8 [n, size, size, 3] (resized like the processor) + scenes."""
    images = torch.empty((n, image_size, image_size, 3), dtype=torch.uint8)
    scenes = []
    for i in tqdm(range(n), desc=f"render {split}", mininterval=5):
        scene = generate_scene(split_seed(split, i, seed))
        resized = scene.image.resize((image_size, image_size), resample=3)  # bicubic, as SigLIP's processor
        images[i] = torch.from_numpy(np.array(resized))
        scenes.append(scene)
    return images, scenes


def to_pixels(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [b, h, w, 3] -> normalised float [b, 3, h, w] (mean 0.5, std 0.5 as the processor)."""
    return images_uint8.permute(0, 3, 1, 2).float().div(255.0).sub(0.5).div(0.5)


# --------------------------------------------------------------------------- stage 1
def train_vision(model, images, scenes, cfg: RecipeConfig, mcfg: DefaultModelConfig) -> dict:
    tower = model.model.vision_tower
    labels = [scene_labels(s) for s in scenes]
    stacked = {k: torch.stack([lab[k] for lab in labels]) for k in HEADS}
    features = mcfg.image_tokens * mcfg.vision_hidden
    heads = torch.nn.ModuleDict({k: torch.nn.Linear(features, s * c) for k, (s, c) in HEADS.items()})
    norm = torch.nn.LayerNorm(features)
    params = list(tower.parameters()) + list(heads.parameters()) + list(norm.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.vision_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.vision_lr, total_steps=cfg.vision_steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    tower.train()
    log = {}
    bar = tqdm(range(cfg.vision_steps), desc="stage 1: vision", mininterval=5)
    for step in bar:
        idx = torch.randint(len(scenes), (cfg.vision_batch,), generator=gen)
        tokens = tower(to_pixels(images[idx]), output_hidden_states=True).hidden_states[-1]  # [b, 16, D]
        flat = norm(tokens.flatten(1))
        loss = 0.0
        for name, (slots, classes) in HEADS.items():
            logits = heads[name](flat).view(-1, slots, classes)
            target = stacked[name][idx].view(-1, slots)
            loss = loss + F.cross_entropy(logits.flatten(0, 1), target.flatten())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
            log = {"step": step, "loss": loss.item()}
    tower.eval()
    return log


# --------------------------------------------------------------------------- stage 2
class LoRALinear(torch.nn.Module):
    """y = W x + (B A x) * scale, W frozen; A [r, in], B [out, r] (B starts at zero)."""

    def __init__(self, base: torch.nn.Linear, rank: int, generator: torch.Generator) -> None:
        super().__init__()
        self.base = base
        self.A = torch.nn.Parameter(torch.randn(rank, base.in_features, generator=generator) / math.sqrt(base.in_features))
        self.B = torch.nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x):
        return self.base(x) + F.linear(F.linear(x, self.A), self.B)


def add_lora(language_model, mcfg: DefaultModelConfig, seed: int) -> dict[str, LoRALinear]:
    gen = torch.Generator().manual_seed(seed)
    wrapped = {}
    for name, module in list(language_model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in mcfg.lora_targets and isinstance(child, torch.nn.Linear):
                lora = LoRALinear(child, mcfg.lora_rank, gen)
                setattr(module, child_name, lora)
                wrapped[f"{name}.{child_name}" if name else child_name] = lora
    return wrapped


def encode_example(processor, tokenizer, prompt: str, answer: str) -> tuple[list[int], int]:
    """Token ids of prompt + answer + <|im_end|> (one image placeholder), and where the answer starts."""
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}], add_generation_prompt=True
    )
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
    return prompt_ids + answer_ids, len(prompt_ids)


def expand_image_tokens(text_ids: list[int], image_token_id: int, count: int) -> list[int]:
    out = []
    for t in text_ids:
        out.extend([t] * count if t == image_token_id else [t])
    return out


def make_batch(examples, pad_id: int):
    """examples: (ids, answer_start, image_index). Right-padded ids, mask, labels (-100 off-answer)."""
    width = max(len(ids) for ids, _, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, (seq, start, _) in enumerate(examples):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        labels[row, start : len(seq)] = torch.tensor(seq[start:])
    return ids, mask, labels


def answer_loss(model, ids, mask, labels, pixel_values) -> torch.Tensor:
    out = model.model(input_ids=ids, attention_mask=mask, pixel_values=pixel_values)
    hidden = out.last_hidden_state[:, :-1]  # [b, t - 1, H]: position t predicts token t + 1
    targets = labels[:, 1:]
    chosen = targets != -100
    logits = model.lm_head(hidden[chosen])  # [answer tokens, vocab]
    return F.cross_entropy(logits, targets[chosen])


@torch.no_grad()
def standardise_projector(model, images, n: int = 256) -> None:
    """Data-dependent projector init: the ViT's residual features have a norm of ~100 while
    SmolLM2's token embeddings have ~3; unscaled, the image tokens drown the prompt and the
    LM ignores them. Fold per-dimension standardisation of the vision features into
    linear_1, then scale linear_2 so projected tokens match the embedding norm."""
    proj = model.model.multi_modal_projector
    pixels = to_pixels(images[:n])
    feats = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-1].flatten(0, 1)  # [n*16, D]
    mu, sigma = feats.mean(0), feats.std(0) + 1e-4  # [D]
    w1 = proj.linear_1.weight / sigma  # [H, D]: acts on (x - mu) / sigma
    proj.linear_1.bias.sub_(w1 @ mu)
    proj.linear_1.weight.copy_(w1)
    out = proj(feats)  # [n*16, H]
    target = model.get_input_embeddings().weight.norm(dim=-1).mean()
    scale = target / out.norm(dim=-1).mean()
    proj.linear_2.weight.mul_(scale)
    proj.linear_2.bias.mul_(scale)
    tqdm.write(f"projector standardised: vision feature norm {feats.norm(dim=-1).mean():.1f} -> "
               f"projected norm {proj(feats).norm(dim=-1).mean():.2f} (text embeddings {target:.2f})")


def train_alignment(model, processor, images, scenes, cfg: RecipeConfig, mcfg: DefaultModelConfig,
                    init_state: dict | None = None) -> list[dict]:
    tokenizer = processor.tokenizer
    image_token_id = model.config.image_token_id
    for p in model.parameters():
        p.requires_grad_(False)
    loras = add_lora(model.model.language_model, mcfg, cfg.seed)
    if init_state is None:
        standardise_projector(model, images)
    if init_state:
        with torch.no_grad():
            for name, lora in loras.items():
                a_name, b_name = lora_delta_name(name)
                lora.A.copy_(init_state[a_name].float())
                lora.B.copy_(init_state[b_name].float())
    groups = [
        {"params": list(model.model.multi_modal_projector.parameters()), "lr": cfg.projector_lr},
        {"params": list(model.model.vision_tower.parameters()), "lr": cfg.tower_lr},
        {"params": [p for m in loras.values() for p in (m.A, m.B)], "lr": cfg.lora_lr},
    ]
    for group in groups:
        for p in group["params"]:
            p.requires_grad_(True)
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    warmup = 30
    total = [cfg.align_steps]  # may shrink once to fit cfg.align_minutes
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total[0]) / total[0]))
    )
    rng = random.Random(cfg.seed + 7919 * cfg.stage_seed)
    cache: dict[tuple[str, str], tuple[list[int], int]] = {}

    def example(i: int, prompt: str, answer: str):
        key = (prompt, answer)
        if key not in cache:
            ids, start = encode_example(processor, tokenizer, prompt, answer)
            cache[key] = (expand_image_tokens(ids, image_token_id, mcfg.image_tokens), start + mcfg.image_tokens - 1)
        ids, start = cache[key]
        return ids, start, i

    model.train()
    log = []
    bar = tqdm(range(cfg.align_steps), desc="stage 2: align", mininterval=10)
    t0 = time.time()
    for step in bar:
        if step == 5 and cfg.align_minutes > 0:
            per_step = (time.time() - t0) / 5
            fit = int(cfg.align_minutes * 60 / per_step)
            if fit < total[0]:
                total[0] = max(fit, 20)
                tqdm.write(f"stage 2: {per_step:.1f} s/step -> {total[0]} steps to fit {cfg.align_minutes} min")
        if step >= total[0]:
            break
        describe = step % cfg.description_every == cfg.description_every - 1
        batch = []
        for _ in range(cfg.description_batch if describe else cfg.qa_batch):
            i = rng.randrange(len(scenes))
            if describe:
                batch.append(example(i, DESCRIBE_PROMPT, scenes[i].description))
            else:
                _, question, answer = rng.choice(scenes[i].questions)
                batch.append(example(i, question, answer))
        ids, mask, labels = make_batch(batch, tokenizer.pad_token_id)
        pixels = to_pixels(images[torch.tensor([b[2] for b in batch])])
        loss = answer_loss(model, ids, mask, labels, pixels)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step()
        sched.step()
        log.append({"step": step, "loss": round(loss.item(), 4), "describe": describe})
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return loras, log


# ------------------------------------------------------------------------ evaluation
def normalise(answer: str) -> str:
    return answer.strip().strip(".").strip().lower()


@torch.inference_mode()
def evaluate(model, processor, scenes, blank: bool, batch_size: int = 32) -> dict:
    tokenizer = processor.tokenizer
    items = [(s, qtype, q, a) for s in scenes for qtype, q, a in s.questions]
    correct: dict[str, list[int]] = {}
    for start in tqdm(range(0, len(items), batch_size), desc=f"eval {'blank' if blank else 'image'}", mininterval=10):
        chunk = items[start : start + batch_size]
        texts = [processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}], add_generation_prompt=True
        ) for _, _, q, _ in chunk]
        images = [
            (s.image if not blank else s.image.point(lambda _: 200)) for s, _, _, _ in chunk
        ]
        inputs = processor(images=images, text=texts, return_tensors="pt", padding=True, padding_side="left")
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        answers = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        for (_, qtype, _, truth), got in zip(chunk, answers):
            correct.setdefault(qtype, []).append(int(normalise(got) == normalise(truth)))
    per_type = {k: sum(v) / len(v) for k, v in sorted(correct.items())}
    total = [x for v in correct.values() for x in v]
    return {"overall": sum(total) / len(total), "questions": len(total), "per_type": per_type,
            "per_type_count": {k: len(v) for k, v in sorted(correct.items())}}


@torch.inference_mode()
def describe_check(model, processor, scenes, max_new_tokens: int = 140) -> dict:
    """Share of each scene's shapes whose kind and colour the generated description names."""
    named, total, samples = 0, 0, []
    for s in tqdm(scenes, desc="descriptions", mininterval=10):
        text = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": DESCRIBE_PROMPT}]}],
            add_generation_prompt=True,
        )
        inputs = processor(images=s.image, text=text, return_tensors="pt")
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        description = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        for sh in s.shapes:
            total += 1
            named += int(f"{sh.color} {sh.kind}" in description)
        if len(samples) < 3:
            samples.append({"reference": s.description, "generated": description})
    return {"shapes_named_with_colour": named / max(total, 1), "shapes": total, "samples": samples}


# ---------------------------------------------------------------------------- export
def export(model, loras, mcfg: DefaultModelConfig, report: dict, path: Path) -> None:
    from safetensors.torch import save_file

    state = {}
    for name, tensor in model.state_dict().items():
        if name.startswith(("model.vision_tower.", "model.multi_modal_projector.")):
            state[name] = tensor.detach().to(torch.float16).contiguous()
    for name, lora in loras.items():
        a_name, b_name = lora_delta_name(name)
        state[a_name] = lora.A.detach().to(torch.float16).contiguous()
        state[b_name] = lora.B.detach().to(torch.float16).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        tmp = handle.name
    save_file(state, tmp, metadata={"format": "pt"})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    meta = {"model_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(mcfg).items()}, **report}
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(meta, handle, indent=2)
    os.chmod(handle.name, 0o644)
    os.replace(handle.name, path.with_suffix(".json"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (not for shipping)")
    parser.add_argument("--align-steps", type=int, default=None)
    parser.add_argument("--vision-steps", type=int, default=None)
    parser.add_argument("--train-scenes", type=int, default=None)
    parser.add_argument("--test-scenes", type=int, default=None)
    parser.add_argument("--description-eval-scenes", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 is faster on a shared 2-core box)")
    parser.add_argument("--align-minutes", type=float, default=None, help="cap stage 2 wall time")
    parser.add_argument("--init-from", default=None, help="exported weights to continue stage 2 from")
    parser.add_argument("--stage-seed", type=int, default=None)
    parser.add_argument("--init-vision-only", action="store_true", default=None)
    parser.add_argument("--description-every", type=int, default=None)
    parser.add_argument("--tower-lr", type=float, default=None)
    parser.add_argument("--out", default=str(WEIGHTS_FILE))
    args = parser.parse_args(argv)
    cfg = RecipeConfig()
    if args.quick:
        cfg = RecipeConfig(train_scenes=300, vision_steps=20, align_steps=8, test_scenes=8, description_eval_scenes=2)
    overrides = {k: getattr(args, k) for k in ("align_steps", "vision_steps", "train_scenes", "test_scenes",
                                                 "description_eval_scenes", "align_minutes", "threads", "init_from",
                                                 "stage_seed", "description_every", "tower_lr", "init_vision_only")}
    cfg = RecipeConfig(**{**asdict(cfg), **{k: v for k, v in overrides.items() if v is not None}})
    mcfg = DefaultModelConfig()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    started = time.time()

    lm, tokenizer = load_language_model()
    model, processor = assemble(lm, tokenizer, mcfg, seed=cfg.seed)
    del lm
    images, scenes = render_pool("train", cfg.train_scenes, cfg.seed, mcfg.image_size)
    init_state = None
    if cfg.init_from:
        from safetensors.torch import load_file

        init_state = load_file(cfg.init_from)
        prefix = "model.vision_tower." if cfg.init_vision_only else "model."
        trained = {k: v.float() for k, v in init_state.items() if k.startswith(prefix)}
        model.load_state_dict(trained, strict=False)
        if cfg.init_vision_only:
            init_state = None
        stage1 = {"skipped": f"initialised from {cfg.init_from}"}
    else:
        stage1 = train_vision(model, images, scenes, cfg, mcfg)
    t1 = time.time()
    loras, stage2 = train_alignment(model, processor, images, scenes, cfg, mcfg, init_state)
    t2 = time.time()
    steps_done = len(stage2)
    export(model, loras, mcfg, {"recipe": asdict(cfg), "align_steps_done": steps_done, "status": "trained, not yet evaluated"},
           Path(args.out))  # checkpoint: the weights exist even if the evaluation is cut short
    test_scenes = [generate_scene(split_seed("test", i, cfg.seed)) for i in range(cfg.test_scenes)]
    with_image = evaluate(model, processor, test_scenes, blank=False)
    blank = evaluate(model, processor, test_scenes, blank=True)
    shape_scenes = [s for s in test_scenes if s.kind == "shapes"][: cfg.description_eval_scenes]
    descriptions = describe_check(model, processor, shape_scenes, cfg.description_max_tokens)
    report = {
        "recipe": asdict(cfg),
        "minutes": {"stage1": round((t1 - started) / 60, 1), "stage2": round((t2 - t1) / 60, 1),
                    "total": round((time.time() - started) / 60, 1)},
        "align_steps_done": steps_done,
        "stage1_last": stage1,
        "stage2_last_losses": stage2[-5:],
        "test_exact_match": with_image,
        "test_exact_match_blank_image": blank,
        "descriptions": descriptions,
    }
    export(model, loras, mcfg, report, Path(args.out))
    print(json.dumps({k: report[k] for k in ("minutes", "test_exact_match", "test_exact_match_blank_image")}, indent=2))
    print(json.dumps(descriptions, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
