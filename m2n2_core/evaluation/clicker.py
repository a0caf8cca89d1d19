"""Simulated users: where the next click goes given the ground truth and the current prediction (spec §5).

Two protocols:

- ``"ritm"`` (the standard one, RITM's ``isegm/inference/clicker.py`` behaviour): false negatives FN = gt ∧ ¬pred and
  false positives FP = ¬gt ∧ pred, both without ignore pixels; each padded by one pixel of zeros (so the image border
  counts as boundary), Euclidean distance transform, already-clicked pixels set to 0. The click is positive iff
  max DT(FN) > max DT(FP), and goes to the first pixel (row-major, ``np.argmax`` order) holding that maximum.
- ``"authors"`` (the M2N2 authors' evaluator): one merged error mask FN ∪ FP, with the ignore band counted as
  foreground (no pixel is ignored); the click goes to the first maximum of its distance transform and is positive iff
  that pixel is foreground.
"""
from __future__ import annotations

from typing import Iterable, Optional, Tuple

import numpy as np
from scipy.ndimage import distance_transform_edt

PROTOCOLS = ("ritm", "authors")

Click = Tuple[int, int, bool]  # (y, x, is_positive)


def _padded_edt(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance to the nearest False pixel, with the outside of the image counting as False."""
    return distance_transform_edt(np.pad(mask, 1, mode="constant"))[1:-1, 1:-1]


def _unclicked(shape: Tuple[int, int], clicks: Iterable[Click]) -> np.ndarray:
    free = np.ones(shape, dtype=bool)
    for y, x, _ in clicks:
        free[y, x] = False
    return free


def next_click(gt: np.ndarray, pred: np.ndarray, clicks: Iterable[Click] = (),
               ignore: Optional[np.ndarray] = None) -> Optional[Click]:
    """RITM's click for (gt, pred): (y, x, is_positive), or None when no unclicked, non-ignored pixel is wrong."""
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"gt and pred must be 2-D masks of one shape, got {gt.shape} and {pred.shape}")
    valid = np.ones_like(gt) if ignore is None else ~np.asarray(ignore, dtype=bool)
    free = _unclicked(gt.shape, clicks)
    fn_dt = _padded_edt(gt & ~pred & valid) * free
    fp_dt = _padded_edt(~gt & pred & valid) * free
    fn_max, fp_max = fn_dt.max(), fp_dt.max()
    if max(fn_max, fp_max) <= 0:
        return None
    positive = bool(fn_max > fp_max)
    dt = fn_dt if positive else fp_dt
    y, x = np.unravel_index(int(np.argmax(dt)), dt.shape)
    return int(y), int(x), positive


def next_click_authors(gt: np.ndarray, pred: np.ndarray, clicks: Iterable[Click] = (),
                       ignore: Optional[np.ndarray] = None) -> Optional[Click]:
    """The authors' click: first maximum of the merged error's distance transform; ignore pixels are foreground."""
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"gt and pred must be 2-D masks of one shape, got {gt.shape} and {pred.shape}")
    fg = gt if ignore is None else gt | np.asarray(ignore, dtype=bool)
    dt = _padded_edt(fg != pred) * _unclicked(gt.shape, clicks)
    if dt.max() <= 0:
        return None
    y, x = np.unravel_index(int(np.argmax(dt)), dt.shape)
    return int(y), int(x), bool(fg[y, x])


def clicker_for(protocol: str):
    """The next-click function of a protocol name ("ritm" or "authors")."""
    if protocol == "ritm":
        return next_click
    if protocol == "authors":
        return next_click_authors
    raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
