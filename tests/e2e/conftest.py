"""Fixtures that run a REAL Label Studio and the m2n2 backend on loopback for the end-to-end tests.

Label Studio lives in its own virtual environment (scripts/label_studio_env.sh, cached outside the repository); it is
started once per authentication mode with a temporary data directory:
  - "pat":    legacy tokens off (Label Studio's default); the test logs in and creates a Personal Access Token,
  - "legacy": LABEL_STUDIO_USER_TOKEN with LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true.
The backend runs under gunicorn (`python -m backend.cli serve`) with LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY pointing
at that server. Every process is started in its own process group and stopped (TERM, then KILL) by its fixture.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
LS_ENV_SCRIPT = REPO / "scripts" / "label_studio_env.sh"
LS_USER = "e2e@example.com"
LS_PASSWORD = "e2e-password-0123"
LS_START_TIMEOUT_S = 180.0
BACKEND_START_TIMEOUT_S = 90.0


def datasets_dir() -> Path:
    """``$M2N2_DATASETS`` or ``../shared/datasets`` next to the repository."""
    return Path(os.environ.get("M2N2_DATASETS") or REPO / ".." / "shared" / "datasets").resolve()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """A child process in its own process group, its output in a log file."""

    def __init__(self, name: str, cmd: List[str], env: Dict[str, str], log: Path, cwd: Path):
        self.name, self.log = name, log
        self._log_handle = open(log, "wb")
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self._log_handle, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def wait_http(self, url: str, timeout_s: float) -> None:
        """Poll ``url`` until it answers 200; fail with the log's tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with code {self.proc.returncode} before {url} answered; "
                            f"log {self.log}:\n{self.log_tail()}")
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        pytest.fail(f"{self.name}: {url} did not answer 200 within {timeout_s:.0f} s; log {self.log}:\n"
                    f"{self.log_tail()}")

    def stop(self) -> None:
        """TERM the whole process group, wait up to 15 s, then KILL it."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
            except ProcessLookupError:
                pass
        try:  # children that outlived their leader
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log_handle.close()


@dataclass(frozen=True)
class LabelStudioServer:
    url: str
    api_key: str
    auth: str  # "pat" or "legacy"


@dataclass(frozen=True)
class Backend:
    url: str
    env: Dict[str, str]   # the M2N2_* settings it runs with
    label: str            # "affinity" or "sd-tiny"


@pytest.fixture(scope="session")
def ls_venv() -> Path:
    """The Label Studio virtualenv, created by scripts/label_studio_env.sh on first use (about 1 GB, 1–2 min)."""
    result = subprocess.run(["bash", str(LS_ENV_SCRIPT)], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.fail(f"{LS_ENV_SCRIPT} failed (code {result.returncode}):\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def grabcut_image(tmp_path_factory) -> Path:
    """A folder holding one GrabCut image (the upload folder for connect_label_studio.py)."""
    source = datasets_dir() / "GrabCut" / "data_GT" / "106024.jpg"
    if not source.is_file():
        pytest.skip(f"GrabCut dataset not found at {source.parent} (set M2N2_DATASETS to its parent folder)")
    folder = tmp_path_factory.mktemp("upload")
    shutil.copy(source, folder / source.name)
    return folder / source.name


def create_personal_access_token(url: str, email: str, password: str) -> str:
    """Log in through the web form and create a PAT, as a user does under Account & Settings."""
    session = requests.Session()
    session.get(f"{url}/user/login/", timeout=30).raise_for_status()
    login = session.post(f"{url}/user/login/", timeout=30, allow_redirects=False,
                         data={"email": email, "password": password,
                               "csrfmiddlewaretoken": session.cookies["csrftoken"]})
    assert login.status_code == 302, f"login failed: HTTP {login.status_code} {login.text[:500]}"
    created = session.post(f"{url}/api/token/", timeout=30, headers={"X-CSRFToken": session.cookies["csrftoken"]})
    assert created.status_code == 201, f"PAT creation failed: HTTP {created.status_code} {created.text[:500]}"
    return created.json()["token"]


@pytest.fixture(scope="session", params=["pat", "legacy"])
def label_studio(request, ls_venv, tmp_path_factory) -> LabelStudioServer:
    auth = request.param
    data_dir = tmp_path_factory.mktemp(f"label-studio-{auth}")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "DJANGO_"))}
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir), LABEL_STUDIO_USERNAME=LS_USER, LABEL_STUDIO_PASSWORD=LS_PASSWORD,
        LABEL_STUDIO_ML_BLOCK_LOCAL_IP="false", LABEL_STUDIO_SSRF_PROTECTION_ENABLED="false",
        LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
        LATEST_VERSION_CHECK="false", COLLECT_ANALYTICS="false",  # no calls to the internet
        HOME=str(data_dir),
    )
    legacy_token = secrets.token_hex(20)
    if auth == "legacy":
        env.update(LABEL_STUDIO_USER_TOKEN=legacy_token, LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true")
    service = Service(f"label-studio ({auth})",
                      [str(ls_venv / "bin" / "label-studio"), "start", "--no-browser",
                       "--internal-host", "127.0.0.1", "--port", str(port)],
                      env, data_dir / "label-studio.log", cwd=data_dir)
    try:
        url = f"http://127.0.0.1:{port}"
        service.wait_http(f"{url}/health", LS_START_TIMEOUT_S)
        api_key = legacy_token if auth == "legacy" else create_personal_access_token(url, LS_USER, LS_PASSWORD)
        yield LabelStudioServer(url, api_key, auth)
    finally:
        service.stop()


def _backend_variants() -> List[str]:
    return ["affinity", "sd-tiny"]


@pytest.fixture(scope="session", params=_backend_variants())
def backend(request, label_studio, tmp_path_factory) -> Backend:
    """The m2n2 backend under gunicorn, wired to ``label_studio``; "sd-tiny" uses a random-weight SD2-shaped UNet."""
    variant = request.param
    work = tmp_path_factory.mktemp(f"backend-{variant}-{label_studio.auth}")
    settings = {"M2N2_DEVICE": "cpu", "M2N2_ATTENTION": "affinity", "M2N2_ATTENTION_RESOLUTION": "32"}
    if variant == "sd-tiny":
        from tests.sd_fixtures import make_tiny_sd2
        model_dir = work / "tiny-sd2"
        make_tiny_sd2(model_dir, 8)
        settings = {"M2N2_DEVICE": "cpu", "M2N2_ATTENTION": "sd", "M2N2_ATTENTION_RESOLUTION": "8",
                    "M2N2_MODEL": str(model_dir)}
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("M2N2_", "LABEL_STUDIO_", "BASIC_AUTH_"))}
    env.update(settings, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.api_key,
               WORKERS="1", THREADS="2", LOG_LEVEL="INFO", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    service = Service(f"m2n2 backend ({variant})",
                      [sys.executable, "-m", "backend.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                      env, work / "backend.log", cwd=REPO)
    try:
        url = f"http://127.0.0.1:{port}"
        service.wait_http(f"{url}/health", BACKEND_START_TIMEOUT_S)
        yield Backend(url, settings, variant)
    finally:
        service.stop()


@pytest.fixture
def connect_script():
    """Run examples/connect_label_studio.py as a user would; returns the CompletedProcess."""
    def run(label_studio: LabelStudioServer, images: Path, backend_url: str,
            api_key: Optional[str] = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(REPO / "examples" / "connect_label_studio.py"), "--url", label_studio.url,
             "--api-key", api_key or label_studio.api_key, "--images", str(images), "--backend-url", backend_url,
             "--title", "m2n2 e2e", "--json"],
            capture_output=True, text=True, timeout=120)
    return run
