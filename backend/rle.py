"""Masks → Label Studio brush RLE (via ``label_studio_sdk.converter.brush.mask2rle``)."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
from label_studio_sdk.converter.brush import mask2rle


def fit_mask(mask: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """A boolean H×W mask resampled (nearest neighbour) to ``size`` = (width, height); unchanged when it fits."""
    width, height = size
    if mask.shape == (height, width):
        return mask
    rows = np.minimum((np.arange(height) + 0.5) * mask.shape[0] / height, mask.shape[0] - 1).astype(np.intp)
    cols = np.minimum((np.arange(width) + 0.5) * mask.shape[1] / width, mask.shape[1] - 1).astype(np.intp)
    return mask[rows[:, None], cols[None, :]]


def mask_to_rle(mask: np.ndarray) -> List[int]:
    """Label Studio RLE of a boolean H×W mask, encoded as 0/255 RGBA (a 0/1 mask would render nearly invisible)."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    return mask2rle(np.where(mask, np.uint8(255), np.uint8(0)))
