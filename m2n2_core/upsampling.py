"""From the r×r Markov-map to the image (spec §3): bilinear upsampling, then a joint bilateral filter guided by the
full-resolution RGB image."""
from __future__ import annotations

import math

import numba
import numpy as np
import torch

from . import threads


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
                           sigma_range: float) -> torch.Tensor:
    """Σ_q Gs(p−q)·Gr(I_p−I_q)·values(q) / Σ_q Gs·Gr over the in-image offsets |dx| ≤ 3σx, |dy| ≤ 3σy.

    ``guide`` is H×W×3 in [0, 1]; Gs is a Gaussian with per-axis widths σx, σy (pixels), Gr a Gaussian of the RGB
    Euclidean distance. This is the direct method: one pass over the image per offset.
    """
    h, w = values.shape
    rx, ry = int(math.ceil(3 * sigma_x)), int(math.ceil(3 * sigma_y))
    num = torch.zeros(h, w, dtype=torch.float32)
    den = torch.zeros(h, w, dtype=torch.float32)
    guide = guide.to(torch.float32)
    inv2r = 1.0 / (2 * sigma_range ** 2)
    for dy in range(-ry, ry + 1):
        for dx in range(-rx, rx + 1):
            gs = math.exp(-(dx * dx) / (2 * sigma_x ** 2) - (dy * dy) / (2 * sigma_y ** 2))
            ys, yd = _overlap(h, dy)
            xs, xd = _overlap(w, dx)
            diff = guide[ys, xs] - guide[yd, xd]
            wgt = torch.exp_((diff * diff).sum(-1).mul_(-inv2r)).mul_(gs)
            num[ys, xs] += wgt * values[yd, xd]
            den[ys, xs] += wgt
    return num / den


def _overlap(n: int, d: int):
    """Slices (target, source) so that target index i reads source index i + d inside [0, n)."""
    if d >= 0:
        return slice(0, n - d), slice(d, n)
    return slice(-d, n), slice(0, n + d)


def spatial_sigmas(sigma_spatial: float, height: int, width: int, r: int):
    """σ_s grid cells in pixels per axis: (σx, σy) = (σ_s·W/r, σ_s·H/r)."""
    return sigma_spatial * width / r, sigma_spatial * height / r


def upsample_markov_map(grid_map: torch.Tensor, guide: torch.Tensor, sigma_spatial: float,
                        sigma_range: float) -> torch.Tensor:
    """The direct method: bilinear upsample + joint bilateral filter, divided by the max (H×W float32 in [0, 1])."""
    h, w = guide.shape[:2]
    sx, sy = spatial_sigmas(sigma_spatial, h, w, grid_map.shape[-1])
    out = joint_bilateral_filter(bilinear_upsample(grid_map, h, w), guide, sx, sy, sigma_range)
    return out / out.max().clamp_min(1e-12)


def guide_image(image: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 → float32 tensor in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).to(torch.float32).div_(255.0)


class JBUOperator:
    """Bilinear upsampling + joint bilateral filtering for one guide image, precomputed as a linear operator.

    Every output pixel is a fixed linear combination of the r×r map's cells inside a small block (the cells its
    filter window reads through the bilinear interpolation). The weights of that combination are summed once per
    image from the same taps the direct filter visits (a compiled kernel, rows split over threads), so applying the
    operator gives the direct filter's result up to float rounding for any map, with one multiply-add per block cell
    instead of one per tap.
    """

    def __init__(self, guide: torch.Tensor, r: int, sigma_spatial: float, sigma_range: float):
        h, w = guide.shape[:2]
        self.r, self.height, self.width = r, h, w
        sx, sy = spatial_sigmas(sigma_spatial, h, w, r)
        rx, ry = int(math.ceil(3 * sx)), int(math.ceil(3 * sy))
        self.bx, cell_x, frac_x, bw = _block_cells(w, r, rx)
        self.by, cell_y, frac_y, bh = _block_cells(h, r, ry)
        gx = np.exp(-np.arange(-rx, rx + 1) ** 2 / (2 * sx * sx)).astype(np.float32)
        gy = np.exp(-np.arange(-ry, ry + 1) ** 2 / (2 * sy * sy)).astype(np.float32)
        planes = np.ascontiguousarray(guide.to(torch.float32).numpy().transpose(2, 0, 1))
        weights = np.empty((h, w, bh, bw), dtype=np.float32)
        threads.over_range(_operator_rows, h, planes, gx, gy, self.bx, cell_x, frac_x, self.by, cell_y, frac_y,
                           np.float32(-1.0 / (2 * sigma_range ** 2)), weights, min_part=8)
        self.weights = torch.from_numpy(weights)

    @property
    def nbytes(self) -> int:
        return self.weights.numel() * self.weights.element_size()

    def apply(self, grid_map: torch.Tensor) -> torch.Tensor:
        """The upsampled, filtered map divided by its max: H×W float32 in [0, 1]."""
        bh, bw = self.weights.shape[2:]
        m = np.zeros((self.r + bh, self.r + bw), dtype=np.float32)
        m[: self.r, : self.r] = grid_map.to(torch.float32).numpy()
        out = np.empty((self.height, self.width), dtype=np.float32)
        threads.over_range(_apply_blocks, self.height, m, self.by, self.bx, self.weights.numpy(), out, min_part=32)
        out = torch.from_numpy(out)
        return out / out.max().clamp_min(1e-12)


@numba.njit(nogil=True, cache=True, fastmath=True)
def _operator_rows(planes, gx, gy, bx, cell_x, frac_x, by, cell_y, frac_y, scale, out, y0, y1):  # pragma: no cover
    """out[y, x, a, b] for rows y0..y1: Σ over the taps (y+dy, x+dx) inside the image of Gs·Gr·(the tap's bilinear
    weight on cell (by[y] + a, bx[x] + b)), normalised to sum 1 per pixel; Gr = exp(|ΔRGB|²·scale), scale = −1/(2σr²)."""
    h, w = planes.shape[1], planes.shape[2]
    ry, rx = gy.shape[0] // 2, gx.shape[0] // 2
    red, green, blue = planes[0], planes[1], planes[2]
    row = np.empty(out.shape[3], dtype=np.float32)
    taps = np.empty(gx.shape[0], dtype=np.float32)
    for y in range(y0, y1):
        for x in range(w):
            acc = out[y, x]
            acc[:] = 0.0
            r0, g0, b0 = red[y, x], green[y, x], blue[y, x]
            x0, x1 = max(0, x - rx), min(w, x + rx + 1)
            for sy in range(max(0, y - ry), min(h, y + ry + 1)):
                rr, gg, bb = red[sy, x0:x1], green[sy, x0:x1], blue[sy, x0:x1]
                spatial = gx[x0 - x + rx:x1 - x + rx]
                for q in range(x1 - x0):  # the row's tap weights
                    d0, d1, d2 = rr[q] - r0, gg[q] - g0, bb[q] - b0
                    taps[q] = spatial[q] * np.exp((d0 * d0 + d1 * d1 + d2 * d2) * scale)
                row[:] = 0.0
                c = cell_x[x0]
                lo = hi = np.float32(0.0)  # the taps' weights on cells c and c + 1 (pixels of c's span)
                for q in range(x1 - x0):
                    if cell_x[x0 + q] != c:
                        row[c - bx[x]] += lo
                        row[c + 1 - bx[x]] += hi
                        c, lo, hi = cell_x[x0 + q], np.float32(0.0), np.float32(0.0)
                    t1 = taps[q] * frac_x[x0 + q]
                    lo += taps[q] - t1
                    hi += t1
                row[c - bx[x]] += lo
                row[c + 1 - bx[x]] += hi
                a = cell_y[sy] - by[y]
                v1 = gy[sy - y + ry] * frac_y[sy]
                v0 = gy[sy - y + ry] - v1
                for b in range(row.shape[0]):
                    acc[a, b] += v0 * row[b]
                    acc[a + 1, b] += v1 * row[b]
            total = acc.sum()
            for a in range(acc.shape[0]):
                for b in range(acc.shape[1]):
                    acc[a, b] /= total


@numba.njit(nogil=True, cache=True)
def _apply_blocks(m, by, bx, weights, out, y0, y1):  # pragma: no cover - compiled
    """out[y, x] = Σ_ab m[by[y] + a, bx[x] + b] · weights[y, x, a, b] for rows y0..y1."""
    _, w, bh, bw = weights.shape
    for y in range(y0, y1):
        top = by[y]
        for x in range(w):
            left = bx[x]
            acc = np.float32(0.0)
            for a in range(bh):
                for b in range(bw):
                    acc += m[top + a, left + b] * weights[y, x, a, b]
            out[y, x] = acc


def _block_cells(size: int, r: int, radius: int):
    """Along one axis: per pixel i the first grid cell b[i] its window (pixels i ± radius) reads, per pixel the cell
    c[i] of its bilinear pair (c[i], c[i] + 1) and the weight f[i] of c[i] + 1, and the block size (cells per window)."""
    g = (r - 1) * np.arange(size, dtype=np.float64) / size   # < r − 1, so c[i] + 1 is always a cell
    cell = np.floor(g).astype(np.int64)
    frac = (g - cell).astype(np.float32)
    pix = np.arange(size)
    start = cell[np.clip(pix - radius, 0, size - 1)]
    block = int((cell[np.clip(pix + radius, 0, size - 1)] + 1 - start).max()) + 1
    return start, cell, frac, block
