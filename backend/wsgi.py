"""WSGI entry for gunicorn (``backend.wsgi:app``): settings from the environment, one model per worker process.

With ``M2N2_PRELOAD=1`` the model loads while the worker boots; if that fails the worker exits, and gunicorn stops
with "Worker failed to boot" (exit status 3) after logging the reason.
"""
from __future__ import annotations

import logging

from flask import Flask

from .app import create_app
from .config import Settings
from .errors import ModelUnavailable
from .model import M2N2Model

log = logging.getLogger("backend")


def build() -> Flask:
    """Settings from the environment, logging, the model (loaded now with M2N2_PRELOAD=1) and the app."""
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    logging.getLogger("backend").setLevel(settings.log_level)
    model = M2N2Model(settings)
    if settings.preload:
        try:
            model.load()
        except ModelUnavailable as exc:
            log.critical("M2N2_PRELOAD=1 but the model could not be loaded: %s", exc.message)
            raise RuntimeError(f"M2N2_PRELOAD=1 but the model could not be loaded: {exc.message}") from None
    return create_app(settings, model)


app = build()
