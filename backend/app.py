"""Flask app implementing Label Studio's ML-backend protocol on top of ``M2N2Model``.

Endpoints: ``GET /health`` and ``GET /`` (status + model state), ``GET /livez`` (liveness, never needs auth),
``POST /setup``, ``POST /predict``, ``POST /webhook``, ``GET /metrics``. Every error is JSON
``{"error": message, "type": ..., ...}`` with a 4xx/5xx status (see ``backend.errors`` for the status policy).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, Optional

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import BadRequest, HTTPException

from .auth import is_authorized
from .config import Settings
from .errors import BackendError, RequestError
from .metrics import LatencyStats
from .model import TRAIN_EVENTS, M2N2Model

log = logging.getLogger(__name__)


def create_app(settings: Optional[Settings] = None, model: Optional[M2N2Model] = None) -> Flask:
    """The WSGI app; ``settings`` default to the environment, ``model`` to a new ``M2N2Model(settings)``."""
    settings = settings or Settings.from_env()
    model = model or M2N2Model(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False
    app.extensions["m2n2_model"] = model
    requests_stats = LatencyStats()
    started = time.time()

    @app.before_request
    def _authorize() -> Optional[Response]:
        g.started = time.perf_counter()
        if is_authorized(settings, request):
            return None
        response = jsonify(error="authentication required: use HTTP basic auth with BASIC_AUTH_USER / "
                                 "BASIC_AUTH_PASS (in Label Studio: the ML backend's Basic Authentication fields)",
                           type="Unauthorized")
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Basic realm="m2n2"'
        return response

    @app.after_request
    def _record(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
        requests_stats.observe(f"{request.method} {rule}", time.perf_counter() - g.get("started", time.perf_counter()),
                               response.status_code)
        return response

    @app.errorhandler(BackendError)
    def _backend_error(exc: BackendError):
        log.log(logging.WARNING if exc.status >= 500 else logging.INFO, "%s %s → %d %s", request.method,
                request.path, exc.status, exc.message)
        return jsonify(exc.payload()), exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        return jsonify(error=exc.description, type=exc.name.replace(" ", "")), exc.code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error in %s %s", request.method, request.path)
        return jsonify(error="internal error while handling the request; the backend log has the details",
                       type="InternalError"), 500

    def health() -> Dict[str, Any]:
        return {"status": "UP", "model_class": type(model).__name__, "model": model.status()}

    app.add_url_rule("/health", "health", health, methods=["GET"])
    app.add_url_rule("/", "index", health, methods=["GET"])

    @app.get("/livez")
    def livez():
        return {"status": "UP"}

    @app.post("/setup")
    def setup():
        body = _json_body()
        if "schema" not in body:
            raise RequestError("'schema' (the project's label config) is missing")
        version = model.setup(body["schema"])
        model.start_loading()  # in the background: /setup itself never waits for the model
        return {"model_version": version}

    @app.post("/predict")
    def predict():
        body = _json_body()
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise RequestError("'tasks' must be a non-empty list of task objects")
        for i, task in enumerate(tasks):
            if not isinstance(task, dict):
                raise RequestError(f"tasks[{i}] must be an object, got {type(task).__name__}")
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise RequestError(f"'params' must be an object, got {type(params).__name__}")
        if "label_config" not in body:
            raise RequestError("'label_config' (the project's label config) is missing")
        results = model.predict(tasks, context=params.get("context"), label_config=body["label_config"])
        return {"results": results, "model_version": model.model_version}

    @app.post("/webhook")
    def webhook():
        body = _json_body()
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise RequestError("'action' (the webhook event name) is missing")
        if action not in TRAIN_EVENTS:
            return {"status": "Unknown event"}, 200
        project = body.get("project")
        if not isinstance(project, dict) or "id" not in project:
            raise RequestError(f"the {action} event needs a 'project' object with an 'id'")
        return {"status": "ok", **model.fit(action, body)}, 201

    @app.get("/metrics")
    def metrics():
        return {"pid": os.getpid(), "uptime_seconds": round(time.time() - started, 3),
                "requests": requests_stats.snapshot(), **model.stats()}

    return app


def _json_body() -> Dict[str, Any]:
    """The request's JSON object (Content-Type is not required). Raises RequestError otherwise."""
    try:
        body = request.get_json(force=True)
    except BadRequest:
        raise RequestError("the request body is not valid JSON") from None
    except RecursionError:
        raise RequestError("the request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {type(body).__name__}")
    return body
