-- The query of the in-process baseline: one session, kind tool_result, name doc-1*, 20 results.
-- wrk ... -s query.lua URL -- SESSION_ID
dofile(os.getenv("CAIRN_BENCH_DIR") .. "/common.lua")

function init(args)
  path = "/v1/artifacts?session=" .. args[1] .. "&kind=tool_result&name=doc-1*&limit=20"
end

function request()
  return wrk.format("GET", path)
end
