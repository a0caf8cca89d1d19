"""mIoU-vs-clicks plot of one or more evaluation runs (matplotlib, Agg backend, small PNG)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence


def plot_miou(summaries: Sequence[Dict[str, object]], path: Path) -> None:
    """One curve per run (mIoU after clicks 1..N), labelled with the method and its NoC@90."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    for s in summaries:
        miou = s["miou"]
        label = s["method"] + (f" ({s['attention']}, r={s['attention_resolution']})" if s.get("attention") else "")
        ax.plot(range(1, len(miou) + 1), miou, marker="o", markersize=3, label=f"{label}: NoC@90 {s['noc90']:.2f}")
    first = summaries[0]
    ax.set_xlabel("clicks")
    ax.set_ylabel("mIoU")
    ax.set_title(f"{first['dataset']} ({first['count']} images, {first['protocol']} clicker)", fontsize=10)
    ax.set_xticks(range(0, int(first["max_clicks"]) + 1, 2))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
