"""The example scripts as a user runs them (no Label Studio needed here; tests/e2e covers the connected path)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO)


def square_image(path: Path) -> Path:
    rgb = np.full((64, 80, 3), (30, 60, 140), dtype=np.uint8)
    rgb[16:48, 24:56] = (230, 200, 40)
    Image.fromarray(rgb).save(path)
    return path


def test_segment_image_writes_mask_and_overlay(tmp_path):
    image = square_image(tmp_path / "square.png")
    result = run("segment_image.py", str(image), "--point", "40,32", "--point", "5,5,-", "--out",
                 str(tmp_path / "mask.png"), "--overlay", str(tmp_path / "overlay.png"),
                 "--attention", "affinity", "--attention-resolution", "16", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "1 click(s):" in result.stdout and "2 click(s):" in result.stdout
    mask = np.array(Image.open(tmp_path / "mask.png"))
    assert mask.shape == (64, 80) and set(np.unique(mask)) <= {0, 255}
    assert mask[32, 40] == 255 and mask[5, 5] == 0
    assert Image.open(tmp_path / "overlay.png").size == (80, 64)


def test_segment_image_names_a_click_outside_the_image(tmp_path):
    image = square_image(tmp_path / "square.png")
    result = run("segment_image.py", str(image), "--point", "500,10", "--out", str(tmp_path / "mask.png"),
                 "--attention", "affinity", "--attention-resolution", "16", "--device", "cpu")
    assert result.returncode == 2
    assert "segment_image:" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "mask.png").exists()


def test_segment_image_names_a_file_that_is_not_an_image(tmp_path):
    bogus = tmp_path / "notes.png"
    bogus.write_text("not an image")
    result = run("segment_image.py", str(bogus), "--point", "1,1", "--out", str(tmp_path / "mask.png"),
                 "--attention", "affinity")
    assert result.returncode == 2 and "segment_image:" in result.stderr and "Traceback" not in result.stderr


def test_connect_label_studio_requires_url_and_key(tmp_path, monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    result = run("connect_label_studio.py", "--images", str(tmp_path))
    assert result.returncode == 2 and "--url is required" in result.stderr


def test_connect_label_studio_names_a_folder_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    result = run("connect_label_studio.py", "--url", "http://127.0.0.1:9", "--api-key", "x", "--images",
                 str(tmp_path))
    assert result.returncode == 2
    assert f"--images {tmp_path}: no image files" in result.stderr


def test_label_config_has_the_brush_and_smart_keypoint_controls():
    from label_studio_sdk.label_interface import LabelInterface

    interface = LabelInterface((EXAMPLES / "label_config.xml").read_text())
    brush, keypoints = interface.get_control("tag"), interface.get_control("tag2")
    assert brush.tag == "BrushLabels" and keypoints.tag == "KeyPointLabels"
    assert brush.to_name == keypoints.to_name == ["image"]
    assert brush.labels == keypoints.labels == ["Object"]
