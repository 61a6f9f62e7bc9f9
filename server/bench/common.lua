-- Shared by the wrk scripts of server/bench/load.sh (each script loads it with dofile).
-- Numbers each wrk thread, and prints one JSON line at the end: requests, rate, p50/p99 (µs),
-- socket errors and non-2xx answers.
-- Optional (server/bench/scale.sh): CAIRN_BENCH_TOKEN, a bearer token sent with every request;
-- CAIRN_BENCH_ADDRS, "host:port,host:port,...": wrk thread i talks to address i mod n (one wrk
-- process spread over several servers).
local next_id = 0
local token = os.getenv("CAIRN_BENCH_TOKEN")
if token ~= nil and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

-- Headers `h` plus the bearer token, if any (wrk.format drops wrk.headers when given a table).
function with_auth(h)
  if token ~= nil and token ~= "" then
    h["Authorization"] = "Bearer " .. token
  end
  return h
end

function setup(thread)
  thread:set("thread_id", next_id)
  local spec = os.getenv("CAIRN_BENCH_ADDRS")
  if spec ~= nil and spec ~= "" then
    local addrs = {}
    for hp in string.gmatch(spec, "[^,]+") do
      local host, port = hp:match("^(.*):(%d+)$")
      addrs[#addrs + 1] = wrk.lookup(host, port)[1]
    end
    thread.addr = addrs[(next_id % #addrs) + 1]
  end
  next_id = next_id + 1
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"secs":%.2f,"rps":%.0f,"p50_us":%d,"p99_us":%d,"max_us":%d,"socket_errors":%d,"non2xx":%d}\n',
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.timeout, e.status))
end
