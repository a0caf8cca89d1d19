"""The product ``p @ A`` of fp32 row vectors with a matrix stored as 16-bit codes (``m2n2_core.packed``), accumulated
in fp32, compiled for the CPU.

The columns are split over ``torch.get_num_threads()`` threads that run the kernel without the GIL. The kernel walks
the matrix rows a block (8 rows, one shared exponent per column) at a time, so its accumulator is loaded and stored
once per 8 rows, skips blocks where every p is 0, and per column rebuilds the block's exponent field from the codes'
top bits, turns each of the 8 codes into an fp32 number by an integer shift and add, and sums them weighted by p, less
the block's unit times the sum of the 8 weights: vertical vector operations only. The fp32 accumulator takes 256
rows at a time; their sums are added up in fp64, since one fp32 sum over all N rows drifts by more than the 16-bit
storage's own error (see ``transition``). It reads half the bytes of an fp32 step (benchmarks/RESULTS.md,
`bench_matvec.py`). Off the CPU the codes are decoded and torch multiplies. (A compiled
fp32 kernel of the same shape was only 1.1× faster than torch, and a compiled CSR kernel slower than torch's, so fp32
and CSR steps use torch.)
"""
from __future__ import annotations

import numba
import numpy as np
import torch

from . import threads
from .packed import BLOCK, SHIFT, decode

_CHUNK = 512   # columns per pass (their exponent fields stay in L1)
_STRIPE = 256  # rows summed in fp32 before their sum joins the fp64 total


@numba.njit(nogil=True, cache=True, fastmath=True)
def _packed_columns(codes, p, out, j0, j1):  # pragma: no cover - compiled
    """out[:, j0:j1] = p @ decode(codes)[:, j0:j1]: fp32 sums over stripes of 256 rows, added up in fp64."""
    k, n = p.shape
    total = np.zeros((k, j1 - j0), dtype=np.float64)
    acc = np.zeros((k, j1 - j0), dtype=np.float32)
    w = np.zeros((k, BLOCK), dtype=np.float32)
    fields = np.zeros(_CHUNK, dtype=np.int32)
    units = fields.view(np.float32)  # h per column
    one = np.int32(1)
    for i in range(0, codes.shape[0], BLOCK):
        if i % _STRIPE == 0 and i > 0:
            _flush(acc, total)
        w[:] = 0.0
        active = False
        for c in range(k):
            for q in range(min(BLOCK, n - i)):
                w[c, q] = p[c, i + q]
                active |= w[c, q] != 0.0
        if not active:
            continue
        for s in range(j0, j1, _CHUNK):
            m = min(_CHUNK, j1 - s)
            r0, r1, r2, r3 = codes[i, s:s + m], codes[i + 1, s:s + m], codes[i + 2, s:s + m], codes[i + 3, s:s + m]
            r4, r5, r6, r7 = codes[i + 4, s:s + m], codes[i + 5, s:s + m], codes[i + 6, s:s + m], codes[i + 7, s:s + m]
            for j in range(m):  # the block's exponent field per column: bit t of it is bit 15 of row t
                fields[j] = (((np.int32(r0[j]) >> 15) & one) | (((np.int32(r1[j]) >> 15) & one) << 1)
                             | (((np.int32(r2[j]) >> 15) & one) << 2) | (((np.int32(r3[j]) >> 15) & one) << 3)
                             | (((np.int32(r4[j]) >> 15) & one) << 4) | (((np.int32(r5[j]) >> 15) & one) << 5)
                             | (((np.int32(r6[j]) >> 15) & one) << 6) | (((np.int32(r7[j]) >> 15) & one) << 7)) << 23
            for c in range(k):
                w0, w1, w2, w3, w4, w5, w6, w7 = w[c, 0], w[c, 1], w[c, 2], w[c, 3], w[c, 4], w[c, 5], w[c, 6], w[c, 7]
                weight = w0 + w1 + w2 + w3 + w4 + w5 + w6 + w7
                t = acc[c, s - j0:s - j0 + m]
                for j in range(m):  # entry = h·2^e·(1 + m/2¹²) − h: its bits shifted onto the block's exponent field
                    f = fields[j]
                    t[j] += (((w0 * _bits(r0[j], f) + w1 * _bits(r1[j], f)) + (w2 * _bits(r2[j], f) + w3 * _bits(r3[j], f)))
                             + ((w4 * _bits(r4[j], f) + w5 * _bits(r5[j], f)) + (w6 * _bits(r6[j], f) + w7 * _bits(r7[j], f)))
                             - weight * units[j])
    _flush(acc, total)
    out[:, j0:j1] = total


@numba.njit(inline="always")
def _bits(code, field):  # pragma: no cover - compiled
    """h·2^e·(1 + m/2¹²) of a 16-bit code, given its block's exponent field (shifted to fp32's exponent bits)."""
    return np.int32(((np.int32(code) & np.int32(0x7FFF)) << np.int32(SHIFT)) + field).view(np.float32)


@numba.njit(nogil=True, cache=True)
def _flush(acc, total):  # pragma: no cover - compiled
    """total += acc; acc = 0."""
    for c in range(acc.shape[0]):
        a, t = acc[c], total[c]
        for j in range(a.shape[0]):
            t[j] += a[j]
            a[j] = 0.0


def packed_product(codes: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``p @ packed.decode(codes)`` for fp32 row vectors p (k×N), to fp32 precision (partial sums in fp32, their total
    in fp64)."""
    if codes.device.type != "cpu":
        return p @ decode(codes)
    pn = np.ascontiguousarray(p.detach().numpy(), dtype=np.float32)
    out = np.empty((pn.shape[0], codes.shape[1]), dtype=np.float32)
    threads.over_range(_packed_columns, codes.shape[1], codes.numpy(), pn, out)
    return torch.from_numpy(out)
