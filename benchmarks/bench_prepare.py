"""Per-image cost of the fast path after the attention exists, stage by stage: balancing, storage of the balanced
matrix, the slow-mode subspace (dense matrices up to ``subspace_max_resolution``) and the upsampling operator.

    python benchmarks/bench_prepare.py --attention sd-like --resolutions 64 128 --threads 1 2 --out benchmarks/results/prepare.md

The attention itself (the SD2 pass) is measured by bench_image.py; here it is the synthetic SD-like stand-in or the
weight-free source, whose computation is not timed.
"""
from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import torch

from bench_click import cpu_name, load_sample

from m2n2_core import M2N2Config
from m2n2_core.attention import make_source
from m2n2_core.balancing import balance
from m2n2_core.subspace import slow_subspace
from m2n2_core.synthetic import sd_like_attention
from m2n2_core.transition import Transition
from m2n2_core.upsampling import JBUOperator, guide_image


def stages(image, r, attention, device="cpu"):
    """Seconds per stage (each ends with a device synchronisation), and what was built."""
    cfg = M2N2Config(attention="affinity" if attention == "affinity" else "sd", attention_resolution=r, device="cpu")
    raw = make_source(cfg, "cpu").compute(image) if attention == "affinity" else sd_like_attention(image, r)
    raw = torch.as_tensor(raw).reshape(r * r, r * r).float().to(device)
    sync = torch.cuda.synchronize if raw.device.type == "cuda" else (lambda: None)
    times = {}
    sync()
    t = time.perf_counter()
    balanced = balance(raw, cfg.temperature, cfg.balancing_iterations)
    sync()
    times["balancing"] = time.perf_counter() - t
    t = time.perf_counter()
    transition = Transition.compact(balanced, cfg.dense_storage_at(r))
    sync()
    times["storage"] = time.perf_counter() - t
    t = time.perf_counter()
    dense = transition.kind != "csr" and r <= cfg.subspace_max_resolution
    if dense:
        slow_subspace(transition.dense())
        sync()
    times["subspace"] = time.perf_counter() - t if dense else None
    t = time.perf_counter()
    JBUOperator(guide_image(image), r, cfg.jbu_sigma_spatial, cfg.jbu_sigma_range)
    times["jbu operator"] = time.perf_counter() - t
    return times, transition.kind


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attention", choices=("sd-like", "affinity"), default="sd-like")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    ap.add_argument("--image", default="124080", help="GrabCut image stem")
    ap.add_argument("--device", default="cpu", help="where balancing, storage and the subspace search run")
    ap.add_argument("--out", help="markdown file to write the table to")
    args = ap.parse_args(argv)
    image = load_sample(args.image)[0]
    JBUOperator(guide_image(image[:40, :60]), 8, 1.0, 0.1)  # compile the kernels outside the timings
    Transition.compact(torch.full((4, 4), 0.25))
    stages(image[:128, :128], 16, args.attention, args.device)  # warm-up: kernels, CUDA context, library handles
    lines = [f"### Per image after the attention, {args.attention}, GrabCut {args.image} at 854×480",
             f"{datetime.date.today()} · {cpu_name()} · device {args.device}"
             + (f" ({torch.cuda.get_device_name(args.device)})" if args.device.startswith("cuda") else ""), "",
             "| r | threads | storage | balancing s | storage s | subspace s | JBU operator s | total s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in args.resolutions:
        for n in args.threads:
            torch.set_num_threads(n)
            times, kind = stages(image, r, args.attention, args.device)
            cells = " | ".join("—" if v is None else f"{v:.2f}" for v in times.values())
            lines.append(f"| {r} | {n} | {kind} | {cells} | {sum(v for v in times.values() if v):.2f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
