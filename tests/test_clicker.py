import numpy as np
import pytest

from m2n2_core.evaluation.clicker import clicker_for, next_click, next_click_authors


def _square(h=21, w=31, top=5, left=10, size=11):
    gt = np.zeros((h, w), bool)
    gt[top:top + size, left:left + size] = True
    return gt


def test_first_click_is_the_objects_deepest_interior_point():
    gt = _square()
    assert next_click(gt, np.zeros_like(gt)) == (10, 15, True)


def test_image_border_counts_as_boundary():
    gt = np.zeros((10, 20), bool)
    gt[:, :9] = True  # object touching the top, bottom and left borders: width 9, height 10
    y, x, positive = next_click(gt, np.zeros_like(gt))
    assert positive and x == 4 and y == 4  # first (row-major) pixel at distance 5 from the padded border


def test_false_positive_region_larger_than_false_negative_gives_a_negative_click():
    gt = _square()
    pred = gt.copy()
    pred[:, :9] = True          # big FP slab left of the object (columns 0..8)
    pred[5, 10] = False         # one-pixel FN
    y, x, positive = next_click(gt, pred)
    assert not positive and gt[y, x] == 0 and pred[y, x]
    assert x == 4               # centre column of the 9-wide slab


def test_ties_between_fn_and_fp_give_a_negative_click():
    gt = np.zeros((9, 9), bool)
    gt[1:4, 1:4] = True
    pred = np.zeros_like(gt)
    pred[5:8, 5:8] = True       # FN and FP squares of equal depth
    assert next_click(gt, pred) == (6, 6, False)


def test_ignore_pixels_are_neither_errors_nor_clicked():
    gt = _square()
    ignore = np.zeros_like(gt)
    ignore[5:16, 10:16] = True  # ignore the left half of the object
    y, x, positive = next_click(gt, np.zeros_like(gt), ignore=ignore)
    assert positive and not ignore[y, x]
    assert (y, x) == (7, 18)  # first pixel at the greatest depth (3) of the remaining 11×5 part


def test_everything_correct_or_ignored_gives_none():
    gt = _square()
    assert next_click(gt, gt.copy()) is None
    ignore = np.ones_like(gt)
    assert next_click(gt, np.zeros_like(gt), ignore=ignore) is None


def test_already_clicked_pixel_is_skipped():
    gt = _square()
    first = next_click(gt, np.zeros_like(gt))
    second = next_click(gt, np.zeros_like(gt), clicks=[first])
    assert second[:2] != first[:2] and second[2]
    assert second == (9, 14, True)  # next pixel at the same depth is not it; first row-major among the runners-up


def test_authors_protocol_merges_errors_and_counts_the_band_as_object():
    gt = _square()
    band = np.zeros_like(gt)
    band[5:16, 21:28] = True    # a 7-wide ignore band to the right of the object
    pred = gt.copy()
    y, x, positive = next_click_authors(gt, pred, ignore=band)
    assert positive and band[y, x] and x == 24  # the band is foreground there, so missing it is an FN
    assert next_click(gt, pred, ignore=band) is None  # RITM ignores it: nothing to correct


def test_authors_label_follows_the_ground_truth_at_the_click():
    gt = _square()
    pred = np.zeros_like(gt)
    pred[:, 25:] = True         # FP slab 6 wide vs FN square 11 wide: FN is deeper
    assert next_click_authors(gt, pred) == (10, 15, True)


def test_clicker_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        next_click(np.zeros((3, 3), bool), np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match="unknown protocol"):
        clicker_for("nope")
