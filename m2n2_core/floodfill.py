"""Minimax flood fill (spec §3): the bottleneck distance from the click through the map.

Two implementations of the same function: a compiled priority flood (the fast default: the costs sorted once by a
radix sort, then one bucket per rank, so O(P) after the sort) and morphological reconstruction by erosion
(scikit-image; the exact path's reference). Both only take maxima of the input values, so they return identical
arrays; the tests assert it.
"""
from __future__ import annotations

import numba
import numpy as np
from scipy import ndimage
from skimage.morphology import reconstruction

from .sorting import stable_argsort

_CROSS = ndimage.generate_binary_structure(2, 1)


def minimax_distance(values: np.ndarray, y: int, x: int) -> np.ndarray:
    """D(q) = min over 4-connected paths from (y, x) to q of max over the path of |M − M(y, x)|, normalised by its max.

    Every sub-level set {D ≤ t} is connected and contains the click. Computed by a priority flood from the click.
    """
    cost = _cost(values, y, x)
    return _normalised(_priority_flood(cost, stable_argsort(cost), y * cost.shape[1] + x))


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
def _priority_flood(cost, order, start):  # pragma: no cover - compiled
    """Pixels leave in order of their bottleneck key, a rank in the costs' ascending ``order``: a pixel's key is
    max(its own rank, the key of the pixel that first reached it), final when reached because keys leave in
    nondecreasing order. One bucket (a linked list) per rank, scanned upwards once."""
    h, w = cost.shape
    n = h * w
    flat = cost.ravel()
    rank = np.empty(n, dtype=np.int64)
    for k in range(n):
        rank[order[k]] = k
    head = np.full(n, -1, dtype=np.int64)
    link = np.empty(n, dtype=np.int64)
    seen = np.zeros(n, dtype=np.bool_)
    out = np.empty(n, dtype=np.float64)
    key = rank[start]  # no pixel's key is below the click's
    head[key], link[start], seen[start] = start, -1, True
    while True:
        while key < n and head[key] < 0:
            key += 1
        if key == n:
            break
        i = head[key]
        head[key] = link[i]
        out[i] = flat[order[key]]
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
            r = max(rank[q], key)
            link[q] = head[r]
            head[r] = q
    return out.reshape(h, w)
