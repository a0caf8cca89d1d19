"""A 16-bit storage for stochastic matrices (entries in [0, 1]).

Each entry keeps the top bits of its fp32 representation: a 5-bit exponent covering [2⁻³¹, 1] and an 11-bit mantissa
(steps of 2⁻¹¹ relative: four times finer than fp16's, with no subnormal range in the way); code 0 means 0. Half the
bytes of fp32. ``m2n2_core.matvec`` multiplies with the codes.
"""
from __future__ import annotations

import math

import numba
import numpy as np
import torch

from . import threads

MANTISSA_BITS = 11
SHIFT = 23 - MANTISSA_BITS                # fp32 mantissa bits dropped
EXP_MIN = 127 - 31                        # fp32 exponent field of the smallest kept binade (2⁻³¹)
OFFSET = (EXP_MIN << MANTISSA_BITS) - 1   # code = (fp32 bits >> SHIFT) − OFFSET: 2⁻³¹ → 1, 0 → 0
BOUND = 2.0 ** -MANTISSA_BITS             # error diffusion moves an entry's target by at most this, relative


def encode(matrix: torch.Tensor) -> torch.Tensor:
    """Codes (int16 holding uint16 bit patterns, same shape and device) of a matrix with entries in [0, 1].

    Each column is rounded with bounded error diffusion: the rows are visited in a fixed walk (a serpentine over the
    r×r grid when there are r² rows, else in order) and an entry gets the code nearest to its value plus the rounding
    error carried down its column so far, that target kept within 2⁻¹¹ (one code step) of the value. So every entry
    stays within 1.5 steps of its value (relative error ≤ 2⁻¹¹ + 2⁻¹²), zeros stay zero, and wherever the column's
    entries can absorb the carry the column sums over any run of consecutive rows of the walk stay within about one
    step. Products ``p @ A`` with a p that varies smoothly over the grid, as a Markov chain's vectors do, are then
    several times more accurate than with nearest rounding. Without the bound, single small entries could move by a
    step of their larger neighbours, which flipped masks on GrabCut (benchmarks/RESULTS.md). Runs compiled on the CPU
    (on a CPU copy of a matrix on another device).
    """
    a = matrix.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    out = np.empty(a.shape, dtype=np.uint16)
    threads.over_range(_encode_columns, a.shape[1], a, walk(a.shape[0]), out)
    return torch.from_numpy(out.view(np.int16)).to(matrix.device)


def walk(n: int) -> np.ndarray:
    """The order ``encode`` visits rows in: boustrophedon over the r×r grid if n = r², else 0..n−1."""
    r = math.isqrt(n)
    order = np.arange(n, dtype=np.int64)
    if r * r == n:
        grid = order.reshape(r, r)
        grid[1::2] = grid[1::2, ::-1].copy()
    return order


@numba.njit(nogil=True, cache=True)
def _encode_columns(a, order, out, j0, j1):  # pragma: no cover - compiled
    m = j1 - j0
    carry = np.zeros(m, dtype=np.float64)
    target = np.empty(m, dtype=np.float32)
    target_bits = target.view(np.uint32)
    back = np.empty(m, dtype=np.uint32)
    back_values = back.view(np.float32)
    half, shift, offset = np.uint32(1 << (SHIFT - 1)), np.uint32(SHIFT), np.uint32(OFFSET)
    for i in order:
        row = a[i, j0:j1]
        codes = out[i, j0:j1]
        for j in range(m):
            v = np.float64(row[j])
            target[j] = min(max(v + carry[j], v * (1.0 - BOUND), 0.0), v * (1.0 + BOUND), 1.0)
        for j in range(m):
            code = (target_bits[j] + half) >> shift
            code = code - offset if code > offset and row[j] > 0 else np.uint32(0)
            codes[j] = code
            back[j] = (code + offset) << shift if code != 0 else np.uint32(0)
        for j in range(m):
            if row[j] > 0:
                carry[j] += row[j] - back_values[j]


def decode(codes: torch.Tensor) -> torch.Tensor:
    """The fp32 matrix the codes stand for (on the codes' device)."""
    c = codes.to(torch.int32) & 0xFFFF
    return torch.where(c > 0, (c + OFFSET) << SHIFT, 0).view(torch.float32)
