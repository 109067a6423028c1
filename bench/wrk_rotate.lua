-- wrk runs this in each of its threads (bench/load_generators.py passes it with --script). ``setup``
-- numbers the threads so each starts at a different body; ``done`` prints one JSON line the script parses.
local bodies, count, index = {}, 0, 0
local tokens, used, step = {}, 0, 1
local created = 0

function setup(thread)
  thread:set("thread_number", created)
  created = created + 1
end

function init(args)
  local dir = args[1]
  count = tonumber(args[2])
  for i = 1, count do
    local f = assert(io.open(string.format("%s/%04d.json", dir, i - 1), "rb"))
    bodies[i] = f:read("*a")
    f:close()
  end
  index = ((thread_number or 0) * 37) % count
  if args[3] and args[3] ~= "" then
    -- one token per request, never reused: thread n takes tokens n+1, n+1+threads, ...
    for line in io.lines(args[3]) do tokens[#tokens + 1] = line end
    used = thread_number or 0
    step = tonumber(args[4])
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  index = index % count + 1
  if #tokens > 0 then
    used = used + step
    local token = tokens[used] or "exhausted"
    local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}
    return wrk.format(nil, nil, headers, bodies[index])
  end
  return wrk.format(nil, nil, nil, bodies[index])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"mean_us": %.1f, "max_us": %d, "http_errors": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
