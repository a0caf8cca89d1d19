"""The backend with the real SD attention source on a tiny random-weight SD2-shaped model (no download).

Random weights: the masks mean nothing; these tests check the plumbing (load, prepare, click → RLE) and the fault
path for corrupt weights, not segmentation quality.
"""
import shutil

import numpy as np
import pytest

from backend.app import create_app
from backend.model import M2N2Model
from backend_fixtures import LoopbackServer, encode, fast_settings, keypoint, predict_body, scene
from label_studio_sdk.converter.brush import decode_rle
from m2n2_core.image_io import load_image
from m2n2_core.predictor import M2N2Predictor

sd_fixtures = pytest.importorskip("sd_fixtures", reason="tests/sd_fixtures.py (tiny SD2 builder) is not present")

R = 8


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return sd_fixtures.make_tiny_sd2(tmp_path_factory.mktemp("sd") / "tiny-sd2", r=R)


@pytest.fixture
def server():
    srv = LoopbackServer()
    yield srv
    srv.close()


def test_click_with_tiny_sd2_equals_the_predictor_mask(tiny_sd, server):
    settings = fast_settings(attention="sd", model=str(tiny_sd), attention_resolution=R, device="cpu",
                             label_studio_url=server.url)
    client = create_app(settings, M2N2Model(settings)).test_client()
    data = encode(scene())
    url = server.add("/data/upload/1/a.png", data)
    regions = [keypoint(40, 50, rid="a"), keypoint(5, 5, positive=False, rid="b")]
    response = client.post("/predict", json=predict_body(url, regions))
    assert response.status_code == 200, response.json
    prediction = response.json["results"][0]
    assert prediction["model_version"] == f"m2n2-0.1.0:sd:{tiny_sd}:r{R}"
    region = prediction["result"][0]
    mask = decode_rle(region["value"]["rle"]).reshape(48, 64, 4)[:, :, 0] == 255
    image = load_image(data)
    expected = M2N2Predictor(settings.m2n2_config()).prepare(image).predict(
        np.array([[0.40 * 64, 0.50 * 48], [0.05 * 64, 0.05 * 48]]), np.array([1, 0]))
    assert np.array_equal(mask, expected)
    assert client.get("/health").json["model"]["state"] == "loaded"


def test_corrupt_weights_are_reported_by_health_and_predict(tiny_sd, server, tmp_path):
    broken = shutil.copytree(tiny_sd, tmp_path / "broken")
    for weights in (broken / "unet").glob("*.safetensors"):
        weights.write_bytes(b"this is not a safetensors file")
    settings = fast_settings(attention="sd", model=str(broken), attention_resolution=R, device="cpu",
                             label_studio_url=server.url)
    client = create_app(settings, M2N2Model(settings)).test_client()
    url = server.add("/data/upload/1/a.png", encode(scene()))
    response = client.post("/predict", json=predict_body(url, [keypoint(40, 50)]))
    assert response.status_code == 503 and response.json["model_state"] == "failed", response.json
    health = client.get("/health").json
    assert health["status"] == "UP" and health["model"]["state"] == "failed" and health["model"]["reason"]
