"""Shared helpers for the m2n2_core tests: small synthetic images, hand-built attention matrices, dataset lookup."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage

REPO_ROOT = Path(__file__).resolve().parents[1]


def datasets_dir() -> Path:
    """$M2N2_DATASETS, or ../shared/datasets relative to the repository root."""
    env = os.environ.get("M2N2_DATASETS")
    return Path(env) if env else REPO_ROOT / ".." / "shared" / "datasets"


def grabcut_dir() -> Optional[Path]:
    """The GrabCut dataset directory (data_GT/ and boundary_GT/), or None when it is not there."""
    d = datasets_dir() / "GrabCut"
    return d if (d / "data_GT").is_dir() and (d / "boundary_GT").is_dir() else None


def smooth_image(h: int, w: int, seed: int, sigma: float = 4.0) -> np.ndarray:
    """H×W×3 uint8 of Gaussian-smoothed noise stretched to the full 0..255 range per channel."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal((h, w, 3)), sigma=(sigma, sigma, 0))
    lo, hi = noise.min(axis=(0, 1)), noise.max(axis=(0, 1))
    return np.rint((noise - lo) / (hi - lo) * 255).astype(np.uint8)


def blocks_image(h: int, w: int) -> np.ndarray:
    """Grey background with a red square (left) and a blue square (right), side-by-side with a gap."""
    img = np.full((h, w, 3), 128, dtype=np.uint8)
    img[h // 4: 3 * h // 4, w // 8: 7 * w // 16] = (220, 30, 30)
    img[h // 4: 3 * h // 4, 9 * w // 16: 7 * w // 8] = (30, 30, 220)
    return img


def grid_features(image: np.ndarray, r: int) -> np.ndarray:
    """The image area-resized to r×r, RGB in [0, 1], as an (r², 3) array in row-major cell order."""
    small = cv2.resize(image, (r, r), interpolation=cv2.INTER_AREA).astype(np.float64) / 255.0
    return small.reshape(r * r, 3)


def cell_coords(r: int) -> np.ndarray:
    """(r², 2) grid coordinates (row, col) of the flattened r×r cells."""
    yy, xx = np.mgrid[0:r, 0:r]
    return np.stack([yy.ravel(), xx.ravel()], axis=1).astype(np.float64)


def affinity_attention(image: np.ndarray, r: int, sigma_color: float = 0.1, sigma_space: float = 1.5) -> torch.Tensor:
    """A row-stochastic (r², r²) attention: Gaussian in grid distance × Gaussian in RGB distance of area-resized cells."""
    f = grid_features(image, r)
    c = cell_coords(r)
    dc = ((f[:, None, :] - f[None, :, :]) ** 2).sum(-1)
    ds = ((c[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    a = np.exp(-dc / (2 * sigma_color ** 2) - ds / (2 * sigma_space ** 2))
    return torch.from_numpy(a / a.sum(axis=1, keepdims=True)).to(torch.float32)


def sd_like_attention(image: np.ndarray, r: int, seed: int, dim: int = 64, spread: float = 2.5) -> torch.Tensor:
    """softmax(QKᵀ/√d) with Q, K random projections of smooth random features, cell colours and sinusoidal
    positional terms: dense (every entry > 0), row-stochastic, locally peaked like an SD self-attention map.
    ``spread`` is the standard deviation the logits are scaled to (larger → more peaked rows)."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.standard_normal((r, r, dim)), sigma=(1.5, 1.5, 0)).reshape(r * r, dim)
    smooth /= smooth.std()
    c = cell_coords(r) / r
    freqs = np.arange(1, dim // 8 + 1)
    pos = np.concatenate([np.sin(np.pi * c[:, :1] * freqs), np.cos(np.pi * c[:, :1] * freqs),
                          np.sin(np.pi * c[:, 1:] * freqs), np.cos(np.pi * c[:, 1:] * freqs)], axis=1)
    feats = np.concatenate([smooth, 3.0 * grid_features(image, r), 2.0 * pos], axis=1)
    wq = rng.standard_normal((feats.shape[1], dim))
    q = feats @ wq
    k = feats @ (wq + 0.3 * rng.standard_normal(wq.shape))
    logits = q @ k.T / np.sqrt(dim)
    logits = torch.from_numpy(logits / logits.std() * spread)
    return torch.softmax(logits, dim=1).to(torch.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@pytest.fixture()
def torch_single_thread():
    """Run a test with one torch thread: the matrices here are tiny, and on a busy 2-core machine the thread pool's
    synchronisation costs far more than it saves."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
