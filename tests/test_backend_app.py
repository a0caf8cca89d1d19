"""The Flask app end to end (test client + loopback image server): protocol, bad input, images, auth, faults."""
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
from backend_fixtures import LABEL_CONFIG, LoopbackServer, encode, fast_settings, keypoint, predict_body, scene
from m2n2_core.image_io import load_image
from m2n2_core.predictor import M2N2Predictor, PreparedImage

AUTH = ("ls", "s3cret")


class Harness:
    """A loopback image server, a model and a test client wired together."""

    def __init__(self, factory=None, **changes):
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
    prepared = M2N2Predictor(settings.m2n2_config()).prepare(image)
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
        return M2N2Predictor(config)

    harness = Harness(factory=slow_factory)
    try:
        response = harness.client.post("/setup", json={"project": "1.1", "schema": LABEL_CONFIG})
        assert response.status_code == 200 and response.json == {"model_version": "m2n2-0.1.0:affinity:r16"}
        assert harness.client.get("/health").json["model"]["state"] == "loading"
    finally:
        gate.set()
    harness.model.predictor(300)
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


# ---- images: failures are named, odd-but-valid formats give the right mask at the right size ----------------------------
def _png_claiming(width, height):
    """A tiny PNG whose header claims width × height pixels (a decompression bomb's signature)."""
    data = bytearray(encode(np.zeros((2, 2, 3), np.uint8)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


BAD_IMAGES = {
    "not an image": (lambda: b"<html>login page</html>", 422, "not an image"),
    "truncated JPEG": (lambda: encode(scene(), "JPEG")[:300], 422, "truncated"),
    "decompression bomb": (lambda: _png_claiming(100_000, 100_000), 422, "pixels"),
    "empty body": (lambda: b"", 422, "empty"),
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_bad_image_is_named_and_the_next_click_works(shared, name):
    make, status, message = BAD_IMAGES[name]
    url = shared.server.add(f"/data/upload/1/bad-{len(name)}.img", make())
    response = shared.click(url=url)
    assert response.status_code == status and message in response.json["error"], response.json
    assert response.json["url"] == url and url in response.json["error"]
    shared.assert_valid_click_works()


def test_image_download_timeout_is_504_and_the_next_click_works():
    harness = Harness(fetch_timeout=0.3)
    try:
        url = harness.server.add("/data/upload/1/slow.png", encode(scene()), delay=1.5)
        response = harness.click(url=url)
        assert response.status_code == 504 and "timed out" in response.json["error"] and response.json["url"] == url
        harness.assert_valid_click_works()
    finally:
        harness.server.close()


def _exif_rotated_jpeg():
    img = Image.fromarray(scene(64, 48))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    return encode(img, "JPEG", exif=exif, quality=95)


ODD_IMAGES = {
    "grayscale": lambda: encode(Image.fromarray(scene()).convert("L")),
    "RGBA": lambda: encode(Image.fromarray(np.dstack([scene(), np.full((48, 64), 200, np.uint8)]), "RGBA")),
    "16-bit": lambda: encode(Image.fromarray(scene()[:, :, 0].astype(np.uint16) * 257)),
    "CMYK JPEG": lambda: encode(Image.fromarray(scene()).convert("CMYK"), "JPEG", quality=95),
    "palette": lambda: encode(Image.fromarray(scene()).convert("P")),
    "EXIF-rotated JPEG": _exif_rotated_jpeg,
}


@pytest.mark.parametrize("name", list(ODD_IMAGES))
def test_odd_but_valid_images_give_the_predictor_mask_at_the_displayed_size(shared, name):
    data = ODD_IMAGES[name]()
    height, width = load_image(data).shape[:2]
    url = shared.server.add(f"/data/upload/1/odd-{name.replace(' ', '_')}", data)
    regions = [keypoint(45, 50, size=(width, height))]
    response = shared.click(url=url, regions=regions)
    assert response.status_code == 200, response.json
    region = response.json["results"][0]["result"][0]
    assert (region["original_width"], region["original_height"]) == (width, height)
    if name == "EXIF-rotated JPEG":
        assert (width, height) == (48, 64)
    assert np.array_equal(decode(region), expected_mask(shared.settings, data, regions))


# ---- basic auth ----------------------------------------------------------------------------------------------------
ENDPOINTS = [("GET", "/health"), ("GET", "/"), ("POST", "/setup"), ("POST", "/predict"), ("POST", "/webhook"),
             ("GET", "/metrics"), ("GET", "/no-such-path")]


@pytest.fixture(scope="module")
def secured():
    harness = Harness(basic_auth_user=AUTH[0], basic_auth_pass=AUTH[1])
    yield harness
    harness.server.close()


@pytest.mark.parametrize("method, path", ENDPOINTS)
def test_basic_auth_protects_every_endpoint(secured, method, path):
    for auth in (None, ("ls", "wrong"), ("other", AUTH[1])):
        response = secured.client.open(path, method=method, auth=auth, json={})
        assert response.status_code == 401 and response.is_json and "basic auth" in response.json["error"]
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert secured.client.open(path, method=method, auth=AUTH, json={}).status_code != 401


def test_basic_auth_leaves_only_livez_open_and_accepts_label_studio_requests(secured):
    assert secured.client.get("/livez").json == {"status": "UP"}
    response = secured.client.post("/setup", json={"schema": LABEL_CONFIG}, auth=AUTH)
    assert response.status_code == 200
    response = secured.client.post("/predict", json=predict_body(secured.url, [keypoint(40, 50)]), auth=AUTH)
    assert response.status_code == 200 and response.json["results"][0]["result"]


# ---- generic errors are JSON -------------------------------------------------------------------------------------------
def test_404_405_413_are_json(h):
    assert h.client.get("/nope").status_code == 404 and h.client.get("/nope").is_json
    response = h.client.get("/predict")
    assert response.status_code == 405 and response.is_json and "error" in response.json
    small = Harness(max_request_bytes=1000)
    try:
        response = small.client.post("/predict", data="x" * 5000, content_type="application/json")
        assert response.status_code == 413 and response.is_json and "error" in response.json
    finally:
        small.server.close()


def test_unexpected_exception_is_a_generic_500_json(h, monkeypatch, caplog):
    def explode(*args, **kwargs):
        raise RuntimeError("internal secret detail")

    monkeypatch.setattr(h.model, "predict", explode)
    response = h.click()
    assert response.status_code == 500 and response.is_json
    assert "secret" not in response.json["error"] and "Traceback" not in response.get_data(as_text=True)
    assert "internal secret detail" in caplog.text  # logged server-side with the traceback


# ---- webhook and metrics ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, status, expected", [
    ({"action": "ANNOTATION_CREATED", "project": {"id": 1, "label_config": LABEL_CONFIG}, "annotation": {}}, 201,
     {"status": "ok", "trained": False}),
    ({"action": "START_TRAINING", "project": {"id": 3}}, 201, {"status": "ok"}),
    ({"action": "PROJECT_UPDATED", "project": {"id": 1}}, 200, {"status": "Unknown event"}),
    ({"project": {"id": 1}}, 400, {"type": "RequestError"}),
    ({"action": "ANNOTATION_UPDATED"}, 400, {"type": "RequestError"}),
    ({"action": "ANNOTATION_UPDATED", "project": "1"}, 400, {"type": "RequestError"}),
])
def test_webhook(h, body, status, expected):
    response = h.client.post("/webhook", json=body)
    assert response.status_code == status
    assert expected.items() <= response.json.items()


def test_webhook_invalid_json(h):
    response = h.client.post("/webhook", data="nope", content_type="application/json")
    assert response.status_code == 400 and "not valid JSON" in response.json["error"]


def test_metrics_count_requests_latency_cache_and_model(h):
    h.assert_valid_click_works()
    h.client.post("/predict", data="{")
    metrics = h.client.get("/metrics").json
    predict = metrics["requests"]["POST /predict"]
    assert predict["count"] == 2 and predict["status"] == {"200": 1, "400": 1} and predict["seconds_max"] > 0
    assert metrics["model"] == {"state": "loaded", "reason": None}
    assert metrics["cache"]["entries"] == 1 and metrics["cache"]["bytes"] > 0
    assert {"fetch", "decode", "prepare", "predict", "encode"} <= set(metrics["stages"])


# ---- faults --------------------------------------------------------------------------------------------------------
def test_load_failure_is_reported_and_predict_answers_503():
    def broken(config):
        raise OSError("no diffusers model at /models/missing")

    harness = Harness(factory=broken)
    try:
        response = harness.click()
        assert response.status_code == 503 and "no diffusers model at /models/missing" in response.json["error"]
        health = harness.client.get("/health").json
        assert health["status"] == "UP" and health["model"]["state"] == "failed"
        assert "no diffusers model at /models/missing" in health["model"]["reason"]
        assert harness.click().status_code == 503
        assert harness.client.post("/setup", json={"schema": LABEL_CONFIG}).status_code == 200
    finally:
        harness.server.close()


def test_real_predictor_with_a_missing_model_fails_cleanly():
    harness = Harness(attention="sd", model="/nonexistent/sd2-model")
    try:
        response = harness.click()
        assert response.status_code == 503 and response.json["model_state"] == "failed"
        assert harness.client.get("/health").json["model"]["state"] == "failed"
    finally:
        harness.server.close()


def test_model_still_loading_answers_503_then_works():
    gate = threading.Event()

    def slow(config):
        gate.wait(10)
        return M2N2Predictor(config)

    harness = Harness(factory=slow, load_wait=0.2)
    try:
        response = harness.click()
        assert response.status_code == 503 and "still loading" in response.json["error"]
        gate.set()
        harness.model.predictor(300)
        harness.assert_valid_click_works()
    finally:
        gate.set()
        harness.server.close()


@pytest.mark.parametrize("stage", ["prepare", "predict"])
@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 GiB"),
                                   MemoryError()])
def test_out_of_memory_answers_503_releases_caches_then_recovers(h, monkeypatch, stage, error):
    h.assert_valid_click_works()                       # one prepared image in the cache
    other = h.server.add("/data/upload/1/other.png", encode(scene(60, 40)))
    predictor = h.model.predictor(300)
    if stage == "prepare":
        target, name = predictor, "prepare"
    else:
        target, name = PreparedImage, "predict"
    original = getattr(target, name)
    calls = []

    def once(*args, **kwargs):
        if not calls:
            calls.append(1)
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, once)
    response = h.click(url=other, regions=[keypoint(40, 50, size=(60, 40))])
    assert response.status_code == 503 and "out of memory" in response.json["error"], response.json
    stats = h.client.get("/metrics").json
    assert stats["cache"]["entries"] == 0 and stats["cache"]["clears"] == 1 and stats["out_of_memory"] == 1
    response = h.click(url=other, regions=[keypoint(40, 50, size=(60, 40))])
    assert response.status_code == 200, response.json


def test_cache_evicts_by_bytes_and_recomputes_the_same_mask():
    probe = M2N2Predictor(fast_settings().m2n2_config()).prepare(scene())
    harness = Harness(cache_bytes=int(probe.nbytes * 1.5))   # room for one prepared image
    try:
        first = harness.click().json["results"][0]["result"][0]
        other = harness.server.add("/data/upload/1/other.png", encode(scene(64, 48)[:, ::-1].copy()))
        assert harness.click(url=other).status_code == 200
        again = harness.click().json["results"][0]["result"][0]
        cache = harness.client.get("/metrics").json["cache"]
        assert cache["evictions"] >= 2 and cache["computations"] == 3 and cache["entries"] == 1
        assert cache["bytes"] <= cache["max_bytes"]
        assert np.array_equal(decode(first), decode(again))
    finally:
        harness.server.close()


def test_concurrent_first_clicks_on_one_image_prepare_it_once():
    harness = Harness()
    try:
        predictor = harness.model.predictor(300)
        prepares, original = [], predictor.prepare

        def counted(image):
            prepares.append(1)
            time.sleep(0.3)                    # keep the computation in flight while the others arrive
            return original(image)

        predictor.prepare = counted
        statuses = []

        def click():
            statuses.append(harness.app.test_client().post(
                "/predict", json=predict_body(harness.url, [keypoint(40, 50)])).status_code)

        threads = [threading.Thread(target=click) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert statuses == [200] * 6 and len(prepares) == 1
        cache = harness.client.get("/metrics").json["cache"]
        assert cache["computations"] == 1 and cache["waits"] + cache["hits"] == 5
    finally:
        harness.server.close()
