import numpy as np
import pytest
import torch

from m2n2_core.attention import make_source
from m2n2_core.attention.affinity import AffinityAttention, affinity_kernel, grid_colours
from m2n2_core.config import M2N2Config


def _config(**kw):
    return M2N2Config(attention="affinity", attention_resolution=kw.pop("r", 16), **kw)


def _two_colour_image(h=64, w=64):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (200, 30, 30)
    img[:, w // 2:] = (30, 30, 200)
    return img


def test_rows_sum_to_one_and_shape():
    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    src = make_source(_config(), "cpu")
    assert src.name == "affinity" and "affinity" in src.description
    a = src.compute(img)
    assert a.dtype == torch.float32 and a.shape == (256, 256)
    assert torch.allclose(a.sum(dim=1), torch.ones(256), atol=1e-5)
    assert bool((a >= 0).all())


def test_kernel_is_symmetric_local_and_matches_the_formula():
    rng = np.random.default_rng(1)
    colours = torch.from_numpy(rng.random((6, 6, 3), dtype=np.float32))
    k = affinity_kernel(colours, sigma_color=0.2, sigma_space=1.5, radius=2)
    assert torch.allclose(k, k.T) and torch.allclose(torch.diagonal(k), torch.ones(36))
    i, j = 1 * 6 + 2, 2 * 6 + 4  # cells (1, 2) and (2, 4): offset (1, 2), within radius 2
    d2 = float(((colours[1, 2] - colours[2, 4]) ** 2).sum())
    assert float(k[i, j]) == pytest.approx(np.exp(-d2 / (2 * 0.2 ** 2) - 5 / (2 * 1.5 ** 2)), rel=1e-5)
    assert float(k[0, 3]) == 0.0  # cells (0, 0) and (0, 3): 3 cells apart, beyond the radius


def test_two_colour_image_gives_two_nearly_disconnected_blocks():
    r = 16
    a = AffinityAttention(_config(r=r, affinity_sigma_color=0.1), "cpu").compute(_two_colour_image())
    left = torch.zeros(r, r, dtype=torch.bool)
    left[:, : r // 2] = True
    left = left.reshape(-1)
    cross = a[left][:, ~left].sum(dim=1)     # mass each left cell sends to the right half
    assert float(cross.max()) < 1e-6
    within = a[left][:, left]
    assert torch.allclose(within.sum(dim=1), torch.ones(int(left.sum())), atol=1e-5)


def test_grid_colours_are_cell_means_in_unit_range():
    img = _two_colour_image(32, 32)
    c = grid_colours(img, 4)
    assert c.shape == (4, 4, 3) and c.dtype == np.float32
    assert np.allclose(c[:, :2], np.array([200, 30, 30]) / 255, atol=1e-6)
    with pytest.raises(ValueError, match="uint8 RGB"):
        grid_colours(img[:, :, 0], 4)


def test_invalid_parameters_are_rejected():
    with pytest.raises(ValueError, match="positive"):
        AffinityAttention(_config(affinity_sigma_color=0.0), "cpu")
    with pytest.raises(ValueError, match="radius"):
        AffinityAttention(_config(affinity_radius=0), "cpu")
