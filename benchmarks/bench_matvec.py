"""One Markov-chain step on a dense matrix: torch's fp32 ``p @ A`` vs the compiled 16-bit product of m2n2_core.matvec.

For each grid side r it builds a random row-stochastic r²×r² matrix and times, per step (one row vector p): torch
fp32 ``p @ A``, the compiled kernel on the 16-bit codes, and ``A.sum()`` (one read of the fp32 matrix by torch: about
the memory-speed floor of an fp32 step), and, once per image, the 16-bit encoding (``packed.encode``).

    python benchmarks/bench_matvec.py --resolutions 64 128 --threads 2 --out benchmarks/results/matvec.md
"""
from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import torch

from m2n2_core import matvec, packed

from bench_click import cpu_name


def per_call_ms(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(3):  # best of three rounds: the machine's memory bandwidth is shared and noisy
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - t) / repeats)
    return best * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = ["### One chain step on a dense r²×r² matrix (ms per step, best of 3 rounds)",
             f"{datetime.date.today()} · {cpu_name()} · {args.threads} threads", "",
             "| r | torch fp32 p@A | compiled 16-bit | A.sum() (fp32 read floor) | 16-bit speed-up | encode (s, per image) |",
             "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for r in args.resolutions:
        n = r * r
        g = torch.Generator().manual_seed(0)
        a = torch.rand(n, n, generator=g)
        a /= a.sum(1, keepdim=True)
        packed.encode(a[:64, :64])  # compile (or load the cached kernel) outside the timing
        t = time.perf_counter()
        codes = packed.encode(a)
        t_encode = time.perf_counter() - t
        p = torch.rand(1, n, generator=g)
        torch.testing.assert_close(matvec.packed_product(codes, p), p @ packed.decode(codes), rtol=1e-4, atol=0)
        repeats = max(3, 2 ** 26 // (n * n) * 20)
        t_torch = per_call_ms(lambda: p @ a, repeats)
        t_packed = per_call_ms(lambda: matvec.packed_product(codes, p), repeats)
        t_sum = per_call_ms(lambda: a.sum(), repeats)
        row = f"| {r} | {t_torch:.2f} | {t_packed:.2f} | {t_sum:.2f} | {t_torch / t_packed:.2f}× | {t_encode:.2f} |"
        lines.append(row)
        print(row, flush=True)
        del a, codes
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
