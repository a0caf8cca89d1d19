"""A 16-bit storage for stochastic matrices (entries in [0, 1]): block floating point down the columns.

The rows are taken in blocks of 8 (8g … 8g+7; rows are padded with zeros to a multiple of 8). In each column, a block's
8 entries share one exponent: with E the exponent of their largest entry (max < 2^E), each entry is stored as a 15-bit
multiple of the block's quantum q = 2^(E−15), so the largest entry keeps 2⁻¹⁵…2⁻¹⁶ relative precision (the old
per-entry 16-bit float kept 2⁻¹¹) and every entry an absolute one of q. The shared exponent (as an fp32 exponent field,
8 bits) rides in bit 15 of the block's 8 codes, bit t in row 8g+t; a block whose largest entry is below 2⁻¹¹² is stored
as zeros. Half the bytes of fp32 (exactly, when the size is a multiple of 8: every SD grid), and a product kernel
whose decoding is a few vector operations per column (``m2n2_core.matvec``).
"""
from __future__ import annotations

import math

import numba
import numpy as np
import torch

from . import threads

BLOCK = 8          # rows sharing an exponent (one bit of it per row)
MANTISSA_BITS = 15
_DECODE_ROWS = 1024  # a multiple of BLOCK


def padded_rows(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def encode(matrix: torch.Tensor) -> torch.Tensor:
    """Codes (int16 holding uint16 bit patterns; ``padded_rows(N)``×N, on the matrix's device) of an N×N matrix with
    entries in [0, 1].

    Each column is rounded with bounded error diffusion: the rows are visited in a fixed walk (a serpentine over the
    r×r grid when there are r² rows, else in order; a block's 8 rows are neighbours on it) and an entry gets the
    multiple of its quantum nearest to its value plus the rounding error carried down its column so far, that target
    kept within one quantum of the value. So every entry stays within 1.5 quanta of its value, zeros stay zero, and the
    column sums over any run of consecutive rows of the walk stay within about one quantum: products ``p @ A`` with a
    p that varies smoothly over the grid, as a Markov chain's vectors do, are then several times more accurate than with
    nearest rounding. Runs compiled on the CPU (on a CPU copy of a matrix on another device).
    """
    a = matrix.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    out = np.empty((padded_rows(a.shape[0]), a.shape[1]), dtype=np.uint16)
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
    n, m = a.shape[0], j1 - j0
    quantum = np.zeros((out.shape[0] // BLOCK, m), dtype=np.float32)  # a power of two, or 0 (block stored as zeros)
    for g in range(quantum.shape[0]):
        for j in range(m):
            largest = 0.0
            for i in range(g * BLOCK, min(g * BLOCK + BLOCK, n)):
                largest = max(largest, a[i, j0 + j])
            exponent = math.frexp(largest)[1] - MANTISSA_BITS
            if exponent >= -126:
                quantum[g, j] = math.ldexp(1.0, exponent)
    fields = quantum.view(np.int32) >> 23  # the shared exponents as fp32 exponent fields (0 for a zero quantum)
    carry = np.zeros(m, dtype=np.float64)
    top = 2.0 ** MANTISSA_BITS - 1
    for i in order:
        g, t = i // BLOCK, i % BLOCK
        for j in range(m):
            v, q = np.float64(a[i, j0 + j]), np.float64(quantum[g, j])
            code = 0
            if v > 0 and q > 0:
                target = min(max(v + carry[j], v - q, 0.0), v + q)
                code = int(min(math.floor(target / q + 0.5), top))
                carry[j] += v - code * q
            out[i, j0 + j] = code | (((fields[g, j] >> t) & 1) << 15)
    for i in range(n, out.shape[0]):  # padding rows: zeros carrying their bits of the exponents
        for j in range(m):
            out[i, j0 + j] = ((fields[i // BLOCK, j] >> (i % BLOCK)) & 1) << 15


def quanta(matrix: torch.Tensor) -> torch.Tensor:
    """Per entry of an N×N matrix, the quantum ``encode`` gives its block: 2^(E−15), or 0 where that is not a normal
    fp32 number (the block is stored as zeros)."""
    n = matrix.shape[0]
    padded = torch.zeros(padded_rows(n), matrix.shape[1], dtype=matrix.dtype, device=matrix.device)
    padded[:n] = matrix
    blocks = padded.reshape(-1, BLOCK, matrix.shape[1])
    _, e = torch.frexp(blocks.amax(1, keepdim=True))
    quantum = torch.ldexp(torch.ones_like(blocks), e - MANTISSA_BITS)
    return torch.where(quantum >= 2.0 ** -126, quantum, 0.0).reshape(padded.shape)[:n]


def decode(codes: torch.Tensor) -> torch.Tensor:
    """The N×N fp32 matrix the codes stand for (on the codes' device; decoded 1024 rows at a time, so the only large
    allocation is the result)."""
    rows, n = codes.shape
    out = torch.empty(rows, n, dtype=torch.float32, device=codes.device)
    bit = torch.arange(BLOCK, dtype=torch.int32, device=codes.device)[:, None]
    for start in range(0, rows, _DECODE_ROWS):
        c = (codes[start:start + _DECODE_ROWS].to(torch.int32) & 0xFFFF).reshape(-1, BLOCK, n)
        field = ((c >> 15) << bit).sum(1, keepdim=True, dtype=torch.int32)
        values = (c & 0x7FFF).to(torch.float32) * (field << 23).view(torch.float32)
        out[start:start + _DECODE_ROWS] = values.reshape(-1, n)
    return out[:n]
