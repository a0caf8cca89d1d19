"""Minimax flood fill (spec §3): the bottleneck distance from the click through the map.

Two implementations of the same function: a compiled priority flood (the fast default, O(P log P) with a binary heap
in machine code) and morphological reconstruction by erosion (scikit-image; the exact path's reference). Both only
take maxima of the input values, so they return identical arrays; the tests assert it.
"""
from __future__ import annotations

import numba
import numpy as np
from scipy import ndimage
from skimage.morphology import reconstruction

_CROSS = ndimage.generate_binary_structure(2, 1)


def minimax_distance(values: np.ndarray, y: int, x: int) -> np.ndarray:
    """D(q) = min over 4-connected paths from (y, x) to q of max over the path of |M − M(y, x)|, normalised by its max.

    Every sub-level set {D ≤ t} is connected and contains the click. Computed by a priority flood from the click.
    """
    cost = _cost(values, y, x)
    return _normalised(_priority_flood(cost, y * cost.shape[1] + x))


def minimax_distance_reconstruction(values: np.ndarray, y: int, x: int) -> np.ndarray:
    """The same D by morphological reconstruction by erosion of "0 at the click, max elsewhere" over |M − M(click)|."""
    cost = _cost(values, y, x)
    marker = np.full_like(cost, cost.max())
    marker[y, x] = cost[y, x]
    return _normalised(reconstruction(marker, cost, method="erosion", footprint=_CROSS))


def _cost(values: np.ndarray, y: int, x: int) -> np.ndarray:
    m = np.asarray(values, dtype=np.float64)
    return np.abs(m - m[y, x])


def _normalised(d: np.ndarray) -> np.ndarray:
    top = d.max()
    return (d / top).astype(np.float32) if top > 0 else np.zeros(d.shape, dtype=np.float32)


@numba.njit(nogil=True, cache=True)
def _priority_flood(cost, start):  # pragma: no cover - compiled
    """Pixels leave a min-heap in order of their bottleneck key; a pixel's key is max(key of the pixel that first
    reached it, its own cost), final when pushed because every later pop has a key at least as large."""
    h, w = cost.shape
    flat = cost.ravel()
    out = np.empty(h * w, dtype=np.float64)
    seen = np.zeros(h * w, dtype=np.bool_)
    keys = np.empty(h * w, dtype=np.float64)
    items = np.empty(h * w, dtype=np.int64)
    keys[0], items[0], size = flat[start], start, 1
    seen[start] = True
    while size > 0:
        key, i = keys[0], items[0]
        out[i] = key
        size -= 1
        if size > 0:  # move the last entry to the root and sift it down
            last_key, last_item, j = keys[size], items[size], 0
            while True:
                c = 2 * j + 1
                if c >= size:
                    break
                if c + 1 < size and keys[c + 1] < keys[c]:
                    c += 1
                if keys[c] >= last_key:
                    break
                keys[j], items[j], j = keys[c], items[c], c
            keys[j], items[j] = last_key, last_item
        y, x = i // w, i % w
        for d in range(4):
            if d == 0:
                if y == 0:
                    continue
                q = i - w
            elif d == 1:
                if y == h - 1:
                    continue
                q = i + w
            elif d == 2:
                if x == 0:
                    continue
                q = i - 1
            else:
                if x == w - 1:
                    continue
                q = i + 1
            if seen[q]:
                continue
            seen[q] = True
            v = max(flat[q], key)
            j = size  # push and sift up
            size += 1
            while j > 0:
                parent = (j - 1) >> 1
                if keys[parent] <= v:
                    break
                keys[j], items[j], j = keys[parent], items[parent], parent
            keys[j], items[j] = v, q
    return out.reshape(h, w)
