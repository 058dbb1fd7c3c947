"""The "varied" scene style: the same scene specs as :mod:`vlmspec.data.synthetic`, drawn
with a much wider look, so that a model trained on them reads shapes drawn by somebody else.

``classic`` scenes (the project's test split, the drafters' benchmarks) are untouched; this
module adds, for ``generate_scene(seed, style="varied")``:

* colours: several variants per colour name (e.g. pure ``(255, 0, 0)`` and the classic
  ``(220, 40, 40)`` are both "red") plus a small per-scene jitter;
* backgrounds: more pale colours, flat / noisy / gradient fills, or a photograph (the
  background is then named ``"photo"``) behind the shapes;
* shapes: any rotation (a third upright), a continuous radius per size class, optional outlines,
  slight aspect squash, star inner radii and polygon sizes as other drawing tools make them,
  three rasterisers (PIL's hard-edged polygons, PIL supersampled, and scikit-image coverage
  masks with their own edge profile and outline construction), and a single shape that may
  fill most of the frame (it is then "large" and in the centre cell);
* text: three font families; JPEG artefacts on a share of all images;
* ``kind == "photo"``: a random crop of a natural photograph shipped with scikit-image
  (:mod:`vlmspec.data.photos`), with its dominant colours and brightness measured from pixels.

Everything is a pure function of the seed (same seed -> same PNG bytes).
"""

from __future__ import annotations

import io
import random
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from vlmspec.data import synthetic  # synthetic imports this module only inside functions: no cycle

# Per colour name, the RGB variants a scene may use (the classic value first).
COLOR_VARIANTS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "red": ((220, 40, 40), (255, 0, 0), (200, 20, 30), (235, 60, 50)),
    "green": ((40, 160, 60), (0, 128, 0), (30, 180, 40), (20, 140, 80)),
    "blue": ((40, 80, 220), (0, 0, 255), (30, 100, 200), (20, 60, 180)),
    "yellow": ((235, 200, 30), (255, 230, 0), (250, 210, 50), (240, 220, 20)),
    "orange": ((245, 130, 20), (255, 165, 0), (255, 140, 0), (235, 120, 40)),
    "purple": ((140, 60, 180), (128, 0, 128), (150, 50, 200), (120, 40, 160)),
    "black": ((30, 30, 30), (0, 0, 0), (20, 20, 25), (45, 40, 40)),
}
# Varied backgrounds (pale enough that every shape colour but yellow-on-yellow stays visible).
VARIED_BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    **synthetic.BACKGROUNDS,
    "light blue": (205, 225, 245),
    "pale green": (215, 240, 215),
    "pink": (250, 215, 225),
    "cream": (252, 248, 225),
}
TEXTURES = (("flat", 0.45), ("noise", 0.2), ("gradient", 0.2), ("photo", 0.15))
VARIED_KIND_WEIGHTS = (("shapes", 0.5), ("text", 0.15), ("chart", 0.2), ("photo", 0.15))
RADIUS_RANGES = {"small": (0.045, 0.09), "medium": (0.095, 0.125), "large": (0.135, 0.17)}  # / min(w, h)
HUGE_RADIUS = (0.22, 0.42)  # a single shape filling most of the frame ("large", centre cell)
HUGE_SHARE = 0.6  # share of lone shapes drawn huge
UPRIGHT_SHARE = 0.35  # share of shapes drawn at rotation 0 (upright, as most drawing tools place them)
# Which rasteriser draws a shape scene: PIL hard-edged, PIL 4x supersampled, or scikit-image
# coverage masks (3x, block-averaged; outlines built by shrinking the fill). A model that reads
# shapes from several rasterisers does not learn one tool's edge pixels as the shape's kind.
RENDERERS = (("pil", 0.35), ("pil-smooth", 0.35), ("skimage", 0.3))
SUPERSAMPLE = 4
SKIMAGE_SUPERSAMPLE = 3
SQUASH = (0.85, 1.15)  # per-axis scale of a squashed shape (60% of shapes)
STAR_INNER = (0.36, 0.56)  # a star's inner / outer radius
FONTS = ("DejaVuSans-Bold.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansMono-Bold.ttf")


def jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)


def shape_rgb(color: str, rng: random.Random) -> tuple[int, int, int]:
    return jitter(rng.choice(COLOR_VARIANTS[color]), rng, 12)


@lru_cache(maxsize=64)
def font(name: str, size: int) -> ImageFont.FreeTypeFont:
    import matplotlib

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size=size)


# --------------------------------------------------------------------------- backgrounds
def _noise(img: Image.Image, rng: random.Random, amount: int) -> Image.Image:
    import numpy as np

    arr = np.asarray(img).astype(np.int16)
    noise = np.random.default_rng(rng.getrandbits(32)).integers(-amount, amount + 1, size=arr.shape)
    return Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))


def _gradient(size: tuple[int, int], a, b, vertical: bool) -> Image.Image:
    w, h = size
    strip = Image.new("RGB", (256, 1))
    strip.putdata([tuple(int(x + (y - x) * i / 255) for x, y in zip(a, b)) for i in range(256)])
    if vertical:
        return strip.rotate(90, expand=True).resize((w, h))
    return strip.resize((w, h))


def background_image(scene, rng: random.Random) -> Image.Image:
    """The scene's background: flat, noisy or gradient pale colour, or a photo crop."""
    size = (scene.width, scene.height)
    if scene.background == "photo":
        from vlmspec.data import photos

        names = photos.PHOTO_NAMES_HELDOUT if scene.photo_split == "heldout" else photos.PHOTO_NAMES_TRAIN
        photo = photos.load_photo(rng.choice(names))
        return photos.random_crop(photo, rng, *size).filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.5)))
    base = jitter(VARIED_BACKGROUNDS[scene.background], rng, 6)
    if scene.texture == "gradient":
        other = jitter(base, rng, 30)
        return _gradient(size, base, other, vertical=rng.random() < 0.5)
    img = Image.new("RGB", size, base)
    if scene.texture == "noise":
        img = _noise(img, rng, rng.randint(6, 20))
    return img


# ------------------------------------------------------------------------------ drawing
def _draw_shape(draw: ImageDraw.ImageDraw, sh, w: int, h: int, rng: random.Random, outline: bool,
                line_scale: int = 1) -> None:
    cx, cy, r = sh.cx * w, sh.cy * h, sh.radius * min(w, h)
    fill = shape_rgb(sh.color, rng)
    line = jitter((25, 25, 25), rng, 15) if outline else None
    width = rng.randint(1, 4) * line_scale if outline else 0
    # Geometry as other drawing tools make it: a slight aspect squash (a non-square canvas resized
    # to a square), a polygon's size measured by circumradius or by half-width, a star's inner radius.
    sx, sy = (1.0, 1.0) if rng.random() < 0.4 else (rng.uniform(*SQUASH), rng.uniform(*SQUASH))
    if sh.kind == "circle":
        draw.ellipse([cx - r * sx, cy - r * sy, cx + r * sx, cy + r * sy], fill=fill, outline=line, width=width)
    else:
        scale = (1.25 if sh.kind == "square" else 1.15) * rng.uniform(0.85, 1.05)
        if sh.kind == "star":
            points = _star(cx, cy, r * scale, sh.rotation, rng.uniform(*STAR_INNER))
        else:
            points = synthetic._polygon(sh.kind, cx, cy, r * scale, sh.rotation)
        points = [(cx + (x - cx) * sx, cy + (y - cy) * sy) for x, y in points]
        draw.polygon(points, fill=fill, outline=line, width=width)


def _star(cx: float, cy: float, r: float, rot_deg: float, inner: float) -> list[tuple[float, float]]:
    """A five-pointed star with inner radius ``inner * r`` (the classic style uses 0.45)."""
    import math

    rot = math.radians(rot_deg)
    pts = []
    for k in range(10):
        a = -math.pi / 2 + k * math.pi / 5 + rot
        rr = r if k % 2 == 0 else r * inner
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def render_varied(scene) -> Image.Image:
    """Draw a varied-style scene (pure function of the spec)."""
    rng = random.Random(f"{scene.seed}|render-varied")
    if scene.kind == "photo":
        from vlmspec.data import photos

        img = photos.random_crop(photos.load_photo(scene.photo), rng, scene.width, scene.height)
    else:
        img = background_image(scene, rng)
        w, h = scene.width, scene.height
        renderer = synthetic.pick_weighted(rng, RENDERERS) if scene.shapes else "pil"
        if renderer == "skimage":
            img = _render_skimage(img, scene, rng)
        elif renderer == "pil-smooth":  # anti-aliased: draw 4x larger with a mask, downsample
            k = SUPERSAMPLE
            layer = Image.new("RGBA", (w * k, h * k), (0, 0, 0, 0))
            big = ImageDraw.Draw(layer)
            for sh in scene.shapes:
                _draw_shape(big, sh, w * k, h * k, rng, outline=scene.outline, line_scale=k)
            small = layer.resize((w, h), resample=Image.LANCZOS)  # PIL resizes RGBA premultiplied: no dark fringe
            img = Image.alpha_composite(img.convert("RGBA"), small).convert("RGB")
        else:
            draw = ImageDraw.Draw(img)
            for sh in scene.shapes:
                _draw_shape(draw, sh, w, h, rng, outline=scene.outline)
        draw = ImageDraw.Draw(img)
        if scene.text is not None:
            t = scene.text
            f = font(rng.choice(FONTS), max(12, int(t.font_frac * h)))
            draw.text((t.cx * w, t.cy * h), t.text, fill=shape_rgb(t.color, rng), font=f, anchor="mm")
        if scene.chart is not None:
            synthetic._draw_chart(draw, scene)
    if scene.jpeg_quality:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=scene.jpeg_quality)
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return img


def _shape_geometry(sh, w: int, h: int, rng: random.Random) -> tuple[str, tuple]:
    """("ellipse", (cx, cy, rx, ry, angle)) or ("polygon", points) in pixels, with the same
    squash / size / star variety as :func:`_draw_shape`."""
    cx, cy, r = sh.cx * w, sh.cy * h, sh.radius * min(w, h)
    sx, sy = (1.0, 1.0) if rng.random() < 0.4 else (rng.uniform(*SQUASH), rng.uniform(*SQUASH))
    if sh.kind == "circle":
        return "ellipse", (cx, cy, r * sx, r * sy, rng.uniform(0, 3.1416))
    scale = (1.25 if sh.kind == "square" else 1.15) * rng.uniform(0.85, 1.05)
    if sh.kind == "star":
        points = _star(cx, cy, r * scale, sh.rotation, rng.uniform(*STAR_INNER))
    else:
        points = synthetic._polygon(sh.kind, cx, cy, r * scale, sh.rotation)
    return "polygon", tuple((cx + (x - cx) * sx, cy + (y - cy) * sy) for x, y in points)


def _coverage(kind: str, geom: tuple, w: int, h: int, shrink: float = 0.0):
    """Fraction of each pixel the shape covers ([h, w] float array), rasterised by scikit-image
    at ``SKIMAGE_SUPERSAMPLE`` x and block-averaged; ``shrink`` pulls the outline in (pixels)."""
    import numpy as np
    from skimage.draw import ellipse, polygon
    from skimage.transform import downscale_local_mean

    k = SKIMAGE_SUPERSAMPLE
    mask = np.zeros((h * k, w * k), dtype=np.float32)
    if kind == "ellipse":
        cx, cy, rx, ry, angle = geom
        if rx - shrink > 0.5 and ry - shrink > 0.5:
            rr, cc = ellipse(cy * k, cx * k, (ry - shrink) * k, (rx - shrink) * k, shape=mask.shape, rotation=angle)
            mask[rr, cc] = 1.0
    else:
        xs = np.array([x for x, _ in geom])
        ys = np.array([y for _, y in geom])
        if shrink:
            mx, my = xs.mean(), ys.mean()
            size = max(1e-6, float(np.hypot(xs - mx, ys - my).max()))
            f = max(0.0, 1.0 - shrink / size)
            xs, ys = mx + (xs - mx) * f, my + (ys - my) * f
        rr, cc = polygon(ys * k, xs * k, shape=mask.shape)
        mask[rr, cc] = 1.0
    return downscale_local_mean(mask, (k, k))


def _render_skimage(img: Image.Image, scene, rng: random.Random) -> Image.Image:
    """Composite every shape onto ``img`` through scikit-image coverage masks."""
    import numpy as np

    w, h = scene.width, scene.height
    canvas = np.asarray(img.convert("RGB")).astype(np.float32)
    for sh in scene.shapes:
        kind, geom = _shape_geometry(sh, w, h, rng)
        fill = np.array(shape_rgb(sh.color, rng), dtype=np.float32)
        if scene.outline:
            line = np.array(jitter((25, 25, 25), rng, 15), dtype=np.float32)
            outer = _coverage(kind, geom, w, h)[..., None]
            canvas = canvas * (1 - outer) + line * outer
            inner = _coverage(kind, geom, w, h, shrink=rng.uniform(1.0, 3.5))[..., None]
        else:
            inner = _coverage(kind, geom, w, h)[..., None]
        canvas = canvas * (1 - inner) + fill * inner
    return Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8))


# ----------------------------------------------------------------------------- sampling
def sample_shapes(rng: random.Random, shape_spec, kinds_all, colors_all, cells_all, cell_centre) -> tuple:
    """1-5 shapes in distinct cells (a third of scenes: one shape); a lone shape is often huge
    (then centred); some shapes stand upright (rotation 0)."""
    n = rng.choice((1, 1, 1, 2, 2, 3, 3, 4, 5))
    kinds = rng.sample(kinds_all, n)
    colors = rng.sample(colors_all, n)

    def rotation() -> float:
        return 0.0 if rng.random() < UPRIGHT_SHARE else round(rng.uniform(0, 360), 2)

    if n == 1 and rng.random() < HUGE_SHARE:
        radius = rng.uniform(*HUGE_RADIUS)
        cx, cy = 0.5 + rng.uniform(-0.04, 0.04), 0.5 + rng.uniform(-0.04, 0.04)
        return (shape_spec(kind=kinds[0], color=colors[0], size="large", cx=round(cx, 4), cy=round(cy, 4),
                           cell=(1, 1), rotation=rotation(), radius=round(radius, 4)),)
    shapes = []
    for k, c, cell in zip(kinds, colors, rng.sample(cells_all, n)):
        cx, cy = cell_centre(rng, cell)
        size = rng.choice(tuple(RADIUS_RANGES))
        shapes.append(shape_spec(kind=k, color=c, size=size, cx=round(cx, 4), cy=round(cy, 4), cell=cell,
                                 rotation=rotation(), radius=round(rng.uniform(*RADIUS_RANGES[size]), 4)))
    return tuple(shapes)


def varied_looks(rng: random.Random, kind: str) -> dict:
    """Background name, texture, outline and JPEG quality of a varied scene."""
    texture = synthetic.pick_weighted(rng, TEXTURES if kind == "shapes" else TEXTURES[:3])
    background = "photo" if texture == "photo" else rng.choice(sorted(VARIED_BACKGROUNDS))
    return {
        "background": background,
        "texture": texture,
        "outline": kind == "shapes" and rng.random() < 0.25,
        "jpeg_quality": rng.randint(20, 85) if rng.random() < 0.3 else 0,
    }

