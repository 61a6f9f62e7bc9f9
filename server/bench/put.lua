-- PUT a new 1 KiB artifact per request: unique content, a new name each (kind tool_result).
-- wrk ... -s put.lua URL -- SESSION_ID
dofile(os.getenv("CAIRN_BENCH_DIR") .. "/common.lua")
local counter = 0
local pad = string.rep("x", 1024 - 14)

function init(args)
  session = args[1]
end

function request()
  counter = counter + 1
  local body = string.format("%08d-%04d-", counter, thread_id) .. pad
  return wrk.format("PUT",
    "/v1/sessions/" .. session .. "/artifacts/load-" .. thread_id .. "-" .. counter .. "?kind=tool_result",
    with_auth({ ["Content-Type"] = "application/octet-stream" }), body)
end
