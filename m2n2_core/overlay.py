"""Pictures for people: the mask blended over the image with its outline and the clicks drawn."""
from __future__ import annotations

from typing import Sequence, Tuple

import cv2
import numpy as np

MASK_COLOUR = (255, 60, 60)
POSITIVE_COLOUR = (40, 220, 40)
NEGATIVE_COLOUR = (230, 30, 30)


def draw_overlay(image: np.ndarray, mask: np.ndarray, points: Sequence[Tuple[float, float]],
                 labels: Sequence[int], alpha: float = 0.45) -> np.ndarray:
    """H×W×3 uint8 RGB: the mask tinted, its outline in white, positive clicks green and negative clicks red."""
    out = image.astype(np.float32).copy()
    m = mask.astype(bool)
    out[m] = (1 - alpha) * out[m] + alpha * np.array(MASK_COLOUR, dtype=np.float32)
    out = out.astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    thickness = max(1, round(min(image.shape[:2]) / 300))
    cv2.drawContours(out, contours, -1, (255, 255, 255), thickness)
    radius = max(4, round(min(image.shape[:2]) / 80))
    for (x, y), lab in zip(points, labels):
        centre = (int(round(x)), int(round(y)))
        cv2.circle(out, centre, radius + thickness, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(out, centre, radius, POSITIVE_COLOUR if lab else NEGATIVE_COLOUR, -1, cv2.LINE_AA)
    return out
