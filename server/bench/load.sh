#!/usr/bin/env bash
# The load benchmark of `cairn serve` (issue 11; results in BENCHMARKS.md, "Server under load").
#
# wrk (Debian: apt-get install -y wrk) against a RELEASE `cairn serve` on 127.0.0.1 with CONNS
# connections: small puts (1 KiB, unique), 1 KiB gets by id, a query; then SSE fan-out (SUBS
# subscribers, EVENTS events appended over HTTP). The same operations run in-process on the
# library in the same run (server/bench/load.rs), for the ratios. The server's peak RSS during
# each phase and the load average before and after each figure are printed beside it.
#
# Usage: server/bench/load.sh [SECS] [CONNS]   (defaults: 10 s per phase, 32 connections)
#        SUBS=100 EVENTS=500 WRK_THREADS=2 server/bench/load.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-10}
CONNS=${2:-32}
SUBS=${SUBS:-100}
EVENTS=${EVENTS:-500}
WRK_THREADS=${WRK_THREADS:-2}
export CAIRN_BENCH_DIR="$PWD/server/bench"

command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
cargo build -q --release -p cairn-cli
cargo bench -q -p cairn-server --bench load --no-run
bench() { cargo bench -q -p cairn-server --bench load -- "$@"; }

TMP=$(mktemp -d)
PID=
cleanup() {
  if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
load() { echo "  load average (1/5/15 min): $(cut -d' ' -f1-3 /proc/loadavg)"; }

echo "== $(date -u +%H:%M:%S) UTC, $(nproc) cores; phases of $SECS s; $CONNS connections / threads"
echo "-- in-process baseline ($CONNS threads)"
load
bench inproc "$TMP/inproc" "$CONNS" "$SECS"
load
bench inproc-sse "$TMP/inproc-sse" "$SUBS" "$EVENTS"
load

echo "-- cairn serve (release) with wrk -t$WRK_THREADS -c$CONNS"
# Room for the SSE subscribers (max_streams defaults to 64).
printf '[server]\nmax_streams = %d\n' "$((SUBS + 16))" >"$TMP/serve.toml"
target/release/cairn serve --config "$TMP/serve.toml" --data "$TMP/server" --listen 127.0.0.1:0 >"$TMP/url" 2>"$TMP/server.log" &
PID=$!
for _ in $(seq 1 200); do [ -s "$TMP/url" ] && break; sleep 0.05; done
URL=$(head -n1 "$TMP/url")
bench prepare "$URL" 1000 "$TMP/ids"
SESSION=$(head -n1 "$TMP/ids")
echo "  server RSS after preparing: $(ps -o rss= -p "$PID" | tr -d ' ') KiB"

# Samples the server's RSS every 0.2 s into $TMP/rss until $TMP/stop exists.
sample() {
  rm -f "$TMP/stop" "$TMP/rss"
  ( while [ ! -e "$TMP/stop" ]; do ps -o rss= -p "$PID" >>"$TMP/rss" || true; sleep 0.2; done ) &
  SAMPLER=$!
}
peak() { touch "$TMP/stop"; wait "$SAMPLER" 2>/dev/null || true; sort -n "$TMP/rss" | tail -n1 | tr -d ' '; }

run() { # NAME SCRIPT ARG
  load
  sample
  wrk -t"$WRK_THREADS" -c"$CONNS" -d"${SECS}s" --latency -s "server/bench/$2" "$URL" -- "$3" >"$TMP/$1.txt"
  local rss; rss=$(peak)
  echo "{\"mode\":\"http\",\"op\":\"$1\",\"wrk\":$(grep '^{' "$TMP/$1.txt"),\"server_peak_rss_kib\":$rss}"
  load
}
run put_1k put.lua "$SESSION"
run get_1k get.lua "$TMP/ids"
run query query.lua "$SESSION"

sample
bench sse "$URL" "$SUBS" "$EVENTS"
echo "  server peak RSS during SSE fan-out: $(peak) KiB"
load
