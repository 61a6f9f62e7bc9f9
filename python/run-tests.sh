#!/usr/bin/env bash
# The Python package's tests against a real `cairn serve`: creates a virtual environment
# (if missing) from the pinned requirements, installs the package from the repository, builds
# the `cairn` binary if needed, runs ruff and pytest. Exits non-zero on any failure, including
# pytest finding no tests (exit code 5).
#
#   python/run-tests.sh [pytest args...]
# Environment: CAIRN_PY_VENV (default: <repo>/target/python-venv), PYTHON (default: python3.11
# or python3), CAIRN_BIN (default: <repo>/target/debug/cairn, built here).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
VENV="${CAIRN_PY_VENV:-$REPO/target/python-venv}"
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "run-tests.sh: creating $VENV with $PY"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
"$VENV/bin/python" -m pip install --quiet -r "$HERE/requirements-test.txt"
"$VENV/bin/python" -m pip install --quiet "$HERE"

if [ -z "${CAIRN_BIN:-}" ]; then
    CAIRN_BIN="$REPO/target/debug/cairn"
    if [ ! -x "$CAIRN_BIN" ] || [ -n "$(find "$REPO/src" "$REPO/cli" "$REPO/server" -newer "$CAIRN_BIN" -name '*.rs' -print -quit 2>/dev/null)" ]; then
        echo "run-tests.sh: building the cairn binary"
        (cd "$REPO" && cargo build -p cairn-cli)
    fi
fi
export CAIRN_BIN

(cd "$HERE" && "$VENV/bin/ruff" check src tests bench)

set +e
(cd "$HERE" && "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@")
code=$?
set -e
if [ "$code" -eq 5 ]; then
    echo "run-tests.sh: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit "$code"
