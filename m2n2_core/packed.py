"""A 16-bit storage for stochastic matrices (entries in [0, 1]): small floats under a shared exponent, down the columns.

The rows are taken in blocks of 8 (8g … 8g+7; rows are padded with zeros to a multiple of 8). In each column, a block's
8 entries share a unit h = 2^(E−8), E the exponent of their largest entry (max < 2^E; 2^(E−7) if the max lies above
the largest code), and each entry is a 15-bit float under that unit: a 3-bit exponent e and a 12-bit mantissa m stand
for h·(2^e·(1 + m/2¹²) − 1). The code spacing (the quantum) is h·2^(e−12): at most 2⁻¹¹ of the value for every
entry from h (2⁻⁸ of the block's largest) up, 2⁻¹² … 2⁻¹³ in the top binade, and h/2¹² = 2^(E−20) below h. So the
small entries next to large ones, the weak links between regions, keep a precision that plain 15-bit multiples of
2^(E−15) (the previous form) gave them only a few binades down, for one to two bits less on the largest entries. The
shared exponent (as an fp32 exponent field, 8 bits) rides in bit 15 of the block's 8 codes, bit t in row 8g+t; a block
whose largest entry is below 2⁻¹¹⁹ is stored as zeros. Half the bytes of fp32 (exactly, when the size is a multiple
of 8: every SD grid). How many exponent bits: 4 (11-bit mantissas) and 2 flipped GrabCut images at r = 64 that 3 does
not (benchmarks/RESULTS.md, "Chain storage").

The form is chosen for its product kernel (``m2n2_core.matvec``): a code's 15 bits shifted up into fp32's exponent and
mantissa fields, plus the block's exponent field, are the fp32 bit pattern of h·2^e·(1 + m/2¹²), so decoding is an
integer shift and add per entry, and the 8 entries' −h is one product per column.
"""
from __future__ import annotations

import math

import numba
import numpy as np
import torch

from . import threads

BLOCK = 8           # rows sharing an exponent (one bit of it per row)
EXPONENT_BITS = 3   # per entry
MANTISSA_BITS = 15 - EXPONENT_BITS
LEVELS = 2 ** EXPONENT_BITS  # e = 0 … LEVELS − 1; h = 2^(E − LEVELS) (or twice that)
SHIFT = 23 - MANTISSA_BITS   # a code's 15 bits, shifted up by SHIFT, fill fp32's exponent and mantissa fields
_TOP = 2 ** MANTISSA_BITS
_DECODE_ROWS = 1024  # a multiple of BLOCK
# Codes are computed on float64 bit patterns: for u = value/h + 1 in [1, 2^LEVELS), the code is u's exponent and top
# MANTISSA_BITS mantissa bits, rounded (its bit pattern shifted down by _DROP, less the exponent bias).
_DROP = 52 - MANTISSA_BITS
_BIAS = 1023 << MANTISSA_BITS
_LARGEST = (LEVELS << MANTISSA_BITS) - 1
_LARGEST_VALUE = 2.0 ** LEVELS - 2.0 ** (LEVELS - 1 - MANTISSA_BITS) - 1  # in units h


def padded_rows(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def encode(matrix: torch.Tensor, diffuse: bool = True) -> torch.Tensor:
    """Codes (int16 holding uint16 bit patterns; ``padded_rows(N)``×N, on the matrix's device) of an N×N matrix with
    entries in [0, 1].

    Each column is rounded with bounded error diffusion: the rows are visited in a fixed walk (a serpentine over the
    r×r grid when there are r² rows, else in order; a block's 8 rows are neighbours on it) and an entry gets the code
    nearest to its value plus the rounding error carried down its column so far, that target kept within one quantum
    (the code spacing at the value) of the value. So every entry stays within 2 quanta of its value, zeros stay zero,
    and the column sums over any run of consecutive rows of the walk stay within about one quantum of the run's largest
    entry: products ``p @ A`` with a p that varies smoothly over the grid, as a Markov chain's vectors do, are then
    several times more accurate than with nearest rounding (``diffuse=False``: each entry to its nearest code, for
    comparisons). Runs compiled on the CPU (on a CPU copy of a matrix on another device).
    """
    a = matrix.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    out = np.empty((padded_rows(a.shape[0]), a.shape[1]), dtype=np.uint16)
    threads.over_range(_encode_columns, a.shape[1], a, walk(a.shape[0]), diffuse, out)
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
def _encode_columns(a, order, diffuse, out, j0, j1):  # pragma: no cover - compiled
    n, m = a.shape[0], j1 - j0
    unit = np.zeros((out.shape[0] // BLOCK, m), dtype=np.float32)  # h, a power of two, or 0 (block stored as zeros)
    for g in range(unit.shape[0]):
        for j in range(m):
            largest = 0.0
            for i in range(g * BLOCK, min(g * BLOCK + BLOCK, n)):
                largest = max(largest, a[i, j0 + j])
            exponent = math.frexp(largest)[1] - LEVELS
            if largest > _value(_LARGEST, math.ldexp(1.0, exponent)):  # in the gap below 2^E: the next unit up
                exponent += 1
            if largest > 0 and exponent >= -126:
                unit[g, j] = math.ldexp(1.0, exponent)
    fields = unit.view(np.int32) >> 23  # the shared exponents as fp32 exponent fields (0 for a zero unit)
    carry = np.zeros(m, dtype=np.float64)
    for i in order:
        g, t = i // BLOCK, i % BLOCK
        for j in range(m):
            v, h = np.float64(a[i, j0 + j]), np.float64(unit[g, j])
            code = 0
            if v > 0 and h > 0:
                q = _quantum(v, h)
                code = _nearest_code(min(max(v + carry[j], v - q, 0.0), v + q), h)
                if diffuse:
                    carry[j] += v - _value(code, h)
            out[i, j0 + j] = code | (((fields[g, j] >> t) & 1) << 15)
    for i in range(n, out.shape[0]):  # padding rows: zeros carrying their bits of the exponents
        for j in range(m):
            out[i, j0 + j] = ((fields[i // BLOCK, j] >> (i % BLOCK)) & 1) << 15


@numba.njit(cache=True)
def _quantum(v, h):  # pragma: no cover - compiled
    """The code spacing at the value v ≥ 0 in a block of unit h."""
    level = min((np.float64(v / h + 1.0).view(np.int64) >> 52) - 1023, LEVELS - 1)
    return np.int64((1023 + level - MANTISSA_BITS) << 52).view(np.float64) * h


@numba.njit(cache=True)
def _nearest_code(target, h):  # pragma: no cover - compiled
    bits = np.float64(target / h + 1.0).view(np.int64)
    return min(((bits + (1 << (_DROP - 1))) >> _DROP) - _BIAS, _LARGEST)


@numba.njit(cache=True)
def _value(code, h):  # pragma: no cover - compiled
    return (np.int64((code + _BIAS) << _DROP).view(np.float64) - 1.0) * h


def quanta(matrix: torch.Tensor) -> torch.Tensor:
    """Per entry of an N×N matrix, the spacing of the codes at its value in its block (h·2^(e−12)), or 0 where the
    block is stored as zeros."""
    n = matrix.shape[0]
    padded = torch.zeros(padded_rows(n), matrix.shape[1], dtype=matrix.dtype, device=matrix.device)
    padded[:n] = matrix
    blocks = padded.reshape(-1, BLOCK, matrix.shape[1])
    largest = blocks.amax(1, keepdim=True)
    _, e = torch.frexp(largest)
    unit = torch.ldexp(torch.ones_like(largest), e - LEVELS)
    unit = torch.where(largest > unit * _LARGEST_VALUE, 2 * unit, unit)
    _, level = torch.frexp(blocks / unit + 1)
    quantum = unit * torch.exp2((level - 1).clamp(max=LEVELS - 1) - MANTISSA_BITS)
    return torch.where(unit >= 2.0 ** -126, quantum, 0.0).reshape(padded.shape)[:n]


def decode(codes: torch.Tensor) -> torch.Tensor:
    """The N×N fp32 matrix the codes stand for (on the codes' device; decoded 1024 rows at a time, so the only large
    allocation is the result). Exact: every code's value is an fp32 number."""
    rows, n = codes.shape
    out = torch.empty(rows, n, dtype=torch.float32, device=codes.device)
    bit = torch.arange(BLOCK, dtype=torch.int32, device=codes.device)[:, None]
    for start in range(0, rows, _DECODE_ROWS):
        c = (codes[start:start + _DECODE_ROWS].to(torch.int32) & 0xFFFF).reshape(-1, BLOCK, n)
        field = ((c >> 15) << bit).sum(1, keepdim=True, dtype=torch.int32) << 23
        values = (((c & 0x7FFF) << SHIFT) + field).view(torch.float32) - field.view(torch.float32)
        out[start:start + _DECODE_ROWS] = values.reshape(-1, n)
    return out[:n]
