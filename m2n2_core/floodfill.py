"""Minimax flood fill (spec §3): the bottleneck distance from the click through the map."""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import reconstruction

_CROSS = ndimage.generate_binary_structure(2, 1)


def minimax_distance(values: np.ndarray, y: int, x: int) -> np.ndarray:
    """D(q) = min over 4-connected paths from (y, x) to q of max over the path of |M − M(y, x)|, normalised by its max.

    This is the morphological reconstruction by erosion of the marker "0 at the click, max elsewhere" over
    |M − M(click)|, computed exactly in compiled code. Every sub-level set {D ≤ t} is connected and contains the click.
    """
    m = np.asarray(values, dtype=np.float64)
    cost = np.abs(m - m[y, x])
    top = cost.max()
    if top <= 0:
        return np.zeros(m.shape, dtype=np.float32)
    marker = np.full_like(cost, top)
    marker[y, x] = cost[y, x]
    d = reconstruction(marker, cost, method="erosion", footprint=_CROSS)
    return (d / d.max()).astype(np.float32) if d.max() > 0 else np.zeros(m.shape, dtype=np.float32)
