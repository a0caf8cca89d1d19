"""Docker HEALTHCHECK for the m2n2 backend: exit 0 when GET /health answers 200 with status UP, else 1.

Reads PORT (default 9090) and, when the backend requires basic auth, BASIC_AUTH_USER / BASIC_AUTH_PASS.
Standard library only, so the image needs no curl.
"""
import base64
import json
import os
import sys
import urllib.request


def main() -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{os.environ.get('PORT', '9090')}/health")
    user = os.environ.get("BASIC_AUTH_USER")
    if user:
        token = base64.b64encode(f"{user}:{os.environ.get('BASIC_AUTH_PASS', '')}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=8) as response:
            status = json.load(response).get("status")
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if status != "UP":
        print(f"unhealthy: /health reports status {status!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
