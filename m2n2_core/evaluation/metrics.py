"""IoU and the number-of-clicks metrics (spec §5)."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

THRESHOLDS = (0.85, 0.90, 0.95)


def iou(gt: np.ndarray, pred: np.ndarray, ignore: Optional[np.ndarray] = None) -> float:
    """Intersection over union of two bool masks over the non-ignored pixels (1.0 when both are empty)."""
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred shapes differ: {gt.shape} vs {pred.shape}")
    if ignore is not None:
        keep = ~np.asarray(ignore, dtype=bool)
        gt, pred = gt & keep, pred & keep
    union = np.count_nonzero(gt | pred)
    return 1.0 if union == 0 else np.count_nonzero(gt & pred) / union


def noc(ious: Sequence[float], threshold: float, max_clicks: int) -> int:
    """Clicks needed to reach IoU ≥ threshold (ious[k] is the IoU after click k+1); max_clicks when never reached."""
    reached = np.flatnonzero(np.asarray(ious[:max_clicks], dtype=np.float64) >= threshold)
    return int(reached[0]) + 1 if reached.size else max_clicks


def failed(ious: Sequence[float], threshold: float, max_clicks: int) -> bool:
    """True when IoU ≥ threshold is not reached within max_clicks clicks."""
    return not np.any(np.asarray(ious[:max_clicks], dtype=np.float64) >= threshold)


def summarise(per_sample_ious: Sequence[Sequence[float]], max_clicks: int) -> Dict[str, object]:
    """NoC@85/90/95, failures (nof = NoF@90, plus nof85 / nof95) and the mIoU after each click 1..max_clicks."""
    if not per_sample_ious:
        raise ValueError("no samples to summarise")
    curves = np.asarray([list(s[:max_clicks]) for s in per_sample_ious], dtype=np.float64)
    if curves.shape[1] != max_clicks:
        raise ValueError(f"every sample needs {max_clicks} IoU values, one per click")
    out: Dict[str, object] = {}
    for t in THRESHOLDS:
        key = f"{round(t * 100)}"
        out[f"noc{key}"] = float(np.mean([noc(c, t, max_clicks) for c in curves]))
        out[f"nof{key}"] = int(sum(failed(c, t, max_clicks) for c in curves))
    out["nof"] = out["nof90"]
    out["miou"] = [float(v) for v in curves.mean(axis=0)]
    return out
