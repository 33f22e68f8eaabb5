-- spec/support/st_racer.lua: the body of the race loops of
-- spec/stress_spec.lua. It traps exits and runs `n` rounds of one race,
-- then sends { "race_done", what, result } to `main`, where result is
-- { ok = true, counts = {...} } or { ok = false, why = "..." }.
--
-- Races ("what"):
--   "link_monitor"  a victim ends (returns, raises, exits, or is killed by a
--                   third process) while this process links to it and
--                   monitors it, in both orders: exactly one DOWN and one
--                   EXIT must come, each with the victim's reason or noproc.
--   "exit_signals"  a sleeping victim gets exit signals from three
--                   processes at once ("kill", "shutdown_x", "mine"):
--                   exactly one DOWN, with one of the reasons ("killed"
--                   for "kill").
--   "demonitor"     monitor a victim that is ending, then
--                   demonitor(ref, "flush"): no DOWN for that ref may be
--                   seen afterwards.
local process = require "genserver.process"

local WAIT = 30000 -- ms; only a failure waits this long

local function bodies()
  return {
    [0] = function() end,
    [1] = function() error("racer_boom") end,
    [2] = function() require("genserver.process").exit("bye") end,
    [3] = function() require("genserver.process").receive(30000) end,
  }
end

local function killer(pid, reason)
  require("genserver.process").exit(pid, reason)
end

local function is_down(ref)
  return function(m)
    return type(m) == "table" and m[1] == "DOWN" and m.ref == ref
  end
end

local function is_exit(pid)
  return function(m)
    return type(m) == "table" and m[1] == "EXIT" and m.pid == pid
  end
end

local function reason_ok(kind, r)
  if r == "noproc" then return true end
  if kind == 0 then return r == "normal" end
  if kind == 1 then
    return type(r) == "table" and type(r.error) == "string" and
      r.error:find("racer_boom", 1, true) ~= nil
  end
  if kind == 2 then return r == "bye" end
  return r == "killed"
end

local function describe(v)
  return require("genserver").describe(v)
end

-- Everything left in the mailbox up to a marker sent now.
local function leftovers()
  local marker = process.make_ref()
  process.send(process.self(), { "marker", marker })
  local left = {}
  while true do
    local m = process.receive(WAIT)
    if m == nil then return nil end
    if type(m) == "table" and m[1] == "marker" and m[2] == marker then return left end
    left[#left + 1] = m
  end
end

local race = {}

function race.link_monitor(n)
  local B = bodies()
  local counts = { noproc_down = 0, noproc_exit = 0, rounds = 0 }
  for i = 1, n do
    local kind = i % 4
    local pid = process.spawn(B[kind])
    if kind == 3 then process.spawn(killer, pid, "kill") end
    local ref
    if i % 2 == 0 then
      ref = process.monitor(pid)
      process.link(pid)
    else
      process.link(pid)
      ref = process.monitor(pid)
    end
    local d = process.receive(is_down(ref), WAIT)
    if d == nil then return nil, ("round %d: no DOWN"):format(i) end
    if d.pid ~= pid or not reason_ok(kind, d.reason) then
      return nil, ("round %d (kind %d): bad DOWN %s"):format(i, kind, describe(d))
    end
    local e = process.receive(is_exit(pid), WAIT)
    if e == nil then return nil, ("round %d (kind %d): no EXIT"):format(i, kind) end
    if not reason_ok(kind, e.reason) then
      return nil, ("round %d (kind %d): bad EXIT %s"):format(i, kind, describe(e))
    end
    if d.reason == "noproc" then counts.noproc_down = counts.noproc_down + 1 end
    if e.reason == "noproc" then counts.noproc_exit = counts.noproc_exit + 1 end
    counts.rounds = counts.rounds + 1
  end
  local left = leftovers()
  if left == nil then return nil, "the marker never came back" end
  for _, m in ipairs(left) do
    if type(m) == "table" and (m[1] == "DOWN" or m[1] == "EXIT") then
      return nil, "a second DOWN/EXIT: " .. describe(m)
    end
  end
  return counts
end

function race.exit_signals(n)
  local B = bodies()
  local counts = { killed = 0, shutdown_x = 0, mine = 0, rounds = 0 }
  for i = 1, n do
    local pid = process.spawn(B[3])
    local ref = process.monitor(pid)
    process.spawn(killer, pid, "kill")
    process.spawn(killer, pid, "shutdown_x")
    process.exit(pid, "mine")
    local d = process.receive(is_down(ref), WAIT)
    if d == nil then return nil, ("round %d: no DOWN"):format(i) end
    if counts[d.reason] == nil or d.reason == "rounds" then
      return nil, ("round %d: bad DOWN %s"):format(i, describe(d))
    end
    counts[d.reason] = counts[d.reason] + 1
    counts.rounds = counts.rounds + 1
  end
  local left = leftovers()
  if left == nil then return nil, "the marker never came back" end
  for _, m in ipairs(left) do
    if type(m) == "table" and m[1] == "DOWN" then
      return nil, "a second DOWN: " .. describe(m)
    end
  end
  return counts
end

function race.demonitor(n)
  local B = bodies()
  local refs = {}
  local pids = {}
  for i = 1, n do
    local pid = process.spawn(B[i % 3])
    local ref = process.monitor(pid)
    process.demonitor(ref, "flush")
    refs[ref] = i
    pids[i] = pid
  end
  -- every victim is gone (a fresh monitor's DOWN says so) ...
  for i = 1, n do
    local ref = process.monitor(pids[i])
    if process.receive(is_down(ref), WAIT) == nil then
      return nil, ("victim %d never ended"):format(i)
    end
  end
  -- ... and no DOWN of a flushed monitor ever shows
  local left = leftovers()
  if left == nil then return nil, "the marker never came back" end
  for _, m in ipairs(left) do
    if type(m) == "table" and m[1] == "DOWN" and refs[m.ref] then
      return nil, ("a DOWN after demonitor(ref, 'flush') (victim %d): %s")
        :format(refs[m.ref], describe(m))
    end
  end
  return { rounds = n }
end

return function(main, what, n)
  process.trap_exit(true)
  local ok, counts, why = pcall(race[what], n)
  local result
  if not ok then result = { ok = false, why = "raised: " .. tostring(counts) }
  elseif counts == nil then result = { ok = false, why = why }
  else result = { ok = true, counts = counts } end
  process.send(main, { "race_done", what, result })
end
