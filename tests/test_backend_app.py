"""The Flask app end to end (test client + loopback image server): protocol, bad input, images, auth, faults."""
import io
import struct
import threading
import time
import zlib

import numpy as np
import pytest
import torch
from label_studio_sdk.converter.brush import decode_rle
from PIL import Image

from backend.app import create_app
from backend.model import M2N2Model
from backend_fixtures import LABEL_CONFIG, LoopbackServer, encode, fast_settings, fixture_predictor, keypoint, \
    predict_body, scene
from m2n2_core.image_io import load_image

AUTH = ("ls", "s3cret")


class Harness:
    """A loopback image server, a model and a test client wired together."""

    def __init__(self, factory=fixture_predictor, **changes):
        self.server = LoopbackServer()
        self.settings = fast_settings(label_studio_url=self.server.url, **changes)
        self.model = M2N2Model(self.settings, predictor_factory=factory)
        self.app = create_app(self.settings, self.model)
        self.client = self.app.test_client()
        self.image = encode(scene())
        self.url = self.server.add("/data/upload/1/scene.png", self.image)

    def predict(self, body, **kw):
        return self.client.post("/predict", json=body, **kw)

    def click(self, url=None, regions=None, **kw):
        return self.predict(predict_body(url or self.url, regions or [keypoint(40, 50)]), **kw)

    def assert_valid_click_works(self):
        response = self.click()
        assert response.status_code == 200, response.json
        assert response.json["results"][0]["result"][0]["type"] == "brushlabels"


@pytest.fixture
def h():
    harness = Harness()
    yield harness
    harness.server.close()


@pytest.fixture(scope="module")
def shared():
    """One harness for the bad-input matrix: the valid click after each bad request reuses the cached image."""
    harness = Harness()
    yield harness
    harness.server.close()


def decode(region):
    w, h = region["original_width"], region["original_height"]
    return decode_rle(region["value"]["rle"]).reshape(h, w, 4)[:, :, 0] == 255


def expected_mask(settings, data, regions):
    """What M2N2Predictor itself answers for the same decoded image and points."""
    image = load_image(data)
    prepared = fixture_predictor(settings.m2n2_config()).prepare(image)
    height, width = image.shape[:2]
    points = [[r["value"]["x"] / 100 * width, r["value"]["y"] / 100 * height] for r in regions]
    labels = [0 if r.get("is_positive") is False else 1 for r in regions]
    return prepared.predict(np.array(points), np.array(labels))


# ---- protocol ------------------------------------------------------------------------------------------------
def test_health_index_and_livez(h):
    for path in ("/health", "/"):
        body = h.client.get(path).json
        assert body == {"status": "UP", "model_class": "M2N2Model", "model": {"state": "not_loaded", "reason": None}}
    assert h.client.get("/livez").json == {"status": "UP"}


def test_setup_answers_without_waiting_for_the_model():
    gate = threading.Event()

    def slow_factory(config):
        gate.wait(10)
        return fixture_predictor(config)

    harness = Harness(factory=slow_factory)
    try:
        response = harness.client.post("/setup", json={"project": "1.1", "schema": LABEL_CONFIG})
        assert response.status_code == 200 and response.json == {"model_version": "m2n2-0.1.0:affinity:r16"}
        assert harness.client.get("/health").json["model"]["state"] == "loading"
    finally:
        gate.set()
    harness.model.predictor(10)
    assert harness.client.get("/health").json["model"]["state"] == "loaded"
    harness.server.close()


@pytest.mark.parametrize("schema, status, message", [
    (None, 400, "'schema'"),
    ("<View><Image", 422, "not valid"),
    ("", 422, "empty"),
    ('<View><Image name="i" value="$i"/><KeyPointLabels name="k" toName="i" smart="true"><Label value="A"/>'
     "</KeyPointLabels></View>", 422, "no <BrushLabels>"),
    ('<View><Image name="i" value="$i"/><BrushLabels name="b" toName="i"><Label value="A"/></BrushLabels>'
     "</View>", 422, "no <KeyPointLabels"),
    ('<View><Image name="i" value="$i"/><BrushLabels name="b" toName="i"><Label value="A"/></BrushLabels>'
     '<KeyPointLabels name="k" toName="i"><Label value="A"/></KeyPointLabels></View>', 422, 'smart="true"'),
    ('<View><Text name="t" value="$t"/></View>', 422, "no <Image>"),
    ('<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><View/>', 422, "DOCTYPE"),
])
def test_setup_rejects_unusable_label_configs(h, schema, status, message):
    body = {"project": "1.1"} if schema is None else {"project": "1.1", "schema": schema}
    response = h.client.post("/setup", json=body)
    assert response.status_code == status and message in response.json["error"]


def test_click_returns_brush_region_equal_to_the_predictor_mask(h):
    regions = [keypoint(40, 50, rid="a"), keypoint(5, 5, positive=False, rid="b")]
    response = h.click(regions=regions)
    assert response.status_code == 200
    prediction = response.json["results"][0]
    assert prediction["model_version"] == "m2n2-0.1.0:affinity:r16" and prediction["score"] is None
    (region,) = prediction["result"]
    assert {k: region[k] for k in ("type", "from_name", "to_name", "original_width", "original_height")} == \
        {"type": "brushlabels", "from_name": "tag", "to_name": "image", "original_width": 64, "original_height": 48}
    assert region["value"]["format"] == "rle" and region["value"]["brushlabels"] == ["Object"]
    mask = decode(region)
    assert np.array_equal(mask, expected_mask(h.settings, h.image, regions)) and mask.any() and not mask.all()


def test_one_region_per_label(h):
    regions = [keypoint(40, 50, "Object", rid="a"), keypoint(5, 5, "Other", rid="b")]
    result = h.click(regions=regions).json["results"][0]["result"]
    assert sorted(r["value"]["brushlabels"][0] for r in result) == ["Object", "Other"]


def test_keypoint_label_maps_to_the_only_brush_label(h):
    config = LABEL_CONFIG.replace('<Label value="Other" background="#00FF00"/>\n  </BrushLabels>', "</BrushLabels>")
    config = config.replace('<Label value="Object" background="#FF0000"/>', '<Label value="Mask"/>', 1)
    response = h.predict(predict_body(h.url, [keypoint(40, 50)], label_config=config))
    assert response.status_code == 200, response.json
    assert response.json["results"][0]["result"][0]["value"]["brushlabels"] == ["Mask"]


def test_no_context_gives_empty_prediction_and_warms_the_cache():
    harness = Harness(warmup_threads=1)
    try:
        response = harness.predict(predict_body(harness.url, None))
        assert response.status_code == 200
        assert response.json["results"] == [{"result": [], "score": None, "model_version": "m2n2-0.1.0:affinity:r16"}]
        deadline = time.monotonic() + 30
        while harness.client.get("/metrics").json["warmup"]["done"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        metrics = harness.client.get("/metrics").json
        assert metrics["warmup"]["done"] == 1 and metrics["cache"]["entries"] == 1
        harness.assert_valid_click_works()
        assert harness.client.get("/metrics").json["cache"]["hits"] == 1
    finally:
        harness.server.close()


def test_browser_size_of_the_same_aspect_gets_a_resampled_mask(h):
    regions = [keypoint(40, 50, size=(128, 96))]
    region = h.click(regions=regions).json["results"][0]["result"][0]
    assert (region["original_width"], region["original_height"]) == (128, 96)
    small = expected_mask(h.settings, h.image, regions)
    assert np.array_equal(decode(region), np.repeat(np.repeat(small, 2, 0), 2, 1))


# ---- bad input: each one answered clearly, and the next valid request still works ----------------------------------
def _body(h, **changes):
    body = predict_body(h.url, [keypoint(40, 50)])
    body.update(changes)
    return body


BAD_REQUESTS = {
    "invalid JSON": (lambda h: dict(data="{not json"), 400, "not valid JSON"),
    "JSON array": (lambda h: dict(json=[1, 2]), 400, "must be a JSON object"),
    "missing tasks": (lambda h: dict(json={"label_config": LABEL_CONFIG}), 400, "'tasks'"),
    "empty tasks": (lambda h: dict(json=_body(h, tasks=[])), 400, "'tasks'"),
    "task not an object": (lambda h: dict(json=_body(h, tasks=["x"])), 400, "tasks[0]"),
    "params not an object": (lambda h: dict(json=_body(h, params=[1])), 400, "'params'"),
    "missing label config": (lambda h: dict(json={"tasks": [{"id": 1, "data": {"image": h.url}}]}), 400,
                             "'label_config'"),
    "malformed label config": (lambda h: dict(json=_body(h, label_config="<View><Image")), 422, "not valid"),
    "unknown tags only": (lambda h: dict(json=_body(h, label_config="<View><Foo/></View>")), 422, "no <Image>"),
    "no BrushLabels": (lambda h: dict(json=_body(h, label_config=LABEL_CONFIG.split("<BrushLabels")[0]
                                                 + LABEL_CONFIG.split("</BrushLabels>")[1])), 422, "BrushLabels"),
    "NaN x": (lambda h: dict(json=predict_body(h.url, [keypoint(float("nan"), 5)])), 422, "value.x=nan"),
    "negative y": (lambda h: dict(json=predict_body(h.url, [keypoint(5, -3)])), 422, "value.y=-3"),
    "over 100 %": (lambda h: dict(json=predict_body(h.url, [keypoint(100.01, 5)])), 422, "value.x=100.01"),
    "wrong original_width": (lambda h: dict(json=predict_body(h.url, [keypoint(5, 5, size=(200, 48))])), 422,
                             "aspect ratios differ"),
    "zero original_width": (lambda h: dict(json=predict_body(h.url, [keypoint(5, 5, size=(0, 48))])), 422,
                            "original_width"),
    "hundreds of points": (lambda h: dict(json=predict_body(h.url, [keypoint(i % 100, 5, rid=str(i))
                                                                    for i in range(300)])), 422, "too many clicks"),
    "only negative clicks": (lambda h: dict(json=predict_body(h.url, [keypoint(5, 5, positive=False)])), 422,
                             "only negative clicks"),
    "unknown keypoint label": (lambda h: dict(json=predict_body(h.url, [keypoint(5, 5, "Dog")])), 422,
                               "'Dog' has no BrushLabels label"),
    "unknown from_name": (lambda h: dict(json=predict_body(h.url, [keypoint(5, 5, from_name="kp")])), 422,
                          "from_name 'kp'"),
    "clicks for two tasks": (lambda h: dict(json=_body(h, tasks=[{"id": 1, "data": {"image": h.url}}] * 2)), 400,
                             "exactly one task"),
    "task without image field": (lambda h: dict(json=_body(h, tasks=[{"id": 1, "data": {"img": h.url}}])), 422,
                                 "no data field 'image'"),
    "non-keypoint context": (lambda h: dict(json=predict_body(h.url, [{"type": "rectanglelabels"}])), 422,
                             "no keypointlabels"),
    "image URL 404": (lambda h: dict(json=predict_body(h.server.url + "/data/upload/1/gone.png", [keypoint(4, 5)])),
                      502, "HTTP 404"),
    "unsupported URL": (lambda h: dict(json=predict_body("file:///etc/passwd", [keypoint(4, 5)])), 422,
                        "unsupported image URL"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_request_is_answered_clearly_and_the_next_valid_one_works(shared, name):
    h = shared
    make, status, message = BAD_REQUESTS[name]
    response = h.client.post("/predict", **make(h))
    assert response.status_code == status, response.json
    assert response.is_json and message in response.json["error"], response.json
    h.assert_valid_click_works()


def test_empty_context_is_an_empty_prediction(h):
    body = predict_body(h.url, None)
    body["params"]["context"] = {"result": []}
    assert h.predict(body).json["results"][0]["result"] == []
