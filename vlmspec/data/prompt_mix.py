"""A wide mix of user prompts (no answers) for self-distilling drafters and measuring them.

A drafter learns the distribution of whatever text it is trained on. Trained only on one
description template it drafts that template well and little else, so a user's own wording
gets short accepted runs. This module draws prompts the way users of a small VLM write
them, each tagged with a *prompt style* the reports group by:

=============  ==============================================================
style          what
=============  ==============================================================
describe       a describe-the-image request (many wordings)
open           list / count / compare / locate / read / chart / story requests
short          a short factual question ("What color is the star? Answer ...")
chat           a text-only instruction (no image)
chat_image     an instruction unrelated to the image that comes with it
photo          a describe / list / open request about a photograph
=============  ==============================================================

The answers are left empty: the target writes them (``data.self_distill``), so the drafter
learns the target's own distribution. ``heldout=True`` draws a disjoint set for measuring:
test-split scenes, held-out prompt wordings (``answers.HELDOUT_PROMPTS``), held-out
instructions and the held-out photographs, none of which occur with ``heldout=False``.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from PIL import Image

from . import answers, instructions
from .synthetic import generate_scene, make_questions, split_seed

MIX_STYLES = ("describe", "open", "short", "chat", "chat_image", "photo")
# share of each style in a mix (sums to 1)
STYLE_WEIGHTS = (("describe", 0.22), ("open", 0.30), ("short", 0.10), ("chat", 0.16), ("chat_image", 0.07),
                 ("photo", 0.15))
_OPEN = ("list", "count", "compare", "locate", "story")
_PHOTO_PROMPTS = ("describe", "list", "story")


@dataclass
class MixPrompt:
    """One prompt of the mix: ``images`` holds 0 or 1 PIL images."""

    id: str
    style: str
    prompt: str
    images: list = field(default_factory=list)


def _rng(seed: int, salt: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(f"{seed}|{salt}".encode()).digest()[:8], "big"))


def _pick(rng: random.Random, weights) -> str:
    r, acc = rng.random(), 0.0
    for name, w in weights:
        acc += w
        if r < acc:
            return name
    return weights[-1][0]


def _scene(split: str, index: int, seed: int, rng: random.Random, kind: str | None = None, heldout: bool = False):
    style = "varied" if kind == "photo" or rng.random() < 0.7 else "classic"
    return generate_scene(split_seed(split, index, seed), kind=kind, style=style,
                          photo_split="heldout" if heldout else "train")


def _open_prompt(scene, rng: random.Random, prompts: dict) -> str:
    if scene.kind == "chart" and rng.random() < 0.6:
        return rng.choice(prompts["chart"])
    if scene.kind == "text" and rng.random() < 0.6:
        return rng.choice(prompts["read"])
    return rng.choice(prompts[rng.choice(_OPEN)])


def prompt_mix(n: int, seed: int = 0, heldout: bool = False) -> list[MixPrompt]:
    """``n`` prompts of the mix, deterministic for ``(n, seed, heldout)``; row i does not depend on n."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    split = "test" if heldout else "train"
    prompts = answers.HELDOUT_PROMPTS if heldout else answers.TRAIN_PROMPTS
    chats = instructions.HELDOUT_INSTRUCTIONS if heldout else instructions.TRAIN_INSTRUCTIONS
    out = []
    for i in range(n):
        rng = _rng(seed, f"{split}:{i}")
        style = _pick(rng, STYLE_WEIGHTS)
        row_id = f"mix/{split}/{seed}/{i}/{style}"
        if style == "chat":
            out.append(MixPrompt(row_id, style, rng.choice(chats)))
            continue
        scene = _scene(split, i, seed, rng, kind="photo" if style == "photo" else None, heldout=heldout)
        if style == "photo" or scene.kind == "photo":
            style, row_id = "photo", f"mix/{split}/{seed}/{i}/photo"
            prompt = rng.choice(prompts[rng.choice(_PHOTO_PROMPTS)])
        elif style == "describe":
            prompt = rng.choice(prompts["describe"])
        elif style == "open":
            prompt = _open_prompt(scene, rng, prompts)
        elif style == "short":
            questions = make_questions(scene)
            prompt = rng.choice(questions)[1] if questions else rng.choice(prompts["describe"])
        else:  # chat_image: an instruction that is not about the image
            prompt = rng.choice(chats)
        image: Image.Image = scene.image
        out.append(MixPrompt(row_id, style, prompt, [image]))
    return out


__all__ = ["MIX_STYLES", "MixPrompt", "STYLE_WEIGHTS", "prompt_mix"]
