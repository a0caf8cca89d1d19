"""A 16-bit storage for stochastic matrices (entries in [0, 1]) and its product with fp32 vectors (fp32 accumulation).

Each entry keeps the top bits of its fp32 representation: a 5-bit exponent covering [2⁻³¹, 1] and an 11-bit mantissa,
rounded to nearest (relative error ≤ 2⁻¹²: four times finer than fp16's, with no subnormal range in the way);
entries below 2⁻³¹ become 0. Code 0 means 0. Half the bytes of fp32. On the CPU the product is computed by a compiled
kernel that decodes each row once; it reads half the memory of an fp32 mat-vec, but on the 2-core build machine the
decode costs about what that saves, so it is no faster (benchmarks/RESULTS.md).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch

_MANTISSA_BITS = 11
_SHIFT = 23 - _MANTISSA_BITS                 # fp32 mantissa bits dropped
_EXP_MIN = 127 - 31                          # fp32 exponent field of the smallest kept binade (2⁻³¹)
_OFFSET = (_EXP_MIN << _MANTISSA_BITS) - 1   # code = (fp32 bits >> _SHIFT) − _OFFSET: 2⁻³¹ → 1, 0 → 0


def encode(matrix: torch.Tensor, rows_per_chunk: int = 1024) -> torch.Tensor:
    """Codes (int16 holding uint16 bit patterns, same shape and device) of a matrix with entries in [0, 1]."""
    out = torch.empty(matrix.shape, dtype=torch.int16, device=matrix.device)
    for start in range(0, matrix.shape[0], rows_per_chunk):
        rows = matrix[start:start + rows_per_chunk].to(torch.float32).clamp(0.0, 1.0).contiguous()
        bits = rows.view(torch.int32).to(torch.int64)
        code = ((bits + (1 << (_SHIFT - 1))) >> _SHIFT) - _OFFSET   # round half up on the dropped bits
        code = code.clamp_(min=0)
        out[start:start + rows_per_chunk] = torch.where(code >= 1 << 15, code - (1 << 16), code).to(torch.int16)
    return out


def decode(codes: torch.Tensor) -> torch.Tensor:
    """The fp32 matrix the codes stand for (on the codes' device)."""
    c = codes.to(torch.int32) & 0xFFFF
    return torch.where(c > 0, (c + _OFFSET) << _SHIFT, 0).view(torch.float32)


@numba.njit(nogil=True, cache=True, fastmath=True)
def _product_columns(codes, p, out, j0, j1):  # pragma: no cover - compiled
    """out[:, j0:j1] = p @ decode(codes)[:, j0:j1], accumulated in fp32."""
    k, n = p.shape
    m = j1 - j0
    bits = np.empty(m, dtype=np.uint32)
    values = bits.view(np.float32)
    acc = np.zeros((k, m), dtype=np.float32)
    for i in range(n):
        active = False
        for c in range(k):
            if p[c, i] != 0.0:
                active = True
        if not active:
            continue
        row = codes[i, j0:j1]
        for j in range(m):
            code = np.uint32(row[j])
            bits[j] = ((code + _OFFSET) << _SHIFT) if code != 0 else np.uint32(0)
        for c in range(k):
            pc = p[c, i]
            a = acc[c]
            for j in range(m):
                a[j] += pc * values[j]
    out[:, j0:j1] = acc


_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _executor(workers: int) -> ThreadPoolExecutor:
    """One shared pool with at least ``workers`` threads (grown, never shrunk)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < workers:
            _pool, _pool_size = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="m2n2-packed"), workers
        return _pool


def product(codes: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``p @ decode(codes)`` for fp32 row vectors p (k×N), accumulated in fp32.

    On the CPU the columns are split over ``torch.get_num_threads()`` threads running the compiled kernel without the
    GIL; elsewhere the matrix is decoded and multiplied by torch.
    """
    if codes.device.type != "cpu":
        return p @ decode(codes)
    c = codes.numpy().view(np.uint16)
    pn = np.ascontiguousarray(p.detach().numpy(), dtype=np.float32)
    out = np.empty((pn.shape[0], c.shape[1]), dtype=np.float32)
    n = c.shape[1]
    parts = max(1, min(torch.get_num_threads(), n // 512))
    bounds = [n * s // parts for s in range(parts + 1)]
    if parts == 1:
        _product_columns(c, pn, out, 0, n)
    else:
        futures = [_executor(parts).submit(_product_columns, c, pn, out, a, b) for a, b in zip(bounds, bounds[1:])]
        for f in futures:
            f.result()
    return torch.from_numpy(out)
