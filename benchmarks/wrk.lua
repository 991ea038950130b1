-- wrk script for benchmarks/run.py, configured by environment variables:
--   BENCH_TOKEN       bearer token for the Authorization header
--   BENCH_BODY        form body: the request becomes a POST (the login flood)
--   BENCH_STOP_AFTER  stop after this many responses and print STOPPED (with -t 1; memory)
--   BENCH_STATUSES    count answers by status class (2xx, 4xx, 429, 5xx): costs wrk a little
-- done() prints one line, "BENCH {json}", that run.py parses; latencies are in microseconds.
local token = os.getenv("BENCH_TOKEN")
local body = os.getenv("BENCH_BODY")
local stop_after = tonumber(os.getenv("BENCH_STOP_AFTER") or "")
local count_statuses = os.getenv("BENCH_STATUSES")
local threads = {}

if token then
  wrk.headers["Authorization"] = "Bearer " .. token
end
if body then
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  seen, s2xx, s4xx, s429, s5xx = 0, 0, 0, 0, 0
end

if stop_after or count_statuses then
  function response(status, headers, body)
    seen = seen + 1
    if status == 429 then
      s429 = s429 + 1
    elseif status >= 500 then
      s5xx = s5xx + 1
    elseif status >= 400 then
      s4xx = s4xx + 1
    elseif status >= 200 and status < 300 then
      s2xx = s2xx + 1
    end
    if seen == stop_after then
      -- wrk's main thread sleeps for the whole -d: run.py interrupts it on this line
      io.write("STOPPED\n")
      io.flush()
      wrk.thread:stop()
    end
  end
end

function done(summary, latency, requests)
  local c = {s2xx = 0, s4xx = 0, s429 = 0, s5xx = 0}
  for _, thread in ipairs(threads) do
    for key, _ in pairs(c) do
      c[key] = c[key] + (thread:get(key) or 0)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
      .. '"max_us":%d,"mean_us":%.1f,"errors":{"connect":%d,"read":%d,"write":%d,'
      .. '"status":%d,"timeout":%d},"statuses":{"2xx":%d,"4xx":%d,"429":%d,"5xx":%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status,
    e.timeout, c.s2xx, c.s4xx, c.s429, c.s5xx))
end
