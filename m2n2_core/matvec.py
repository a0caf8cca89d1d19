"""The product ``p @ A`` of fp32 row vectors with a matrix stored as 16-bit codes (``m2n2_core.packed``), accumulated
in fp32, compiled for the CPU.

The columns are split over ``torch.get_num_threads()`` threads that run the kernel without the GIL. The kernel walks
the matrix rows four at a time, so its accumulator is loaded and stored once per four rows, skips rows where every p is
0, and decodes 256 columns of those rows at a time into a buffer that stays in L1. It reads half the bytes of an fp32
step: 1.8 ms for a 4096² matrix on the 2-core build machine, where torch's fp32 ``p @ A`` takes 3.3 ms
(benchmarks/RESULTS.md). Off the CPU the codes are decoded and torch multiplies. (A compiled fp32 kernel of the same
shape was only 1.1× faster than torch, and a compiled CSR kernel slower than torch's, so fp32 and CSR steps use torch.)
"""
from __future__ import annotations

import numba
import numpy as np
import torch

from . import threads
from .packed import OFFSET, SHIFT, decode

_GROUP = 4     # matrix rows per pass over the accumulator
_CHUNK = 256   # columns decoded at a time by the 16-bit kernel


@numba.njit(nogil=True, cache=True, fastmath=True)
def _packed_columns(codes, p, out, j0, j1):  # pragma: no cover - compiled
    """out[:, j0:j1] = p @ decode(codes)[:, j0:j1], accumulated in fp32."""
    k, n = p.shape
    acc = np.zeros((k, j1 - j0), dtype=np.float32)
    w = np.zeros((k, _GROUP), dtype=np.float32)
    bits = np.zeros((_GROUP, _CHUNK), dtype=np.uint32)
    values = bits.view(np.float32)
    v0, v1, v2, v3 = values[0], values[1], values[2], values[3]
    offset, shift = np.uint32(OFFSET), np.uint32(SHIFT)
    for i in range(0, n, _GROUP):
        rows = min(_GROUP, n - i)
        w[:] = 0.0
        active = False
        for c in range(k):
            for q in range(rows):
                w[c, q] = p[c, i + q]
                active |= w[c, q] != 0.0
        if not active:
            continue
        for s in range(0, j1 - j0, _CHUNK):
            e = min(s + _CHUNK, j1 - j0)
            for q in range(_GROUP):  # decode this chunk of the group's rows; missing rows of the last group are 0
                b = bits[q]
                if q < rows:
                    row = codes[i + q, j0 + s:j0 + e]
                    for j in range(e - s):
                        code = np.uint32(row[j])
                        b[j] = ((code + offset) << shift) if code != 0 else np.uint32(0)
                else:
                    b[:] = 0
            for c in range(k):
                w0, w1, w2, w3 = w[c, 0], w[c, 1], w[c, 2], w[c, 3]
                t = acc[c][s:e]
                for j in range(e - s):
                    t[j] += w0 * v0[j] + w1 * v1[j] + w2 * v2[j] + w3 * v3[j]
    out[:, j0:j1] = acc


def packed_product(codes: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``p @ packed.decode(codes)`` for fp32 row vectors p (k×N), accumulated in fp32."""
    if codes.device.type != "cpu":
        return p @ decode(codes)
    pn = np.ascontiguousarray(p.detach().numpy(), dtype=np.float32)
    out = np.empty((pn.shape[0], codes.shape[1]), dtype=np.float32)
    threads.over_range(_packed_columns, codes.shape[1], codes.numpy().view(np.uint16), pn, out)
    return torch.from_numpy(out)
