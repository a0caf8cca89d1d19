"""``m2n2 serve``: validate the settings, then exec gunicorn with ``backend.wsgi:app``."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List

from .config import Settings, SettingsError

#: command-line option → environment variable it overrides
_OPTIONS = {"host": "HOST", "port": "PORT", "workers": "WORKERS", "threads": "THREADS", "model": "M2N2_MODEL",
            "attention": "M2N2_ATTENTION", "attention_resolution": "M2N2_ATTENTION_RESOLUTION",
            "device": "M2N2_DEVICE", "cache_bytes": "M2N2_CACHE_BYTES", "log_level": "LOG_LEVEL"}


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="run the Label Studio ML backend (gunicorn, gthread workers)",
                              description="Serve the Label Studio ML backend. Options override the environment "
                                          "variables of the same meaning (see backend/README.md).")
    p.add_argument("--host", help="bind address (HOST, default 0.0.0.0)")
    p.add_argument("--port", type=int, help="port (PORT, default 9090)")
    p.add_argument("--workers", type=int, help="worker processes, each with its own model (WORKERS, default 1)")
    p.add_argument("--threads", type=int, help="threads per worker (THREADS, default 4)")
    p.add_argument("--model", help="hub id or local diffusers directory (M2N2_MODEL)")
    p.add_argument("--attention", choices=("sd", "affinity"), help="attention source (M2N2_ATTENTION, default sd)")
    p.add_argument("--attention-resolution", type=int, metavar="R", help="attention grid r (M2N2_ATTENTION_RESOLUTION)")
    p.add_argument("--device", help="cuda, cpu, cuda:1 ... (M2N2_DEVICE, default: cuda if available)")
    p.add_argument("--cache-bytes", help="attention cache budget, e.g. 4GiB (M2N2_CACHE_BYTES)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING ... (LOG_LEVEL)")
    p.add_argument("--preload", action="store_true",
                   help="load the model when workers start and exit non-zero if it fails (M2N2_PRELOAD=1)")
    p.set_defaults(func=run)


def environment(args: argparse.Namespace, base: Dict[str, str]) -> Dict[str, str]:
    """``base`` with the given command-line options applied."""
    env = dict(base)
    for option, variable in _OPTIONS.items():
        value = getattr(args, option)
        if value is not None:
            env[variable] = str(value)
    if args.preload:
        env["M2N2_PRELOAD"] = "1"
    return env


def gunicorn_command() -> List[str]:
    return [sys.executable, "-m", "gunicorn", "-c", "python:backend.gunicorn_conf", "backend.wsgi:app"]


def run(args: argparse.Namespace) -> int:
    env = environment(args, dict(os.environ))
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        print(f"m2n2 serve: {exc}", file=sys.stderr)
        return 2
    if settings.attention == "sd":
        # Before gunicorn starts: make sure the weights are here (downloading them on the first start, with a progress
        # bar), so that an offline machine gets the reason and a non-zero exit instead of a server that cannot work.
        from m2n2_core.attention.sd_loading import ModelLoadError, resolve_model_dir
        from m2n2_core.predictor import resolve_device

        try:
            resolve_model_dir(settings.model, fp16=resolve_device(settings.device).startswith("cuda"))
        except ModelLoadError as exc:
            print(f"m2n2 serve: {exc}", file=sys.stderr)
            return 1
    print(f"m2n2 serve: http://{settings.host}:{settings.port} ({settings.workers} worker(s) × {settings.threads} "
          f"threads, attention={settings.attention}, preload={'on' if settings.preload else 'off'})", file=sys.stderr)
    command = gunicorn_command()
    os.execvpe(command[0], command, env)
