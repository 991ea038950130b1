-- wrk script for benchmarks/run.py, configured by environment variables:
--   BENCH_TOKEN       bearer token for the Authorization header
--   BENCH_BODY        form body: the request becomes a POST (the login flood)
--   BENCH_DELAY_MS    pause before each request on a connection (a paced, non-saturating load)
--   BENCH_STOP_AFTER  stop after this many responses and print STOPPED (with -t 1; memory)
-- done() prints one line, "BENCH {json}", that run.py parses; latencies are in microseconds.
local token = os.getenv("BENCH_TOKEN")
local body = os.getenv("BENCH_BODY")
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")
local stop_after = tonumber(os.getenv("BENCH_STOP_AFTER") or "")

if token then
  wrk.headers["Authorization"] = "Bearer " .. token
end
if body then
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end
if delay_ms then
  function delay()
    return delay_ms
  end
end
if stop_after then
  local seen = 0
  function response()
    seen = seen + 1
    if seen == stop_after then
      -- wrk's main thread sleeps for the whole -d: run.py interrupts it on this line
      io.write("STOPPED\n")
      io.flush()
      wrk.thread:stop()
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
      .. '"max_us":%d,"mean_us":%.1f,"errors":{"connect":%d,"read":%d,"write":%d,'
      .. '"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status,
    e.timeout))
end
