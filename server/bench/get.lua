-- GET the content of a random one of the prepared 1 KiB artifacts (verified read, ETag).
-- wrk ... -s get.lua URL -- IDS_FILE   (first line: the session id; then one artifact id a line)
dofile(os.getenv("CAIRN_BENCH_DIR") .. "/common.lua")

function init(args)
  ids = {}
  local first = true
  for line in io.lines(args[1]) do
    if first then first = false else ids[#ids + 1] = line end
  end
  math.randomseed(1000 + thread_id)
end

function request()
  return wrk.format("GET", "/v1/artifacts/" .. ids[math.random(#ids)] .. "/content")
end
