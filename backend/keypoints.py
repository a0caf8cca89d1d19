"""Parse Label Studio's interactive click context into validated clicks.

Rules (documented in backend/README.md):
- Only regions with ``type == "keypointlabels"`` are clicks; a context whose ``result`` is empty or missing means
  "no clicks". A non-empty ``result`` without any keypoint region is an error (this backend only answers keypoints).
- ``value.x`` / ``value.y`` are percentages of the image (0–100 inclusive); NaN, infinities, non-numbers and values
  outside 0–100 are rejected, naming the point.
- Polarity: ``is_positive`` (top level) wins, else ``value.positive``; a keypoint with neither is a positive click.
  Both must be booleans when present.
- The label is ``value.keypointlabels[0]`` (or ``value.labels[0]``); a keypoint must carry exactly one label.
- ``original_width`` / ``original_height``, when present, must be positive integers and equal on every click.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ContextError

KEYPOINT_TYPE = "keypointlabels"
MAX_SIDE = 1 << 20  #: largest original_width / original_height accepted


@dataclass(frozen=True)
class Click:
    x: float                 #: percent of the image width, 0–100
    y: float                 #: percent of the image height, 0–100
    positive: bool
    label: str
    from_name: Optional[str]
    to_name: Optional[str]
    index: int               #: position in ``context.result`` (for error messages)
    region_id: Optional[str]


@dataclass(frozen=True)
class ClickSet:
    clicks: Tuple[Click, ...]
    original_size: Optional[Tuple[int, int]]  #: (width, height) the browser reported, if any


def _name(index: int, region: Dict[str, Any]) -> str:
    rid = region.get("id")
    return f"keypoint #{index}" + (f" (id {rid!r})" if isinstance(rid, str) else "")


def _percent(where: str, axis: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ContextError(f"{where}: value.{axis} must be a number (percent of the image), got {value!r}")
    try:
        value = float(value)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value) or not 0.0 <= value <= 100.0:
        raise ContextError(f"{where}: value.{axis}={value!r} lies outside the image (must be a percentage 0–100)")
    return value


def _polarity(where: str, region: Dict[str, Any], value: Dict[str, Any]) -> bool:
    for owner, key in ((region, "is_positive"), (value, "positive")):
        if key in owner and owner[key] is not None:
            flag = owner[key]
            if not isinstance(flag, bool):
                raise ContextError(f"{where}: {key} must be true or false, got {flag!r}")
            return flag
    return True


def _label(where: str, value: Dict[str, Any]) -> str:
    labels = value.get("keypointlabels", value.get("labels"))
    if not isinstance(labels, list) or len(labels) != 1 or not isinstance(labels[0], str) or not labels[0]:
        raise ContextError(f"{where}: value.keypointlabels must hold exactly one label name, got {labels!r}")
    return labels[0]


def _size(where: str, region: Dict[str, Any], key: str) -> Optional[int]:
    size = region.get(key)
    if size is None:
        return None
    if isinstance(size, float) and size.is_integer():
        size = int(size)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIDE:
        raise ContextError(f"{where}: {key} must be an integer 1–{MAX_SIDE}, got {size!r}")
    return size


def parse_context(context: Any, max_points: int) -> Optional[ClickSet]:
    """Validate ``params.context``; None when it holds no clicks. Raises ContextError naming the faulty region."""
    if context is None:
        return None
    if not isinstance(context, dict):
        raise ContextError(f"params.context must be an object or null, got {type(context).__name__}")
    regions = context.get("result")
    if regions is None or regions == []:
        return None
    if not isinstance(regions, list):
        raise ContextError(f"params.context.result must be a list of regions, got {type(regions).__name__}")
    keypoints = [(i, r) for i, r in enumerate(regions) if isinstance(r, dict) and r.get("type") == KEYPOINT_TYPE]
    if not keypoints:
        kinds = sorted({str(r.get("type")) if isinstance(r, dict) else type(r).__name__ for r in regions})
        raise ContextError(f"params.context.result holds no keypointlabels regions (found: {', '.join(kinds)}); "
                           "this backend answers smart KeyPointLabels clicks")
    if len(keypoints) > max_points:
        raise ContextError(f"too many clicks: {len(keypoints)} keypoints, at most {max_points} per request "
                           "(M2N2_MAX_POINTS)", max_points=max_points)
    clicks: List[Click] = []
    sizes = set()
    for index, region in keypoints:
        where = _name(index, region)
        value = region.get("value")
        if not isinstance(value, dict):
            raise ContextError(f"{where}: value must be an object with x, y and keypointlabels")
        width, height = _size(where, region, "original_width"), _size(where, region, "original_height")
        if (width is None) != (height is None):
            raise ContextError(f"{where}: original_width and original_height must be given together")
        if width is not None:
            sizes.add((width, height))
        from_name, to_name = region.get("from_name"), region.get("to_name")
        clicks.append(Click(
            x=_percent(where, "x", value.get("x")), y=_percent(where, "y", value.get("y")),
            positive=_polarity(where, region, value), label=_label(where, value),
            from_name=from_name if isinstance(from_name, str) else None,
            to_name=to_name if isinstance(to_name, str) else None,
            index=index, region_id=region.get("id") if isinstance(region.get("id"), str) else None))
    if len(sizes) > 1:
        raise ContextError(f"keypoints disagree on the image size (original_width × original_height): "
                           f"{sorted(sizes)}")
    return ClickSet(tuple(clicks), sizes.pop() if sizes else None)


def to_pixels(clicks: Sequence[Click], width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    """Percent clicks → (K×2 float64 (x, y) pixel coordinates in [0, W]×[0, H], K int labels 1/0): x = x%/100·W."""
    points = np.array([[c.x / 100.0 * width, c.y / 100.0 * height] for c in clicks], dtype=np.float64).reshape(-1, 2)
    labels = np.array([1 if c.positive else 0 for c in clicks], dtype=np.int64)
    return points, labels
