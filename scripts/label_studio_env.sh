#!/usr/bin/env bash
# Create (or reuse) a virtual environment holding Label Studio for the end-to-end tests.
#
# Label Studio pins versions that clash with the backend's, so it lives in its own venv, outside the repository:
#   ${M2N2_LS_VENV:-$HOME/.cache/m2n2/ls-venv}
# Idempotent: a venv whose `label-studio --version` already reports the wanted version is reused as is.
# Prints the venv path on the last line of stdout. Environment:
#   M2N2_LS_VENV      where the venv lives
#   M2N2_LS_VERSION   Label Studio version (default 1.23.2)
#   M2N2_LS_PYTHON    python used to create the venv (default python3.11, else python3)
set -euo pipefail

venv="${M2N2_LS_VENV:-$HOME/.cache/m2n2/ls-venv}"
version="${M2N2_LS_VERSION:-1.23.2}"
python="${M2N2_LS_PYTHON:-$(command -v python3.11 || command -v python3)}"
stamp="$venv/.m2n2-label-studio-$version"

if [[ -f "$stamp" && -x "$venv/bin/label-studio" ]]; then
    echo "$venv"
    exit 0
fi

echo "label_studio_env: installing label-studio==$version into $venv (about 1 GB, 1-2 minutes)" >&2
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv"
log="$venv/pip-install.log"
if ! "$venv/bin/python" -m pip install "label-studio==$version" >"$log" 2>&1; then
    echo "label_studio_env: pip install label-studio==$version failed; the end of $log:" >&2
    grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -30 >&2
    exit 1
fi
# Import check: a broken install fails here, not in the middle of a test.
"$venv/bin/python" -c "import label_studio, django; print('label-studio', label_studio.__version__)" >&2
touch "$stamp"
echo "$venv"
