#!/usr/bin/env bash
# The scale benchmark of issue 15 (results in BENCHMARKS.md, "Beyond one machine").
#
# Starts a private PostgreSQL (Debian's binaries, pg_stat_statements loaded), moto as the S3
# server and release `cairn serve` processes, all on 127.0.0.1, and drives them with wrk
# (server/bench/*.lua): small puts (1 KiB; into one session, then into 64), gets by id, a
# query; with the embedded store behind one server (the baseline, same run), then 1 and 3
# servers on --metadata postgres:// --content s3://. Then the cost phase: PostgreSQL and S3 round trips, bytes, statements and CPU per
# request, through a counting proxy. One JSON line per figure on stdout (scale.py says what each
# field is); progress on stderr. Every phase is bounded in time or count; everything started is
# stopped at the end.
#
# Usage: server/bench/scale.sh [SECS] [CONNS]     (defaults: 10 s per phase, 30 connections)
#        WRK_THREADS=3 COST_N=300 PG_FSYNC=on server/bench/scale.sh
# Needs: wrk (apt-get install wrk), PostgreSQL 14+ server binaries (tests/services/postgres.sh),
# moto (tests/services/s3.sh), python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-10}
CONNS=${2:-30}

command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
[ -x target/moto-venv/bin/moto_server ] || [ -n "${CAIRN_MOTO_SERVER:-}" ] || bash tests/services/s3.sh >/dev/null
cargo build -q --release -p cairn-cli
echo "uptime before: $(uptime)" >&2
exec python3 server/bench/scale.py --secs "$SECS" --conns "$CONNS" \
  --wrk-threads "${WRK_THREADS:-3}" --cost-n "${COST_N:-300}" --pg-fsync "${PG_FSYNC:-on}" \
  ${CONFIGS:+--configs "$CONFIGS"}
