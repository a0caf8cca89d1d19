"""Weight-free attention source: a local colour-and-position affinity kernel built from the image itself.

This is NOT the paper's backbone (M2N2 reads Stable Diffusion 2 self-attention). It needs no model weights, so the
whole pipeline can run and be evaluated offline; its quality is that of a bilateral-style affinity graph.

Construction, for grid side r = ``config.attention_resolution``:

- the RGB image is resized with ``cv2.INTER_AREA`` to r×r cells, so each cell holds the mean colour c_i ∈ [0, 1]³ of
  its image region; p_i is the cell's (row, column) position on the grid;
- k_ij = exp(−|c_i − c_j|² / (2σ_c²) − |p_i − p_j|² / (2σ_s²)) if |p_i − p_j|_∞ ≤ R, else 0
  (σ_c = ``affinity_sigma_color``, σ_s = ``affinity_sigma_space`` in cells, R = ``affinity_radius`` in cells);
  the kernel is symmetric and k_ii = 1;
- a_ij = k_ij / Σ_j k_ij: every row sums to 1.

The dense (r², r²) matrix is filled offset by offset: for each of the (2R+1)² grid offsets one vectorised kernel
evaluation over all cells, scattered into the flat matrix.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from ..config import M2N2Config


def grid_colours(image: np.ndarray, r: int) -> np.ndarray:
    """H×W×3 uint8 RGB → r×r×3 float32 mean colours in [0, 1] (cv2.INTER_AREA)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an H×W×3 uint8 RGB array, got {image.dtype} {image.shape}")
    small = cv2.resize(image, (r, r), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


def affinity_kernel(colours: torch.Tensor, sigma_color: float, sigma_space: float, radius: int) -> torch.Tensor:
    """r×r×C features → the symmetric, non-negative (r², r²) kernel k (k_ii = 1, zero beyond ``radius`` cells)."""
    r = colours.shape[0]
    n = r * r
    kernel = torch.zeros(n * n, dtype=torch.float32, device=colours.device)
    idx = torch.arange(n, device=colours.device).reshape(r, r)
    for dy in range(-radius, radius + 1):
        ys = slice(max(0, -dy), min(r, r - dy))          # cells i whose neighbour i + (dy, dx) is on the grid
        ys_j = slice(ys.start + dy, ys.stop + dy)
        for dx in range(-radius, radius + 1):
            xs = slice(max(0, -dx), min(r, r - dx))
            xs_j = slice(xs.start + dx, xs.stop + dx)
            diff = colours[ys, xs] - colours[ys_j, xs_j]
            w = torch.exp(-(diff * diff).sum(-1) / (2.0 * sigma_color ** 2) - (dy * dy + dx * dx) / (2.0 * sigma_space ** 2))
            kernel[(idx[ys, xs] * n + idx[ys_j, xs_j]).reshape(-1)] = w.reshape(-1)
    return kernel.reshape(n, n)


class AffinityAttention:
    """AttentionSource: image → row-stochastic (r², r²) colour/position affinity (see the module docstring)."""

    name = "affinity"

    def __init__(self, config: M2N2Config, device: str = "cpu"):
        if config.affinity_sigma_color <= 0 or config.affinity_sigma_space <= 0:
            raise ValueError("affinity_sigma_color and affinity_sigma_space must be positive")
        if config.affinity_radius < 1:
            raise ValueError("affinity_radius must be at least 1 cell")
        self.r = config.attention_resolution
        self.sigma_color = float(config.affinity_sigma_color)
        self.sigma_space = float(config.affinity_sigma_space)
        self.radius = int(config.affinity_radius)
        self.device = torch.device(device)
        self.description = (f"affinity(r={self.r}, sigma_color={self.sigma_color:g}, "
                            f"sigma_space={self.sigma_space:g}, radius={self.radius})")

    def compute(self, image: np.ndarray) -> torch.Tensor:
        """H×W×3 uint8 RGB → float32 (r², r²) with rows summing to 1, on this source's device."""
        colours = torch.from_numpy(grid_colours(image, self.r)).to(self.device)
        kernel = affinity_kernel(colours, self.sigma_color, self.sigma_space, self.radius)
        kernel.div_(kernel.sum(dim=1, keepdim=True))
        return kernel
