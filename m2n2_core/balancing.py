"""Sharpening and balancing of the raw attention (spec §1): A ← rownorm(A^(1/T)), then IPF / Sinkhorn."""
from __future__ import annotations

import torch

_TINY = 1e-30


def sharpen(attention: torch.Tensor, temperature: float) -> torch.Tensor:
    """rownorm(A^(1/T)) = row-softmax(log A / T), in fp32, in a new tensor (zeros stay zero)."""
    a = attention.to(torch.float32, copy=True)
    if temperature != 1.0:
        a.pow_(1.0 / temperature)
    a.div_(a.sum(dim=1, keepdim=True).clamp_min_(_TINY))
    return a


def balance(attention: torch.Tensor, temperature: float, iterations: int) -> torch.Tensor:
    """Sharpen, then ``iterations`` IPF rounds of {divide by column sums; divide by row sums}.

    The rounds are carried out on scaling vectors (A = diag(u)·K·diag(v)), which is the same arithmetic as rescaling
    the matrix in place but reads it twice per round instead of rewriting it; the result ends on rows, so every row
    sums to 1 and columns approximately so.
    """
    k = sharpen(attention, temperature)
    u = torch.ones(k.shape[0], dtype=torch.float32, device=k.device)
    v = torch.ones(k.shape[1], dtype=torch.float32, device=k.device)
    for _ in range(iterations):
        v = 1.0 / (u @ k).clamp_min_(_TINY)          # column sums of diag(u) K diag(v) are v * (uᵀK)
        u = 1.0 / (k @ v).clamp_min_(_TINY)          # row sums are u * (K v)
    k.mul_(u[:, None]).mul_(v[None, :])
    return k

