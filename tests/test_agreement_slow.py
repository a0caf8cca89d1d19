"""The fast default path against the exact reference (M2N2Config(exact=True)) on every GrabCut image.

Slow (minutes): run by .ci/run as `./scripts/test.sh -m slow`. Images are scaled to at most 320 px so that the exact
method's full bilateral filter stays affordable; the clicks come from the RITM clicker on the fast path's masks and are
replayed on the exact path.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from m2n2_core import M2N2Config, M2N2Predictor, load_image
from m2n2_core.evaluation.clicker import next_click
from m2n2_core.synthetic import sd_like_attention

from core_helpers import grabcut_dir, iou

pytestmark = pytest.mark.slow
ROOT = grabcut_dir()
STEMS = sorted(p.stem for p in (ROOT / "data_GT").iterdir()) if ROOT else []
R, CLICKS, MAX_SIDE = 32, 3, 320


def sample(stem):
    image = load_image(next((ROOT / "data_GT").glob(f"{stem}.*")))
    gt = np.asarray(Image.open(ROOT / "boundary_GT" / f"{stem}.bmp").convert("L"))
    scale = MAX_SIDE / max(image.shape[:2])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    gt = cv2.resize(gt, size, interpolation=cv2.INTER_NEAREST)
    return image, gt == 255, gt == 128


def masks_for_clicks(image, gt, ignore, attention=None):
    """RITM clicks on the fast path's masks; the fast and the exact masks after each click."""
    results = []
    for exact in (False, True):
        p = M2N2Predictor(M2N2Config(attention="affinity", attention_resolution=R, exact=exact), device="cpu")
        if attention is None:
            p.set_image(image)
        else:
            p.set_attention(image, attention)
        results.append(p)
    fast, exact = results
    clicks, pred, pairs = [], np.zeros_like(gt), []
    for _ in range(CLICKS):
        clicks.append(next_click(gt, pred, clicks, ignore))
        pts, labels = [(x, y) for y, x, _ in clicks], [int(s) for _, _, s in clicks]
        pred = fast.predict(pts, labels)
        pairs.append((pred, exact.predict(pts, labels)))
    return pairs


@pytest.mark.skipif(ROOT is None, reason="GrabCut dataset not found at ../shared/datasets/GrabCut")
@pytest.mark.parametrize("stem", STEMS)
def test_fast_path_agrees_with_exact_on_grabcut_weight_free(stem):
    image, gt, ignore = sample(stem)
    for k, (fast, exact) in enumerate(masks_for_clicks(image, gt, ignore), 1):
        assert iou(fast, exact) >= 0.99, f"{stem}: click {k} IoU {iou(fast, exact):.4f}"


@pytest.mark.skipif(ROOT is None, reason="GrabCut dataset not found at ../shared/datasets/GrabCut")
@pytest.mark.parametrize("stem", STEMS)
def test_fast_path_agrees_with_exact_on_sd_like_attention(stem):
    """Dense attention: the fast path's default at r = 32 (fp32 matrix, each chain's tail in the slow-mode subspace)."""
    image, gt, ignore = sample(stem)
    for k, (fast, exact) in enumerate(masks_for_clicks(image, gt, ignore, sd_like_attention(image, R)), 1):
        assert iou(fast, exact) >= 0.99, f"{stem}: click {k} IoU {iou(fast, exact):.4f}"
