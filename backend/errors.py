"""Error types of the backend: each carries the HTTP status and a message that names the problem.

Status policy (documented in backend/README.md):
  400 the request itself is malformed (not JSON, missing ``tasks``, wrong types)
  401 basic auth required or wrong
  413 request body larger than M2N2_MAX_REQUEST_BYTES
  422 the request is well-formed but cannot be served: label config, click context, task data, the image content
      (not an image, truncated, too large, too many pixels) or an image URL the SSRF policy refuses
  502 the image host answered with an error or could not be reached
  503 the model is loading, failed to load, or ran out of memory
  504 the image host did not answer in time
"""
from __future__ import annotations

from typing import Any, Dict, Optional


class BackendError(Exception):
    """An error with an HTTP status; ``payload()`` is the JSON body ``{"error": message, "type": ..., **details}``."""

    status: int = 500

    def __init__(self, message: str, status: Optional[int] = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.details = details

    def payload(self) -> Dict[str, Any]:
        return {"error": self.message, "type": type(self).__name__, **self.details}


class RequestError(BackendError):
    """Malformed request body or parameters."""

    status = 400


class LabelConfigError(BackendError):
    """The label config lacks what the backend needs (Image, smart KeyPointLabels, BrushLabels) or is not XML."""

    status = 422


class ContextError(BackendError):
    """The interactive click context (``params.context``) is invalid: bad keypoints, too many points, bad labels."""

    status = 422


class TaskError(BackendError):
    """A task lacks the image field the label config names, or its value is not a usable URL."""

    status = 422


class MediaError(BackendError):
    """The task image could not be fetched or decoded; ``url`` names it. 422 by default, 502/504 for upstream."""

    status = 422

    def __init__(self, message: str, url: str, status: Optional[int] = None, **details: Any) -> None:
        super().__init__(message, status=status, url=url, **details)
        self.url = url


class ModelUnavailable(BackendError):
    """The model is still loading or failed to load."""

    status = 503


class OutOfMemory(BackendError):
    """Memory ran out while computing; caches were released and the request can be retried."""

    status = 503
