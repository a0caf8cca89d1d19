"""Backend latency through the real Flask app (test client) and a loopback image server.

Measures, per attention resolution: the first click on a new image (download + decode + attention + balancing +
click maps + RLE), a click at a new point on the cached image, a repeated click set (click maps cached), the
no-click request, and the RLE encoding of a large mask. Writes benchmarks/results/backend.md.

    python benchmarks/bench_backend.py [--attention affinity] [--resolution 32 64] [--repeats 5]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from backend.app import create_app  # noqa: E402
from backend.model import M2N2Model  # noqa: E402
from backend.rle import mask_to_rle  # noqa: E402
from backend_fixtures import LoopbackServer, encode, keypoint, predict_body  # noqa: E402
from backend.config import Settings  # noqa: E402
from m2n2_core.image_io import load_image  # noqa: E402


def dataset_image() -> tuple:
    root = Path(os.environ.get("M2N2_DATASETS", ROOT / ".." / "shared" / "datasets")) / "GrabCut" / "data_GT"
    files = sorted(root.glob("*.jpg")) + sorted(root.glob("*.bmp"))
    if files:
        return files[0].name, files[0].read_bytes()
    rng = np.random.default_rng(0)
    img = (rng.random((480, 640, 3)) * 60).astype(np.uint8)
    img[120:360, 160:480] += 150
    return "synthetic 640x480", encode(img)


def timed(fn) -> float:
    t = time.perf_counter()
    response = fn()
    assert response.status_code == 200, response.get_json()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attention", default="affinity", choices=("affinity", "sd"))
    ap.add_argument("--model", default=None)
    ap.add_argument("--resolution", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "backend.md"))
    args = ap.parse_args()

    name, data = dataset_image()
    h, w = load_image(data).shape[:2]
    server = LoopbackServer()
    rows = []
    for r in args.resolution:
        extra = {"model": args.model} if args.model else {}
        settings = Settings(attention=args.attention, attention_resolution=r, label_studio_url=server.url,
                            warmup_threads=1, **extra)
        model = M2N2Model(settings)
        client = create_app(settings, model).test_client()
        model.load()
        cold, new_point, repeat = [], [], []
        for i in range(args.repeats):
            url = server.add(f"/data/upload/1/img{r}_{i}.png", data + b"\0" * (i + 1))  # distinct bytes → cold cache
            clicks = [keypoint(50, 50, size=(w, h), rid="a")]
            cold.append(timed(lambda: client.post("/predict", json=predict_body(url, clicks))))
            more = clicks + [keypoint(30 + i, 40, positive=False, size=(w, h), rid="b")]
            new_point.append(timed(lambda: client.post("/predict", json=predict_body(url, more))))
            repeat.append(timed(lambda: client.post("/predict", json=predict_body(url, more))))
        empty = timed(lambda: client.post("/predict", json=predict_body(url, None)))
        rows.append((r, statistics.median(cold), statistics.median(new_point), statistics.median(repeat), empty,
                     model.cache.stats()["bytes"] / max(model.cache.stats()["entries"], 1) / 2 ** 20))
        server.routes.clear()

    mask = np.zeros((1500, 2000), bool)
    yy, xx = np.mgrid[:1500, :2000]
    mask[(yy - 700) ** 2 + (xx - 900) ** 2 < 500 ** 2] = True
    t = time.perf_counter()
    rle = mask_to_rle(mask)
    rle_seconds = time.perf_counter() - t
    server.close()

    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout.strip()
    lines = [
        "# Backend latency (Flask test client + loopback image server)", "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- machine: {cpu or platform.processor()}, torch threads {__import__('torch').get_num_threads()}",
        f"- command: `python benchmarks/bench_backend.py --attention {args.attention} --resolution "
        f"{' '.join(map(str, args.resolution))} --repeats {args.repeats}`",
        f"- image: {name} ({w}×{h}); medians over {args.repeats} images; seconds per request",
        "- note: the machine was shared with other jobs while measuring; treat numbers as upper bounds", "",
        "| r | first click (fetch+attention+mask) | 2nd click, new point | same clicks again | no clicks | MiB per cached image |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r} | {a:.3f} | {b:.3f} | {c:.3f} | {d:.4f} | {m:.1f} |" for r, a, b, c, d, m in rows]
    lines += ["", f"RLE encoding of a 2000×1500 mask (`mask_to_rle`): {rle_seconds:.3f} s, {len(rle)} bytes.", ""]
    text = "\n".join(lines)
    print(text)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
