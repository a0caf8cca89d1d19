"""Spec §4: candidate thresholds, the boundary-ring edge score and the score rules that choose λ_i."""
import itertools

import numpy as np
import pytest
from scipy import ndimage

from m2n2_core.scoring import EDGE_LEVELS, Candidates, candidates, edge_magnitude, select_threshold

CROSS = ndimage.generate_binary_structure(2, 1)


# ---- edge magnitude ---------------------------------------------------------------------------------------------
def test_edge_magnitude_of_a_ramp_by_hand():
    d = np.tile(np.arange(6, dtype=np.float32), (4, 1))
    # Sobel across a unit ramp is (1+2+1)·2 = 8 inside; with reflect padding the border column sees a step of 1: 4
    expected = np.tile([512, 1024, 1024, 1024, 1024, 512], (4, 1))
    np.testing.assert_array_equal(edge_magnitude(d), expected)


def test_edge_magnitude_is_floor_of_normalised_sobel_magnitude():
    d = np.random.default_rng(0).random((9, 11)).astype(np.float32)
    g = np.hypot(ndimage.sobel(d.astype(np.float64), 0, mode="reflect"),
                 ndimage.sobel(d.astype(np.float64), 1, mode="reflect"))
    q = edge_magnitude(d)
    assert np.issubdtype(q.dtype, np.integer)
    assert q.min() >= 0 and q.max() == EDGE_LEVELS
    np.testing.assert_array_equal(q, np.floor(g / g.max() * EDGE_LEVELS))


def test_edge_magnitude_of_a_flat_map_is_zero():
    np.testing.assert_array_equal(edge_magnitude(np.full((3, 4), 0.5)), np.zeros((3, 4)))


# ---- candidates -------------------------------------------------------------------------------------------------
def brute_force_candidates(d: np.ndarray):
    """For every k < n−1: S_k = the first k+1 pixels of the stable ascending order; the mean quantised gradient
    over S_k's outer 4-neighbour ring (pixels outside S_k with a 4-neighbour inside)."""
    flat = d.astype(np.float32).ravel()
    order = np.argsort(flat, kind="stable")
    g = edge_magnitude(d)
    inside = np.zeros(d.shape, dtype=bool)
    edge = []
    for k in range(flat.size - 1):
        inside.flat[order[k]] = True
        ring = ndimage.binary_dilation(inside, CROSS) & ~inside
        edge.append(g[ring].mean() if ring.any() else 0.0)
    return flat[order][:-1], np.array(edge)


@pytest.mark.parametrize("seed", range(8))
def test_candidates_match_a_brute_force_ring_mean(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(2, 9, size=2)
    d = rng.random((h, w)).astype(np.float32)
    if seed % 2:
        d = np.round(d * 4) / 4  # ties: stable order decides who joins first
    values, edge = brute_force_candidates(d)
    c = candidates(d)
    np.testing.assert_array_equal(c.values, values)
    np.testing.assert_allclose(c.edge, edge, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(c.flat, d.ravel())
    assert c.width == w


def test_candidates_on_a_tiny_map_by_hand():
    d = np.array([[0.0, 0.5], [0.2, 1.0]], dtype=np.float32)
    c = candidates(d)
    np.testing.assert_array_equal(c.values, np.float32([0.0, 0.2, 0.5]))  # the last (whole image) is not a candidate
    g = edge_magnitude(d)
    # S_0 = {(0,0)}: ring (0,1), (1,0); S_1 adds (1,0): ring (0,1), (1,1); S_2 adds (0,1): ring (1,1)
    np.testing.assert_allclose(c.edge, [(g[0, 1] + g[1, 0]) / 2, (g[0, 1] + g[1, 1]) / 2, g[1, 1]])


# ---- select_threshold on hand-made candidates ---------------------------------------------------------------------
def hand_candidates(edge):
    """10 pixels with values 0.0 … 0.9 in a shuffled layout; candidates 0.0 … 0.8 with the given edge scores."""
    flat = np.array([0.3, 0.0, 0.9, 0.1, 0.6, 0.2, 0.8, 0.4, 0.7, 0.5], dtype=np.float32)
    return Candidates(values=np.sort(flat)[:-1], edge=np.asarray(edge, dtype=np.float64), flat=flat, width=5)


def pixel_of(c, value):
    return int(np.flatnonzero(np.isclose(c.flat, value))[0])


def test_area_prior_zeroes_segments_of_forty_percent_or_more():
    c = hand_candidates([1, 1, 1, 2, 2, 2, 2, 2, 5])
    own = pixel_of(c, 0.0)
    # 10 pixels: segments of 4+ pixels (λ ≥ 0.3) are ≥ 40 % and score 0; best left is 0.0…0.2 (edge 1): smallest
    assert select_threshold(c, own, [], [], 0.4) == (0.0, 1.0)
    assert select_threshold(c, own, [], [], 0.4, use_prior=False) == (pytest.approx(0.8), 5.0)
    assert select_threshold(c, own, [], [], 0.5)[0] == pytest.approx(0.3)  # 4 pixels < 50 %


def test_negative_click_inside_a_segment_keeps_the_threshold_below_its_value():
    c = hand_candidates(np.arange(1, 10))
    own = pixel_of(c, 0.0)
    assert select_threshold(c, own, [], [pixel_of(c, 0.45 + 0.05)], 1.0)[0] == pytest.approx(0.4)
    # strict: a negative click on a pixel of value 0.4 forbids λ = 0.4 itself
    assert select_threshold(c, own, [], [pixel_of(c, 0.4)], 1.0)[0] == pytest.approx(0.3)
    # the nearest of several opposite clicks counts
    assert select_threshold(c, own, [], [pixel_of(c, 0.7), pixel_of(c, 0.2)], 1.0)[0] == pytest.approx(0.1)
    # without opposite clicks the bound is max D_i (0.9): every candidate is allowed
    assert select_threshold(c, own, [], [], 1.0)[0] == pytest.approx(0.8)


def test_positive_score_is_the_fraction_of_same_label_clicks_inside():
    c = hand_candidates([4, 4, 4, 4, 4, 3, 3, 3, 3])
    own, other = pixel_of(c, 0.0), pixel_of(c, 0.5)
    # λ < 0.5: only click i inside → 4 · 1/2 = 2; λ ≥ 0.5: both inside → 3 · 1 = 3
    assert select_threshold(c, own, [other], [], 1.0) == (pytest.approx(0.5), 3.0)
    assert select_threshold(c, own, [other], [], 1.0, use_positive=False) == (0.0, 4.0)


def test_ties_go_to_the_smallest_threshold_and_switched_off_scores_are_factor_one():
    c = hand_candidates([0, 3, 3, 3, 0, 0, 0, 0, 0])
    own = pixel_of(c, 0.0)
    assert select_threshold(c, own, [], [], 1.0) == (pytest.approx(0.1), 3.0)
    off = dict(use_edge=False, use_prior=False, use_positive=False, use_negative=False)
    assert select_threshold(c, own, [], [pixel_of(c, 0.0)], 0.1, **off) == (0.0, 1.0)


# ---- select_threshold against a literal reading of the rules -------------------------------------------------------
def brute_force_select(d, own, same, opposite, area_prior, use_edge, use_prior, use_positive, use_negative):
    flat = d.astype(np.float32).ravel()
    n = flat.size
    values, edge = brute_force_candidates(d)
    scores = []
    for k, lam in enumerate(values):
        s = 1.0
        if use_edge:
            s *= edge[k]
        if use_prior:
            s *= float((k + 1) < area_prior * n)
        if use_positive:
            s *= np.mean([flat[q] <= lam for q in [own, *same]])
        if use_negative:
            s *= float(lam < (min(flat[q] for q in opposite) if opposite else flat.max()))
        scores.append(s)
    best = int(np.argmax(scores))  # first maximum = smallest threshold
    return float(values[best]), float(scores[best])


@pytest.mark.parametrize("seed", range(6))
def test_select_threshold_matches_the_rules_on_random_maps(seed):
    rng = np.random.default_rng(100 + seed)
    h, w = 6, 7
    d = ndimage.gaussian_filter(rng.random((h, w)), 1.0).astype(np.float32)
    if seed % 2:
        d = np.round(d * 20) / 20
    c = candidates(d)
    clicks = rng.choice(h * w, size=4, replace=False).tolist()
    own, same, opposite = clicks[0], clicks[1:3], clicks[3:]
    for switches in itertools.product([True, False], repeat=4):
        for opp in (opposite, []):
            got = select_threshold(c, own, same, opp, 0.4, *switches)
            want = brute_force_select(d, own, same, opp, 0.4, *switches)
            assert got[0] == pytest.approx(want[0]) and got[1] == pytest.approx(want[1]), switches
