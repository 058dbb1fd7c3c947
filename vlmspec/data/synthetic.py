"""Deterministic synthetic, image-grounded VQA data for the vlmspec default model.

Every sample is a *scene*: a small spec (dataclasses below) rendered with PIL into an
RGB image of mixed size and aspect ratio, plus text derived from the spec only:

* ``kind == "shapes"``: 1-5 shapes (circle, square, triangle, star, hexagon) in
  distinct colours and distinct cells of a 3x3 grid, three sizes, overlaps allowed;
* ``kind == "text"``: one rendered word (from a fixed list) or a number 0-99;
* ``kind == "chart"``: a bar chart (bars A-E) or a line chart (Mon-Fri) with labelled
  integer values 1-20.

Public API (stable, used by the eval harness and drafter training)::

    from vlmspec.data import generate_scene, build_dataset, DESCRIBE_PROMPT

    scene = generate_scene(1234)         # int or str seed; same seed -> same PNG bytes
    scene.image                          # PIL.Image (RGB), cached
    scene.png_bytes()                    # deterministic PNG encoding of the image
    scene.description                    # several sentences (~60-150 tokens)
    scene.questions                      # list of (qtype, question, answer) tuples

    ds = build_dataset("test", n=200, seed=0)   # datasets.Dataset, one row per scene
    # columns: id (str), kind (str), image (datasets.Image), width, height (int),
    #          description (str), questions (list of {"qtype","question","answer"}),
    #          spec (JSON string of the scene spec)

Question types (``qtype``): ``color``, ``shape``, ``size``, ``count``, ``position``,
``text``, ``chart_value``, ``chart_max``, ``chart_type``. Answers are short exact
strings (lower case words, digits, or a chart label such as ``B``/``Wed``). Each
question already carries its answer-format instruction ("Answer with one word.").
``DESCRIBE_PROMPT`` is the prompt used for the long descriptions.

Splits ``train``/``val``/``test`` draw from disjoint seed streams (sha256 of
``"{seed}:{split}:{index}"``), so a split's content depends only on ``seed`` and the row
index, never on ``n`` or on the machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import random
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Iterable

from PIL import Image, ImageDraw, ImageFont

DESCRIBE_PROMPT = "Describe the image in detail."
SPLITS = ("train", "val", "test")
QTYPES = (
    "color", "shape", "size", "count", "position",
    "text", "chart_value", "chart_max", "chart_type",
)

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "orange": (245, 130, 20),
    "purple": (140, 60, 180),
    "black": (30, 30, 30),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "light gray": (215, 215, 215),
    "beige": (240, 228, 200),
}
SHAPE_KINDS = ("circle", "square", "triangle", "star", "hexagon")
SIZES: dict[str, float] = {"small": 0.075, "medium": 0.11, "large": 0.15}  # radius / min(w, h)
# 3x3 grid cells, indexed (row, col), named as the answers to "position" questions.
CELL_NAMES = {
    (0, 0): "top left", (0, 1): "top", (0, 2): "top right",
    (1, 0): "left", (1, 1): "center", (1, 2): "right",
    (2, 0): "bottom left", (2, 1): "bottom", (2, 2): "bottom right",
}
WORDS = (
    "apple", "river", "cloud", "tiger", "house", "music", "green", "plant", "stone", "light",
    "bread", "chair", "dream", "ocean", "pizza", "smile", "train", "water", "zebra", "lemon",
    "robot", "candle", "garden", "rocket", "winter", "summer", "forest", "planet", "silver", "yellow",
    "cat", "dog", "sun", "moon", "star", "tree", "book", "fish", "bird", "car",
)
BAR_LABELS = ("A", "B", "C", "D", "E")
LINE_LABELS = ("Mon", "Tue", "Wed", "Thu", "Fri")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five")
KIND_WEIGHTS = (("shapes", 0.5), ("text", 0.25), ("chart", 0.25))


# ----------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class ShapeSpec:
    """One shape: centre as a fraction of the image, its grid cell and its size class."""

    kind: str
    color: str
    size: str
    cx: float
    cy: float
    cell: tuple[int, int]
    rotation: float = 0.0
    radius: float | None = None  # / min(w, h); None: the classic radius of its size class

    @property
    def r(self) -> float:
        return SIZES[self.size] if self.radius is None else self.radius

    @property
    def position(self) -> str:
        return CELL_NAMES[self.cell]


@dataclass(frozen=True)
class TextSpec:
    """One rendered word or number, its colour and where its centre lies."""

    text: str
    is_number: bool
    color: str
    cx: float
    cy: float
    cell: tuple[int, int]
    font_frac: float  # font size / image height


@dataclass(frozen=True)
class ChartSpec:
    """A bar or line chart with integer values and one value label per point."""

    chart: str  # "bar" | "line"
    labels: tuple[str, ...]
    values: tuple[int, ...]
    color: str


@dataclass
class Scene:
    """A rendered scene; ``image``, ``description`` and ``questions`` derive from the spec."""

    seed: str
    kind: str
    width: int
    height: int
    background: str
    shapes: tuple[ShapeSpec, ...] = ()
    text: TextSpec | None = None
    chart: ChartSpec | None = None
    style: str = "classic"  # "classic" | "varied" (vlmspec.data.styles)
    texture: str = "flat"  # varied: "flat" | "noise" | "gradient" | "photo"
    outline: bool = False
    jpeg_quality: int = 0  # > 0: the image went through JPEG at this quality
    photo: str | None = None  # kind "photo": the photograph's name (vlmspec.data.photos)
    photo_split: str = "train"  # which photographs a varied scene draws from ("train" | "heldout")
    _image: Image.Image | None = field(default=None, repr=False, compare=False)
    _description: str | None = field(default=None, repr=False, compare=False)
    _questions: list | None = field(default=None, repr=False, compare=False)

    @property
    def image(self) -> Image.Image:
        if self._image is None:
            self._image = render(self)
        return self._image

    @property
    def description(self) -> str:
        if self._description is None:
            self._description = describe(self)
        return self._description

    @property
    def questions(self) -> list[tuple[str, str, str]]:
        if self._questions is None:
            self._questions = make_questions(self)
        return self._questions

    @cached_property
    def photo_colours(self) -> tuple[str, ...]:
        """kind "photo": its dominant colour names, measured from the pixels (most frequent first)."""
        from vlmspec.data import photos

        return tuple(photos.dominant_colours(photos.patch_colour_names(self.image)))

    @cached_property
    def brightness(self) -> str:
        from vlmspec.data import photos

        return photos.brightness(self.image)

    def png_bytes(self) -> bytes:
        buf = io.BytesIO()
        self.image.save(buf, format="PNG", optimize=False, compress_level=6)
        return buf.getvalue()

    def spec_dict(self) -> dict:
        out = {
            "seed": self.seed, "kind": self.kind, "width": self.width, "height": self.height,
            "background": self.background,
            "shapes": [{k: v for k, v in dataclasses.asdict(s).items() if k != "radius" or v is not None}
                       for s in self.shapes],
            "text": dataclasses.asdict(self.text) if self.text else None,
            "chart": dataclasses.asdict(self.chart) if self.chart else None,
        }
        if self.style != "classic":
            out.update(style=self.style, texture=self.texture, outline=self.outline,
                       jpeg_quality=self.jpeg_quality, photo=self.photo, photo_split=self.photo_split)
        return out


# ------------------------------------------------------------------------- sampling
def _rng(seed: int | str, salt: str = "") -> random.Random:
    digest = hashlib.sha256(f"{seed}|{salt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def split_seed(split: str, index: int, seed: int = 0) -> str:
    """The scene seed of row ``index`` of ``split`` (disjoint streams per split)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return f"{seed}:{split}:{index}"


def _cell_centre(rng: random.Random, cell: tuple[int, int]) -> tuple[float, float]:
    row, col = cell
    cx = (col + 0.5 + rng.uniform(-0.12, 0.12)) / 3.0
    cy = (row + 0.5 + rng.uniform(-0.12, 0.12)) / 3.0
    return cx, cy


def generate_scene(seed: int | str, kind: str | None = None, style: str = "classic",
                   photo_split: str = "train") -> Scene:
    """Sample a scene spec from ``seed`` (int or str). ``kind`` forces the scene kind; ``style``
    "varied" draws it with :mod:`vlmspec.data.styles` (and allows ``kind="photo"``), drawing
    photographs from ``photo_split`` ("train" or "heldout")."""
    if style not in ("classic", "varied"):
        raise ValueError(f"unknown scene style {style!r} (classic | varied)")
    if style == "varied":
        return _generate_varied(seed, kind, photo_split)
    rng = _rng(seed, "scene")
    if kind is None:
        kind = pick_weighted(rng, KIND_WEIGHTS)
    else:
        rng.random()  # keep the stream aligned with the unforced case
    if kind not in ("shapes", "text", "chart"):
        raise ValueError(f"unknown scene kind {kind!r}")
    width = rng.choice((160, 192, 224, 256, 288, 320, 384))
    height = rng.choice((160, 192, 224, 256, 288, 320, 384))
    background = rng.choice(sorted(BACKGROUNDS))
    scene = Scene(seed=str(seed), kind=kind, width=width, height=height, background=background)
    _fill_content(scene, rng)
    return scene


def pick_weighted(rng: random.Random, weights) -> str:
    """One name from ((name, weight), ...), weights summing to 1."""
    r, acc = rng.random(), 0.0
    for k, w in weights:
        acc += w
        if r < acc:
            return k
    return weights[-1][0]


def _generate_varied(seed: int | str, kind: str | None, photo_split: str) -> Scene:
    from vlmspec.data import styles

    if photo_split not in ("train", "heldout"):
        raise ValueError(f"photo_split must be 'train' or 'heldout', got {photo_split!r}")
    rng = _rng(seed, "scene-varied")
    picked = pick_weighted(rng, styles.VARIED_KIND_WEIGHTS)
    kind = kind or picked
    if kind not in ("shapes", "text", "chart", "photo"):
        raise ValueError(f"unknown scene kind {kind!r}")
    width = rng.choice((128, 160, 192, 224, 256, 320, 384, 448))
    height = rng.choice((128, 160, 192, 224, 256, 320, 384, 448))
    scene = Scene(seed=str(seed), kind=kind, width=width, height=height, background="white", style="varied",
                  photo_split=photo_split)
    if kind == "photo":
        from vlmspec.data import photos

        names = photos.PHOTO_NAMES_HELDOUT if photo_split == "heldout" else photos.PHOTO_NAMES_TRAIN
        scene.photo, scene.background, scene.texture = rng.choice(names), "photo", "photo"
        return scene
    looks = styles.varied_looks(rng, kind)
    scene.background, scene.texture = looks["background"], looks["texture"]
    scene.outline, scene.jpeg_quality = looks["outline"], looks["jpeg_quality"]
    if kind == "shapes":
        scene.shapes = styles.sample_shapes(rng, ShapeSpec, SHAPE_KINDS, sorted(COLORS), sorted(CELL_NAMES),
                                            _cell_centre)
    else:
        _fill_content(scene, rng)
    return scene


def _fill_content(scene: Scene, rng: random.Random) -> None:
    """Sample the shapes / text / chart of a scene whose kind, size and background are set."""
    kind, width, height, background = scene.kind, scene.width, scene.height, scene.background
    if kind == "shapes":
        n = rng.randint(1, 5)
        kinds = rng.sample(SHAPE_KINDS, n)
        colors = rng.sample(sorted(COLORS), n)
        cells = rng.sample(sorted(CELL_NAMES), n)
        shapes = []
        for k, c, cell in zip(kinds, colors, cells):
            cx, cy = _cell_centre(rng, cell)
            shapes.append(ShapeSpec(kind=k, color=c, size=rng.choice(tuple(SIZES)), cx=round(cx, 4),
                                    cy=round(cy, 4), cell=cell, rotation=round(rng.uniform(-15, 15), 2)))
        scene.shapes = tuple(shapes)
    elif kind == "text":
        if rng.random() < 0.6:
            text, is_number = rng.choice(WORDS), False
        else:
            text, is_number = str(rng.randint(0, 99)), True
        colors = [c for c in sorted(COLORS) if c != "yellow" or background != "beige"]
        cell = (rng.randint(0, 2), 1) if rng.random() < 0.5 else (1, 1)
        cy = (cell[0] + 0.5 + rng.uniform(-0.08, 0.08)) / 3.0
        cx = 0.5 + rng.uniform(-0.06, 0.06)
        scene.text = TextSpec(text=text, is_number=is_number, color=rng.choice(colors), cx=round(cx, 4),
                              cy=round(cy, 4), cell=cell, font_frac=round(rng.uniform(0.2, 0.28), 4))
    else:
        chart = rng.choice(("bar", "line"))
        n = rng.randint(3, 5) if chart == "bar" else rng.randint(4, 5)
        labels = BAR_LABELS[:n] if chart == "bar" else LINE_LABELS[:n]
        while True:
            values = tuple(rng.randint(1, 20) for _ in range(n))
            if values.count(max(values)) == 1:  # unique maximum -> "chart_max" is well defined
                break
        color = rng.choice([c for c in sorted(COLORS) if c not in ("yellow",)])
        scene.chart = ChartSpec(chart=chart, labels=tuple(labels), values=values, color=color)
        scene.width = max(width, 256)
        scene.height = max(min(height, scene.width), 192)


# ------------------------------------------------------------------------ rendering
@lru_cache(maxsize=64)
def _font(size: int, bold: bool = True) -> ImageFont.FreeTypeFont:
    import matplotlib

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    return ImageFont.truetype(str(path), size=size)


def _polygon(kind: str, cx: float, cy: float, r: float, rot_deg: float) -> list[tuple[float, float]]:
    rot = math.radians(rot_deg)
    if kind == "square":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in (math.pi / 4 + k * math.pi / 2 for k in range(4))]
    elif kind == "triangle":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    elif kind == "hexagon":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in (k * math.pi / 3 for k in range(6))]
    elif kind == "star":
        pts = []
        for k in range(10):
            a = -math.pi / 2 + k * math.pi / 5
            rr = r if k % 2 == 0 else r * 0.45
            pts.append((rr * math.cos(a), rr * math.sin(a)))
    else:
        raise ValueError(kind)
    c, s = math.cos(rot), math.sin(rot)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def render(scene: Scene) -> Image.Image:
    """Draw the scene (pure function of the spec)."""
    if scene.style == "varied":
        from vlmspec.data.styles import render_varied

        return render_varied(scene)
    w, h = scene.width, scene.height
    img = Image.new("RGB", (w, h), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    m = min(w, h)
    for s in scene.shapes:
        cx, cy, r = s.cx * w, s.cy * h, SIZES[s.size] * m
        fill = COLORS[s.color]
        if s.kind == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            scale = 1.25 if s.kind == "square" else 1.15
            draw.polygon(_polygon(s.kind, cx, cy, r * scale, s.rotation), fill=fill)
    if scene.text is not None:
        t = scene.text
        font = _font(max(12, int(t.font_frac * h)))
        draw.text((t.cx * w, t.cy * h), t.text, fill=COLORS[t.color], font=font, anchor="mm")
    if scene.chart is not None:
        _draw_chart(draw, scene)
    return img


def _draw_chart(draw: ImageDraw.ImageDraw, scene: Scene) -> None:
    c = scene.chart
    w, h = scene.width, scene.height
    left, right, top, bottom = 0.06 * w, 0.97 * w, 0.2 * h, 0.84 * h
    vfont = _font(max(12, int(0.1 * h)))
    lfont = _font(max(11, int(0.085 * h)), bold=False)
    draw.line([(left, bottom), (right, bottom)], fill=(60, 60, 60), width=2)
    draw.line([(left, top - 0.1 * h), (left, bottom)], fill=(60, 60, 60), width=2)
    n = len(c.values)
    slot = (right - left) / n
    ys = [bottom - (v / 20.0) * (bottom - top) for v in c.values]
    xs = [left + slot * (i + 0.5) for i in range(n)]
    fill = COLORS[c.color]
    if c.chart == "bar":
        for x, y in zip(xs, ys):
            draw.rectangle([x - 0.3 * slot, y, x + 0.3 * slot, bottom], fill=fill)
    else:
        draw.line(list(zip(xs, ys)), fill=fill, width=3)
        for x, y in zip(xs, ys):
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=fill)
    for x, y, v, lab in zip(xs, ys, c.values, c.labels):
        draw.text((x, y - 3), str(v), fill=(20, 20, 20), font=vfont, anchor="mb")
        draw.text((x, bottom + 3), lab, fill=(20, 20, 20), font=lfont, anchor="mt")


# ---------------------------------------------------------------------- descriptions
def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _where(cell: tuple[int, int]) -> str:
    name = CELL_NAMES[cell]
    if name == "center":
        return "in the center"
    if name in ("top", "bottom"):
        return f"at the {name}"
    if name in ("left", "right"):
        return f"on the {name}"
    return f"in the {name} corner"


def _overlaps(scene: Scene) -> list[tuple[ShapeSpec, ShapeSpec]]:
    out = []
    m = min(scene.width, scene.height)
    for i, a in enumerate(scene.shapes):
        for b in scene.shapes[i + 1:]:
            d = math.hypot((a.cx - b.cx) * scene.width, (a.cy - b.cy) * scene.height)
            if d < (a.r + b.r) * m * 0.95:
                out.append((a, b))
    return out


def describe(scene: Scene) -> str:
    """A long, templated description (varied but deterministic phrasing)."""
    rng = _rng(scene.seed, "describe")
    bg = scene.background
    s: list[str] = []
    if scene.kind == "photo":
        colours = _join(list(scene.photo_colours))
        return (f"This is a photograph, not a drawing. Its main colours are {colours} and it is "
                f"{'fairly ' if scene.brightness != 'medium' else 'of medium brightness'}"
                f"{scene.brightness if scene.brightness != 'medium' else ''}. "
                "I cannot make out small details or any writing in it reliably.")
    if scene.kind == "shapes":
        shapes = sorted(scene.shapes, key=lambda x: x.cell)
        n = len(shapes)
        noun = "shape" if n == 1 else "shapes"
        s.append(rng.choice((
            f"The image shows {NUMBER_WORDS[n]} {noun} on a plain {bg} background.",
            f"This is a picture with {NUMBER_WORDS[n]} {noun} drawn on a {bg} background.",
            f"In this image there {'is' if n == 1 else 'are'} {NUMBER_WORDS[n]} colored {noun} on a {bg} background.",
        )))
        for i, sh in enumerate(shapes):
            what = f"{sh.size} {sh.color} {sh.kind}"
            where = _where(sh.cell)
            templates = (
                f"{_a(what).capitalize()} is {where}.",
                f"{where.capitalize()} there is {_a(what)}.",
                f"{_a(what).capitalize()} can be seen {where} of the image.",
            )
            if i > 0:
                templates += (f"Next, {_a(what)} sits {where}.",)
            s.append(rng.choice(templates))
        if n > 1:
            kinds = _join([_a(x.kind) for x in shapes])
            colors = _join([x.color for x in shapes])
            s.append(rng.choice((
                f"In total there are {NUMBER_WORDS[n]} shapes: {kinds}.",
                f"The colors used are {colors}, one for each shape.",
            )))
        ov = _overlaps(scene)
        if ov:
            a, b = ov[0]
            s.append(rng.choice((
                f"The {a.kind} and the {b.kind} overlap slightly.",
                f"The {a.color} {a.kind} touches the {b.color} {b.kind}.",
            )))
        elif n > 1:
            s.append(rng.choice(("None of the shapes overlap.", "The shapes are well separated and do not overlap.")))
        else:
            s.append(rng.choice(("The rest of the image is empty.", "There is nothing else in the picture.")))
        s.append(rng.choice((
            "The shapes are flat and filled with solid color, with no outlines or shadows.",
            "Everything is drawn in a simple flat style without any texture.",
        )))
    elif scene.kind == "text":
        t = scene.text
        thing = "the number" if t.is_number else "the word"
        s.append(rng.choice((
            f'The image shows {thing} "{t.text}" written in large {t.color} letters on a {bg} background.',
            f'This is a picture containing {thing} "{t.text}" in {t.color} bold text.',
            f'{thing.capitalize()} "{t.text}" is printed in {t.color} on a plain {bg} background.',
        )))
        pos = {0: "near the top", 1: "in the middle", 2: "near the bottom"}[t.cell[0]]
        s.append(rng.choice((
            f"The text is placed {pos} of the image and is centered horizontally.",
            f"It is written {pos} of the picture.",
        )))
        if t.is_number:
            digits = "one digit" if len(t.text) == 1 else "two digits"
            s.append(f"The number has {digits}.")
        else:
            s.append(rng.choice((
                f"The word has {len(t.text)} letters.",
                f'The word "{t.text}" has {len(t.text)} letters and is written in lower case.',
            )))
        s.append(rng.choice((
            "There are no other objects, shapes or pictures in the image.",
            "Apart from the text, the image is empty.",
        )))
        s.append(rng.choice((
            f"The {t.color} text stands out clearly against the {bg} background.",
            "The font is a simple bold sans-serif typeface.",
        )))
    else:
        c = scene.chart
        n = len(c.values)
        unit = "bars" if c.chart == "bar" else "points"
        s.append(rng.choice((
            f"The image shows a simple {c.chart} chart with {NUMBER_WORDS[n]} {unit} on a {bg} background.",
            f"This is a {c.chart} chart drawn in {c.color} with {NUMBER_WORDS[n]} labelled {unit}.",
        )))
        s.append(f"The {unit} are labelled {_join(list(c.labels))} from left to right.")
        vals = _join([f"{lab} is {v}" for lab, v in zip(c.labels, c.values)])
        s.append(rng.choice((f"The values are: {vals}.", f"Reading the labels, {vals}.")))
        hi = c.labels[c.values.index(max(c.values))]
        lo_v = min(c.values)
        s.append(rng.choice((
            f"The highest value is {max(c.values)} at {hi}, and the lowest value is {lo_v}.",
            f"{hi} has the largest value, {max(c.values)}, while the smallest value is {lo_v}.",
        )))
        s.append(rng.choice((
            f"The {unit} are drawn in {c.color}, and each value is written above its {unit[:-1]}.",
            "A horizontal axis runs along the bottom and a vertical axis on the left, without a title.",
        )))
    return " ".join(s)


# -------------------------------------------------------------------------- questions
def make_questions(scene: Scene) -> list[tuple[str, str, str]]:
    """All short questions of a scene as (qtype, question, answer); answers by construction."""
    rng = _rng(scene.seed, "questions")
    q: list[tuple[str, str, str]] = []
    one = "Answer with one word."
    if scene.kind == "photo":
        return q
    if scene.kind == "shapes":
        n = len(scene.shapes)
        q.append(("count", rng.choice(("How many shapes are there?", "How many shapes are in the image?"))
                  + " Answer with a number.", str(n)))
        for sh in scene.shapes:
            q.append(("color", rng.choice((f"What color is the {sh.kind}?", f"What is the color of the {sh.kind}?"))
                      + f" {one}", sh.color))
            q.append(("shape", rng.choice((f"What shape is the {sh.color} object?", f"Which shape is {sh.color}?"))
                      + f" {one}", sh.kind))
            q.append(("position", f"Where is the {sh.color} {sh.kind}? Answer with its position, like top left.",
                      sh.position))
            q.append(("size", f"How big is the {sh.kind}? Answer small, medium or large.", sh.size))
    elif scene.kind == "text":
        t = scene.text
        if t.is_number:
            q.append(("text", "What number is written in the image? Answer with the number.", t.text))
        else:
            q.append(("text", "What word is written in the image? Answer with the word.", t.text))
        q.append(("color", f"What color is the text? {one}", t.color))
    else:
        c = scene.chart
        q.append(("chart_type", "What kind of chart is this? Answer bar or line.", c.chart))
        hi = c.labels[c.values.index(max(c.values))]
        q.append(("chart_max", "Which label has the highest value? Answer with the label.", hi))
        for lab, v in zip(c.labels, c.values):
            q.append(("chart_value", f"What is the value of {lab}? Answer with a number.", str(v)))
    return q


def answer_from_spec(spec: dict, qtype: str, question: str) -> str:
    """Re-derive an answer from a JSON spec (independent of ``make_questions``; for tests)."""
    if qtype == "count":
        return str(len(spec["shapes"]))
    if spec["kind"] == "shapes":
        for sh in spec["shapes"]:
            if qtype == "color" and f" {sh['kind']}?" in question:
                return sh["color"]
            if qtype == "shape" and f" {sh['color']} " in question.replace("?", " ?"):
                return sh["kind"]
            if qtype == "position" and f"the {sh['color']} {sh['kind']}?" in question:
                return CELL_NAMES[tuple(sh["cell"])]
            if qtype == "size" and f"the {sh['kind']}?" in question:
                return sh["size"]
    if spec["kind"] == "text":
        return spec["text"]["text"] if qtype == "text" else spec["text"]["color"]
    if spec["kind"] == "chart":
        ch = spec["chart"]
        if qtype == "chart_type":
            return ch["chart"]
        if qtype == "chart_max":
            return ch["labels"][ch["values"].index(max(ch["values"]))]
        for lab, v in zip(ch["labels"], ch["values"]):
            if f"value of {lab}?" in question:
                return str(v)
    raise KeyError((qtype, question))


# --------------------------------------------------------------------------- dataset
def iter_scenes(split: str, n: int, seed: int = 0, start: int = 0) -> Iterable[Scene]:
    """Scenes ``start .. start+n-1`` of a split."""
    for i in range(start, start + n):
        yield generate_scene(split_seed(split, i, seed))


def build_dataset(split: str, n: int, seed: int = 0):
    """A ``datasets.Dataset`` with one row per scene (columns in the module docstring)."""
    import datasets

    features = datasets.Features({
        "id": datasets.Value("string"),
        "kind": datasets.Value("string"),
        "image": datasets.Image(),
        "width": datasets.Value("int32"),
        "height": datasets.Value("int32"),
        "description": datasets.Value("string"),
        "questions": datasets.List({
            "qtype": datasets.Value("string"),
            "question": datasets.Value("string"),
            "answer": datasets.Value("string"),
        }),
        "spec": datasets.Value("string"),
    })

    def rows():
        for sc in iter_scenes(split, n, seed):
            yield {
                "id": sc.seed, "kind": sc.kind, "image": {"bytes": sc.png_bytes(), "path": None},
                "width": sc.width, "height": sc.height, "description": sc.description,
                "questions": [{"qtype": a, "question": b, "answer": c} for a, b, c in sc.questions],
                "spec": json.dumps(sc.spec_dict(), sort_keys=True),
            }

    return datasets.Dataset.from_list(list(rows()), features=features)
