-- wrk script for bench/api_bench.py: POST /v1/payments with a fresh
-- Idempotency-Key on every request, so each one runs the whole create path.
-- The key and run id come from the environment (wrk passes no script args to
-- threads); each thread numbers its own requests.
local api_key = os.getenv("BENCH_API_KEY")
local run = os.getenv("BENCH_RUN") or "run"
local body = os.getenv("BENCH_BODY")

local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
end

function request()
  counter = counter + 1
  return wrk.format("POST", "/v1/payments", {
    ["Authorization"] = "Bearer " .. api_key,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = run .. "-" .. tid .. "-" .. counter,
  }, body)
end

-- Count answers other than 201: wrk reports only socket errors and non-2xx/3xx.
-- Globals, so done() can read each thread's counts with thread:get.
created = 0
other = 0

function response(status, headers, body)
  if status == 201 then created = created + 1 else other = other + 1 end
end

function done(summary, latency, requests)
  local ok, bad = 0, 0
  for _, t in ipairs(threads) do
    ok = ok + (t:get("created") or 0)
    bad = bad + (t:get("other") or 0)
  end
  io.write(string.format("BENCH requests=%d seconds=%.3f created=%d other=%d errors=%d "
    .. "p50_ms=%.2f p99_ms=%.2f\n",
    summary.requests, summary.duration / 1e6, ok, bad,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.status + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
