#!/usr/bin/env bash
# Drives `cairn mcp` over stdio and `cairn serve` at /mcp over streamable HTTP with the official
# MCP Python SDK (pinned in requirements.txt).
#
# The venv lives outside the repository: ${CAIRN_VENV:-$HOME/.cache/cairn-venv}. It is created
# if missing and the pinned requirements are installed into it (a no-op when they already are).
# The `cairn` binary is built if CAIRN_BIN is not set. Exits non-zero if any test fails or if no
# test ran. Extra arguments go to pytest (e.g. `-k grep`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="${CAIRN_VENV:-$HOME/.cache/cairn-venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"

if [ -z "${CAIRN_BIN:-}" ]; then
    (cd "$root" && cargo build --quiet -p cairn-cli)
    CAIRN_BIN="$(cd "$root" && cargo metadata --format-version 1 --no-deps \
        | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/cairn"
fi
export CAIRN_BIN

# pytest exits 5 when it collected no tests: that is a failure here too.
exec "$venv/bin/python" -m pytest -p no:cacheprovider -p no:asyncio -q "$here" "$@"
