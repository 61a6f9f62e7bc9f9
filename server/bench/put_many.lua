-- PUT a new 1 KiB artifact per request, like put.lua, into one of many sessions (a random one
-- of the sessions file's lines per request): agents that each write their own session.
-- wrk ... -s put_many.lua URL -- SESSIONS_FILE
dofile(os.getenv("CAIRN_BENCH_DIR") .. "/common.lua")
local counter = 0
local pad = string.rep("x", 1024 - 14)

function init(args)
  sessions = {}
  for line in io.lines(args[1]) do sessions[#sessions + 1] = line end
  math.randomseed(2000 + thread_id)
end

function request()
  counter = counter + 1
  local body = string.format("%08d-%04d-", counter, thread_id) .. pad
  return wrk.format("PUT",
    "/v1/sessions/" .. sessions[math.random(#sessions)] .. "/artifacts/many-" .. thread_id .. "-" .. counter .. "?kind=tool_result",
    with_auth({ ["Content-Type"] = "application/octet-stream" }), body)
end
