"""Per-click cost of M2N2 on one image, exact (the spec's direct dense method) vs the fast default, in ONE run.

For each attention resolution r it prepares one 854×480 image (a GrabCut photo resized), simulates an annotator with
the RITM clicker against the ground truth (clicks chosen on the fast path's masks), replays the same clicks on the exact
path, and prints the time of every stage (chain, JBU, flood fill, candidates, threshold selection + merge) for clicks
1, 5 and 10, the exact/fast ratio, the prepared image's bytes, and the IoU between the two paths' masks.
It also times one click map by the literal direct method of spec §6 (1000 dense fp32 mat-vecs without early stop, the
direct bilateral filter, reconstruction flood fill, candidates): without caching, a prediction with k clicks costs k
such maps.

    python benchmarks/bench_click.py --attention sd-like --resolutions 64 128 --threads 2 --out benchmarks/results/click.md

``sd-like`` is the synthetic stand-in for SD attention (m2n2_core.synthetic); ``affinity`` is the weight-free source.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from m2n2_core import M2N2Config, M2N2Predictor, load_image
from m2n2_core.config import DENSE_STORAGES
from m2n2_core.evaluation.clicker import next_click
from m2n2_core.floodfill import minimax_distance_reconstruction
from m2n2_core.markov import click_grid_starts
from m2n2_core.scoring import candidates
from m2n2_core.upsampling import upsample_markov_map
from m2n2_core.synthetic import sd_like_attention

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("chain", "jbu", "flood_fill", "candidates", "select", "merge")
REPORTED = (1, 5, 10)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def load_sample(name: str, size=(854, 480)):
    """GrabCut image ``name`` ($M2N2_DATASETS or ../shared/datasets) resized: image, object mask, ignore band."""
    root = Path(os.environ.get("M2N2_DATASETS") or ROOT.parent / "shared" / "datasets") / "GrabCut"
    img_path = next((root / "data_GT").glob(f"{name}.*"))
    image = cv2.resize(load_image(img_path), size, interpolation=cv2.INTER_AREA)
    gt_raw = np.asarray(Image.open(root / "boundary_GT" / f"{name}.bmp").convert("L"))
    gt_raw = cv2.resize(gt_raw, size, interpolation=cv2.INTER_NEAREST)
    return image, gt_raw == 255, gt_raw == 128


def prepare(image, r, attention, exact, device, dense_storage="auto", subspace_max_resolution=None):
    config = M2N2Config(attention="affinity" if attention == "affinity" else "sd", attention_resolution=r,
                        exact=exact, device=device, dense_storage=dense_storage)
    if subspace_max_resolution is not None:
        config = config.replace(subspace_max_resolution=subspace_max_resolution)
    predictor = M2N2Predictor(config)
    t = time.perf_counter()
    if attention == "affinity":
        predictor.set_image(image)
    else:
        predictor.set_attention(image, sd_like_attention(image, r))
    return predictor, time.perf_counter() - t


def run_clicks(predictor, clicks):
    """Replay clicks one by one; per click: stage seconds (new click's own work + the prediction) and the mask."""
    rows, masks = [], []
    for k in range(1, len(clicks) + 1):
        pts = [(x, y) for y, x, _ in clicks[:k]]
        labels = [int(p) for _, _, p in clicks[:k]]
        predictor.prepared.timings.clear()
        t = time.perf_counter()
        mask = predictor.predict(pts, labels)
        total = time.perf_counter() - t
        rows.append({**{s: predictor.prepared.timings.get(s, 0.0) for s in STAGES}, "total": total})
        masks.append(mask)
    return rows, masks


def simulate_clicks(predictor, gt, ignore, n):
    clicks, pred = [], np.zeros_like(gt)
    for _ in range(n):
        clicks.append(next_click(gt, pred, clicks, ignore))
        pred = predictor.predict([(x, y) for y, x, _ in clicks], [int(p) for _, _, p in clicks])
    return clicks


def direct_map_seconds(prepared, click, steps=1000):
    """Seconds for one click map the direct way: ``steps`` dense torch mat-vecs with max normalisation (no early stop),
    the direct bilateral filter, the reconstruction flood fill and the candidates."""
    cfg, (y, x, _) = prepared.config, click
    t = time.perf_counter()
    p = click_grid_starts([(x, y)], prepared.width, prepared.height, prepared.r).to(prepared.transition.matrix.device)
    for _ in range(steps):
        p = prepared.transition.step(p)  # the exact path: dense fp32 (blocked torch products, see m2n2_core.transition)
        p = p / p.amax(dim=1, keepdim=True)
    grid = p.reshape(prepared.r, prepared.r).cpu()  # stands in for the arrival map: same size, same upsampling cost
    m = upsample_markov_map(grid, prepared.guide, cfg.jbu_sigma_spatial, cfg.jbu_sigma_range).numpy()
    candidates(minimax_distance_reconstruction(m, y, x))
    return time.perf_counter() - t


def iou(a, b):
    u = (a | b).sum()
    return 1.0 if u == 0 else (a & b).sum() / u


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attention", choices=("sd-like", "affinity"), default="sd-like")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--image", default="124080", help="GrabCut image stem")
    ap.add_argument("--clicks", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dense-storage", choices=DENSE_STORAGES, default="auto",
                    help="the fast path's storage of a dense matrix (M2N2Config.dense_storage)")
    ap.add_argument("--subspace-max-resolution", type=int, default=M2N2Config.subspace_max_resolution,
                    help="M2N2Config.subspace_max_resolution of the fast path (0: no slow-mode subspace)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch / kernel threads")
    ap.add_argument("--out", help="markdown file to write the table to")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    image, gt, ignore = load_sample(args.image)
    lines = [f"### Per click, {args.attention} attention, GrabCut {args.image} at 854×480",
             f"{datetime.date.today()} · {cpu_name()} · {torch.get_num_threads()} torch threads · device {args.device} · "
             f"fast path dense storage {args.dense_storage}, subspace up to r = {args.subspace_max_resolution}", "",
             "| r | click | path | chain | JBU | flood fill | candidates | select+merge | total | exact/fast | IoU(fast, exact) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    summary = []
    for r in args.resolutions:
        fast, t_fast = prepare(image, r, args.attention, False, args.device, args.dense_storage,
                               args.subspace_max_resolution)
        clicks = simulate_clicks(fast, gt, ignore, args.clicks)
        fast_rows, fast_masks = run_clicks(_fresh(fast), clicks)
        nbytes_fast, kind_fast = fast.prepared.nbytes, fast.prepared.transition.kind
        del fast
        exact, t_exact = prepare(image, r, args.attention, True, args.device)
        exact_rows, exact_masks = run_clicks(exact, clicks)
        nbytes_exact = exact.prepared.nbytes
        direct = direct_map_seconds(exact.prepared, clicks[0])
        del exact
        ious = [iou(a, b) for a, b in zip(fast_masks, exact_masks)]
        for k in REPORTED:
            if k > len(clicks):
                continue
            e, f = exact_rows[k - 1], fast_rows[k - 1]
            for name, row in (("exact", e), ("fast", f)):
                cells = " | ".join(f"{row[s]:.3f}" for s in ("chain", "jbu", "flood_fill", "candidates"))
                ratio = f"{e['total'] / f['total']:.1f}×" if name == "fast" else ""
                agree = f"{ious[k - 1]:.4f}" if name == "fast" else ""
                lines.append(f"| {r} | {k} | {name} | {cells} | {row['select'] + row['merge']:.3f} | "
                             f"{row['total']:.3f} | {ratio} | {agree} |")
        summary.append(f"- r = {r}: prepare exact {t_exact:.1f} s / fast {t_fast:.1f} s; prepared bytes exact "
                       f"{nbytes_exact / 2**20:.0f} MiB / fast {nbytes_fast / 2**20:.0f} MiB ({kind_fast}, 10 clicks cached); "
                       f"min IoU(fast, exact) over {len(clicks)} clicks {min(ious):.4f}; direct method (spec §6) "
                       f"{direct:.1f} s per click map, so click k of a session without caching costs k × that: "
                       + ", ".join(f"click {k}: {k * direct:.0f} s = {k * direct / fast_rows[k - 1]['total']:.0f}× "
                                   f"the fast path" for k in REPORTED if k <= len(clicks)))
        print("\n".join(lines[-2 * len(REPORTED):]), flush=True)
    text = "\n".join(lines + [""] + summary) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


def _fresh(predictor):
    """The same prepared image with an empty click cache, so every click is computed as in a real session."""
    predictor.prepared.clear_cache()
    return predictor


if __name__ == "__main__":
    main()
