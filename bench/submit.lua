-- wrk script for POST /v1/pcs/submit: every request sends a different pre-signed PCS,
-- read from the file named by the first script argument (one compact JSON per line),
-- so the benchmark measures judging, not dedup hits. done() prints one JSON line.
--   wrk -t1 -c64 -d10s -s bench/submit.lua http://127.0.0.1:8080 -- bodies.jsonl [offset]
local bodies = {}
local idx = 0
local headers = {["Content-Type"] = "application/json"}

function init(args)
  for line in io.lines(args[1]) do
    bodies[#bodies + 1] = line
  end
  idx = tonumber(args[2] or "0") or 0
end

function request()
  idx = idx % #bodies + 1
  return wrk.format("POST", "/v1/pcs/submit", headers, bodies[idx])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"non_2xx":%d,' ..
    '"socket_errors":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, latency.mean))
end
