"""Spec §3 (first half): bilinear upsampling of the Markov-map and the joint bilateral filter on the RGB guide."""
import math

import numpy as np
import pytest
import torch

from m2n2_core.upsampling import (JBUOperator, bilinear_upsample, guide_image, interpolation_matrix, joint_bilateral_filter,
                                  upsample_markov_map)

from core_helpers import smooth_image, torch_single_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def brute_force_jbf(values, guide, sx, sy, sr, stride_x=1, stride_y=1):
    """Per pixel: Σ Gs·Gr·v / Σ Gs·Gr over in-image offsets within ceil(3σ) per axis (multiples of the stride)."""
    v, g = values.numpy().astype(np.float64), guide.numpy().astype(np.float64)
    h, w = v.shape
    rx, ry = math.ceil(3 * sx), math.ceil(3 * sy)
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            num = den = 0.0
            for dy in range(-ry, ry + 1):
                for dx in range(-rx, rx + 1):
                    if dx % stride_x or dy % stride_y or not (0 <= y + dy < h and 0 <= x + dx < w):
                        continue
                    c = g[y, x] - g[y + dy, x + dx]
                    wgt = math.exp(-dx * dx / (2 * sx * sx) - dy * dy / (2 * sy * sy) - (c @ c) / (2 * sr * sr))
                    num += wgt * v[y + dy, x + dx]
                    den += wgt
            out[y, x] = num / den
    return out


def test_interpolation_matrix_rows_are_convex_weights_on_the_click_mapping():
    m = interpolation_matrix(10, 4)
    assert m.shape == (10, 4)
    torch.testing.assert_close(m.sum(1), torch.ones(10))
    # pixel i samples grid coordinate 3·i/10
    torch.testing.assert_close(m @ torch.arange(4, dtype=torch.float32), 3 * torch.arange(10, dtype=torch.float32) / 10)


def test_bilinear_upsample_reproduces_a_linear_ramp():
    r, h, w = 8, 20, 30
    gy, gx = torch.meshgrid(torch.arange(r, dtype=torch.float32), torch.arange(r, dtype=torch.float32), indexing="ij")
    up = bilinear_upsample(2 * gy + 3 * gx + 1, h, w)
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    expected = 2 * (r - 1) * y / h + 3 * (r - 1) * x / w + 1
    assert up.shape == (h, w)
    torch.testing.assert_close(up, expected, rtol=1e-5, atol=1e-5)


def test_bilinear_upsample_hits_grid_values_on_exact_cells():
    g = torch.rand(5, 5, generator=torch.Generator().manual_seed(0))
    up = bilinear_upsample(g, 8, 8)  # pixel i ↦ grid 4·i/8 = i/2: even pixels sit on cells
    torch.testing.assert_close(up[::2, ::2], g[:4, :4])


def test_joint_bilateral_filter_of_a_constant_is_the_constant():
    guide = guide_image(smooth_image(15, 17, seed=1))
    out = joint_bilateral_filter(torch.full((15, 17), 0.7), guide, 2.0, 1.5, 0.1)
    torch.testing.assert_close(out, torch.full((15, 17), 0.7))


def test_joint_bilateral_filter_does_not_blur_across_a_sharp_guide_edge():
    h, w = 10, 24
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[:, w // 2:] = 255
    guide = guide_image(img)
    values = torch.zeros(h, w)
    values[:, w // 2:] = 1.0
    with_range = joint_bilateral_filter(values, guide, 2.0, 2.0, 0.1)
    without_range = joint_bilateral_filter(values, guide, 2.0, 2.0, 1e6)  # range term ≡ 1: a plain Gaussian blur
    torch.testing.assert_close(with_range, values, atol=1e-6, rtol=0)
    assert without_range[:, w // 2 - 1].min() > 0.2 and without_range[:, w // 2].max() < 0.8


@pytest.mark.parametrize("sx, sy, sr", [(1.0, 1.0, 0.1), (1.3, 0.8, 0.25)])
def test_joint_bilateral_filter_with_stride_one_equals_the_per_pixel_definition(sx, sy, sr):
    rng = np.random.default_rng(2)
    values = torch.from_numpy(rng.random((7, 9))).to(torch.float32)
    guide = guide_image(smooth_image(7, 9, seed=3, sigma=1.0))
    out = joint_bilateral_filter(values, guide, sx, sy, sr)
    np.testing.assert_allclose(out.numpy(), brute_force_jbf(values, guide, sx, sy, sr), rtol=1e-5, atol=1e-6)


def test_upsample_markov_map_is_the_filtered_bilinear_map_divided_by_its_max():
    r, h, w = 4, 16, 24
    grid_map = torch.rand(r, r, generator=torch.Generator().manual_seed(6)) * 50
    guide = guide_image(smooth_image(h, w, seed=7))
    out = upsample_markov_map(grid_map, guide, sigma_spatial=1.0, sigma_range=0.1)
    # σ_s = 1 grid cell = W/r = 6 pixels across, H/r = 4 pixels down
    ref = joint_bilateral_filter(bilinear_upsample(grid_map, h, w), guide, 6.0, 4.0, 0.1)
    assert out.shape == (h, w)
    torch.testing.assert_close(out, ref / ref.max())
    assert out.max().item() == pytest.approx(1.0) and out.min().item() >= 0.0


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("r, h, w, sigma, sr", [(8, 32, 40, 1.0, 0.1), (5, 23, 17, 1.3, 0.25), (16, 20, 64, 0.7, 0.1),
                                                (8, 32, 40, 1.0, 0.02)])
def test_jbu_operator_equals_the_direct_filter(r, h, w, sigma, sr, threads):
    """The per-image operator (the fast path) gives the direct method's result for any map (its rows built by one or
    by two threads; a narrow range Gaussian sends many taps past the end of the exp table)."""
    torch.set_num_threads(threads)
    guide = guide_image(smooth_image(h, w, seed=8))
    op = JBUOperator(guide, r, sigma, sr)
    for seed in range(3):
        grid_map = torch.rand(r, r, generator=torch.Generator().manual_seed(seed)) * 100
        torch.testing.assert_close(op.apply(grid_map), upsample_markov_map(grid_map, guide, sigma, sr),
                                   atol=2e-6, rtol=1e-5)
