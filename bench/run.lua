--[[
bench/run.lua — the genserver side of `make bench`.

  lua5.4 bench/run.lua WORKLOAD [N ...]      one workload (see WORKLOADS below)
  lua5.4 bench/run.lua list                  the workload names
  lua5.4 bench/run.lua all                   every default workload, one after another

Each workload prints one line

  RESULT workload=NAME value=... unit=... [key=value ...]

and the script exits with 0; on failure (an error, a crash, a time-out) it
prints `ERROR workload=NAME reason` and exits with 1. Every wait has a
time-out: a workload is run by a "driver" process that the main script
monitors, and the main script gives up after WORKLOAD_TIMEOUT seconds.

bench/compare.lua runs each workload in a fresh OS process, several times,
beside the same workload in Erlang (bench/bench.erl).

Run from anywhere: in-tree paths (lua/, build/) are added when genserver is not
otherwise found; `eval "$(make -s env)"` works too.
]]

-- ------------------------------------------------------------------ paths

local function script_dir()
  local d = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
  if d:sub(1, 1) ~= "/" then
    local pwd = os.getenv("PWD")
    if pwd then d = pwd .. "/" .. d end
  end
  return d
end

local HERE = script_dir()
package.path = HERE .. "/?.lua;" .. package.path
if not pcall(require, "genserver.core") then
  package.path = HERE .. "/../lua/?.lua;" .. HERE .. "/../lua/?/init.lua;" .. package.path
  package.cpath = HERE .. "/../build/?.so;" .. package.cpath
end

local gs = require "genserver"
local process = require "genserver.process"
local runtime = require "genserver.runtime"
local core = require "genserver.core"

local clock = core.clock

-- A whole workload must finish within this (s); compare.lua also kills the OS
-- process a little later.
local WORKLOAD_TIMEOUT = tonumber(os.getenv("BENCH_WORKLOAD_TIMEOUT")) or 240
-- Any single receive inside a workload (ms).
local T = 60000

-- --------------------------------------------------------------- helpers

--- Resident memory of this OS process, bytes (VmRSS).
local function rss()
  local f = io.open("/proc/self/status", "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  local kb = s:match("VmRSS:%s+(%d+)%s+kB")
  return kb and tonumber(kb) * 1024
end

--- Runs `fn(...)` in a new process (the driver) and waits for its result.
-- Raises on an error in the driver, on its death, or after `timeout_s`.
local function drive(timeout_s, fn, ...)
  local me = process.self()
  local _, mref = process.spawn_monitor(function(parent, f, ...)
    local ok, res = xpcall(f, function(e)
      return debug.traceback(tostring(e), 2)
    end, ...)
    process.send(parent, { "$bench", ok, res })
  end, me, fn, ...)
  local m = process.receive(function(x)
    return type(x) == "table" and (x[1] == "$bench" or (x[1] == "DOWN" and x.ref == mref))
  end, timeout_s * 1000)
  if m == nil then error(("timeout after %d s"):format(timeout_s), 0) end
  if m[1] == "DOWN" then error("driver died: " .. gs.describe(m.reason), 0) end
  process.demonitor(mref, "flush")
  if not m[2] then error(m[3], 0) end
  return m[3]
end

local function median_of_sorted(t)
  local n = #t
  if n % 2 == 1 then return t[(n + 1) // 2] end
  return (t[n // 2] + t[n // 2 + 1]) / 2
end

local function percentile_of_sorted(t, p)
  local i = math.ceil(#t * p)
  if i < 1 then i = 1 end
  return t[i]
end

-- ------------------------------------------------------------- workloads

local W = {}      -- name -> function(args) -> result table
local ORDER = {}  -- the default order (`all`)
local DESC = {}

local function workload(name, desc, fn, default)
  W[name] = fn
  DESC[name] = desc
  if default ~= false then ORDER[#ORDER + 1] = name end
end

-- cast throughput: one sender process, one server, N casts, then a call
-- that reads the count.
workload("cast", "cast throughput, 1 sender -> 1 server, N casts + 1 call", function(a)
  local n = a[1] or 1000000
  return drive(WORKLOAD_TIMEOUT, function(n)
    local srv = assert(gs.start("bench_server", 0))
    local cast = gs.cast
    local msg = { "inc", 1, { user = "alice", n = 7 } }
    local t0 = clock()
    for _ = 1, n do cast(srv, msg) end
    local count = gs.call(srv, "get", T)
    local t1 = clock()
    assert(count == n, ("wrong count %s, expected %d"):format(tostring(count), n))
    gs.stop(srv, "normal", T)
    return { value = n / (t1 - t0), unit = "casts/s", n = n }
  end, n)
end)

-- call round trip from a spawned client process, sequential calls.
workload("call", "call round trip, process -> server, N sequential calls", function(a)
  local n = a[1] or 200000
  return drive(WORKLOAD_TIMEOUT, function(n)
    local srv = assert(gs.start("bench_server", 0))
    local call = gs.call
    assert(call(srv, "ping") == "pong")
    local t0 = clock()
    for _ = 1, n do call(srv, "ping") end
    local t1 = clock()
    gs.stop(srv, "normal", T)
    return { value = (t1 - t0) / n * 1e6, unit = "us", n = n }
  end, n)
end)

--- The core-to-core cache-line round trip (ns), from bench/core_rtt.c when
--- BENCH_CORE_RTT names it (make bench does), else nil.
local function core_rtt()
  local exe = os.getenv("BENCH_CORE_RTT")
  if not exe or exe == "" then return nil end
  local f = io.popen(("'%s' 2>/dev/null"):format(exe:gsub("'", "'\\''")))
  local out = f and f:read("a") or ""
  if f then f:close() end
  return tonumber(out:match("rtt_ns=(%d+)"))
end

-- call round trip from the main script (a foreign thread): each call timed.
-- Beside it, the machine's core-to-core round trip just before and after
-- (rtt, their mean): the call crosses between two threads twice, and on a
-- virtual machine what that costs moves with the placement of its vCPUs.
workload("main_call", "call round trip, main script (foreign thread) -> server", function(a)
  local n = a[1] or 100000
  local rtt0 = core_rtt()
  local srv = assert(gs.start("bench_server", 0))
  local call = gs.call
  for _ = 1, 1000 do call(srv, "ping") end -- warm-up
  local ts = {}
  local t0 = clock()
  for i = 1, n do
    local s = clock()
    call(srv, "ping")
    ts[i] = clock() - s
  end
  local total = clock() - t0
  gs.stop(srv, "normal", T)
  local rtt1 = core_rtt()
  table.sort(ts)
  return { value = median_of_sorted(ts) * 1e6, unit = "us",
           p99 = percentile_of_sorted(ts, 0.99) * 1e6,
           max = ts[#ts] * 1e6, mean = total / n * 1e6, n = n,
           rtt = rtt0 and rtt1 and (rtt0 + rtt1) / 2 or nil }
end)

-- A call from a process whose own mailbox is flooded (DESIGN §1.3, issue 6):
-- waiting for a reply must look only at the reply, not scan the mailbox.
-- Median call time with F unrelated messages queued, divided by the median
-- with an empty mailbox.
workload("flood", "call from a process with F queued messages vs an empty mailbox", function(a)
  local f, m = a[1] or 500000, a[2] or 2000
  return drive(WORKLOAD_TIMEOUT, function(f, m)
    local srv = assert(gs.start("bench_server", 0))
    local call = gs.call
    local function median_call()
      local ts = {}
      for i = 1, m do
        local s = clock()
        call(srv, "ping", T)
        ts[i] = clock() - s
      end
      table.sort(ts)
      return median_of_sorted(ts)
    end
    for _ = 1, 1000 do call(srv, "ping", T) end -- warm-up
    local empty = median_call()
    local me, send = process.self(), process.send
    for i = 1, f do send(me, i) end
    local flooded = median_call()
    local queued = process.info(me).mailbox
    assert(queued >= f, ("only %d messages queued"):format(queued))
    gs.stop(srv, "normal", T)
    return { value = flooded / empty, unit = "x", empty_us = empty * 1e6,
             flooded_us = flooded * 1e6, n = m, queued = queued }
  end, f, m)
end)

-- C client processes x M calls each to one server.
workload("clients", "C client processes x M calls each to one server", function(a)
  local c, m = a[1] or 100, a[2] or 2000
  return drive(WORKLOAD_TIMEOUT, function(c, m)
    local srv = assert(gs.start("bench_server", 0))
    local me = process.self()
    local pids = {}
    for i = 1, c do
      pids[i] = process.spawn_link(function(srv, m, driver)
        if process.receive(T) ~= "go" then error("client: no go") end
        local call = gs.call
        for _ = 1, m do call(srv, "ping") end
        process.send(driver, "client_done")
      end, srv, m, me)
    end
    local t0 = clock()
    for i = 1, c do process.send(pids[i], "go") end
    for _ = 1, c do
      local x = process.receive(T)
      if x ~= "client_done" then error("clients: got " .. gs.describe(x)) end
    end
    local t1 = clock()
    gs.stop(srv, "normal", T)
    return { value = c * m / (t1 - t0), unit = "calls/s", n = c * m }
  end, c, m)
end)

-- Start N servers sequentially from one process and keep them; memory is the
-- RSS delta of the OS process. With `limit` (bytes), stop early when the RSS
-- passes it and report how far it got.
local function start_servers(n, limit)
  collectgarbage()
  local r0 = rss()
  local res = drive(WORKLOAD_TIMEOUT, function(n, limit, rss)
    local start = gs.start
    local t0 = clock()
    local started = n
    for i = 1, n do
      local pid, err = start("bench_server", i)
      if not pid then error(("start #%d failed: %s"):format(i, gs.describe(err))) end
      if limit and i % 10000 == 0 and rss() > limit then started = i break end
    end
    return { secs = clock() - t0, started = started }
  end, n, limit, rss)
  process.sleep(200)
  collectgarbage()
  local r1 = rss()
  local k = res.started
  return { value = k / res.secs, unit = "starts/s", mem = (r1 - r0) / k,
           mem_unit = "bytes/server", rss = r1, started = k, n = n }
end

workload("start", "start rate (start + init, sequential) and RSS per idle server", function(a)
  return start_servers(a[1] or 100000)
end)

-- 1,000,000 live idle servers (make bench-big). Stops early, and says so,
-- when the RSS passes BENCH_BIG_LIMIT_GB (default 10, the target) or 85 % of
-- the machine's memory, whichever is lower.
workload("big", "N live idle servers (default 1,000,000), resident memory", function(a)
  local n = a[1] or 1000000
  local limit = (tonumber(os.getenv("BENCH_BIG_LIMIT_GB")) or 10) * 2^30
  local f = io.open("/proc/meminfo", "r")
  if f then
    local total = tonumber(f:read("a"):match("MemTotal:%s+(%d+)"))
    f:close()
    if total and total * 1024 * 0.85 < limit then limit = total * 1024 * 0.85 end
  end
  local r = start_servers(n, limit)
  r.rate, r.rate_unit, r.value, r.unit = r.value, "starts/s", r.rss, "bytes"
  r.complete = r.started == n and "true" or "false"
  return r
end, false)

-- Not in `all` nor in compare.lua: start with a callback *table* (copied into
-- each new state by the codec) instead of a module name, for comparison.
workload("start_table", "as start, with a callback table instead of a module name", function(a)
  local n = a[1] or 20000
  return drive(WORKLOAD_TIMEOUT, function(n)
    local mod = require "bench_server"
    local start = gs.start
    local t0 = clock()
    for i = 1, n do assert(start(mod, i)) end
    return { value = n / (clock() - t0), unit = "starts/s", n = n }
  end, n)
end, false)

-- Savina ping-pong: N round trips between two processes.
workload("pingpong", "Savina ping-pong, N round trips", function(a)
  local n = a[1] or 200000
  return drive(WORKLOAD_TIMEOUT, function(n)
    local send, receive = process.send, process.receive
    local pong = process.spawn_link(function()
      local send, receive = process.send, process.receive
      while true do
        local m = receive(T)
        if m == nil then error("pong: timeout") end
        if m == "stop" then return end
        send(m[2], "pong")
      end
    end)
    local msg = { "ping", process.self() }
    local t0 = clock()
    for _ = 1, n do
      send(pong, msg)
      if receive(T) ~= "pong" then error("ping: timeout or bad reply") end
    end
    local t1 = clock()
    send(pong, "stop")
    return { value = n / (t1 - t0), unit = "roundtrips/s", n = n }
  end, n)
end)

-- Savina counting: N messages to a counter process, then ask for the count.
workload("counting", "Savina counting, N messages then a request for the count", function(a)
  local n = a[1] or 1000000
  return drive(WORKLOAD_TIMEOUT, function(n)
    local send = process.send
    local counter = process.spawn_link(function()
      local receive, c = process.receive, 0
      while true do
        local m = receive(T)
        if m == "inc" then c = c + 1
        elseif m == nil then error("counter: timeout")
        else process.send(m[2], { "count", c }) return end
      end
    end)
    local t0 = clock()
    for _ = 1, n do send(counter, "inc") end
    send(counter, { "get", process.self() })
    local r = process.receive(T)
    local t1 = clock()
    if type(r) ~= "table" or r[2] ~= n then error("counting: got " .. gs.describe(r)) end
    return { value = n / (t1 - t0), unit = "msgs/s", n = n }
  end, n)
end)

-- Savina thread ring: P processes in a ring, one token passed H times.
workload("threadring", "Savina thread ring, P processes, H hops", function(a)
  local p, h = a[1] or 100, a[2] or 1000000
  return drive(WORKLOAD_TIMEOUT, function(p, h)
    local me = process.self()
    local pids = {}
    for i = 1, p do
      pids[i] = process.spawn_link(function(main)
        local send, receive = process.send, process.receive
        local m = receive(T)
        if type(m) ~= "table" then error("ring: no next") end
        local nxt = m[2]
        while true do
          m = receive(T)
          if m == 0 then send(main, "ring_done")
          elseif m == "stop" then return
          elseif m == nil then error("ring: timeout")
          else send(nxt, m - 1) end
        end
      end, me)
    end
    for i = 1, p do process.send(pids[i], { "next", pids[i % p + 1] }) end
    local t0 = clock()
    process.send(pids[1], h)
    local r = process.receive(T)
    local t1 = clock()
    if r ~= "ring_done" then error("threadring: got " .. gs.describe(r)) end
    for i = 1, p do process.send(pids[i], "stop") end
    return { value = h / (t1 - t0), unit = "hops/s", n = h }
  end, p, h)
end)

-- Savina fork-join (creation): spawn N processes that each send one message back.
workload("forkjoin", "Savina fork-join creation, N processes each send one message back", function(a)
  local n = a[1] or 100000
  return drive(WORKLOAD_TIMEOUT, function(n)
    local me = process.self()
    local spawn, receive = process.spawn, process.receive
    local function child(parent) process.send(parent, "done") end
    local t0 = clock()
    for _ = 1, n do spawn(child, me) end
    for _ = 1, n do
      if receive(T) ~= "done" then error("forkjoin: timeout or bad message") end
    end
    local t1 = clock()
    return { value = n / (t1 - t0), unit = "spawns/s", n = n }
  end, n)
end)

-- Savina chameneos (redux, with a mall process): C creatures, N meetings.
workload("chameneos", "Savina chameneos with a mall, C creatures, N meetings", function(a)
  local c, n = a[1] or 100, a[2] or 200000
  return drive(WORKLOAD_TIMEOUT, function(c, n)
    local me = process.self()
    local t0 = clock()
    local mall = process.spawn_link(function(n, c, main)
      local send, receive = process.send, process.receive
      local waiting, faded, sum = nil, 0, 0
      while true do
        local m = receive(T)
        if m == nil then error("mall: timeout") end
        if m[1] == "meet" then
          if n == 0 then send(m[2], "stop")
          elseif waiting == nil then waiting = m
          else send(waiting[2], m) waiting = nil n = n - 1 end
        else -- { "faded", meetings }
          faded, sum = faded + 1, sum + m[2]
          if faded == c then send(main, { "mall_done", sum }) return end
        end
      end
    end, n, c, me)
    local colors = { "blue", "red", "yellow" }
    for i = 1, c do
      process.spawn_link(function(mall, color)
        local send, receive = process.send, process.receive
        local self = process.self()
        local function complement(a, b)
          if a == b then return a end
          if a ~= "blue" and b ~= "blue" then return "blue" end
          if a ~= "red" and b ~= "red" then return "red" end
          return "yellow"
        end
        local met = 0
        while true do
          send(mall, { "meet", self, color })
          local m = receive(T)
          if m == "stop" then send(mall, { "faded", met }) return
          elseif m == nil then error("chameneo: timeout")
          elseif m[1] == "meet" then
            color = complement(color, m[3])
            send(m[2], { "change", color })
            met = met + 1
          else -- { "change", color }
            color = m[2]
            met = met + 1
          end
        end
      end, mall, colors[i % 3 + 1])
    end
    local r = process.receive(T)
    local t1 = clock()
    if type(r) ~= "table" or r[2] ~= 2 * n then
      error("chameneos: got " .. gs.describe(r) .. ", expected " .. 2 * n .. " meetings")
    end
    return { value = n / (t1 - t0), unit = "meetings/s", n = n }
  end, c, n)
end)

-- ------------------------------------------------------------- TCP echo
--
-- The server is genserver.tcp: an acceptor process and one process per
-- connection (active = true, raw), echoing each {"tcp"} message back. The
-- load comes from bench/tcp_load (C, blocking, a thread per connection),
-- run from the main script's thread so that no worker is held by it; the
-- same program is also the plain blocking C echo server measured beside it.

local function tcp_load_bin()
  local bin = os.getenv("BENCH_TCP_LOAD") or (HERE .. "/../build/bench/tcp_load")
  local f = io.open(bin)
  if not f then error("no " .. bin .. " (make bench builds it)", 0) end
  f:close()
  return bin
end

-- Runs the load against port; returns its fields (rtt_us, rps, n).
local function tcp_client(bin, port, conns, rounds, size)
  local p = assert(io.popen(("timeout 200 %s client %d %d %d %d 2>&1")
    :format(bin, port, conns, rounds, size)))
  local out = p:read("a")
  p:close()
  local rtt, rps = out:match("rtt_us=(%S+) rps=(%S+)")
  if not rtt then error("tcp_load: " .. out, 0) end
  return tonumber(rtt), tonumber(rps)
end

-- The plain blocking C echo server: the same load against it.
local function c_echo(bin, conns, rounds, size)
  local portfile = os.tmpname()
  local p = assert(io.popen(("sh -c '%s server > %s & echo $!'"):format(bin, portfile)))
  local pid = p:read("l")
  p:close()
  local port
  for _ = 1, 500 do
    local f = io.open(portfile)
    local l = f and f:read("l")
    if f then f:close() end
    port = l and tonumber(l:match("port (%d+)"))
    if port then break end
    process.sleep(10)
  end
  local ok, rtt, rps = pcall(tcp_client, bin, port or 0, conns, rounds, size)
  os.execute("kill " .. pid .. " 2>/dev/null")
  os.remove(portfile)
  if not ok then error(rtt, 0) end
  return rtt, rps
end

local function echo_handler()
  local tcp = require "genserver.tcp"
  local process = require "genserver.process"
  local m = process.receive(function(x) return type(x) == "table" and x[1] == "own" end, 60000)
  local s = m[2]
  tcp.setopts(s, { active = true })
  local send = tcp.send
  while true do
    local x = process.receive()
    if x.sock == s then
      if x[1] ~= "tcp" then return end
      send(s, x.data)
    end
  end
end

local function echo_acceptor(ls, handler)
  local tcp = require "genserver.tcp"
  local process = require "genserver.process"
  while true do
    local s = tcp.accept(ls)
    if not s then return end
    local pid = process.spawn(handler)
    tcp.controlling_process(s, pid)
    process.send(pid, { "own", s })
  end
end

local function tcp_bench(conns, rounds)
  local tcp = require "genserver.tcp"
  local bin = tcp_load_bin()
  local ls = assert(tcp.listen(0, { active = false, nodelay = true, backlog = 512 }))
  local port = tcp.sockname(ls).port
  process.spawn(echo_acceptor, ls, echo_handler)
  local rtt, rps = tcp_client(bin, port, conns, rounds, 64)
  tcp.close(ls)
  local crtt, crps = c_echo(bin, conns, rounds, 64)
  return rtt, rps, crtt, crps
end

workload("tcp_echo", "TCP echo round trip, 1 connection, N × 64 bytes (beside plain C)", function(a)
  local n = a[1] or 10000
  local rtt, _, crtt = tcp_bench(1, n)
  return { value = rtt, unit = "us", n = n, c_value = crtt, c_ratio = rtt / crtt }
end)

workload("tcp_rps", "TCP echo requests/s, C connections × N round trips (beside plain C)", function(a)
  local c, n = a[1] or 100, a[2] or 2000
  local _, rps, _, crps = tcp_bench(c, n)
  return { value = rps, unit = "req/s", n = c * n, c_value = crps, c_ratio = rps / crps }
end)

-- ------------------------------------------------------------------- main

local function fmt(v)
  if math.type(v) == "float" then
    local s = ("%.4f"):format(v):gsub("0+$", ""):gsub("%.$", "")
    return s
  end
  return tostring(v)
end

local function run_one(name, args)
  local ok, res = pcall(W[name], args)
  if not ok then
    io.write(("ERROR workload=%s %s\n"):format(name, tostring(res):gsub("\n", " | ")))
    io.flush()
    return false
  end
  res.workers = runtime.stats().workers
  local keys = {}
  for k in pairs(res) do if k ~= "value" and k ~= "unit" then keys[#keys + 1] = k end end
  table.sort(keys)
  local parts = { "RESULT workload=" .. name, "value=" .. fmt(res.value), "unit=" .. res.unit }
  for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. fmt(res[k]) end
  io.write(table.concat(parts, " "), "\n")
  io.flush()
  return true
end

local name = arg[1]
if name == nil or name == "list" or name == "-h" or name == "--help" then
  if name == nil then io.stderr:write("usage: lua5.4 bench/run.lua WORKLOAD|all|list [N ...]\n") end
  local names = {}
  for k in pairs(W) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do io.write(("%-11s %s\n"):format(k, DESC[k])) end
  os.exit(name == nil and 2 or 0)
end

local args = {}
for i = 2, #arg do
  local v = math.tointeger(tonumber(arg[i]))
  if not v then io.stderr:write("bad argument: " .. arg[i] .. "\n") os.exit(2) end
  args[#args + 1] = v
end

local all_ok = true
if name == "all" then
  for _, k in ipairs(ORDER) do all_ok = run_one(k, {}) and all_ok end
elseif W[name] then
  all_ok = run_one(name, args)
else
  io.write(("ERROR workload=%s unknown workload (try: lua5.4 bench/run.lua list)\n"):format(name))
  all_ok = false
end
os.exit(all_ok and 0 or 1)
