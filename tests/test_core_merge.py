"""Spec §4 (end): the truncated nearest-neighbour vote and the forced labels of clicked pixels."""
import numpy as np

from m2n2_core.merge import truncated_nearest_neighbour

D_LEFT = np.array([[0.0, 0.1, 0.2, 0.3, 0.4]])
D_RIGHT = np.array([[0.4, 0.3, 0.2, 0.1, 0.0]])


def test_nearest_click_decides_and_one_point_zero_is_inside():
    # d/λ: left [0, .5, 1, 1.5, 2] (positive), right [2, 1.5, 1, .5, 0] (negative): the middle is a tie at exactly 1.0
    mask = truncated_nearest_neighbour([D_LEFT, D_RIGHT], [0.2, 0.2], [True, False], [(0, 0), (0, 4)])
    assert mask.tolist() == [[True, True, True, False, False]]  # tie → earliest click (positive), ≤ 1 inclusive


def test_ties_go_to_the_earliest_click():
    mask = truncated_nearest_neighbour([D_RIGHT, D_LEFT], [0.2, 0.2], [False, True], [(0, 4), (0, 0)])
    assert mask.tolist() == [[True, True, False, False, False]]


def test_positive_nearest_beyond_its_threshold_is_background():
    mask = truncated_nearest_neighbour([D_LEFT], [0.15], [True], [(0, 0)])
    assert mask.tolist() == [[True, True, False, False, False]]  # 0.2 / 0.15 > 1


def test_thresholds_are_floored_at_1e_minus_7():
    mask = truncated_nearest_neighbour([D_LEFT], [0.0], [True], [(0, 3)])
    # λ = 0 acts as 1e−7: only D = 0 is within it; the clicked pixel (0, 3) is forced on
    assert mask.tolist() == [[True, False, False, True, False]]


def test_clicked_pixels_take_their_label_and_later_clicks_win():
    d_far = np.full((1, 5), 0.9)
    # a negative click's own pixel lies inside the positive click's segment: it is forced off
    mask = truncated_nearest_neighbour([D_LEFT, d_far], [1.0, 0.01], [True, False], [(0, 0), (0, 1)])
    assert mask.tolist() == [[True, False, True, True, True]]
    # two clicks on the same pixel: the later one's label wins, either way round
    same = [(0, 2), (0, 2)]
    assert not truncated_nearest_neighbour([D_LEFT, D_LEFT], [0.0, 0.0], [True, False], same)[0, 2]
    assert truncated_nearest_neighbour([D_LEFT, D_LEFT], [0.0, 0.0], [False, True], same)[0, 2]


def test_negative_only_gives_an_empty_mask():
    mask = truncated_nearest_neighbour([D_LEFT], [0.4], [False], [(0, 0)])
    assert mask.dtype == bool and not mask.any()
