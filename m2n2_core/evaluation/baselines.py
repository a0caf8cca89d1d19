"""The segmenters the harness compares; each is driven by the same clicker and sees only (image, clicks).

Every method has ``set_image(image)`` (H×W×3 uint8 RGB) and ``predict(points, labels) -> H×W bool``, points K×2
(x, y) pixels, labels 1/0; each prediction depends only on the image and the current clicks.

- ``m2n2``: ``M2N2Predictor(config)``: ``set_image`` once, ``predict`` per click.
- ``grabcut``: OpenCV ``cv2.grabCut`` (5 iterations, ``GC_INIT_WITH_MASK``) from this mask: a band along the image
  border 5 % of the side wide is probable background, the rest probable foreground (GrabCut's classic
  "rectangle = nearly the whole image"), and a disk of radius ``click_radius`` px (default 5) around every click is
  definite foreground / background. The result's foreground = definite ∪ probable foreground.
- ``random-walker``: ``skimage.segmentation.random_walker`` (mode ``cg_j``, beta 130 on RGB in [0, 1]) on the image
  downscaled (INTER_AREA) so its longer side is at most ``max_side`` px (default 256). Seeds: a disk of radius 2
  cells around every click with its label; while there is no negative click, the 1-cell image border is the
  background seed. The foreground probability is upsampled bilinearly to full size and thresholded at 0.5.

Both baselines finally force every clicked pixel to its own label, as M2N2 does.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from ..config import M2N2Config

METHODS = ("m2n2", "grabcut", "random-walker")


def _disk_masks(shape, points: np.ndarray, labels: np.ndarray, radius: float):
    """(positive, negative) bool masks: disks of ``radius`` px around the positive / negative points."""
    h, w = shape
    yy, xx = np.ogrid[:h, :w]
    pos, neg = np.zeros(shape, bool), np.zeros(shape, bool)
    for (x, y), lab in zip(points, labels):
        disk = (xx - x) ** 2 + (yy - y) ** 2 <= radius ** 2
        if lab:
            pos |= disk
        else:
            neg |= disk
    return pos, neg


def _force_clicks(mask: np.ndarray, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    for (x, y), lab in zip(points, labels):
        mask[min(int(round(y)), h - 1), min(int(round(x)), w - 1)] = bool(lab)
    return mask


def _check(points, labels):
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    lab = np.asarray(labels).reshape(-1).astype(bool)
    if len(pts) == 0 or len(pts) != len(lab):
        raise ValueError(f"need K ≥ 1 points and as many labels, got {len(pts)} points and {len(lab)} labels")
    return pts, lab


class M2N2Method:
    name = "m2n2"

    def __init__(self, config: M2N2Config):
        from ..predictor import M2N2Predictor
        self.predictor = M2N2Predictor(config)

    @property
    def description(self) -> str:
        return self.predictor.source.description

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(image)

    def predict(self, points, labels) -> np.ndarray:
        return self.predictor.predict(points, labels)


class GrabCutMethod:
    name = "grabcut"

    def __init__(self, iterations: int = 5, click_radius: float = 5.0, border: float = 0.05):
        self.iterations, self.click_radius, self.border = iterations, click_radius, border
        self.description = f"opencv-grabcut(iterations={iterations}, click_radius={click_radius:g}, border={border:g})"
        self._bgr: Optional[np.ndarray] = None

    def set_image(self, image: np.ndarray) -> None:
        self._bgr = np.ascontiguousarray(image[:, :, ::-1])

    def predict(self, points, labels) -> np.ndarray:
        pts, lab = _check(points, labels)
        h, w = self._bgr.shape[:2]
        mask = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
        by, bx = max(1, round(self.border * h)), max(1, round(self.border * w))
        mask[by:h - by, bx:w - bx] = cv2.GC_PR_FGD
        pos, neg = _disk_masks((h, w), pts, lab, self.click_radius)
        mask[pos] = cv2.GC_FGD
        mask[neg] = cv2.GC_BGD
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.grabCut(self._bgr, mask, None, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)
        return _force_clicks((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD), pts, lab)


class RandomWalkerMethod:
    name = "random-walker"

    def __init__(self, beta: float = 130.0, max_side: int = 256, seed_radius: float = 2.0):
        self.beta, self.max_side, self.seed_radius = beta, max_side, seed_radius
        self.description = f"skimage-random-walker(beta={beta:g}, max_side={max_side}, seed_radius={seed_radius:g})"
        self._small: Optional[np.ndarray] = None
        self._size = (0, 0)

    def set_image(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        sw, sh = max(2, round(w * scale)), max(2, round(h * scale))
        self._small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float64) / 255.0
        self._size = (h, w)

    def predict(self, points, labels) -> np.ndarray:
        from skimage.segmentation import random_walker

        pts, lab = _check(points, labels)
        h, w = self._size
        sh, sw = self._small.shape[:2]
        small_pts = np.stack([(pts[:, 0] + 0.5) * sw / w - 0.5, (pts[:, 1] + 0.5) * sh / h - 0.5], axis=1)
        pos, neg = _disk_masks((sh, sw), small_pts, lab, self.seed_radius)
        seeds = np.zeros((sh, sw), np.int32)
        if not neg.any():
            seeds[[0, -1], :] = 2
            seeds[:, [0, -1]] = 2
        seeds[neg] = 2
        seeds[pos] = 1
        prob = random_walker(self._small, seeds, beta=self.beta, mode="cg_j", channel_axis=-1,
                             return_full_prob=True)[0]
        full = cv2.resize(prob.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        return _force_clicks(full > 0.5, pts, lab)


def make_method(name: str, config: M2N2Config):
    """A fresh segmenter by name ("m2n2", "grabcut" or "random-walker")."""
    if name == "m2n2":
        return M2N2Method(config)
    if name == "grabcut":
        return GrabCutMethod()
    if name == "random-walker":
        return RandomWalkerMethod()
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
