"""Held-out checks of the default model as a small VLM (the card's "what it must show").

Everything here is measured on data the recipe never trains on:

* open prompts: ``answers.HELDOUT_PROMPTS`` wordings on test-split scenes (classic and
  varied style): answer length in tokens per style and the share of named shapes / colours
  that are right (``answers.fact_check`` against the scene spec);
* text-only instructions: ``instructions.HELDOUT_INSTRUCTIONS`` (held-out templates and
  topics); the model's answers against the base SmolLM2-135M-Instruct's (ROUGE-L, length
  ratio, and "on topic" = the answer names the instruction's topic word or overlaps the
  base answer with ROUGE-L >= 0.2);
* wording variety: distinct / all 4-grams over 50 held-out descriptions (50 test-split scenes,
  held-out describe wordings), this model against earlier releases (``--baseline DIR``, repeatable)
  on the very same (image, prompt) items; also over each description's first 40 words, since a
  ratio of distinct n-grams rises as texts get shorter;
* plain single-shape scenes drawn with matplotlib (a renderer the generator never uses):
  colour and shape questions worded like a user would ask them;
* held-out photographs: no invented digits or quoted text, and it says "photo".

    python train/default_model/check.py --model DIR [--baseline DIR_OF_PREVIOUS ...] [--out report.json]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import re
import statistics
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from vlmspec.atomic import atomic_write_json
from vlmspec.data import answers, instructions
from vlmspec.data.synthetic import COLORS, SHAPE_KINDS, generate_scene, split_seed
from vlmspec.evaluation.metrics import rouge_l

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replay import base_answers  # noqa: E402

LONG_STYLES = ("describe", "list", "chart")  # the "describe / list / explain" prompts of the bar


def load(model_dir: str):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    return model, AutoProcessor.from_pretrained(model_dir)


@torch.inference_mode()
def chat(model, processor, items: list[tuple[object, str]], max_new_tokens: int, batch: int = 16,
         desc: str = "generate") -> list[tuple[str, int]]:
    """Greedy answers (text, token count) to (image or None, prompt) items, batched, left-padded."""
    out: list[tuple[str, int]] = []
    tok = processor.tokenizer
    for start in tqdm(range(0, len(items), batch), desc=desc, mininterval=10):
        chunk = items[start : start + batch]
        groups: dict[bool, list[int]] = {True: [], False: []}
        for i, (image, _) in enumerate(chunk):
            groups[image is not None].append(i)
        answers_ = [None] * len(chunk)
        for has_image, rows in groups.items():
            if not rows:
                continue
            texts = [processor.apply_chat_template([{"role": "user", "content": (
                [{"type": "image"}] if has_image else []) + [{"type": "text", "text": chunk[i][1]}]}],
                add_generation_prompt=True) for i in rows]
            kwargs = {"images": [chunk[i][0] for i in rows]} if has_image else {}
            inputs = processor(text=texts, return_tensors="pt", padding=True, padding_side="left", **kwargs)
            gen = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            for i, row in zip(rows, gen[:, inputs["input_ids"].shape[1] :].tolist()):
                row = [t for t in row if t != tok.pad_token_id]
                answers_[i] = (tok.decode(row, skip_special_tokens=True).strip(), len(row))
        out.extend(answers_)
    return out


def heldout_scene(i: int):
    """Test-split scene ``i``, classic and varied style alternating (what every check here reads)."""
    return generate_scene(split_seed("test", i), style="varied" if i % 2 else "classic")


def open_prompts(model, processor, n_scenes: int) -> dict:
    rng = random.Random(1)
    scenes = [heldout_scene(i) for i in range(n_scenes)]
    scenes = [s for s in scenes if s.kind != "photo"]
    items, meta = [], []
    for s in scenes:
        for style in ("describe", "list", "count", "compare", "locate", "chart", "story"):
            if style == "chart" and s.kind != "chart":
                continue
            meta.append((s, style))
            items.append((s.image, rng.choice(answers.HELDOUT_PROMPTS[style])))
    got = chat(model, processor, items, 160, desc="held-out open prompts")
    per_style: dict[str, list[int]] = {}
    mentions = right = right_kc = named = shapes = 0
    for (s, style), (text, n) in zip(meta, got):
        per_style.setdefault(style, []).append(n)
        fc = answers.fact_check(text, s)
        mentions, right, right_kc = mentions + fc["mentions"], right + fc["right"], right_kc + fc["right_kind_colour"]
        named, shapes = named + fc["shapes_named"], shapes + fc["shapes_in_scene"]
    long = [n for st in LONG_STYLES for n in per_style.get(st, [])]
    return {
        "prompts": len(items),
        "median_tokens_describe_list_explain": statistics.median(long),
        "median_tokens_per_style": {k: statistics.median(v) for k, v in sorted(per_style.items())},
        "named_facts_right": round(right / max(mentions, 1), 4), "named_facts": mentions,  # sizes checked too
        "named_shapes_colours_right": round(right_kc / max(mentions, 1), 4),  # the share: kind + colour
        "scene_shapes_named": round(named / max(shapes, 1), 4),
        "samples": [{"prompt": p, "answer": a[0]} for (_, p), a in list(zip(items, got))[:6]],
    }


def variety_items(n: int = 50) -> list[tuple[object, str]]:
    """The variety check's (image, held-out describe prompt) items: the first ``n`` non-photo test scenes."""
    rng = random.Random(1)
    items = []
    i = 0
    while len(items) < n:
        s = heldout_scene(i)
        i += 1
        if s.kind != "photo":
            items.append((s.image, rng.choice(answers.HELDOUT_PROMPTS["describe"])))
    return items


def variety(model, processor, items, desc: str) -> dict:
    got = chat(model, processor, items, 160, desc=desc)
    texts = [t for t, _ in got]
    return {"distinct_4gram_ratio": round(answers.distinct_ngram_ratio(texts), 4),
            "distinct_4gram_ratio_first_40_words": round(answers.distinct_ngram_ratio(
                [" ".join(t.split()[:40]) for t in texts]), 4),
            "descriptions": len(texts), "median_tokens": statistics.median(n for _, n in got)}


def text_only(model, processor, base_model, n: int) -> dict:
    prompts = list(instructions.HELDOUT_INSTRUCTIONS[:n])
    topics = list(instructions.HELDOUT_TOPICS[:n])
    base = base_answers(base_model, processor.tokenizer, prompts, tag="heldout", batch_size=16, max_new_tokens=160)
    got = chat(model, processor, [(None, p) for p in prompts], 160, desc="held-out instructions")
    tok = processor.tokenizer
    rouge, ratios, on_topic = [], [], []
    for b, (text, n_tokens), topic in zip(base, got, topics):
        r = rouge_l(text, [b["answer"]])
        rouge.append(r)
        ratios.append(n_tokens / max(len(tok(b["answer"])["input_ids"]), 1))
        words = [w for w in re.findall(r"[a-z]+", topic.lower()) if len(w) > 3] or [topic.lower()]
        on_topic.append(any(w in text.lower() for w in words) or r >= 0.2)
    return {"instructions": len(prompts), "rouge_l_vs_base_mean": round(statistics.mean(rouge), 4),
            "length_ratio_median": round(statistics.median(ratios), 3), "on_topic": round(sum(on_topic) / len(on_topic), 4),
            "median_tokens": statistics.median(n for _, n in got),
            "samples": [{"instruction": p, "base": b["answer"][:300], "model": a[0][:300]}
                        for p, b, a in list(zip(prompts, base, got))[:4]]}


def matplotlib_shape(kind: str, colour: str, seed: int):
    """One big shape of one colour on white, drawn with matplotlib patches (not the generator)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import patches
    from PIL import Image

    rng = random.Random(seed)
    pure = {"red": "#ff0000", "green": "#008000", "blue": "#0000ff", "yellow": "#ffd700", "orange": "#ffa500",
            "purple": "#800080", "black": "#000000"}[colour]
    fig = plt.figure(figsize=(rng.choice((2.5, 3.0, 3.5)), 3.0), dpi=80)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 1), ax.set_ylim(0, 1), ax.axis("off")
    r = rng.uniform(0.22, 0.38)
    c = (0.5 + rng.uniform(-0.05, 0.05), 0.5 + rng.uniform(-0.05, 0.05))
    if kind == "circle":
        patch = patches.Circle(c, r, color=pure)
    elif kind == "square":
        patch = patches.Rectangle((c[0] - r, c[1] - r), 2 * r, 2 * r, angle=0, color=pure)
    elif kind == "star":
        radii = [r if k % 2 == 0 else 0.45 * r for k in range(10)]
        pts = [(c[0] + rr * math.sin(k * math.pi / 5), c[1] + rr * math.cos(k * math.pi / 5)) for k, rr in enumerate(radii)]
        patch = patches.Polygon(pts, color=pure)
    else:
        patch = patches.RegularPolygon(c, {"triangle": 3, "hexagon": 6}[kind], radius=r, color=pure)
    ax.add_patch(patch)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    plt.close(fig)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def plain_shapes(model, processor) -> dict:
    items, truth = [], []
    seed = 0
    for kind in SHAPE_KINDS:
        for colour in COLORS:
            img = matplotlib_shape(kind, colour, seed)
            seed += 1
            items += [(img, f"What color is the {kind}?"), (img, "What shape is in the image?")]
            truth += [("color", colour, COLORS), ("shape", kind, SHAPE_KINDS)]
    got = chat(model, processor, items, 24, desc="plain single shapes")
    right: dict[str, list[int]] = {}
    for (qtype, want, vocab), (text, _) in zip(truth, got):
        said = {w for w in vocab if re.search(rf"\b{w}s?\b", text.lower())}
        right.setdefault(qtype, []).append(int(said == {want}))
    total = [x for v in right.values() for x in v]
    return {"questions": len(total), "accuracy": round(sum(total) / len(total), 4),
            "per_type": {k: round(sum(v) / len(v), 4) for k, v in right.items()},
            "samples": [{"prompt": p, "answer": a[0]} for (_, p), a in list(zip(items, got))[:4]]}


def photos(model, processor) -> dict:
    from vlmspec.data import photos as ph

    prompts = ("Describe the image in detail.", "What is written in this picture?", "What do you see?")
    items = [(ph.random_crop(ph.load_photo(name), random.Random(k), 320, 240), p)
             for name in ph.PHOTO_NAMES_HELDOUT for k, p in enumerate(prompts)]
    got = chat(model, processor, items, 100, desc="held-out photos")
    invented = [a for a, _ in got if re.search(r"\d|\"", a)]
    return {"answers": len(got), "with_digits_or_quoted_text": len(invented),
            "say_photo": round(sum("photo" in a.lower() for a, _ in got) / len(got), 4),
            "photos": list(ph.PHOTO_NAMES_HELDOUT), "samples": [a for a, _ in got[:3]], "invented": invented[:3]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the default model's directory")
    parser.add_argument("--baseline", action="append", default=[],
                        help="an earlier release's directory (wording variety; repeatable)")
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--instructions", type=int, default=60)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    model, processor = load(args.model)
    report = {}
    report["plain_single_shapes"] = plain_shapes(model, processor)
    report["photos_heldout"] = photos(model, processor)
    report["open_prompts"] = open_prompts(model, processor, args.scenes)
    items = variety_items()
    report["variety"] = variety(model, processor, items, "variety: descriptions")
    from vlmspec.models.smollm import load_language_model

    base_lm, _ = load_language_model()
    report["text_only"] = text_only(model, processor, base_lm, args.instructions)
    report["variety"]["baselines"] = {}
    for base_dir in args.baseline:
        old, old_proc = load(base_dir)
        report["variety"]["baselines"][base_dir] = variety(old, old_proc, items, "variety: baseline")
        del old
    print(json.dumps(report, indent=2))
    if args.out:
        atomic_write_json(Path(args.out), report, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
