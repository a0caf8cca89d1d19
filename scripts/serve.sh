#!/usr/bin/env bash
# Set up .venv/ (if needed) and start the Label Studio ML backend (default 0.0.0.0:9090). Extra arguments go to
# `m2n2 serve`, e.g. `--port 9091` or `--attention affinity`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
M2N2_EXTRAS="${M2N2_EXTRAS:-dev}" "$ROOT/scripts/setup.sh"
exec "$ROOT/.venv/bin/m2n2" serve "$@"
