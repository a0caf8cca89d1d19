"""Merge per_sample.csv files of several `m2n2 eval` runs (methods, or one method split with --skip) into one
comparison over the images every method finished: a Markdown table, summary.json and the mIoU plot.

    python -m m2n2_core.evaluation.report OUT_DIR RUN_DIR_OR_CSV [...]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .metrics import summarise
from .plot import plot_miou


def read_rows(paths: Sequence[Path]) -> Dict[str, Dict[str, dict]]:
    """method → sample → CSV row, from per_sample.csv files (or folders holding one); later files win duplicates."""
    rows: Dict[str, Dict[str, dict]] = {}
    for p in paths:
        p = Path(p)
        p = p / "per_sample.csv" if p.is_dir() else p
        if not p.is_file():
            raise ValueError(f"no per-sample CSV at {p}")
        with p.open(newline="") as f:
            for row in csv.DictReader(f):
                rows.setdefault(row["method"], {})[row["sample"]] = row
    if not rows:
        raise ValueError("the CSV files hold no samples")
    return rows


def read_settings(paths: Sequence[Path]) -> Dict[str, dict]:
    """method → its attention settings and description, from the summary.json of run folders (where present)."""
    settings: Dict[str, dict] = {}
    for p in paths:
        summary = Path(p) / "summary.json"
        if summary.is_file():
            data = json.loads(summary.read_text())
            for run in data.get("runs", [data]):
                settings[run["method"]] = {k: run.get(k) for k in ("attention", "attention_resolution", "description")}
    return settings


def compare(rows: Dict[str, Dict[str, dict]], dataset: str, protocol: str,
            settings: Optional[Dict[str, dict]] = None) -> List[dict]:
    """One summary per method over the samples that every method has (same keys as runner summaries)."""
    common = sorted(set.intersection(*(set(s) for s in rows.values())))
    if not common:
        raise ValueError("no sample was finished by every method")
    out = []
    for method, samples in rows.items():
        chosen = [samples[name] for name in common]
        clicks = sum(1 for k in chosen[0] if k.startswith("iou"))
        curves = [[float(r[f"iou{k + 1}"]) for k in range(clicks)] for r in chosen]
        out.append({"method": method, "dataset": dataset, "protocol": protocol, "count": len(common),
                    "max_clicks": clicks, "attention": None, "attention_resolution": None, **(settings or {}).get(method, {}), "samples": common,
                    **summarise(curves, clicks),
                    "seconds_per_click": float(np.mean([float(r["mean_click_s"]) for r in chosen])),
                    "seconds_per_image": float(np.mean([float(r["prepare_s"]) for r in chosen]))})
    return out


def markdown(summaries: Sequence[dict]) -> str:
    lines = ["| method | images | NoC@85 | NoC@90 | NoC@95 | NoF@85 | NoF@90 | NoF@95 | mIoU@1 | mIoU@5 | "
             "s/click | s/image prep |", "|" + "---|" * 12]
    for s in summaries:
        m = s["miou"]
        lines.append(f"| {s.get('label', s['method'])} | {s['count']} | {s['noc85']:.2f} | {s['noc90']:.2f} | {s['noc95']:.2f} | "
                     f"{s['nof85']} | {s['nof90']} | {s['nof95']} | {m[0]:.3f} | {m[min(4, len(m) - 1)]:.3f} | "
                     f"{s['seconds_per_click']:.2f} | {s['seconds_per_image']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m m2n2_core.evaluation.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder for summary.json, miou.png and table.md")
    parser.add_argument("runs", nargs="+", help="run folders (holding per_sample.csv) or CSV files")
    parser.add_argument("--dataset", default="grabcut", help="dataset name for the plot title")
    parser.add_argument("--protocol", default="ritm", help="clicker protocol name for the plot title")
    parser.add_argument("--label", action="append", default=[], metavar="METHOD=TEXT",
                        help="show METHOD as TEXT in the table and plot (repeatable)")
    args = parser.parse_args(argv)
    try:
        paths = [Path(r) for r in args.runs]
        labels = dict(item.split("=", 1) for item in args.label if "=" in item)
        if len(labels) != len(args.label):
            raise ValueError("--label takes METHOD=TEXT")
        summaries = compare(read_rows(paths), args.dataset, args.protocol, read_settings(paths))
        for s in summaries:
            if s["method"] in labels:
                s["label"] = labels[s["method"]]
    except (ValueError, KeyError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"runs": summaries}, indent=2) + "\n")
    plot_miou(summaries, out / "miou.png")
    table = markdown(summaries)
    (out / "table.md").write_text(table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
