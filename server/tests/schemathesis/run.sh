#!/usr/bin/env bash
# Property-based API tests of `cairn serve` from its own OpenAPI document with schemathesis:
# no 5xx, no undocumented status code, every response conforms to its schema.
# Bounded: SCHEMATHESIS_EXAMPLES examples per operation (default 20), SCHEMATHESIS_TIMEOUT
# seconds in all (default 240). The venv lives outside the repo: ${CAIRN_VENV:-$HOME/.cache/cairn-venv}.
# Exits non-zero when schemathesis finds a failure (or cannot run).
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
VENV="${CAIRN_VENV:-$HOME/.cache/cairn-venv}"
EXAMPLES="${SCHEMATHESIS_EXAMPLES:-20}"
LIMIT="${SCHEMATHESIS_TIMEOUT:-240}"
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -m pip show schemathesis 2>/dev/null | grep -qx "Version: $SCHEMATHESIS_VERSION"; then
    "$VENV/bin/python" -m pip install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

# CAIRN_BIN (set by .ci/run to the binary `cargo test` built) skips the build.
if [ -n "${CAIRN_BIN:-}" ] && [ -x "$CAIRN_BIN" ]; then
    BIN="$CAIRN_BIN"
else
    cargo build --quiet --manifest-path "$ROOT/Cargo.toml" -p cairn-cli --bin cairn
    BIN="$ROOT/target/debug/cairn"
fi

DATA="$(mktemp -d)"
OUT="$DATA/serve.out"
SERVER=""
cleanup() {
    if [ -n "$SERVER" ]; then
        kill -TERM "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
    fi
    # Keep the server's log for a failed run.
    cp "$DATA/serve.log" "${TMPDIR:-/tmp}/cairn-schemathesis-serve.log" 2>/dev/null || true
    rm -rf "$DATA"
}
trap cleanup EXIT

TOKEN="$("$BIN" token create --data "$DATA" --tenant schemathesis --admin | grep -o 'cairn_[A-Za-z0-9_-]*' | head -n1)"
if [ -z "$TOKEN" ]; then
    echo "run.sh: could not create a token" >&2
    exit 2
fi

"$BIN" serve --data "$DATA" --listen 127.0.0.1:0 >"$OUT" 2>"$DATA/serve.log" &
SERVER=$!
URL=""
for _ in $(seq 1 100); do
    URL="$(grep -o 'http://[0-9.:]*' "$OUT" | head -n1 || true)"
    [ -n "$URL" ] && break
    sleep 0.1
done
if [ -z "$URL" ]; then
    echo "run.sh: cairn serve did not print its URL" >&2
    cat "$DATA/serve.log" >&2
    exit 2
fi

status=0
# Left out: the SSE stream (never ends) and /mcp, the Model Context Protocol's own transport
# (its status codes and bodies are rmcp's, per the MCP specification; mcp/tests/python drives
# it with the official MCP SDK).
cd "$DATA"  # schemathesis writes .schemathesis/ in its working folder
timeout --signal=INT "$LIMIT" "$VENV/bin/schemathesis" run "$URL/openapi.json" \
    --url "$URL" \
    --header "Authorization: Bearer $TOKEN" \
    --checks not_a_server_error,status_code_conformance,response_schema_conformance \
    --max-examples "$EXAMPLES" \
    --request-timeout 30 \
    --exclude-path-regex '(events/stream|^/mcp)$' \
    || status=$?
if [ "$status" -ne 0 ]; then
    echo "run.sh: schemathesis failed (exit $status); the server log: $DATA/serve.log" >&2
    tail -n 20 "$DATA/serve.log" >&2 || true
fi
exit "$status"
