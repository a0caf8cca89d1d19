#!/usr/bin/env python3
"""Load test of the m2n2 backend on loopback: several annotators clicking on several images at once.

Starts a loopback HTTP server for the images and the backend under gunicorn (weight-free affinity attention, so no
model download), then runs one thread per annotator. Annotator a works on image a mod N; it places its clicks one by
one (first positive, then alternating negative/positive, each on the right side of the ground-truth mask) and, as
Label Studio does, every request carries the full click set so far. Afterwards every returned mask is compared with
the mask computed sequentially in this process by ``M2N2Predictor`` for the same clicks and configuration.

Reports latency percentiles, errors, mismatching masks and the peak resident memory of the server's process tree
(sum of RSS over the gunicorn master and its workers, sampled every 0.1 s). Bounded: annotators × clicks requests,
a per-request timeout and an overall time limit; everything started here is stopped at the end.

    python benchmarks/load.py --annotators 8 --images 4 --clicks 4 --out benchmarks/results/load.md

Images: GrabCut (``$M2N2_DATASETS`` or ../shared/datasets) when present, else generated ellipses. Exit status 0 only
if every request succeeded and every mask matched.
"""
from __future__ import annotations

import argparse
import datetime
import http.server
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import requests
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

from backend.config import Settings  # noqa: E402
from m2n2_core.image_io import load_image  # noqa: E402
from m2n2_core.predictor import M2N2Predictor  # noqa: E402
from label_studio_sdk.converter.brush import decode_rle  # noqa: E402

LABEL_CONFIG = (REPO / "examples" / "label_config.xml").read_text()
Click = Tuple[float, float, bool]  # (x %, y %, positive)


# ---- images ----------------------------------------------------------------------------------------------------

@dataclass
class TestImage:
    name: str          #: file name served over HTTP
    path: Path         #: the file (its bytes are what the backend downloads)
    mask: np.ndarray   #: H×W bool: where positive clicks go
    valid: np.ndarray  #: H×W bool: pixels that may be clicked (GrabCut's uncertain band excluded)


def grabcut_images(count: int, folder: Path) -> Optional[List[TestImage]]:
    """The first ``count`` GrabCut images (sorted by name) copied into ``folder``; None if the dataset is absent."""
    root = Path(os.environ.get("M2N2_DATASETS") or REPO / ".." / "shared" / "datasets") / "GrabCut"
    if not (root / "data_GT").is_dir():
        return None
    images = []
    for source in sorted((root / "data_GT").iterdir())[:count]:
        gt = np.array(Image.open(root / "boundary_GT" / f"{source.stem}.bmp").convert("L"))
        shutil.copy(source, folder / source.name)
        images.append(TestImage(source.name, folder / source.name, gt == 255, gt != 128))
    return images


def synthetic_images(count: int, folder: Path, size: Tuple[int, int] = (160, 120)) -> List[TestImage]:
    """``count`` PNGs of a coloured ellipse on a noisy two-tone background (deterministic)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    images = []
    for i in range(count):
        rng = np.random.default_rng(i)
        cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
        mask = ((xx - cx) / (0.25 * w)) ** 2 + ((yy - cy) / (0.3 * h)) ** 2 <= 1.0
        background = np.where(xx[..., None] < w / 2, [40, 90, 160], [70, 140, 60])
        rgb = np.where(mask[..., None], rng.integers(150, 255, 3), background)
        rgb = np.clip(rgb + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
        name = f"synthetic_{i}.png"
        Image.fromarray(rgb).save(folder / name)
        images.append(TestImage(name, folder / name, mask, np.ones_like(mask)))
    return images


def annotator_clicks(image: TestImage, count: int, seed: int) -> List[Click]:
    """First click positive, then alternating negative/positive, at random valid pixels on the matching side."""
    rng = np.random.default_rng(seed)
    h, w = image.mask.shape
    clicks = []
    for k in range(count):
        positive = k % 2 == 0
        ys, xs = np.nonzero((image.mask == positive) & image.valid)
        j = rng.integers(len(xs))
        clicks.append(((xs[j] + 0.5) / w * 100.0, (ys[j] + 0.5) / h * 100.0, positive))
    return clicks


def to_pixels(clicks: Sequence[Click], width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    """Label Studio's rule (as the backend applies it): p % of a side of n pixels is p/100·n, capped at n − 1."""
    points = np.array([[min(x / 100.0 * width, width - 1.0), min(y / 100.0 * height, height - 1.0)]
                       for x, y, _ in clicks])
    return points, np.array([int(p) for _, _, p in clicks])


# ---- servers ---------------------------------------------------------------------------------------------------

class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve_folder(folder: Path) -> http.server.ThreadingHTTPServer:
    """A loopback HTTP server for ``folder`` running in a daemon thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_environment(resolution: int, workers: int, threads: int, home: Path) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("M2N2_", "LABEL_STUDIO_", "BASIC_AUTH_"))}
    env.update(M2N2_ATTENTION="affinity", M2N2_ATTENTION_RESOLUTION=str(resolution), M2N2_DEVICE="cpu",
               M2N2_ALLOW_PRIVATE_NETWORKS="1",  # the images come from the loopback server above
               WORKERS=str(workers), THREADS=str(threads), LOG_LEVEL="WARNING",
               PYTHONPATH=str(REPO), HOME=str(home))  # gunicorn keeps its control socket under $HOME
    return env


class Backend:
    """``python -m backend.cli serve`` on loopback in its own process group."""

    def __init__(self, env: Dict[str, str], log: Path, start_timeout_s: float = 120.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "wb")
        self.log_path = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + start_timeout_s
        while True:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"backend exited with code {self.proc.returncode}; log:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"backend did not answer /health within {start_timeout_s:.0f} s; log:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.3)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """TERM the process group, wait up to 15 s, then KILL."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        self._log.close()


# ---- memory ----------------------------------------------------------------------------------------------------

def process_tree(root: int) -> List[int]:
    """``root`` and all its descendants, from /proc."""
    parents: Dict[int, List[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(parents.get(pid, []))
    return tree


def rss_bytes(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class PeakMemory:
    """Samples the summed RSS of a process tree every ``interval_s`` in a daemon thread; ``.peak`` in bytes."""

    def __init__(self, root: int, interval_s: float = 0.1):
        self.root, self.interval_s, self.peak = root, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(process_tree(self.root)))
            self._stop.wait(self.interval_s)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


# ---- the load ----------------------------------------------------------------------------------------------------

@dataclass
class Reply:
    annotator: int
    image: int
    clicks: List[Click]
    latency_s: float
    error: Optional[str] = None
    mask: Optional[np.ndarray] = field(default=None, repr=False)


def keypoint_region(index: int, click: Click, width: int, height: int) -> dict:
    x, y, positive = click
    return {"id": f"k{index}", "type": "keypointlabels", "from_name": "tag2", "to_name": "image",
            "original_width": width, "original_height": height, "image_rotation": 0, "is_positive": positive,
            "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": ["Object"], "labels": ["Object"]}}


def predict_request(task_id: int, image_url: str, clicks: Sequence[Click], width: int, height: int) -> dict:
    """The body Label Studio's interactive-annotating route sends to /predict."""
    return {"tasks": [{"id": task_id, "data": {"image": image_url}}], "project": "1.1700000000",
            "label_config": LABEL_CONFIG,
            "params": {"login": None, "password": None, "context": {
                "result": [keypoint_region(i, c, width, height) for i, c in enumerate(clicks)]}}}


def decode_reply(body: dict, width: int, height: int) -> np.ndarray:
    regions = body["results"][0]["result"]
    if len(regions) != 1 or regions[0].get("type") != "brushlabels":
        raise ValueError(f"expected one brushlabels region, got {[r.get('type') for r in regions]}")
    return decode_rle(regions[0]["value"]["rle"]).reshape(height, width, 4)[:, :, 3] > 0


def annotate(backend_url: str, annotator: int, image_index: int, image_url: str, size: Tuple[int, int],
             clicks: Sequence[Click], deadline: float, request_timeout_s: float, out: List[Reply]) -> None:
    """One annotator: one request per click, each with the full click set so far; stops at ``deadline``."""
    width, height = size
    session = requests.Session()
    for n in range(1, len(clicks) + 1):
        if time.monotonic() > deadline:
            out.append(Reply(annotator, image_index, list(clicks[:n]), 0.0, "not sent: time limit reached"))
            continue
        body = predict_request(image_index + 1, image_url, clicks[:n], width, height)
        start = time.perf_counter()
        try:
            response = session.post(f"{backend_url}/predict", json=body, timeout=request_timeout_s)
            latency = time.perf_counter() - start
            if response.status_code != 200:
                out.append(Reply(annotator, image_index, list(clicks[:n]), latency,
                                 f"HTTP {response.status_code}: {response.text[:300]}"))
                continue
            mask = decode_reply(response.json(), width, height)
            out.append(Reply(annotator, image_index, list(clicks[:n]), latency, mask=mask))
        except (requests.RequestException, ValueError, KeyError) as exc:
            out.append(Reply(annotator, image_index, list(clicks[:n]), time.perf_counter() - start,
                             f"{type(exc).__name__}: {exc}"))


@dataclass
class LoadResult:
    replies: List[Reply]
    wall_s: float
    peak_rss: int
    mismatches: List[str]
    images: List[TestImage]

    @property
    def errors(self) -> List[Reply]:
        return [r for r in self.replies if r.error]

    def latencies(self) -> List[float]:
        return sorted(r.latency_s for r in self.replies if not r.error)


def check_masks(replies: Sequence[Reply], images: Sequence[TestImage], settings: Settings) -> List[str]:
    """Recompute every successful reply's mask sequentially in-process; describe each that differs."""
    predictor = M2N2Predictor(settings.m2n2_config())
    mismatches = []
    for index, image in enumerate(images):
        rgb = load_image(image.path)
        prepared = predictor.prepare(rgb)
        h, w = rgb.shape[:2]
        for reply in (r for r in replies if r.image == index and not r.error):
            expected = prepared.predict(*to_pixels(reply.clicks, w, h))
            differing = int((expected != reply.mask).sum())
            if differing:
                mismatches.append(f"annotator {reply.annotator}, {image.name}, {len(reply.clicks)} click(s): "
                                  f"{differing} of {expected.size} pixels differ")
    return mismatches


def run_load(annotators: int, image_count: int, clicks: int, resolution: int, workers: int, threads: int,
             time_limit_s: float, request_timeout_s: float, work: Path, use_grabcut: bool = True) -> LoadResult:
    """Start the servers, run the annotators concurrently, stop the servers, check every mask."""
    folder = work / "images"
    folder.mkdir()
    images = (grabcut_images(image_count, folder) if use_grabcut else None) or synthetic_images(image_count, folder)
    image_server = serve_folder(folder)
    env = backend_environment(resolution, workers, threads, work)
    backend = Backend(env, work / "backend.log")
    replies: List[Reply] = []
    try:
        memory = PeakMemory(backend.proc.pid)
        sizes = [Image.open(im.path).size for im in images]
        start = time.monotonic()
        deadline = start + time_limit_s
        threads_ = []
        for a in range(annotators):
            i = a % len(images)
            url = f"http://127.0.0.1:{image_server.server_address[1]}/{images[i].name}"
            t = threading.Thread(target=annotate, args=(backend.url, a, i, url, sizes[i],
                                                        annotator_clicks(images[i], clicks, seed=a),
                                                        deadline, request_timeout_s, replies))
            t.start()
            threads_.append(t)
        for t in threads_:
            t.join()
        wall = time.monotonic() - start
        peak = memory.stop()
    finally:
        backend.stop()
        image_server.shutdown()
        image_server.server_close()
    mismatches = check_masks(replies, images, Settings.from_env(env))
    return LoadResult(replies, wall, peak, mismatches, images)


# ---- report ------------------------------------------------------------------------------------------------------

def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    rank = max(1, int(np.ceil(q / 100.0 * len(sorted_values))))
    return sorted_values[rank - 1]


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def report(result: LoadResult, args: argparse.Namespace, command: str) -> str:
    lat = result.latencies()
    total = len(result.replies)
    source = "GrabCut" if result.images[0].name.endswith((".jpg", ".JPG", ".bmp")) else "synthetic"
    names = ", ".join(f"{im.name} {im.mask.shape[1]}×{im.mask.shape[0]}" for im in result.images)
    lines = [
        "# Load test: concurrent annotators against one backend",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        f"- Command: `{command}`",
        f"- Server: gunicorn, {args.workers} worker(s) × {args.threads} threads, weight-free affinity attention "
        f"r={args.resolution} on CPU (not the paper's SD2 backbone: this measures the serving path, not accuracy)",
        f"- Load: {args.annotators} annotators on {len(result.images)} {source} images "
        f"({names}), {args.clicks} clicks each; every request carries the full "
        "click set so far",
        "",
        "| measure | value |",
        "|---|---|",
        f"| requests | {total} ({len(result.errors)} errors) |",
        f"| wall time | {result.wall_s:.1f} s ({total / result.wall_s:.2f} requests/s) |",
    ]
    first = sorted(r.latency_s for r in result.replies if not r.error and len(r.clicks) == 1)
    later = sorted(r.latency_s for r in result.replies if not r.error and len(r.clicks) > 1)
    if lat:
        lines += [f"| latency p50 | {percentile(lat, 50):.2f} s |",
                  f"| latency p95 | {percentile(lat, 95):.2f} s |",
                  f"| latency max | {lat[-1]:.2f} s |",
                  f"| latency mean | {statistics.fmean(lat):.2f} s |"]
    if first and later:
        lines += [f"| latency p50, first click (may include the image's attention) | {percentile(first, 50):.2f} s |",
                  f"| latency p50, later clicks | {percentile(later, 50):.2f} s |"]
    lines += [f"| peak server RSS (master + workers) | {result.peak_rss / 2**20:.0f} MiB |",
              f"| masks equal to the sequential in-process predictor | {total - len(result.errors) - len(result.mismatches)}"
              f" of {total - len(result.errors)} |"]
    for reply in result.errors[:10]:
        lines.append(f"\nerror (annotator {reply.annotator}, {len(reply.clicks)} clicks): {reply.error}")
    for line in result.mismatches[:10]:
        lines.append(f"\nmismatch: {line}")
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--annotators", type=int, default=8)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--clicks", type=int, default=4, help="clicks per annotator (one request each)")
    p.add_argument("--resolution", type=int, default=64, help="affinity attention grid r")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--time-limit", type=float, default=600.0, help="seconds; later clicks are not sent")
    p.add_argument("--request-timeout", type=float, default=300.0)
    p.add_argument("--synthetic", action="store_true", help="use generated images even if GrabCut is present")
    p.add_argument("--out", type=Path, help="write the markdown report here too")
    args = p.parse_args(argv)
    for name in ("annotators", "images", "clicks", "resolution", "workers", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    command = "python benchmarks/load.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="m2n2-load-") as tmp:
        try:
            result = run_load(args.annotators, args.images, args.clicks, args.resolution, args.workers,
                              args.threads, args.time_limit, args.request_timeout, Path(tmp),
                              use_grabcut=not args.synthetic)
        except RuntimeError as exc:
            print(f"load: {exc}", file=sys.stderr)
            return 1
    text = report(result, args, command)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0 if not result.errors and not result.mismatches else 1


if __name__ == "__main__":
    sys.exit(main())
