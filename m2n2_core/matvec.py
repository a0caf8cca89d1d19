"""Compiled products ``p @ M`` of fp32 row vectors with a dense matrix on the CPU, M in fp32 or as 16-bit codes
(``m2n2_core.packed``), accumulated in fp32.

The columns are split over ``torch.get_num_threads()`` threads that run the kernels without the GIL. A kernel walks
the matrix rows four at a time, so its accumulator is loaded and stored once per four rows, and skips rows where every
p is 0; the 16-bit kernel decodes 256 columns of those rows at a time into a buffer that stays in L1. On the 2-core
build machine this streams the matrix at close to memory speed: 2.0 ms for a 4096² fp32 matrix (torch: 3.1 ms) and
1.3 ms for its 16-bit codes (benchmarks/RESULTS.md). Off the CPU, torch multiplies (decoding 16-bit codes first).
"""
from __future__ import annotations

import numba
import numpy as np
import torch

from . import threads
from .packed import OFFSET, SHIFT, decode

_GROUP = 4     # matrix rows per pass over the accumulator
_CHUNK = 256   # columns decoded at a time by the 16-bit kernel


@numba.njit(nogil=True, cache=True, inline="always")
def _group_weights(p, i, w):  # pragma: no cover - compiled
    """w[c, q] = p[c, i + q] for the (up to) four matrix rows from i, zero-padded. Returns how many rows there are,
    or 0 if every weight is 0."""
    rows = min(_GROUP, p.shape[1] - i)
    w[:] = 0.0
    active = False
    for c in range(p.shape[0]):
        for q in range(rows):
            w[c, q] = p[c, i + q]
            active |= w[c, q] != 0.0
    return rows if active else 0


@numba.njit(nogil=True, cache=True, fastmath=True, inline="always")
def _add_group(acc, s, e, w, r0, r1, r2, r3):  # pragma: no cover - compiled
    """acc[c, s:e] += Σ_q w[c, q]·r_q[:e − s] for every row vector c."""
    for c in range(acc.shape[0]):
        w0, w1, w2, w3 = w[c, 0], w[c, 1], w[c, 2], w[c, 3]
        t = acc[c][s:e]
        for j in range(e - s):
            t[j] += w0 * r0[j] + w1 * r1[j] + w2 * r2[j] + w3 * r3[j]


@numba.njit(nogil=True, cache=True, fastmath=True)
def _dense_columns(a, p, out, j0, j1):  # pragma: no cover - compiled
    """out[:, j0:j1] = p @ a[:, j0:j1] (fp32)."""
    acc = np.zeros((p.shape[0], j1 - j0), dtype=np.float32)
    w = np.zeros((p.shape[0], _GROUP), dtype=np.float32)
    for i in range(0, p.shape[1], _GROUP):
        rows = _group_weights(p, i, w)
        if rows == 0:
            continue
        r0 = a[i, j0:j1]
        _add_group(acc, 0, j1 - j0, w, r0, a[i + 1, j0:j1] if rows > 1 else r0, a[i + 2, j0:j1] if rows > 2 else r0,
                   a[i + 3, j0:j1] if rows > 3 else r0)
    out[:, j0:j1] = acc


@numba.njit(nogil=True, cache=True, fastmath=True)
def _packed_columns(codes, p, out, j0, j1):  # pragma: no cover - compiled
    """out[:, j0:j1] = p @ decode(codes)[:, j0:j1], accumulated in fp32."""
    acc = np.zeros((p.shape[0], j1 - j0), dtype=np.float32)
    w = np.zeros((p.shape[0], _GROUP), dtype=np.float32)
    bits = np.zeros((_GROUP, _CHUNK), dtype=np.uint32)
    values = bits.view(np.float32)
    offset, shift = np.uint32(OFFSET), np.uint32(SHIFT)
    for i in range(0, p.shape[1], _GROUP):
        rows = _group_weights(p, i, w)
        if rows == 0:
            continue
        for s in range(0, j1 - j0, _CHUNK):
            e = min(s + _CHUNK, j1 - j0)
            for q in range(_GROUP):
                b = bits[q]
                if q < rows:
                    row = codes[i + q, j0 + s:j0 + e]
                    for j in range(e - s):
                        code = np.uint32(row[j])
                        b[j] = ((code + offset) << shift) if code != 0 else np.uint32(0)
                else:
                    b[:] = 0
            _add_group(acc, s, e, w, values[0], values[1], values[2], values[3])
    out[:, j0:j1] = acc


@numba.njit(nogil=True, cache=True, fastmath=True)
def _csr_rows(crow, col, val, p, out, j0, j1):  # pragma: no cover - compiled
    """out[:, j] = Aᵀ[j] · p for j in [j0, j1), Aᵀ in CSR (fp32)."""
    for j in range(j0, j1):
        for c in range(p.shape[0]):
            s = np.float32(0.0)
            for t in range(crow[j], crow[j + 1]):
                s += val[t] * p[c, col[t]]
            out[c, j] = s


def _columns_in_parallel(kernel, matrix: np.ndarray, p: torch.Tensor) -> torch.Tensor:
    pn = np.ascontiguousarray(p.detach().numpy(), dtype=np.float32)
    out = np.empty((pn.shape[0], matrix.shape[1]), dtype=np.float32)
    threads.over_columns(kernel, matrix.shape[1], matrix, pn, out)
    return torch.from_numpy(out)


def dense_product(matrix: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``p @ matrix`` for an fp32 matrix and fp32 row vectors p (k×N)."""
    if matrix.device.type != "cpu":
        return p @ matrix
    return _columns_in_parallel(_dense_columns, matrix.numpy(), p)


def csr_product(transposed: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``p @ A`` for fp32 row vectors p (k×N), given Aᵀ as a sparse CSR tensor (int32 indices, fp32 values)."""
    if transposed.device.type != "cpu":
        return (transposed @ p.T.contiguous()).T
    pn = np.ascontiguousarray(p.detach().numpy(), dtype=np.float32)
    out = np.empty((pn.shape[0], transposed.shape[0]), dtype=np.float32)
    threads.over_columns(_csr_rows, out.shape[1], transposed.crow_indices().numpy(), transposed.col_indices().numpy(),
                         transposed.values().numpy(), pn, out)
    return torch.from_numpy(out)


def packed_product(codes: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``p @ packed.decode(codes)`` for fp32 row vectors p (k×N), accumulated in fp32."""
    if codes.device.type != "cpu":
        return p @ decode(codes)
    return _columns_in_parallel(_packed_columns, codes.numpy().view(np.uint16), p)
