-- Shared by the wrk scripts of server/bench/load.sh (each script loads it with dofile).
-- Numbers each wrk thread, and prints one JSON line at the end: requests, rate, p50/p99 (µs),
-- socket errors and non-2xx answers.
local next_id = 0
function setup(thread)
  thread:set("thread_id", next_id)
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
