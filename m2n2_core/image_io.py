"""Decoding user images into H×W×3 uint8 RGB arrays, with clear errors for everything that is not a usable image."""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageSource = Union[str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray]


class ImageError(ValueError):
    """The input is not an image we can segment; the message says why."""


def load_image(src: ImageSource, max_pixels: Optional[int] = None) -> np.ndarray:
    """Decode ``src`` (path, encoded bytes, PIL image or array) into an H×W×3 uint8 RGB array.

    EXIF orientation is applied; grayscale, palette, alpha, 16-bit and CMYK images are converted to RGB.
    Raises ImageError for unreadable or truncated files and for images larger than ``max_pixels``.
    """
    if isinstance(src, np.ndarray):
        rgb = as_rgb_uint8(src)
        _check_size((rgb.shape[1], rgb.shape[0]), max_pixels)
        return rgb
    if isinstance(src, Image.Image):
        return _pil_to_rgb(src, max_pixels)
    if isinstance(src, (bytes, bytearray)):
        if not src:
            raise ImageError("the image is empty (0 bytes)")
        stream, name = io.BytesIO(src), "image data"
    else:
        path = Path(src)
        if not path.is_file():
            raise ImageError(f"no image file at {path}")
        stream, name = path, str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as img:
                _check_size(img.size, max_pixels)
                return _pil_to_rgb(img, max_pixels)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name} is too large to decode safely: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image in a format Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name} could not be decoded (truncated or corrupt?): {exc}") from None


def _check_size(size, max_pixels: Optional[int]) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageError(f"the image has no pixels ({w}×{h})")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(f"the image has {w}×{h} = {w * h} pixels, more than the limit of {max_pixels}")


def _pil_to_rgb(img: Image.Image, max_pixels: Optional[int]) -> np.ndarray:
    img.load()  # decode fully now so that truncation surfaces here
    img = ImageOps.exif_transpose(img)
    _check_size(img.size, max_pixels)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return as_rgb_uint8(np.asarray(img))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return np.array(img.convert("RGB"), dtype=np.uint8)  # a writable copy (np.asarray of a PIL image is read-only)


def as_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """An H×W, H×W×1, H×W×3 or H×W×4 array of any numeric dtype as H×W×3 uint8 (high bit depths rescaled)."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ImageError(f"expected an H×W×3 RGB image, got an array of shape {a.shape}")
    a = a[:, :, :3]
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageError(f"the image has no pixels ({a.shape[1]}×{a.shape[0]})")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == bool:
        return np.ascontiguousarray(a.astype(np.uint8) * 255)
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise ImageError("the image has non-finite values")
        scale = 255.0 if a.max() <= 1.0 else 1.0
        return np.ascontiguousarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8))
    if np.issubdtype(a.dtype, np.integer):
        top = 65535 if a.dtype == np.uint16 or a.max() > 255 else 255
        return np.ascontiguousarray(np.clip(np.rint(a.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8))
    raise ImageError(f"unsupported image dtype {a.dtype}")
