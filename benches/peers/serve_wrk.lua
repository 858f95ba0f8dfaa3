-- wrk script for compare_serve.sh: requests from a file, round robin, each thread starting at
-- its own offset; an optional share of adds; status counts, acknowledged add ids and the
-- latency percentiles written as one JSON object to $WRK_OUT.
--
-- env: WRK_REQUESTS  file of requests, one a line: METHOD<TAB>PATH<TAB>BODY (BODY may be empty)
--      WRK_ADDS      (optional) file of add requests in the same form
--      WRK_ADD_SHARE (optional) fraction of requests that are adds, e.g. 0.05
--      WRK_OUT       where done() writes the JSON summary
local reqs, adds = {}, {}
local i, a = 0, 0
local share = 0
statuses = {}
acked = {}
local threads = {}
local counter = 0

local function load(path, into)
  for line in io.lines(path) do
    local m, p, b = line:match("^([^\t]*)\t([^\t]*)\t?(.*)$")
    if m then
      into[#into + 1] = wrk.format(m, p, { ["Content-Type"] = "application/json" }, b ~= "" and b or nil)
    end
  end
end

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

function init(args)
  load(os.getenv("WRK_REQUESTS"), reqs)
  if (os.getenv("WRK_ADDS") or "") ~= "" then
    load(os.getenv("WRK_ADDS"), adds)
    share = tonumber(os.getenv("WRK_ADD_SHARE") or "0")
  end
  i = (tid * 7919) % #reqs
  a = (tid * 104729) % math.max(#adds, 1)
  math.randomseed(tid * 31337)
end

function request()
  if share > 0 and math.random() < share then
    a = a + 1
    if a > #adds then a = 1 end
    return adds[a]
  end
  i = i + 1
  if i > #reqs then i = 1 end
  return reqs[i]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 200 and share > 0 then
    local ids = body:match('^{"ids":%[([0-9,]+)%]')
    if ids then
      for id in ids:gmatch("[0-9]+") do acked[#acked + 1] = id end
    end
  end
end

function done(summary, latency, requests)
  local st, ids = {}, {}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do st[code] = (st[code] or 0) + n end
    for _, id in ipairs(t:get("acked")) do ids[#ids + 1] = id end
  end
  local parts = {}
  for code, n in pairs(st) do parts[#parts + 1] = string.format('"%d": %d', code, n) end
  local e = summary.errors
  local out = io.open(os.getenv("WRK_OUT"), "w")
  out:write(string.format(
    '{"requests": %d, "duration_s": %.3f, "rps": %.2f, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, "statuses": {%s}, "acked_ids": [%s]}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3,
    e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ", "), table.concat(ids, ",")))
  out:close()
end
