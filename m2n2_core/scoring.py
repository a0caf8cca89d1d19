"""Per-click threshold selection (spec §4): candidates, edge / prior / positive / negative scores, λ_i."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import numba
import numpy as np

from . import threads
from .sorting import stable_argsort

EDGE_LEVELS = 1024


@dataclass(frozen=True)
class Candidates:
    """Everything about one click's distance map D_i that does not depend on the other clicks.

    ``values``: D_i in ascending (stable) order without the last value, i.e. the candidate thresholds d_(k);
    ``edge``: the mean quantised gradient over the outer 4-neighbour ring of each prefix segment S_k;
    ``flat``: D_i flattened (to look up other clicks' values).
    """
    values: np.ndarray
    edge: np.ndarray
    flat: np.ndarray
    width: int

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self.edge.nbytes + self.flat.nbytes


def edge_magnitude(distance: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude (reflect padding) / its max, quantised to integers 0..1024 (floor).

    The same numbers as ``np.hypot(ndimage.sobel(d, 1, mode="reflect"), ndimage.sobel(d, 0, mode="reflect"))`` in
    fp64 (each sum taken in SciPy's order), computed by a compiled kernel with rows split over the kernel threads."""
    d = np.ascontiguousarray(distance, dtype=np.float64)
    g = np.empty(d.shape)
    threads.over_range(_sobel_magnitude_rows, d.shape[0], d, g, min_part=32)
    top = g.max()
    if top <= 0:
        return np.zeros(d.shape, dtype=np.int64)
    return np.floor(g / top * EDGE_LEVELS).astype(np.int64)


@numba.njit(nogil=True, cache=True)
def _sobel_magnitude_rows(d, out, y0, y1):  # pragma: no cover - compiled
    """out[y, x] = hypot(Sobel along x, Sobel along y) for rows y0..y1; SciPy's correlate1d sums a derivative
    [−1, 0, 1] as (right − left) and then a smoothing [1, 2, 1] as centre·2 + (before + after)."""
    h, w = d.shape
    for y in range(y0, y1):
        up, down = max(y - 1, 0), min(y + 1, h - 1)
        for x in range(w):
            left, right = max(x - 1, 0), min(x + 1, w - 1)
            along_x = ((d[y, right] - d[y, left]) * 2.0
                       + ((d[up, right] - d[up, left]) + (d[down, right] - d[down, left])))
            along_y = ((d[down, x] - d[up, x]) * 2.0
                       + ((d[down, left] - d[up, left]) + (d[down, right] - d[up, right])))
            out[y, x] = math.hypot(along_x, along_y)


def candidates(distance: np.ndarray) -> Candidates:
    """Sort D_i once (stable) and compute the boundary-ring mean gradient of every prefix segment incrementally.

    A pixel q lies on the outer ring of S_k exactly for m(q) ≤ k < rank(q), where m(q) is the smallest rank among its
    4-neighbours; ring sums and counts per k therefore follow from difference arrays and running sums (integers: the
    gradient is quantised, so the sums are exact).
    """
    h, w = distance.shape
    flat = np.ascontiguousarray(distance, dtype=np.float32).reshape(-1)
    order = stable_argsort(flat)
    edge = _ring_edge(order, edge_magnitude(distance).reshape(-1), h, w)
    return Candidates(values=flat[order][: flat.size - 1], edge=edge, flat=flat, width=w)


@numba.njit(nogil=True, cache=True)
def _ring_edge(order, gradient, h, w):  # pragma: no cover - compiled
    """edge[k] for k < n − 1: the mean of ``gradient`` over the pixels q with m(q) ≤ k < rank(q) (0 if none)."""
    n = h * w
    rank = np.empty(n, dtype=np.int64)
    for k in range(n):
        rank[order[k]] = k
    sums = np.zeros(n + 1, dtype=np.int64)
    counts = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        y, x = i // w, i % w
        m = n
        if y > 0:
            m = min(m, rank[i - w])
        if y < h - 1:
            m = min(m, rank[i + w])
        if x > 0:
            m = min(m, rank[i - 1])
        if x < w - 1:
            m = min(m, rank[i + 1])
        r = rank[i]
        if m < r:  # the pixel joins the ring before it joins the segment
            sums[m] += gradient[i]
            sums[r] -= gradient[i]
            counts[m] += 1
            counts[r] -= 1
    edge = np.zeros(max(n - 1, 0))
    total = count = 0
    for k in range(n - 1):
        total += sums[k]
        count += counts[k]
        if count > 0:
            edge[k] = total / count
    return edge


def select_threshold(cand: Candidates, own: int, same: Sequence[int], opposite: Sequence[int], area_prior: float,
                     use_edge: bool = True, use_prior: bool = True, use_positive: bool = True,
                     use_negative: bool = True) -> Tuple[float, float]:
    """λ_i and its score: the candidate maximising prior × edge × positive × negative (ties → smallest λ).

    ``own``, ``same`` and ``opposite`` are flat pixel indices of click i, the other clicks with i's label, and the
    clicks with the other label. One compiled pass over the candidates (the scores' factors multiplied in this order,
    in fp64).
    """
    values = cand.values
    inside_from = np.sort(np.searchsorted(values, cand.flat[[own, *same]], side="left"))  # q ∈ S_k ⟺ k ≥ this
    limit = cand.flat[list(opposite)].min() if len(opposite) else cand.flat.max()
    best, score = _best_candidate(values, cand.edge, inside_from, float(1 + len(same)), area_prior * (values.size + 1),
                                  limit, use_edge, use_prior, use_positive, use_negative)
    return float(values[best]), score


@numba.njit(nogil=True, cache=True)
def _best_candidate(values, edge, inside_from, clicks, prior_limit, limit, use_edge, use_prior, use_positive,
                    use_negative):  # pragma: no cover - compiled
    """The first k maximising edge[k] · [k + 1 < prior_limit] · #{inside_from ≤ k} / clicks · [values[k] < limit]
    (each factor only when used), and that maximum."""
    best, best_score, inside = 0, -1.0, 0
    for k in range(values.size):
        while inside < inside_from.size and inside_from[inside] <= k:
            inside += 1
        score = 1.0
        if use_edge:
            score *= edge[k]
        if use_prior:
            score *= 1.0 if k + 1 < prior_limit else 0.0
        if use_positive:
            score *= inside / clicks
        if use_negative:
            score *= 1.0 if values[k] < limit else 0.0
        if score > best_score:
            best, best_score = k, score
    return best, best_score
