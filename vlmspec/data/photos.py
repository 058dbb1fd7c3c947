"""Natural photographs for VLM training, plus coarse colour / brightness labels.

The photos are the ones bundled *inside* the scikit-image wheel (``skimage/data``),
so they load offline: every name below was checked with the network blocked and an
empty download cache. Left out on purpose:

* images that need a download through ``pooch`` (eagle, lily, skin, ...);
* synthetic or diagram-like images (binary_blobs, checkerboard, colorwheel, horse
  silhouette, shepp_logan_phantom) and ones dominated by printed text (page, text,
  logo);
* near-duplicates (``cat`` is the same file as ``chelsea``) and tiny crops
  (microaneurysms, 102x102).

scikit-learn and matplotlib sample images are not used (neither is a dependency).

Public API::

    PHOTO_NAMES_TRAIN, PHOTO_NAMES_HELDOUT   # fixed split, disjoint
    available() -> bool                      # is scikit-image importable?
    load_photo(name) -> PIL.Image (RGB)      # cached
    random_crop(img, rng, out_w, out_h) -> PIL.Image
    PHOTO_COLOURS                            # coarse colour names
    patch_colour_names(img, grid=6) -> list[str]   # row-major, grid*grid names
    dominant_colours(names, k=3) -> list[str]
    brightness(img) -> "bright" | "dark" | "medium"
"""

from __future__ import annotations

import colorsys
import importlib.util
import random
from collections import Counter
from functools import lru_cache

from PIL import Image, ImageStat

__all__ = [
    "PHOTO_NAMES_TRAIN", "PHOTO_NAMES_HELDOUT", "PHOTO_NAMES", "PHOTO_COLOURS",
    "available", "load_photo", "random_crop", "patch_colour_names",
    "dominant_colours", "brightness",
]

# our name -> skimage.data function name (stereo_motorcycle returns (left, right, disp))
_SKIMAGE_PHOTOS: dict[str, str] = {
    "astronaut": "astronaut",
    "brick": "brick",
    "camera": "camera",
    "chelsea": "chelsea",
    "clock": "clock",
    "coffee": "coffee",
    "coins": "coins",
    "grass": "grass",
    "gravel": "gravel",
    "hubble_deep_field": "hubble_deep_field",
    "immunohistochemistry": "immunohistochemistry",
    "moon": "moon",
    "motorcycle": "stereo_motorcycle",
    "retina": "retina",
    "rocket": "rocket",
}

PHOTO_NAMES_HELDOUT: tuple[str, ...] = ("coffee", "gravel", "moon", "motorcycle")
PHOTO_NAMES_TRAIN: tuple[str, ...] = tuple(
    n for n in _SKIMAGE_PHOTOS if n not in PHOTO_NAMES_HELDOUT
)
PHOTO_NAMES: tuple[str, ...] = PHOTO_NAMES_TRAIN + PHOTO_NAMES_HELDOUT

_INSTALL_HINT = "the natural-photo data needs scikit-image: pip install scikit-image"


def available() -> bool:
    """True when scikit-image can be imported (the photos ship inside it)."""
    return importlib.util.find_spec("skimage") is not None


@lru_cache(maxsize=None)
def load_photo(name: str) -> Image.Image:
    """The photo ``name`` as an RGB PIL image (grayscale is expanded to RGB).

    Cached: callers must not modify the returned image in place (copy it first).
    """
    if name not in _SKIMAGE_PHOTOS:
        raise KeyError(f"unknown photo {name!r}; choose from {sorted(_SKIMAGE_PHOTOS)}")
    try:
        import skimage.data
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    arr = getattr(skimage.data, _SKIMAGE_PHOTOS[name])()
    if isinstance(arr, tuple):  # stereo pair: keep the left view
        arr = arr[0]
    return Image.fromarray(arr).convert("RGB")


def random_crop(img: Image.Image, rng: random.Random, out_w: int, out_h: int) -> Image.Image:
    """A random crop covering 40-100% of each side (same fraction for both sides,
    so the aspect ratio is kept), resized to ``out_w`` x ``out_h``."""
    w, h = img.size
    frac = rng.uniform(0.4, 1.0)
    cw, ch = max(1, round(w * frac)), max(1, round(h * frac))
    x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
    crop = img.crop((x0, y0, x0 + cw, y0 + ch))
    return crop.resize((out_w, out_h), Image.Resampling.BICUBIC)


# ------------------------------------------------------------------------ colours

PHOTO_COLOURS: tuple[str, ...] = (
    "black", "white", "gray", "red", "green", "blue", "yellow", "orange", "purple",
    "brown", "pink",
)

# Hue bins in degrees, [lo, hi): name. Red wraps around 0.
_HUE_BINS: tuple[tuple[float, float, str], ...] = (
    (15, 40, "orange"), (40, 70, "yellow"), (70, 170, "green"), (170, 260, "blue"),
    (260, 345, "purple"),
)


def _achromatic(v: float) -> str:
    return "black" if v < 0.2 else "white" if v > 0.85 else "gray"


def colour_name(rgb: tuple[float, float, float]) -> str:
    """Coarse name of one RGB colour (0-255 channels) from simple HSV rules.

    * value < 0.2 -> black; saturation < 0.2 -> black / gray / white by value
      (< 0.2, 0.2-0.85, > 0.85);
    * otherwise by hue: red < 15 or >= 345, orange 15-40, yellow 40-70,
      green 70-170, blue 170-260, purple 260-345 (degrees);
    * orange with value < 0.6 -> brown; red/purple that is light (saturation < 0.5
      and value > 0.7) or a bright magenta (hue >= 315, value > 0.6) -> pink.
    """
    h, s, v = colorsys.rgb_to_hsv(*(c / 255.0 for c in rgb))
    if v < 0.2 or s < 0.2:
        return _achromatic(v)
    deg = h * 360.0
    name = next((n for lo, hi, n in _HUE_BINS if lo <= deg < hi), "red")
    if name == "orange" and v < 0.6:
        return "brown"
    if name in ("red", "purple") and ((s < 0.5 and v > 0.7) or (315 <= deg < 345 and v > 0.6)):
        return "pink"
    return name


def patch_colour_names(img: Image.Image, grid: int = 6) -> list[str]:
    """Colour names of the ``grid`` x ``grid`` patches of ``img``, row-major.

    Each patch's mean colour comes from a box-filter resize to ``grid`` x ``grid``.
    """
    small = img.convert("RGB").resize((grid, grid), Image.Resampling.BOX)
    px = small.load()
    return [colour_name(px[x, y]) for y in range(grid) for x in range(grid)]


def dominant_colours(names: list[str], k: int = 3) -> list[str]:
    """Up to ``k`` most frequent names (most frequent first, ties by first
    appearance) that cover >= 15% of ``names``; always at least the top one."""
    if not names:
        return []
    ranked = Counter(names).most_common()
    keep = [n for n, c in ranked[:k] if c >= 0.15 * len(names)]
    return keep or [ranked[0][0]]


def brightness(img: Image.Image) -> str:
    """``"dark"`` if mean luminance (PIL "L", ITU-R 601 luma, 0-255) < 85,
    ``"bright"`` if > 170, else ``"medium"``."""
    mean = ImageStat.Stat(img.convert("L")).mean[0]
    return "dark" if mean < 85 else "bright" if mean > 170 else "medium"
