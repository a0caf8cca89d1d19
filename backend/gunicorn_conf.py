"""gunicorn settings for ``m2n2 serve`` (``-c python:backend.gunicorn_conf``), taken from the validated Settings.

gthread workers, no ``preload_app``: the model is created inside each worker, never in the master before fork
(CUDA does not survive fork).
"""
from backend.config import Settings

_settings = Settings.from_env()

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.workers
threads = _settings.threads
worker_class = "gthread"
preload_app = False
# Booting a worker may include loading SD2 (M2N2_PRELOAD=1); gthread workers keep their heartbeat while requests run.
timeout = 600
graceful_timeout = 30
keepalive = 5
loglevel = _settings.log_level.lower()
accesslog = "-"
errorlog = "-"


def post_fork(server, worker):
    """In each worker: PyTorch's intra-op threads (M2N2_TORCH_THREADS), set before any model work."""
    import torch

    torch.set_num_threads(_settings.torch_threads)
