-- wrk script: POST the JSON body stored in the file named by BENCH_BODY to the given URL.
--   BENCH_BODY=body.json wrk -t2 -c32 -d10s --latency -s post.lua http://127.0.0.1:8000/prediction
--
-- Each wrk thread opens its connections in one burst. uvicorn's workers share one listening
-- socket, and asyncio accepts up to 100 connections per wake-up, so the first worker to wake
-- takes a whole burst: with every connection opened at once, one worker often gets all 32 and
-- "2 workers" means one. Starting each further thread 0.3 s later (setup runs before each
-- thread starts, and wrk's clock starts after the last) lets the other, idle worker accept the
-- next burst, as it would with clients arriving over time. run.py checks the resulting split.
local path = os.getenv("BENCH_BODY")
local file = assert(io.open(path, "rb"), "cannot open BENCH_BODY " .. tostring(path))
wrk.method = "POST"
wrk.body = file:read("*a")
wrk.headers["Content-Type"] = "application/json"
file:close()

local threads = 0

function setup(thread)
  if threads > 0 then
    os.execute("sleep 0.3")
  end
  threads = threads + 1
end
