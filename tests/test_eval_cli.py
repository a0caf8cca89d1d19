import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from m2n2_core.evaluation.cli import main

GRABCUT = Path(os.environ.get("M2N2_DATASETS", Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets")) \
    / "GrabCut"


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The chains here are tiny matrix-vector products: thread hand-offs would dominate, worst on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _synthetic_folder(root: Path, n=2, h=48, w=64):
    """Images of a bright ellipse on a dark textured background, with their masks."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        cy, cx = h / 2 + 3 * i, w / 2 - 4 * i
        mask = ((yy - cy) / (h / 4)) ** 2 + ((xx - cx) / (w / 4)) ** 2 <= 1
        img = rng.integers(0, 40, (h, w, 3)).astype(np.uint8)
        img[mask] = (220, 180, 40) + rng.integers(0, 20, (int(mask.sum()), 3))
        Image.fromarray(img).save(root / "images" / f"s{i}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"s{i}.png")


def _args(dataset, root, out, methods, clicks, extra=()):
    return ["eval", "--dataset", dataset, "--root", str(root), "--method", methods, "--attention", "affinity",
            "--attention-resolution", "24", "--max-clicks", str(clicks), "--limit", "2", "--out", str(out), *extra]


def test_eval_on_a_synthetic_folder_compares_methods_side_by_side(tmp_path, capsys):
    _synthetic_folder(tmp_path / "data", n=3)
    out = tmp_path / "out"
    assert main(_args("folder", tmp_path / "data", out, "m2n2,grabcut,random-walker", 3)) == 0
    runs = json.loads((out / "summary.json").read_text())["runs"]
    assert [r["method"] for r in runs] == ["m2n2", "grabcut", "random-walker"]
    for r in runs:
        assert r["count"] == 2 and r["dataset"] == "folder" and r["protocol"] == "ritm"
        assert len(r["miou"]) == 3 and 1 <= r["noc85"] <= r["noc90"] <= r["noc95"] <= 3
        assert r["seconds_per_click"] > 0
    m2n2 = runs[0]
    assert m2n2["attention"] == "affinity" and m2n2["attention_resolution"] == 24
    assert m2n2["miou"][-1] > 0.8  # an ellipse on a contrasting background is easy for the colour affinity
    rows = list(csv.DictReader((out / "per_sample.csv").open()))
    assert len(rows) == 6 and {r["sample"] for r in rows} == {"s0", "s1"}
    assert (out / "miou.png").stat().st_size > 1000
    assert "NoC@90" in capsys.readouterr().out


def test_eval_single_method_writes_a_flat_summary_with_the_authors_protocol(tmp_path):
    _synthetic_folder(tmp_path / "data")
    out = tmp_path / "out"
    assert main(_args("folder", tmp_path / "data", out, "m2n2", 2, ["--protocol", "authors"])) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["method"] == "m2n2" and s["protocol"] == "authors" and len(s["miou"]) == 2
    assert {"noc85", "noc90", "noc95", "nof", "nof85", "nof95", "count", "seconds_per_click"} <= set(s)


def test_eval_reports_a_missing_dataset_folder_without_a_traceback(tmp_path, capsys):
    assert main(_args("grabcut", tmp_path, tmp_path / "out", "grabcut", 2)) == 2
    assert "missing folder" in capsys.readouterr().err


def test_eval_rejects_unknown_methods_and_settings(tmp_path):
    with pytest.raises(SystemExit):
        main(_args("folder", tmp_path, tmp_path / "out", "m2n2,sam", 2))
    with pytest.raises(SystemExit):
        main(_args("folder", tmp_path, tmp_path / "out", "m2n2", 2, ["--set", "no_such_field=1"]))


@pytest.mark.skipif(not (GRABCUT / "data_GT").is_dir(), reason=f"GrabCut dataset not found at {GRABCUT}")
def test_eval_on_two_grabcut_images(tmp_path):
    out = tmp_path / "out"
    # r = 64 on these ~480×320 photos: a coarser grid makes the bilateral window (σ = W/r pixels) needlessly wide
    assert main(_args("grabcut", GRABCUT, out, "m2n2", 2, ("--attention-resolution", "64"))) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["count"] == 2 and s["dataset"] == "grabcut" and len(s["miou"]) == 2
    assert all(0.0 <= v <= 1.0 for v in s["miou"])
    assert len(list(csv.DictReader((out / "per_sample.csv").open()))) == 2
