"""Attention sources: turn an RGB image into a raw row-stochastic (r², r²) attention matrix."""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from ..config import M2N2Config


class AttentionSource(Protocol):
    name: str            #: "sd" or "affinity"
    description: str     #: human-readable identity, e.g. the model id; goes into model_version strings

    def compute(self, image: np.ndarray) -> torch.Tensor:
        """H×W×3 uint8 RGB → float32 (r², r²) row-stochastic attention (rows sum to 1), on the source's device."""


def make_source(config: M2N2Config, device: str) -> AttentionSource:
    """Build the attention source that ``config.attention`` names."""
    if config.attention == "sd":
        from .sd import StableDiffusionAttention
        return StableDiffusionAttention(config, device)
    if config.attention == "affinity":
        from .affinity import AffinityAttention
        return AffinityAttention(config, device)
    raise ValueError(f"unknown attention source {config.attention!r}")
