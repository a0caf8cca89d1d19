"""Optional HTTP basic auth (BASIC_AUTH_USER / BASIC_AUTH_PASS) for every endpoint except ``GET /livez``."""
from __future__ import annotations

import hmac
from typing import Optional

from flask import Request

from .config import Settings

#: Endpoints reachable without credentials: a liveness probe that reveals nothing but "the process answers".
PUBLIC_PATHS = frozenset({"/livez"})


def is_authorized(settings: Settings, request: Request) -> bool:
    """True when auth is off, the path is public, or the request carries the configured user and password."""
    if not settings.auth_enabled or request.path in PUBLIC_PATHS:
        return True
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return False
    return _equal(auth.username, settings.basic_auth_user) & _equal(auth.password, settings.basic_auth_pass)


def _equal(given: Optional[str], expected: str) -> bool:
    """Constant-time comparison (no early exit that would leak how much of a guess was right)."""
    return hmac.compare_digest((given or "").encode(), expected.encode())
