#!/usr/bin/env bash
# Browser tests of the web view (/ui): Debian's Chromium (installed here if missing) driven by
# playwright-core (npm ci, pinned by package-lock.json), against a real `cairn serve` on
# 127.0.0.1 whose tenant store holds the demo's SWE-agent runs (fixtures/agent-runs).
# Screenshots of the main pages go to target/ui-screenshots/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
CAIRN_BIN="${CAIRN_BIN:-$root/target/debug/cairn}"
if [ ! -x "$CAIRN_BIN" ]; then
  echo "no cairn binary at $CAIRN_BIN: build it (cargo build -p cairn-cli) or set CAIRN_BIN" >&2
  exit 1
fi
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

data="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$data"
}
trap cleanup EXIT

"$CAIRN_BIN" --store "$data/tenants/default" demo >/dev/null
token="$("$CAIRN_BIN" token create --data "$data" --tenant default --admin | grep -o 'cairn_[0-9a-f]\{64\}' | head -n1)"
[ -n "$token" ] || { echo "cairn token create printed no token" >&2; exit 1; }
"$CAIRN_BIN" serve --data "$data" --listen 127.0.0.1:0 >"$data/url" 2>"$data/server.log" &
pid=$!
for _ in $(seq 1 100); do
  [ -s "$data/url" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$data/server.log" >&2; exit 1; }
  sleep 0.1
done
url="$(head -n1 "$data/url")"
[ -n "$url" ] || { echo "the server printed no URL" >&2; cat "$data/server.log" >&2; exit 1; }
echo "cairn serve on $url (open $url/ui)"

status=0
CAIRN_URL="$url" CAIRN_TOKEN="$token" SCREENSHOTS="$root/target/ui-screenshots" \
  node --test --test-concurrency=1 "$here/ui.test.mjs" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- server log (last 40 lines)" >&2
  tail -n 40 "$data/server.log" >&2
fi
exit "$status"
