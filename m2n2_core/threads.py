"""Parallel execution of compiled (numba, ``nogil``) kernels over ranges of rows or columns on a shared thread pool."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _executor(workers: int) -> ThreadPoolExecutor:
    """One shared pool with at least ``workers`` threads (grown, never shrunk)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < workers:
            _pool, _pool_size = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="m2n2-kernel"), workers
        return _pool


def over_range(kernel, n: int, *args, min_part: int = 512) -> None:
    """Call ``kernel(*args, j0, j1)`` on consecutive ranges covering [0, n): one range per
    ``torch.get_num_threads()`` thread (ranges of at least ``min_part``), concurrently, and wait for all."""
    parts = max(1, min(torch.get_num_threads(), n // min_part))
    if parts == 1:
        kernel(*args, 0, n)
        return
    bounds = [n * s // parts for s in range(parts + 1)]
    pool = _executor(parts)
    futures = [pool.submit(kernel, *args, a, b) for a, b in zip(bounds, bounds[1:])]
    for f in futures:
        f.result()
