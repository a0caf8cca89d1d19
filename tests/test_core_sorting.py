"""The compiled stable argsort behind the candidates and the flood fill."""
import numpy as np
import pytest

from m2n2_core.sorting import stable_argsort


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(6))
def test_stable_argsort_is_numpys_stable_argsort(seed, dtype):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 20000))
    v = (rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30, n)).astype(dtype)  # every exponent range
    if seed % 2:
        v = np.round(v * 4) / 4  # ties
    v[rng.integers(0, n, n // 5)] = rng.choice(np.array([0.0, -0.0, np.inf, -np.inf], dtype=dtype), n // 5)
    np.testing.assert_array_equal(stable_argsort(v), np.argsort(v, kind="stable"))


def test_a_two_dimensional_array_is_sorted_flat_and_other_types_are_refused():
    v = np.float32([[0.5, -1.0], [0.5, 0.0]])
    np.testing.assert_array_equal(stable_argsort(v), [1, 3, 0, 2])
    with pytest.raises(TypeError, match="float32 or float64"):
        stable_argsort(np.arange(4))
