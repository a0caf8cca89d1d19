"""`m2n2 serve` for real: gunicorn (gthread) answering HTTP, and a clean non-zero exit when preload fails."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from backend_fixtures import LABEL_CONFIG, LoopbackServer, encode, keypoint, predict_body, scene

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(args, **env):
    full = {**os.environ, "HOST": "127.0.0.1", "PORT": str(free_port()), "WORKERS": "1", "THREADS": "2",
            "LOG_LEVEL": "INFO", **env}
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full.get("PYTHONPATH")]))
    proc = subprocess.Popen([sys.executable, "-m", "backend.cli", "serve", *args], cwd=ROOT, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, f"http://127.0.0.1:{full['PORT']}"


def test_gunicorn_serves_the_protocol():
    images = LoopbackServer()
    url = images.add("/data/upload/1/a.png", encode(scene()))
    proc, base = serve(["--attention", "affinity", "--attention-resolution", "16"], LABEL_STUDIO_URL=images.url,
                       BASIC_AUTH_USER="u", BASIC_AUTH_PASS="p")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if requests.get(base + "/livez", timeout=1).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or the worker is still importing
                time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read()
        assert requests.get(base + "/health", timeout=5).status_code == 401
        auth = ("u", "p")
        health = requests.get(base + "/health", auth=auth, timeout=5).json()
        assert health["status"] == "UP" and health["model_class"] == "M2N2Model"
        setup = requests.post(base + "/setup", json={"schema": LABEL_CONFIG}, auth=auth, timeout=5)
        assert setup.status_code == 200 and setup.json()["model_version"].startswith("m2n2-")
        click = requests.post(base + "/predict", json=predict_body(url, [keypoint(40, 50)]), auth=auth, timeout=120)
        assert click.status_code == 200, click.text
        assert click.json()["results"][0]["result"][0]["type"] == "brushlabels"
        bad = requests.post(base + "/predict", data="{", auth=auth, timeout=5)
        assert bad.status_code == 400 and bad.json()["type"] == "RequestError"
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
        images.close()
    assert "gthread" in output


def test_missing_model_stops_serve_before_gunicorn_with_the_options():
    proc, _ = serve(["--attention", "sd", "--model", "/nonexistent/sd2"])
    try:
        output = proc.communicate(timeout=180)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("serve with a missing model did not exit")
    assert proc.returncode == 1
    assert "/nonexistent/sd2" in output and "does not exist" in output and "M2N2_MODEL" in output


def test_preload_failure_exits_non_zero_with_the_reason(tmp_path):
    empty = tmp_path / "not-a-pipeline"  # exists, so serve's check passes; loading it in the worker fails
    empty.mkdir()
    proc, _ = serve(["--preload", "--attention", "sd", "--model", str(empty)])
    try:
        output = proc.communicate(timeout=180)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("serve --preload with a missing model did not exit")
    assert proc.returncode != 0
    assert "M2N2_PRELOAD=1 but the model could not be loaded" in output
