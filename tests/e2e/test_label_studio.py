"""End-to-end: a real Label Studio forwards keypoint clicks to the m2n2 backend; the brush masks it returns equal the
in-process predictor's masks for the same clicks and configuration.

Covers examples/connect_label_studio.py (project, upload, interactive backend), Label Studio's
/api/ml/{id}/interactive-annotating route, the backend's image fetch from /data/upload/ with both a Personal Access
Token and a legacy token, and the brush RLE encoding (decoded with label_studio_sdk's decoder).
"""
from __future__ import annotations

import json
import socket
from typing import List, Tuple

import numpy as np
import pytest
import requests
from label_studio_sdk import LabelStudio
from label_studio_sdk.converter.brush import decode_rle

from backend.config import Settings
from m2n2_core.image_io import load_image
from m2n2_core.predictor import M2N2Predictor

pytestmark = pytest.mark.e2e

# (x %, y %, positive) of 106024.jpg (481×321): on the object, the background left of it, the object's upper part.
CLICKS: List[Tuple[float, float, bool]] = [(49.0, 60.0, True), (15.0, 30.0, False), (48.0, 30.0, True)]


def keypoint_region(index: int, x: float, y: float, positive: bool, width: int, height: int) -> dict:
    """A smart KeyPointLabels region as the Label Studio editor sends it (Alt-click → is_positive false)."""
    return {"id": f"click{index}", "type": "keypointlabels", "from_name": "tag2", "to_name": "image",
            "original_width": width, "original_height": height, "image_rotation": 0, "is_positive": positive,
            "value": {"x": x, "y": y, "width": 0.6, "keypointlabels": ["Object"], "labels": ["Object"]}}


def to_pixels(clicks, width: int, height: int):
    """The documented rule: a percentage p of a side of n pixels is the pixel coordinate p/100·n."""
    points = np.array([[x / 100.0 * width, y / 100.0 * height] for x, y, _ in clicks], dtype=np.float64)
    return points, np.array([int(p) for _, _, p in clicks])


def brush_mask(region: dict) -> np.ndarray:
    """A brushlabels region's RLE → H×W bool."""
    w, h = region["original_width"], region["original_height"]
    return decode_rle(region["value"]["rle"]).reshape(h, w, 4)[:, :, 3] > 0


def test_clicks_through_label_studio_match_in_process_predictor(grabcut_image, label_studio, backend,
                                                                connect_script):
    if backend.auth == "pat":  # this run really has legacy tokens off
        refused = requests.get(f"{label_studio.url}/api/projects", timeout=30,
                               headers={"Authorization": f"Token {label_studio.legacy_token}"})
        assert refused.status_code == 401
    result = connect_script(label_studio.url, backend.api_key, grabcut_image.parent, backend.url)
    assert result.returncode == 0, f"connect_label_studio.py failed:\n{result.stderr}"
    project = json.loads(result.stdout)
    assert len(project["tasks"]) == 1
    assert project["project_url"] == f"{label_studio.url}/projects/{project['project']}/data"

    # Label Studio waits up to 100 s for /predict; the first click may include preparing the image on a busy CPU
    client = LabelStudio(base_url=label_studio.url, api_key=backend.api_key, timeout=180)
    task = client.tasks.get(project["tasks"][0])
    assert task.data["image"].startswith("/data/upload/"), task.data
    assert client.ml.get(project["ml_backend"]).is_interactive

    image = load_image(grabcut_image)
    height, width = image.shape[:2]
    predictor = M2N2Predictor(Settings.from_env(backend.env).m2n2_config())
    predictor.set_image(image)

    for n in range(1, len(CLICKS) + 1):  # each request holds the full click set so far, as the editor sends it
        clicks = CLICKS[:n]
        context = {"result": [keypoint_region(i, x, y, p, width, height) for i, (x, y, p) in enumerate(clicks)]}
        raw = client.ml.with_raw_response.predict_interactive(project["ml_backend"], task=task.id, context=context)
        assert raw.status_code == 200
        body = raw.response.json()
        assert "errors" not in body, f"{n} click(s): Label Studio reported backend errors: {body['errors']}"
        regions = body["data"]["result"]
        assert len(regions) == 1, regions
        region = regions[0]
        assert region["type"] == "brushlabels"
        assert (region["from_name"], region["to_name"]) == ("tag", "image")
        assert region["value"]["brushlabels"] == ["Object"]
        assert (region["original_width"], region["original_height"]) == (width, height)

        points, labels = to_pixels(clicks, width, height)
        expected = predictor.predict(points, labels)
        got = brush_mask(region)
        assert got.shape == expected.shape
        mismatched = int((got != expected).sum())
        assert mismatched == 0, f"{n} click(s): {mismatched} of {got.size} pixels differ from the in-process mask"


def test_connect_script_names_a_rejected_api_key(grabcut_image, label_studio, connect_script):
    result = connect_script(label_studio.url, "0" * 40, grabcut_image.parent, "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "rejected the API key (HTTP 401" in result.stderr


def test_connect_script_names_an_unreachable_backend(grabcut_image, label_studio, connect_script):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    result = connect_script(label_studio.url, label_studio.pat, grabcut_image.parent, dead)
    assert result.returncode == 1
    assert f"could not attach the ML backend at {dead}" in result.stderr
    assert "health check failed" in result.stderr
