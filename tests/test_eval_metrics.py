import numpy as np
import pytest

from m2n2_core.evaluation.metrics import iou, noc, summarise


def test_iou_ignores_ignore_pixels():
    gt = np.array([[1, 1, 0, 0]], bool)
    pred = np.array([[1, 0, 1, 0]], bool)
    assert iou(gt, pred) == pytest.approx(1 / 3)
    assert iou(gt, pred, ignore=np.array([[0, 0, 1, 0]], bool)) == pytest.approx(1 / 2)
    assert iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0


def test_noc_counts_clicks_until_threshold_and_max_on_failure():
    ious = [0.5, 0.86, 0.89, 0.9, 0.97]
    assert noc(ious, 0.85, 5) == 2
    assert noc(ious, 0.90, 5) == 4      # reaching the threshold exactly counts
    assert noc(ious, 0.95, 5) == 5
    assert noc(ious, 0.99, 5) == 5      # failure counts as max clicks
    assert noc(ious, 0.95, 4) == 4      # only the first max_clicks values count


def test_summarise_means_failures_and_curve():
    s = summarise([[0.9, 0.95, 0.96], [0.5, 0.6, 0.7]], max_clicks=3)
    assert s["noc85"] == pytest.approx((1 + 3) / 2)
    assert s["noc90"] == pytest.approx((1 + 3) / 2)
    assert s["noc95"] == pytest.approx((2 + 3) / 2)
    assert (s["nof85"], s["nof90"], s["nof95"], s["nof"]) == (1, 1, 1, 1)
    assert s["miou"] == pytest.approx([0.7, 0.775, 0.83])
    with pytest.raises(ValueError):
        summarise([[0.9]], max_clicks=3)
