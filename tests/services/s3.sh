#!/usr/bin/env bash
# Makes an S3-compatible server available for the tests of the `s3` feature: installs
# `moto[server]` (pinned) into a virtual environment under target/ when it is not there yet.
# tests/common/s3.rs starts `moto_server` from it on a free 127.0.0.1 port for each test process.
# Prints the path of the `moto_server` executable on its last line.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv="${CAIRN_MOTO_VENV:-$PWD/target/moto-venv}"
if [ ! -x "$venv/bin/moto_server" ]; then
  t0=$(date +%s)
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
  echo "installed moto in $(( $(date +%s) - t0 )) s" >&2
fi
"$venv/bin/python" -c 'import moto; print("moto", moto.__version__)' >&2
echo "$venv/bin/moto_server"
