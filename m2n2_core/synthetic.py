"""Synthetic "SD-like" attention for tests and benchmarks where no Stable Diffusion weights exist.

It imitates the form of a transformer self-attention layer over the r×r latent grid, softmax(QKᵀ/√d) averaged over
heads, with queries and keys projected from per-cell features that mix the cell's colour, a sinusoidal position code
and smooth noise. It has the shape and row-stochasticity of real SD attention; its values say nothing about how real
SD2 attention segments images.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch


def sd_like_attention(image: np.ndarray, r: int, heads: int = 5, head_dim: int = 64, seed: int = 0,
                      colour_weight: float = 1.0, position_weight: float = 0.7,
                      noise_weight: float = 0.3) -> torch.Tensor:
    """(r², r²) float32 row-stochastic attention: the head-average of softmax(QKᵀ/√d) over cell features."""
    gen = np.random.default_rng(seed)
    cells = cv2.resize(image, (r, r), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    yy, xx = np.mgrid[0:r, 0:r].astype(np.float32) / r
    freqs = np.array([1, 2, 4, 8], dtype=np.float32) * np.pi
    pos = np.concatenate([f(a[..., None] * freqs) for a in (xx, yy) for f in (np.sin, np.cos)], axis=-1)
    noise = cv2.GaussianBlur(gen.standard_normal((r, r, 8)).astype(np.float32), (0, 0), sigmaX=max(r / 16, 1.0))
    noise /= noise.std() + 1e-6
    feats = np.concatenate([colour_weight * (cells - cells.mean((0, 1))), position_weight * pos / 2,
                            noise_weight * noise], axis=-1).reshape(r * r, -1)
    f = torch.from_numpy(feats)
    total = torch.zeros(r * r, r * r)
    for _ in range(heads):
        w = torch.from_numpy(gen.standard_normal((f.shape[1], head_dim)).astype(np.float32))
        w_k = w + 0.3 * torch.from_numpy(gen.standard_normal(w.shape).astype(np.float32))
        q, k = f @ w, f @ w_k
        total += torch.softmax(q @ k.T / head_dim ** 0.5, dim=1)
    total /= heads
    return total / total.sum(dim=1, keepdim=True)
