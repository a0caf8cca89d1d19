"""Readers for interactive-segmentation benchmarks: (image, ground-truth mask, ignore mask) samples.

Layouts (image and mask paired by file stem; image extensions: jpg, jpeg, png, bmp, tif, tiff, case-insensitive):

- ``grabcut``:  ``data_GT/`` images, ``boundary_GT/`` masks; 255 = object, 128 = ignore band, 0 = background
  (as RITM reads it: foreground = value > 128, ignore = value == 128).
- ``berkeley``: RITM's layout, ``images/`` + ``masks/``, read exactly like GrabCut (> 128 object, 128 ignore).
- ``davis``:    ``img/`` + ``gt/``; foreground = any channel > 0; nothing ignored.
- ``folder``:   generic ``images/`` + ``masks/``; foreground = value > 127 (any channel); nothing ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from ..image_io import load_image

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


class DatasetError(ValueError):
    """The dataset folder is missing, empty or inconsistent; the message says what is wrong."""


@dataclass(frozen=True)
class Sample:
    name: str
    image: np.ndarray              #: H×W×3 uint8 RGB
    gt: np.ndarray                 #: H×W bool, the object
    ignore: Optional[np.ndarray]   #: H×W bool pixels excluded from IoU and clicks, or None


def _read_mask(path: Path) -> np.ndarray:
    """Mask file → H×W uint8/int array (multi-channel masks reduced by max over colour channels)."""
    try:
        with Image.open(path) as img:
            if img.mode in ("RGBA", "LA", "PA"):
                img = img.convert("RGB")
            a = np.asarray(img)
    except OSError as exc:
        raise DatasetError(f"cannot read mask {path}: {exc}") from None
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    return a.max(axis=2) if a.ndim == 3 else a


def _grabcut_mask(raw: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    return raw > 128, raw == 128


def _nonzero_mask(raw: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    return raw > 0, None


def _half_mask(raw: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    return raw > 127, None


MaskDecoder = Callable[[np.ndarray], Tuple[np.ndarray, Optional[np.ndarray]]]

#: dataset kind → (image folder, mask folder, mask decoder)
LAYOUTS: Dict[str, Tuple[str, str, MaskDecoder]] = {
    "grabcut": ("data_GT", "boundary_GT", _grabcut_mask),
    "berkeley": ("images", "masks", _grabcut_mask),
    "davis": ("img", "gt", _nonzero_mask),
    "folder": ("images", "masks", _half_mask),
}


def _files_by_stem(folder: Path) -> Dict[str, Path]:
    if not folder.is_dir():
        raise DatasetError(f"missing folder {folder}")
    files: Dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            if p.stem in files:
                raise DatasetError(f"two files share the stem {p.stem!r} in {folder}: {files[p.stem].name}, {p.name}")
            files[p.stem] = p
    return files


class Dataset:
    """A sorted list of (image, mask) file pairs; samples are decoded on access."""

    def __init__(self, kind: str, root, limit: Optional[int] = None):
        if kind not in LAYOUTS:
            raise DatasetError(f"unknown dataset kind {kind!r}; choose one of {', '.join(LAYOUTS)}")
        if limit is not None and limit < 1:
            raise DatasetError("--limit must be at least 1")
        self.kind = kind
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset root {self.root} is not a folder")
        image_dir, mask_dir, self._decode = LAYOUTS[kind]
        images = _files_by_stem(self.root / image_dir)
        masks = _files_by_stem(self.root / mask_dir)
        no_mask = sorted(set(images) - set(masks))
        no_image = sorted(set(masks) - set(images))
        if no_mask or no_image:
            detail = []
            if no_mask:
                detail.append(f"images without a mask in {mask_dir}/: {', '.join(no_mask[:5])}"
                              + (" ..." if len(no_mask) > 5 else ""))
            if no_image:
                detail.append(f"masks without an image in {image_dir}/: {', '.join(no_image[:5])}"
                              + (" ..." if len(no_image) > 5 else ""))
            raise DatasetError(f"{kind} dataset at {self.root} does not pair up: " + "; ".join(detail))
        if not images:
            raise DatasetError(f"no images found in {self.root / image_dir}")
        self.pairs: List[Tuple[str, Path, Path]] = [(s, images[s], masks[s]) for s in sorted(images)][:limit]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Sample:
        name, image_path, mask_path = self.pairs[index]
        image = load_image(image_path)
        gt, ignore = self._decode(_read_mask(mask_path))
        if gt.shape != image.shape[:2]:
            raise DatasetError(f"{name}: mask is {gt.shape[1]}×{gt.shape[0]} but image is "
                               f"{image.shape[1]}×{image.shape[0]}")
        if ignore is not None and not ignore.any():
            ignore = None
        return Sample(name, image, gt, ignore)

    def __iter__(self):
        return (self[i] for i in range(len(self)))
