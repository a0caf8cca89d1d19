"""Settings from environment variables, and the `m2n2 serve` command line."""
import argparse
import subprocess
import sys

import pytest

from backend.cli import build_parser
from backend.config import Settings, SettingsError, parse_bytes
from backend.serve import environment, gunicorn_command


def test_defaults():
    s = Settings.from_env({})
    assert (s.attention, s.attention_resolution, s.port, s.workers, s.threads) == ("sd", 128, 9090, 1, 4)
    assert s.cache_bytes == 4 * 1024 ** 3 and not s.auth_enabled and not s.allow_private_networks


def test_reads_every_variable():
    env = {"M2N2_MODEL": "/models/sd2", "M2N2_DEVICE": "cpu", "M2N2_ATTENTION": "affinity",
           "M2N2_ATTENTION_RESOLUTION": "32", "M2N2_DENSE_STORAGE": "fp32",
           "M2N2_SUBSPACE_MAX_RESOLUTION": "0", "M2N2_CACHE_BYTES": "512MiB", "M2N2_PRELOAD": "yes",
           "M2N2_MAX_POINTS": "10", "M2N2_MAX_IMAGE_PIXELS": "1000", "M2N2_MAX_DOWNLOAD_BYTES": "1M",
           "M2N2_FETCH_TIMEOUT": "2.5", "M2N2_ALLOW_PRIVATE_NETWORKS": "1",
           "M2N2_ALLOWED_HOSTS": "minio, 10.0.0.0/8", "LABEL_STUDIO_URL": "http://ls:8080/",
           "LABEL_STUDIO_API_KEY": "k", "BASIC_AUTH_USER": "u", "BASIC_AUTH_PASS": "p", "WORKERS": "2",
           "THREADS": "8", "LOG_LEVEL": "debug", "PORT": "9000"}
    s = Settings.from_env(env)
    assert (s.model, s.device, s.attention, s.attention_resolution) == ("/models/sd2", "cpu", "affinity", 32)
    assert s.cache_bytes == 512 * 1024 ** 2 and s.max_download_bytes == 1024 ** 2 and s.preload
    assert s.allowed_hosts == ("minio", "10.0.0.0/8") and s.label_studio_url == "http://ls:8080"
    assert s.auth_enabled and (s.workers, s.threads, s.log_level, s.port) == (2, 8, "DEBUG", 9000)
    cfg = s.m2n2_config()
    assert (cfg.attention, cfg.model, cfg.attention_resolution, cfg.device) == ("affinity", "/models/sd2", 32, "cpu")
    assert cfg.dense_storage == "fp32" and Settings.from_env({}).m2n2_config().dense_storage == "auto"
    assert cfg.subspace_max_resolution == 0 and Settings.from_env({}).m2n2_config().subspace_max_resolution == 128


@pytest.mark.parametrize("env, names", [
    ({"M2N2_ATTENTION": "clip"}, "M2N2_ATTENTION"),
    ({"M2N2_DEVICE": "gpu"}, "M2N2_DEVICE"),
    ({"M2N2_ATTENTION_RESOLUTION": "abc"}, "M2N2_ATTENTION_RESOLUTION"),
    ({"M2N2_DENSE_STORAGE": "fp8"}, "M2N2_DENSE_STORAGE"),
    ({"M2N2_SUBSPACE_MAX_RESOLUTION": "-1"}, "M2N2_SUBSPACE_MAX_RESOLUTION"),
    ({"M2N2_ATTENTION_RESOLUTION": "1"}, "M2N2_ATTENTION_RESOLUTION"),
    ({"M2N2_CACHE_BYTES": "lots"}, "M2N2_CACHE_BYTES"),
    ({"M2N2_CACHE_BYTES": "0"}, "M2N2_CACHE_BYTES"),
    ({"M2N2_FETCH_TIMEOUT": "-1"}, "M2N2_FETCH_TIMEOUT"),
    ({"M2N2_FETCH_TIMEOUT": "nan"}, "M2N2_FETCH_TIMEOUT"),
    ({"M2N2_PRELOAD": "maybe"}, "M2N2_PRELOAD"),
    ({"M2N2_ALLOWED_HOSTS": "10.0.0.0/99"}, "M2N2_ALLOWED_HOSTS"),
    ({"LABEL_STUDIO_URL": "localhost:8080"}, "LABEL_STUDIO_URL"),
    ({"BASIC_AUTH_USER": "u"}, "BASIC_AUTH_PASS"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ({"WORKERS": "0"}, "WORKERS"),
    ({"PORT": "70000"}, "PORT"),
])
def test_invalid_values_name_the_variable(env, names):
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(env)


@pytest.mark.parametrize("text, value", [("1000", 1000), ("4GiB", 4 << 30), ("4G", 4 << 30), ("512 MB", 512 << 20),
                                         ("1.5k", 1536)])
def test_parse_bytes(text, value):
    assert parse_bytes("X", text) == value


def test_serve_options_override_the_environment():
    args = build_parser().parse_args(["serve", "--port", "9100", "--attention", "affinity", "--preload",
                                      "--workers", "3"])
    env = environment(args, {"PORT": "1", "M2N2_MODEL": "m"})
    assert env["PORT"] == "9100" and env["M2N2_ATTENTION"] == "affinity" and env["M2N2_PRELOAD"] == "1"
    assert env["WORKERS"] == "3" and env["M2N2_MODEL"] == "m"
    assert gunicorn_command()[-3:] == ["-c", "python:backend.gunicorn_conf", "backend.wsgi:app"]


def test_cli_has_serve_and_core_subcommands():
    parser = build_parser()
    choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"serve", "segment"} <= set(choices)


def test_serve_rejects_invalid_settings_with_a_message():
    result = subprocess.run([sys.executable, "-m", "backend.cli", "serve", "--attention-resolution", "1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "M2N2_ATTENTION_RESOLUTION" in result.stderr and "Traceback" not in result.stderr


def test_every_variable_is_documented_in_the_readme():
    import re
    from pathlib import Path

    import backend.config

    source = Path(backend.config.__file__).read_text()
    read = set(re.findall(r'(?:env\.get|_int|_float|_bool|_size)\((?:env, )?"([A-Z0-9_]+)"', source))
    readme = (Path(backend.config.__file__).parent / "README.md").read_text()
    assert len(read) >= 25 and {v for v in read if f"`{v}`" not in readme} == set()
    assert {v for v in read if f"`{v}`" not in backend.config.__doc__} == set()
    rows = [line for line in backend.config.__doc__.splitlines() if line.startswith("| `")]
    assert rows and [row for row in rows if row not in readme] == []  # the README's table says what the code does
    project_readme = (Path(backend.config.__file__).parent.parent / "README.md").read_text()
    assert [row for row in rows if row not in project_readme] == []  # and so does the project README's copy
