"""From the r×r Markov-map to the image (spec §3): bilinear upsampling, then a joint bilateral filter guided by the
full-resolution RGB image."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch


def interpolation_matrix(size: int, r: int) -> torch.Tensor:
    """(size×r) linear interpolation weights sampling grid coordinate (r−1)·i/size for pixel i (the click mapping)."""
    g = (r - 1) * torch.arange(size, dtype=torch.float64) / size
    i0 = g.floor().long().clamp_(0, r - 1)
    i1 = (i0 + 1).clamp_(max=r - 1)
    f = g - i0
    m = torch.zeros(size, r, dtype=torch.float64)
    m[torch.arange(size), i0] += 1 - f
    m[torch.arange(size), i1] += f
    return m.to(torch.float32)


def bilinear_upsample(grid_map: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear upsampling of an r×r map to H×W on the (r−1)/W coordinate mapping."""
    r = grid_map.shape[-1]
    return interpolation_matrix(height, r) @ grid_map.to(torch.float32) @ interpolation_matrix(width, r).T


def joint_bilateral_filter(values: torch.Tensor, guide: torch.Tensor, sigma_x: float, sigma_y: float,
                           sigma_range: float, stride_x: int = 1, stride_y: int = 1) -> torch.Tensor:
    """Σ_q Gs(p−q)·Gr(I_p−I_q)·values(q) / Σ_q Gs·Gr over the in-image offsets |dx| ≤ 3σx, |dy| ≤ 3σy.

    ``guide`` is H×W×3 in [0, 1]; Gs is a Gaussian with per-axis widths σx, σy (pixels), Gr a Gaussian of the RGB
    Euclidean distance. With strides > 1 only every stride-th offset is visited (the fast approximation); strides of 1
    are the exact filter.
    """
    h, w = values.shape
    rx, ry = int(math.ceil(3 * sigma_x)), int(math.ceil(3 * sigma_y))
    num = torch.zeros(h, w, dtype=torch.float32)
    den = torch.zeros(h, w, dtype=torch.float32)
    guide = guide.to(torch.float32)
    inv2r = 1.0 / (2 * sigma_range ** 2)
    for dy in _offsets(ry, stride_y):
        for dx in _offsets(rx, stride_x):
            gs = math.exp(-(dx * dx) / (2 * sigma_x ** 2) - (dy * dy) / (2 * sigma_y ** 2))
            ys, yd = _overlap(h, dy)
            xs, xd = _overlap(w, dx)
            diff = guide[ys, xs] - guide[yd, xd]
            wgt = torch.exp_((diff * diff).sum(-1).mul_(-inv2r)).mul_(gs)
            num[ys, xs] += wgt * values[yd, xd]
            den[ys, xs] += wgt
    return num / den


def _offsets(radius: int, stride: int):
    """Symmetric offsets −radius..radius visiting 0 and every stride-th step either side."""
    side = list(range(stride, radius + 1, stride))
    return [-o for o in reversed(side)] + [0] + side


def _overlap(n: int, d: int):
    """Slices (target, source) so that target index i reads source index i + d inside [0, n)."""
    if d >= 0:
        return slice(0, n - d), slice(d, n)
    return slice(-d, n), slice(0, n + d)


def upsample_markov_map(grid_map: torch.Tensor, guide: torch.Tensor, sigma_spatial: float, sigma_range: float,
                        stride: Optional[int] = 1) -> torch.Tensor:
    """Bilinear upsample + joint bilateral filter, divided by the max: H×W float32 in [0, 1].

    σ_s is in grid cells (σx = σ_s·W/r, σy = σ_s·H/r pixels). ``stride`` 1 is exact; None picks the fast stride
    (about σ/2 per axis); an integer > 1 uses that stride on both axes.
    """
    h, w = guide.shape[:2]
    r = grid_map.shape[-1]
    sx, sy = sigma_spatial * w / r, sigma_spatial * h / r
    if stride is None:
        stx, sty = max(1, round(sx / 2)), max(1, round(sy / 2))
    else:
        stx = sty = int(stride)
    up = bilinear_upsample(grid_map, h, w)
    out = joint_bilateral_filter(up, guide, sx, sy, sigma_range, stx, sty)
    return out / out.max().clamp_min(1e-12)


def guide_image(image: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 → float32 tensor in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).to(torch.float32).div_(255.0)
