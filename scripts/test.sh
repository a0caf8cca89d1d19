#!/usr/bin/env bash
# Set up .venv/ (if needed) and run the test suite. Extra arguments go to pytest, e.g. `-m slow` or `-m e2e`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
