"""From the r×r Markov-map to the image (spec §3): bilinear upsampling, then a joint bilateral filter guided by the
full-resolution RGB image."""
from __future__ import annotations

import math

import numba
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
    image from the same taps the direct filter visits, so applying the operator gives the direct filter's result (up to
    float rounding) for any map, with one multiply-add per block cell instead of one per tap.
    """

    def __init__(self, guide: torch.Tensor, r: int, sigma_spatial: float, sigma_range: float, rows_per_chunk: int = 32):
        h, w = guide.shape[:2]
        self.r, self.height, self.width = r, h, w
        sx, sy = spatial_sigmas(sigma_spatial, h, w, r)
        rx, ry = int(math.ceil(3 * sx)), int(math.ceil(3 * sy))
        dxs, dys = list(range(-rx, rx + 1)), list(range(-ry, ry + 1))
        bx, rel_x = _block_weights(w, r, dxs)   # (W,), (W, n_dx, bw): cell weights relative to the block start
        by, rel_y = _block_weights(h, r, dys)
        self.bx, self.by = bx.numpy(), by.numpy()
        bh, bw = rel_y.shape[2], rel_x.shape[2]
        channels = guide.to(torch.float32).permute(2, 0, 1).contiguous()    # (3, H, W): x innermost, vectorises
        padded = torch.zeros(3, h, w + 2 * rx)
        padded[:, :, rx:rx + w] = channels
        x_ok = torch.stack([(torch.arange(w) + dx >= 0) & (torch.arange(w) + dx < w) for dx in dxs])  # (n_dx, W)
        gx = torch.tensor([math.exp(-(d * d) / (2 * sx * sx)) for d in dxs])
        spatial_x = (gx[:, None] * x_ok)[:, None, :]                       # (n_dx, 1, W)
        inv2r = 1.0 / (2 * sigma_range ** 2)
        weights = torch.empty(h, w, bh, bw, dtype=torch.float32)
        for y0 in range(0, h, rows_per_chunk):
            y1 = min(h, y0 + rows_per_chunk)
            per_dy = torch.zeros(len(dys), y1 - y0, w, bw)
            for j, dy in enumerate(dys):
                src = torch.arange(y0, y1) + dy
                ok = (src >= 0) & (src < h)
                if not bool(ok.any()):
                    continue
                band = padded[:, src.clamp(0, h - 1)]                      # (3, rows, W + 2rx)
                tap = torch.zeros(len(dxs), y1 - y0, w)
                for c in range(3):
                    # band[c] shifted by every dx at once: (n_dx, rows, W) as a strided view
                    window = band[c].as_strided((len(dxs), y1 - y0, w), (1, band.stride(1), 1))
                    tap.add_((window - channels[c, y0:y1]).square_())
                tap = torch.exp_(tap.mul_(-inv2r))
                tap.mul_(spatial_x).mul_(math.exp(-(dy * dy) / (2 * sy * sy)) * ok[None, :, None])
                per_dy[j] = torch.einsum("dyx,xdb->yxb", tap, rel_x)       # Σ_dx tap · rel_x
            weights[y0:y1] = torch.einsum("yda,dyxb->yxab", rel_y[y0:y1], per_dy)  # Σ_dy rel_y · per_dy
        weights /= weights.sum(dim=(2, 3), keepdim=True)
        self.weights = weights

    @property
    def nbytes(self) -> int:
        return self.weights.numel() * self.weights.element_size()

    def apply(self, grid_map: torch.Tensor) -> torch.Tensor:
        """The upsampled, filtered map divided by its max: H×W float32 in [0, 1]."""
        bh, bw = self.weights.shape[2:]
        m = np.zeros((self.r + bh, self.r + bw), dtype=np.float32)
        m[: self.r, : self.r] = grid_map.to(torch.float32).numpy()
        out = torch.from_numpy(_apply_blocks(m, self.by, self.bx, self.weights.numpy()))
        return out / out.max().clamp_min(1e-12)


@numba.njit(nogil=True, cache=True)
def _apply_blocks(m, by, bx, weights):  # pragma: no cover - compiled
    """out[y, x] = Σ_ab m[by[y] + a, bx[x] + b] · weights[y, x, a, b]."""
    h, w, bh, bw = weights.shape
    out = np.empty((h, w), dtype=np.float32)
    for y in range(h):
        y0 = by[y]
        for x in range(w):
            x0 = bx[x]
            acc = np.float32(0.0)
            for a in range(bh):
                for b in range(bw):
                    acc += m[y0 + a, x0 + b] * weights[y, x, a, b]
            out[y, x] = acc
    return out


def _block_weights(size: int, r: int, offsets):
    """Per pixel i: the first grid cell its window reads and, per offset d, the bilinear weights of pixel i+d's cells
    relative to that first cell (zero where i+d leaves the image)."""
    g = (r - 1) * torch.arange(size, dtype=torch.float64) / size
    i0 = g.floor().long().clamp_(0, r - 1)
    i1 = (i0 + 1).clamp_(max=r - 1)
    f = (g - i0).to(torch.float32)
    lo, hi = min(offsets), max(offsets)
    pix = torch.arange(size)
    start = i0[(pix + lo).clamp(0, size - 1)]
    stop = i1[(pix + hi).clamp(0, size - 1)]
    block = int((stop - start).max()) + 1
    rel = torch.zeros(size, len(offsets), block)
    for k, d in enumerate(offsets):
        src = pix + d
        ok = (src >= 0) & (src < size)
        s = src.clamp(0, size - 1)
        rel[pix[ok], k, (i0[s] - start)[ok]] += (1 - f[s])[ok]
        rel[pix[ok], k, (i1[s] - start)[ok]] += f[s][ok]
    return start, rel
