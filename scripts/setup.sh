#!/usr/bin/env bash
# Create or reuse .venv/ at the project root and install m2n2 into it (idempotent). Sourced by serve.sh and test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "m2n2 setup: $PY not found; install Python 3.10 or newer" >&2; exit 1
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "m2n2 setup: Python 3.10 or newer is needed ($("$PY" --version 2>&1) found)" >&2; exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "m2n2 setup: creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

# PyTorch: keep whatever torch the environment has (a CUDA build on GPU hosts). Where none is present, install the
# pinned release explicitly, so that the dependency range below never pulls a different multi-GB build.
if ! "$VENV/bin/python" -c 'import torch' >/dev/null 2>&1; then
  echo "m2n2 setup: installing torch ${M2N2_TORCH:-torch==2.13.0}"
  "${PIP[@]}" install ${M2N2_TORCH_PIP_ARGS:-} "${M2N2_TORCH:-torch==2.13.0}"
fi

# The project itself (editable) with the test/eval extras; reinstalled only when pyproject.toml changed.
STAMP="$VENV/.m2n2-installed"
EXTRAS="${M2N2_EXTRAS:-dev}"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)-$EXTRAS"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "m2n2 setup: installing m2n2[$EXTRAS] and its dependencies"
  "${PIP[@]}" install -e "$ROOT[$EXTRAS]"
  echo "$WANT" > "$STAMP"
fi
