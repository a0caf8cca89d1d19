"""Truncated nearest-neighbour vote over all clicks (spec §4)."""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np


def truncated_nearest_neighbour(distances: Sequence[np.ndarray], thresholds: Sequence[float],
                                positive: Sequence[bool], clicked: Sequence[Tuple[int, int]]) -> np.ndarray:
    """Foreground iff the click with the smallest D_i/max(λ_i, 1e−7) is positive and that value is ≤ 1
    (ties → the earliest click); finally each clicked pixel (y, x) gets its own click's label (later clicks win)."""
    best = None
    best_positive = None
    for d, lam, pos in zip(distances, thresholds, positive):
        nd = d / max(lam, 1e-7)
        if best is None:
            best, best_positive = nd.copy(), np.full(nd.shape, bool(pos))
        else:
            closer = nd < best  # strict: ties keep the earlier click
            best[closer] = nd[closer]
            best_positive[closer] = bool(pos)
    mask = best_positive & (best <= 1.0)
    for (y, x), pos in zip(clicked, positive):
        mask[y, x] = bool(pos)
    return mask
