"""The NoC harness: simulated clicks → predictions → IoU curves → summary.json, per-sample CSV and mIoU plot."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from ..config import M2N2Config
from .baselines import make_method
from .clicker import clicker_for
from .datasets import Dataset, Sample
from .metrics import THRESHOLDS, iou, noc, summarise


def run_sample(method, sample: Sample, protocol: str, max_clicks: int) -> Dict[str, object]:
    """Click ``max_clicks`` times on one sample: IoU after each click, the clicks, and the seconds spent."""
    clicker = clicker_for(protocol)
    t0 = time.perf_counter()
    method.set_image(sample.image)
    prepare_s = time.perf_counter() - t0
    # The authors' protocol counts the ignore band as object, for clicks and for IoU alike.
    gt, ignore = (sample.gt, sample.ignore) if protocol == "ritm" or sample.ignore is None \
        else (sample.gt | sample.ignore, None)
    pred = np.zeros_like(gt)
    clicks: List = []
    ious: List[float] = []
    click_s: List[float] = []
    for _ in range(max_clicks):
        click = clicker(gt, pred, clicks, ignore)
        if click is not None:  # None: nothing left to correct, the mask (and IoU) stay as they are
            clicks.append(click)
            t = time.perf_counter()
            pred = method.predict([(x, y) for y, x, _ in clicks], [int(p) for _, _, p in clicks])
            click_s.append(time.perf_counter() - t)
        ious.append(iou(gt, pred, ignore))
    return {"name": sample.name, "ious": ious, "clicks": clicks, "prepare_s": prepare_s, "click_s": click_s}


def evaluate(method_name: str, dataset: Dataset, config: M2N2Config, protocol: str = "ritm", max_clicks: int = 20,
             csv_path: Optional[Path] = None) -> Dict[str, object]:
    """Run one method over the dataset; returns the summary (and appends one CSV row per sample as it goes)."""
    clicker_for(protocol)  # fail early on an unknown protocol
    if max_clicks < 1:
        raise ValueError("max_clicks must be at least 1")
    method = make_method(method_name, config)
    results = []
    writer = None
    handle = open(csv_path, "a", newline="") if csv_path else None
    try:
        for sample in tqdm(dataset, total=len(dataset), desc=method_name, unit="img"):
            res = run_sample(method, sample, protocol, max_clicks)
            results.append(res)
            if handle:
                if writer is None:
                    writer = csv.writer(handle)
                    if handle.tell() == 0:
                        writer.writerow(["method", "sample", *[f"noc{round(t * 100)}" for t in THRESHOLDS],
                                         "prepare_s", "mean_click_s", *[f"iou{k + 1}" for k in range(max_clicks)]])
                writer.writerow([method_name, res["name"], *[noc(res["ious"], t, max_clicks) for t in THRESHOLDS],
                                 f"{res['prepare_s']:.3f}", f"{np.mean(res['click_s']) if res['click_s'] else 0:.3f}",
                                 *[f"{v:.4f}" for v in res["ious"]]])
                handle.flush()
    finally:
        if handle:
            handle.close()
    click_times = [s for r in results for s in r["click_s"]]
    summary = {
        "method": method_name,
        "description": method.description,
        "dataset": dataset.kind,
        "root": str(dataset.root),
        "protocol": protocol,
        "count": len(results),
        "max_clicks": max_clicks,
        "attention": config.attention if method_name == "m2n2" else None,
        "attention_resolution": config.attention_resolution if method_name == "m2n2" else None,
        **summarise([r["ious"] for r in results], max_clicks),
        "seconds_per_click": float(np.mean(click_times)) if click_times else 0.0,
        "seconds_per_image": float(np.mean([r["prepare_s"] for r in results])),
    }
    return summary


def run(methods: Sequence[str], dataset: Dataset, config: M2N2Config, out: Path, protocol: str = "ritm",
        max_clicks: int = 20) -> List[Dict[str, object]]:
    """Evaluate every method; write out/summary.json (one run: that run's dict; several: {"runs": [...]}),
    out/per_sample.csv (one row per method and sample) and out/miou.png."""
    from .plot import plot_miou

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "per_sample.csv"
    csv_path.unlink(missing_ok=True)
    summaries = []
    for name in methods:
        summaries.append(evaluate(name, dataset, config, protocol, max_clicks, csv_path))
        payload = summaries[0] if len(methods) == 1 else {"runs": summaries}
        (out / "summary.json").write_text(json.dumps(payload, indent=2) + "\n")
    plot_miou(summaries, out / "miou.png")
    return summaries
