"""Spec §3 (second half): the minimax (bottleneck) flood fill from the click."""
import heapq

import numpy as np
import pytest
from scipy import ndimage

from m2n2_core.floodfill import minimax_distance, minimax_distance_reconstruction

IMPLEMENTATIONS = pytest.mark.parametrize("fill", [minimax_distance, minimax_distance_reconstruction],
                                          ids=["priority-flood", "reconstruction"])


def bottleneck_reference(m: np.ndarray, y: int, x: int) -> np.ndarray:
    """Dijkstra with max instead of +: min over 4-paths from the click of the max |M − M(click)| on the path."""
    cost = np.abs(m.astype(np.float64) - float(m[y, x]))
    h, w = m.shape
    best = np.full((h, w), np.inf)
    best[y, x] = cost[y, x]
    heap = [(best[y, x], y, x)]
    while heap:
        d, cy, cx = heapq.heappop(heap)
        if d > best[cy, cx]:
            continue
        for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
            if 0 <= ny < h and 0 <= nx < w:
                nd = max(d, cost[ny, nx])
                if nd < best[ny, nx]:
                    best[ny, nx] = nd
                    heapq.heappush(heap, (nd, ny, nx))
    return best / best.max()


@IMPLEMENTATIONS
def test_hand_checked_map_with_a_wall(fill):
    m = np.array([[0.0, 0.1, 0.9, 0.2],
                  [0.0, 0.2, 0.9, 0.1],
                  [0.1, 0.3, 0.4, 0.0]])
    d = fill(m, 0, 0)
    # the right column is reached below the 0.9 wall through 0.4, so its distance is 0.4 / 0.9
    expected = np.array([[0.0, 0.1, 0.9, 0.4],
                         [0.0, 0.2, 0.9, 0.4],
                         [0.1, 0.3, 0.4, 0.4]]) / 0.9
    assert d.dtype == np.float32 and d.shape == m.shape
    np.testing.assert_allclose(d, expected, atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
@IMPLEMENTATIONS
def test_equals_a_heap_based_bottleneck_search_on_random_maps(seed, fill):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(3, 14, size=2)
    m = rng.random((h, w))
    if seed % 2:
        m = np.round(m * 5) / 5  # many ties
    y, x = rng.integers(0, h), rng.integers(0, w)
    np.testing.assert_allclose(fill(m, y, x), bottleneck_reference(m, y, x), atol=1e-6)


@IMPLEMENTATIONS
def test_uses_the_distance_to_the_clicked_value_not_the_raw_value(fill):
    m = np.array([[0.5, 0.6, 0.0], [0.5, 0.5, 1.0]])
    d = fill(m, 1, 1)
    np.testing.assert_allclose(d, bottleneck_reference(m, 1, 1), atol=1e-6)
    assert d[0, 0] == 0.0  # |0.5 − 0.5|


@pytest.mark.parametrize("seed", range(3))
@IMPLEMENTATIONS
def test_sub_level_sets_are_connected_normalised_and_contain_the_click(seed, fill):
    rng = np.random.default_rng(10 + seed)
    m = ndimage.gaussian_filter(rng.random((20, 25)), 1.5)
    y, x = 7, 11
    d = fill(m, y, x)
    assert d.min() == 0.0 and d.max() == pytest.approx(1.0) and d[y, x] == 0.0
    for t in np.unique(d):
        labels, count = ndimage.label(d <= t, structure=ndimage.generate_binary_structure(2, 1))
        assert count == 1 and labels[y, x] == 1


@IMPLEMENTATIONS
def test_constant_map_is_all_zero(fill):
    d = fill(np.full((4, 5), 0.3), 2, 2)
    assert d.dtype == np.float32
    np.testing.assert_array_equal(d, np.zeros((4, 5)))


@pytest.mark.parametrize("seed", range(4))
def test_priority_flood_equals_reconstruction_bit_for_bit_on_image_sized_maps(seed):
    rng = np.random.default_rng(100 + seed)
    m = ndimage.gaussian_filter(rng.random((120, 213)), 3.0).astype(np.float32)
    if seed % 2:
        m = np.round(m * 40) / 40  # plateaus and ties
    y, x = int(rng.integers(0, 120)), int(rng.integers(0, 213))
    np.testing.assert_array_equal(minimax_distance(m, y, x), minimax_distance_reconstruction(m, y, x))
