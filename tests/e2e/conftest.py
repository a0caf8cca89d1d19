"""Fixtures that run a REAL Label Studio and the m2n2 backend on loopback for the end-to-end tests.

Label Studio lives in its own virtual environment (scripts/label_studio_env.sh, cached outside the repository) and
is started once per session with a temporary data directory. Legacy tokens are off (Label Studio's default): the
fixture logs in and creates a Personal Access Token; the "legacy" backend variants switch legacy tokens on through
the organization's JWT settings API (as an admin does in the UI) for their lifetime, and use the token given by
LABEL_STUDIO_USER_TOKEN. The backend runs under gunicorn (`python -m backend.cli serve`) with LABEL_STUDIO_URL /
LABEL_STUDIO_API_KEY pointing at that server. Every process is started in its own process group and stopped (TERM,
then KILL) by its fixture.
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
from typing import Dict, List

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
    pat: str           #: Personal Access Token of the admin user
    legacy_token: str  #: the admin's legacy token (refused unless legacy tokens are switched on)

    def set_legacy_tokens(self, enabled: bool) -> None:
        """Switch the organization's legacy API tokens on or off (Organization → API Tokens Settings in the UI)."""
        access = requests.post(f"{self.url}/api/token/refresh/", json={"refresh": self.pat}, timeout=30)
        access.raise_for_status()
        response = requests.post(f"{self.url}/api/jwt/settings", timeout=30,
                                 headers={"Authorization": f"Bearer {access.json()['access']}"},
                                 json={"api_tokens_enabled": True, "legacy_api_tokens_enabled": enabled})
        assert response.status_code in (200, 201), f"JWT settings: HTTP {response.status_code} {response.text}"


@dataclass(frozen=True)
class Backend:
    url: str
    env: Dict[str, str]   #: the M2N2_* settings it runs with
    api_key: str          #: the Label Studio credential it (and the test) uses
    auth: str             #: "pat" or "legacy"
    variant: str          #: "affinity" or "sd-tiny"


@pytest.fixture(scope="session")
def ls_venv() -> Path:
    """The Label Studio virtualenv, created by scripts/label_studio_env.sh on first use (about 1 GB, 1–2 min)."""
    result = subprocess.run(["bash", str(LS_ENV_SCRIPT)], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.fail(f"{LS_ENV_SCRIPT} failed (code {result.returncode}):\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def grabcut_image(tmp_path_factory) -> Path:
    """A GrabCut image, alone in a folder (the upload folder for connect_label_studio.py)."""
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


@pytest.fixture(scope="session")
def label_studio(ls_venv, tmp_path_factory) -> LabelStudioServer:
    data_dir = tmp_path_factory.mktemp("label-studio")
    port = free_port()
    legacy_token = secrets.token_hex(20)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "DJANGO_"))}
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir), LABEL_STUDIO_USERNAME=LS_USER, LABEL_STUDIO_PASSWORD=LS_PASSWORD,
        LABEL_STUDIO_USER_TOKEN=legacy_token, LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
        # the backend listens on 127.0.0.1: Label Studio refuses to call reserved addresses unless both are off
        LABEL_STUDIO_ML_BLOCK_LOCAL_IP="false", LABEL_STUDIO_SSRF_PROTECTION_ENABLED="false",
        LATEST_VERSION_CHECK="false", COLLECT_ANALYTICS="false",  # no calls to the internet:
        SENTRY_DSN="", FRONTEND_SENTRY_DSN="",                    # version check, analytics, error reports
        HOME=str(data_dir),
    )
    service = Service("label-studio", [str(ls_venv / "bin" / "label-studio"), "start", "--no-browser",
                                       "--internal-host", "127.0.0.1", "--port", str(port)],
                      env, data_dir / "label-studio.log", cwd=data_dir)
    try:
        url = f"http://127.0.0.1:{port}"
        service.wait_http(f"{url}/health", LS_START_TIMEOUT_S)
        yield LabelStudioServer(url, create_personal_access_token(url, LS_USER, LS_PASSWORD), legacy_token)
    finally:
        service.stop()


def backend_settings(variant: str, work: Path) -> Dict[str, str]:
    """The M2N2_* environment of a backend variant (building the tiny SD2 model for "sd-tiny")."""
    if variant == "affinity":
        return {"M2N2_DEVICE": "cpu", "M2N2_ATTENTION": "affinity", "M2N2_ATTENTION_RESOLUTION": "64"}
    from tests.sd_fixtures import make_tiny_sd2

    model_dir = work / "tiny-sd2"
    make_tiny_sd2(model_dir, 64)
    return {"M2N2_DEVICE": "cpu", "M2N2_ATTENTION": "sd", "M2N2_ATTENTION_RESOLUTION": "64",
            "M2N2_MODEL": str(model_dir)}


@pytest.fixture(scope="session", params=["affinity-pat", "affinity-legacy", "sd-tiny-pat"])
def backend(request, label_studio, tmp_path_factory) -> Backend:
    """The m2n2 backend under gunicorn, wired to ``label_studio`` with a PAT or (legacy tokens on) a legacy token."""
    variant, auth = request.param.rsplit("-", 1)
    work = tmp_path_factory.mktemp(f"backend-{request.param}")
    settings = backend_settings(variant, work)
    api_key = label_studio.pat if auth == "pat" else label_studio.legacy_token
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("M2N2_", "LABEL_STUDIO_", "BASIC_AUTH_"))}
    env.update(settings, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=api_key,
               WORKERS="1", THREADS="2", LOG_LEVEL="INFO", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO),
               HOME=str(work))  # gunicorn keeps its control socket under $HOME
    if auth == "legacy":
        label_studio.set_legacy_tokens(True)
    service = Service(f"m2n2 backend ({request.param})",
                      [sys.executable, "-m", "backend.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                      env, work / "backend.log", cwd=REPO)
    try:
        url = f"http://127.0.0.1:{port}"
        service.wait_http(f"{url}/health", BACKEND_START_TIMEOUT_S)
        yield Backend(url, settings, api_key, auth, variant)
    finally:
        service.stop()
        if auth == "legacy":
            label_studio.set_legacy_tokens(False)


@pytest.fixture
def connect_script():
    """Run examples/connect_label_studio.py as a user would; returns the CompletedProcess."""
    def run(url: str, api_key: str, images: Path, backend_url: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(REPO / "examples" / "connect_label_studio.py"), "--url", url, "--api-key", api_key,
             "--images", str(images), "--backend-url", backend_url, "--title", "m2n2 e2e", "--json"],
            capture_output=True, text=True, timeout=120)
    return run
