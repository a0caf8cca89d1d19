"""Per-image cost of the Stable Diffusion attention source with a FULL-SIZE SD2 architecture (random weights).

Builds SD2's real architecture (UNet ≈ 866M parameters, attention_head_dim [5, 10, 20, 20], cross_attention_dim
1024; the SD VAE; an OpenCLIP-H-shaped text encoder: hidden 1024, 23 layers) with random weights (no download),
then times, per attention resolution r: VAE encode, the UNet pass with attention capture, balancing (from
``m2n2_core.balancing`` if importable), and their total; and the peak memory (process RSS on CPU, sampled;
``torch.cuda.max_memory_allocated`` on GPU). The empty-prompt text encoding runs once per source and is reported
separately. Random weights: the numbers are costs only, nothing about segmentation quality.

    python benchmarks/bench_image.py --device cpu --resolution 64 128 --out benchmarks/results/sd_image_cpu.md
    python benchmarks/bench_image.py --device cuda --dtype float16 --resolution 128 --warmup 2 --repeats 5
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from m2n2_core.attention.sd import StableDiffusionAttention, empty_prompt_embedding, resolve_dtype  # noqa: E402
from m2n2_core.attention.sd_loading import SDComponents  # noqa: E402
from m2n2_core.config import M2N2Config  # noqa: E402

try:
    from m2n2_core.balancing import balance
except ImportError:  # the balancing module is not on this branch: time the source alone
    balance = None

SD2_UNET = dict(
    sample_size=96, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024, use_linear_projection=True, upcast_attention=True,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, flip_sin_to_cos=True, freq_shift=0, downsample_padding=1)
SD2_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    sample_size=768, scaling_factor=0.18215)
SD2_TEXT = dict(vocab_size=49408, max_position_embeddings=77, hidden_size=1024, intermediate_size=4096,
                num_hidden_layers=23, num_attention_heads=16, projection_dim=512, hidden_act="gelu",
                layer_norm_eps=1e-5)


def full_size_sd2(device: torch.device, dtype: torch.dtype) -> SDComponents:
    """SD2's VAE, text encoder and UNet with random weights, created directly on ``device`` in ``dtype``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    with torch.device(device):
        parts = [AutoencoderKL(**SD2_VAE), CLIPTextModel(CLIPTextConfig(**SD2_TEXT)),
                 UNet2DConditionModel(**SD2_UNET)]
    vae, text_encoder, unet = (p.to(dtype).eval().requires_grad_(False) for p in parts)
    return SDComponents(vae, text_encoder, unet, None, Path("random-full-size-sd2"))


class PeakRSS:
    """Samples this process's resident set size every few milliseconds; ``.peak`` is the maximum since reset."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def current(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def reset(self) -> None:
        self.peak = self.current()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f} at start"


def run_once(source, image, device, config, rss):
    """One image: returns dict of seconds per stage and peak memory bytes (source alone, and with balancing)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        rss.reset()
    synchronize(device)
    t0 = time.perf_counter()
    latent = source.encode(image)
    synchronize(device)
    t1 = time.perf_counter()
    attention = source.attention_from_latent(latent)
    synchronize(device)
    t2 = time.perf_counter()
    peak_source = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.peak
    finite = bool(torch.isfinite(attention).all())
    if balance is not None:
        balanced = balance(attention, config.temperature, config.balancing_iterations)
        synchronize(device)
        del balanced
    t3 = time.perf_counter()
    peak_all = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.peak
    del attention, latent
    return dict(vae=t1 - t0, unet=t2 - t1, balance=t3 - t2 if balance is not None else None, total=t3 - t0,
                peak_source=peak_source, peak_all=peak_all, finite=finite)


def compare_early_stop(source, image, device, pairs: int) -> tuple[float, float]:
    """Median seconds of the UNet pass with and without early stop, measured in alternating pairs."""
    latent = source.encode(image)
    original, times = source.stop_early, {True: [], False: []}
    try:
        for _ in range(pairs):
            for stop in (False, True):
                source.stop_early = stop
                synchronize(device)
                t = time.perf_counter()
                source.attention_from_latent(latent)
                synchronize(device)
                times[stop].append(time.perf_counter() - t)
    finally:
        source.stop_early = original
    return float(np.median(times[True])), float(np.median(times[False]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float16 / bfloat16 / float32 (default: fp16 on cuda, else fp32)")
    parser.add_argument("--resolution", type=int, nargs="+", default=[64, 128], help="attention grid side(s) r")
    parser.add_argument("--repeats", type=int, default=1, help="timed images per resolution")
    parser.add_argument("--warmup", type=int, default=None, help="untimed images first (default: 1 on cuda, 0 on cpu)")
    parser.add_argument("--no-early-stop", action="store_true", help="run the whole UNet instead of stopping "
                                                                       "after the last captured layer")
    parser.add_argument("--compare-early-stop", action="store_true",
                        help="also time the UNet pass alone with and without early stop, alternating, per r")
    parser.add_argument("--out", type=Path, help="write a markdown fragment with the results here")
    parser.add_argument("--target-seconds", type=float, help="exit 1 if a total per-image time exceeds this")
    parser.add_argument("--target-gib", type=float, help="exit 1 if a peak memory (with balancing) exceeds this")
    args = parser.parse_args(argv)

    from diffusers.utils import logging as diffusers_logging
    diffusers_logging.set_verbosity_error()  # silence "modules that should be kept in float32: []" on dtype casts
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    warmup = args.warmup if args.warmup is not None else int(device.type == "cuda")
    rss = PeakRSS()
    where = machine(device)
    t = time.perf_counter()
    parts = full_size_sd2(device, dtype)
    build_s = time.perf_counter() - t
    counts = {name: sum(p.numel() for p in getattr(parts, name).parameters())
              for name in ("unet", "vae", "text_encoder")}
    print(f"{where}; {dtype}; built random full-size SD2 in {build_s:.1f} s; parameters: "
          + ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in counts.items()), flush=True)

    synchronize(device)
    t = time.perf_counter()
    empty_prompt_embedding(parts.text_encoder)
    synchronize(device)
    text_s = time.perf_counter() - t
    config = M2N2Config(model="random-full-size-sd2", attention_resolution=args.resolution[0], dtype=args.dtype)
    source = StableDiffusionAttention.from_components(config, parts, str(device), stop_early=not args.no_early_stop)
    del parts
    if device.type == "cuda":
        torch.cuda.empty_cache()
    resident = torch.cuda.memory_allocated(device) if device.type == "cuda" else rss.current()
    print(f"text encoding (once per source, cached): {text_s:.3f} s; memory with the models loaded "
          f"(text encoder freed): {resident / 2**30:.2f} GiB", flush=True)

    image = np.random.default_rng(0).integers(0, 256, (480, 854, 3), dtype=np.uint8)
    rows, comparisons = [], []
    for r in args.resolution:
        source.resolution = r
        for _ in range(warmup):
            run_once(source, image, device, config, rss)
        runs = [run_once(source, image, device, config, rss) for _ in range(args.repeats)]
        best = {k: (min(run[k] for run in runs) if runs[0][k] is not None else None)
                for k in ("vae", "unet", "balance", "total")}
        peak_source = max(run["peak_source"] for run in runs)
        peak_all = max(run["peak_all"] for run in runs)
        rows.append((r, best, peak_source, peak_all, all(run["finite"] for run in runs)))
        bal = f"{best['balance']:.3f} s" if best["balance"] is not None else "n/a (balancing not importable)"
        print(f"r={r}: VAE {best['vae']:.3f} s, UNet+capture {best['unet']:.3f} s, balancing {bal}, "
              f"total {best['total']:.3f} s; peak memory source {peak_source / 2**30:.2f} GiB, "
              f"with balancing {peak_all / 2**30:.2f} GiB; finite: {rows[-1][4]}", flush=True)
        if args.compare_early_stop:
            comparisons.append((r, *compare_early_stop(source, image, device, max(1, args.repeats))))
            print(f"r={r}: UNet pass median {comparisons[-1][1]:.3f} s with early stop, "
                  f"{comparisons[-1][2]:.3f} s without ({max(1, args.repeats)} alternating pairs)", flush=True)
    rss.stop()

    if args.out:
        memory = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "process RSS (sampled every 5 ms)"
        lines = [
            f"### SD attention source, full-size SD2 architecture (random weights), {device.type} {dtype}",
            "",
            f"- Machine: {where}",
            f"- Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- Command: `{shlex.join([sys.executable.rsplit('/', 1)[-1], *sys.argv])}`",
            "- Parameters: " + ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in counts.items()),
            f"- Early stop after the last captured layer: {not args.no_early_stop}; warm-up images: {warmup}; "
            f"timed images per r: {args.repeats} (best shown)",
            f"- Text encoding of the empty prompt, once per source (cached): {text_s:.3f} s",
            f"- Balancing: {'m2n2_core.balancing.balance (T, 200 iterations)' if balance else 'not importable, not timed'}",
            f"- Peak memory: {memory}; 'source' = VAE + UNet/capture, 'all' = including balancing; "
            f"with only the models loaded: {resident / 2**30:.2f} GiB",
            "",
            "| r | VAE encode s | UNet + capture s | balancing s | total s | peak source GiB | peak all GiB |",
            "|---|---|---|---|---|---|---|",
        ]
        for r, best, peak_source, peak_all, _ in rows:
            bal = f"{best['balance']:.3f}" if best["balance"] is not None else "n/a"
            lines.append(f"| {r} | {best['vae']:.3f} | {best['unet']:.3f} | {bal} | {best['total']:.3f} | "
                         f"{peak_source / 2**30:.2f} | {peak_all / 2**30:.2f} |")
        if comparisons:
            lines += ["", "| r | UNet pass with early stop s (median) | without s (median) | alternating pairs |",
                      "|---|---|---|---|"]
            lines += [f"| {r} | {with_:.3f} | {without:.3f} | {max(1, args.repeats)} |"
                      for r, with_, without in comparisons]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    failed = False
    for r, best, _, peak_all, finite in rows:
        checks = [("total time", best["total"], args.target_seconds, "s"),
                  ("peak memory", peak_all / 2**30, args.target_gib, "GiB")]
        for what, value, target, unit in checks:
            if target is not None:
                ok = value <= target
                failed |= not ok
                print(f"{'PASS' if ok else 'FAIL'} r={r} {what} {value:.3f} {unit} (target <= {target} {unit})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
