"""Turn whatever the user passed as an image into an RGB PIL image, or a clear error.

Accepted: a path (str / os.PathLike), a PIL image, raw encoded bytes, or an array
(numpy or torch; HxW, HxWx1, HxWx3, HxWx4; uint8, uint16 or float in [0, 1]).
RGBA / LA / P / L / I;16 / CMYK images are converted (transparency is composited on
white), never rejected. Missing files, corrupt bytes and 0-pixel images raise
`ImageError` with a message that names the problem and the fix.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from .errors import ImageError

ImageLike = Any  # str | os.PathLike | PIL.Image.Image | bytes | numpy.ndarray | torch.Tensor


def load_image(image: ImageLike) -> Image.Image:
    """Return `image` as a fully loaded RGB PIL image."""
    if isinstance(image, Image.Image):
        pil = image
    elif isinstance(image, (str, os.PathLike)):
        pil = _open_path(Path(image))
    elif isinstance(image, (bytes, bytearray, memoryview)):
        pil = _open_bytes(bytes(image), source="the image bytes")
    elif hasattr(image, "__array__") or _is_tensor(image):
        pil = _from_array(image)
    else:
        raise ImageError(
            f"Unsupported image type {type(image).__name__}: pass a file path, a PIL image, "
            "encoded image bytes or an HxWxC array."
        )
    if pil.width == 0 or pil.height == 0:
        raise ImageError(
            f"The image has no pixels ({pil.width}x{pil.height}); pass an image at least 1x1 pixel in size."
        )
    return _to_rgb(pil)


def _is_tensor(obj: Any) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "detach")


def _open_path(path: Path) -> Image.Image:
    if not path.exists():
        raise ImageError(f"Image file not found: {path}. Check the path (it is resolved from {Path.cwd()}).")
    if path.is_dir():
        raise ImageError(f"Image path {path} is a directory; pass the path of an image file.")
    return _open_bytes(path.read_bytes(), source=str(path))


def _open_bytes(data: bytes, source: str) -> Image.Image:
    if not data:
        raise ImageError(f"{source} is empty (0 bytes); pass a PNG/JPEG/WebP/... image.")
    try:
        pil = Image.open(io.BytesIO(data))
        pil.load()
    except Image.DecompressionBombError as exc:
        raise ImageError(
            f"{source} claims to be too large to decode safely ({exc}); it is corrupt or a decompression bomb. "
            "Pass a smaller image, or, for a trusted file, raise PIL.Image.MAX_IMAGE_PIXELS first."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(
            f"Could not decode {source} as an image ({exc.__class__.__name__}: {exc}); "
            "the file is corrupt or not an image. Re-export it as PNG or JPEG."
        ) from None
    return pil


def _from_array(array: Any) -> Image.Image:
    import numpy as np

    if _is_tensor(array):
        array = array.detach().cpu().numpy()
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.transpose(arr, (1, 2, 0))  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageError(
            f"Image array has shape {arr.shape}; expected HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA)."
        )
    if arr.size == 0:
        raise ImageError(f"The image array is empty (shape {arr.shape}); pass an image with pixels.")
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError("The image array contains NaN or infinite values; pass finite pixel values.")
        scale = 255.0 if arr.max() <= 1.0 else 1.0
        arr = np.clip(arr * scale, 0, 255).round().astype(np.uint8)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def _to_rgb(pil: Image.Image) -> Image.Image:
    if pil.mode == "RGB":
        return pil
    if pil.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        arr = np.asarray(pil, dtype=np.float64)
        top = 65535.0 if pil.mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.clip(arr / top * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if pil.mode == "P" and "transparency" in pil.info:
        pil = pil.convert("RGBA")
    if pil.mode in ("RGBA", "LA", "PA"):
        rgba = pil.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return pil.convert("RGB")
