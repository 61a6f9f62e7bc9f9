#!/usr/bin/env bash
# Makes PostgreSQL's server binaries available for the tests of the `postgres` feature
# (tests/common/pg.rs starts a private cluster from them on 127.0.0.1 for each test process).
# Installs Debian's `postgresql` package when no initdb is found; needs root and apt (CI).
# Prints the binary folder on its last line.
set -euo pipefail

find_bin() {
  for v in 17 16 15 14; do
    if [ -x "/usr/lib/postgresql/$v/bin/initdb" ]; then
      echo "/usr/lib/postgresql/$v/bin"
      return 0
    fi
  done
  if command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
    return 0
  fi
  return 1
}

if ! bin=$(find_bin); then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "PostgreSQL is not installed and this is not a root shell with apt: install the" \
         "server (Debian: apt-get install postgresql) or set CAIRN_PG_URL" >&2
    exit 1
  fi
  t0=$(date +%s)
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The package's own cluster is not needed: the tests start their own.
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  echo "installed PostgreSQL in $(( $(date +%s) - t0 )) s" >&2
  bin=$(find_bin)
fi
"$bin/postgres" --version >&2
echo "$bin"
