-- Specs for the DESIGN.md §2.3 additions: process.send_interval (ticks
-- until cancelled or the destination is gone; cancel_timer gives the ms to
-- the next tick), process.now (monotonic ms), and process.info's fields
-- (links and monitors as lists, monitored_by, trap_exit, messages_in/out,
-- reductions, current, vsn, server).
--
-- No assertion is about speed: ticks are counted, never timed; every
-- wait is bounded.
local gs = require "genserver"
local process = require "genserver.process"

local function raises(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok)
  return err
end

local function is_tick(tag)
  return function(m) return m == tag end
end

describe("process.send_interval", function()
  it("sends the message again and again until cancelled", function()
    local tref = process.send_interval(5, process.self(), "tick")
    assert.is_true(process.is_ref(tref))
    for _ = 1, 3 do assert.are.equal("tick", process.receive(is_tick("tick"), 5000)) end
    local left = process.cancel_timer(tref)
    assert.are.equal("integer", math.type(left))
    assert.is_true(left >= 0 and left <= 5)
    assert.is_false(process.cancel_timer(tref)) -- cancelled: nothing left
    -- after cancel_timer no new tick is queued: drain what came before it
    while process.receive(is_tick("tick"), 0) do end
    process.sleep(30)
    assert.is_nil(process.receive(is_tick("tick"), 0))
  end)

  -- A timer that ended by itself answers cancel_timer with false; one
  -- still armed is cancelled by the probe, so the probe re-arms it.
  it("ends by itself once its destination process is dead", function()
    local pid = process.spawn(function() end)
    local ref = process.monitor(pid)
    process.receive(function(m) return type(m) == "table" and m.ref == ref end, 5000)
    local tref = process.send_interval(1, pid, "tick")
    local gone = false
    -- each look cancels a live timer, so re-arm and sleep longer each time:
    -- soon a sleep outlasts the interval and a tick finds the pid dead
    for i = 1, 200 do
      process.sleep(math.min(i, 200))
      if process.cancel_timer(tref) == false then gone = true break end
      tref = process.send_interval(1, pid, "tick") -- re-arm and look again
    end
    assert.is_true(gone)
  end)

  it("resolves a registered name at each tick and stops when nobody holds it", function()
    local me = process.self()
    local name = "timers_spec_dest"
    process.register(name)
    local tref = process.send_interval(3, name, "named tick")
    assert.are.equal("named tick", process.receive(is_tick("named tick"), 5000))
    process.unregister(name)
    local gone = false
    for i = 1, 200 do
      process.sleep(math.min(i, 200)) -- longer each time: soon past the interval
      if process.cancel_timer(tref) == false then gone = true break end
      tref = process.send_interval(3, name, "named tick")
    end
    assert.is_true(gone)
    while process.receive(is_tick("named tick"), 0) do end
    assert.are.equal(me, process.self())
  end)

  it("refuses an interval under 1 ms, infinity, and a bad destination", function()
    assert.matches("at least 1 ms", raises(function() process.send_interval(0, process.self(), 1) end))
    assert.matches("number expected", raises(function() process.send_interval("infinity", process.self(), 1) end))
    assert.matches("at least 1 ms", raises(function() process.send_interval(math.huge, process.self(), 1) end))
    raises(function() process.send_interval(5, 42, 1) end)
    raises(function() process.send_interval(5, process.self(), io.stdout) end)
  end)
end)

describe("process.now", function()
  it("is a monotonic clock in ms (a float)", function()
    local a = process.now()
    assert.are.equal("float", math.type(a))
    process.sleep(20)
    local b = process.now()
    assert.is_true(b >= a + 19) -- a wait of 20 ms is at least 19 ms later on it
  end)
end)

describe("process.info", function()
  it("lists the processes a process monitors, and drops fired or removed monitors", function()
    local a = process.spawn(function() process.receive() end)
    local b = process.spawn(function() process.receive() end)
    local ra = process.monitor(a)
    local rb = process.monitor(b)
    local mine = process.info(process.self()).monitors
    table.sort(mine, function(x, y) return tostring(x) < tostring(y) end)
    local want = { a, b }
    table.sort(want, function(x, y) return tostring(x) < tostring(y) end)
    assert.are.same(want, mine)
    assert.are.same({ process.self() }, process.info(a).monitored_by)
    process.demonitor(ra)
    assert.are.same({ b }, process.info(process.self()).monitors)
    process.send(b, "stop")
    process.receive(function(m) return type(m) == "table" and m.ref == rb end, 5000)
    assert.are.same({}, process.info(process.self()).monitors)
    process.send(a, "stop")
  end)

  it("a call's own monitor is not among them", function()
    local S = {}
    function S.handle_call(_, _, s) return "reply", #process.info(s).monitors, s end
    local pid = assert(gs.start(S, process.self()))
    assert.are.equal(0, gs.call(pid, "how many"))
    gs.stop(pid)
  end)

  it("spawn_monitor's monitor is listed", function()
    local pid, ref = process.spawn_monitor(function() process.receive() end)
    assert.are.same({ pid }, process.info(process.self()).monitors)
    process.demonitor(ref)
    process.send(pid, "stop")
  end)

  it("reports trap_exit", function()
    local pid = process.spawn(function()
      process.trap_exit(true)
      process.receive()
    end)
    for _ = 1, 2000 do
      if process.info(pid).trap_exit then break end
      process.sleep(1)
    end
    assert.is_true(process.info(pid).trap_exit)
    assert.is_false(process.info(process.self()).trap_exit)
    process.send(pid, "stop")
  end)

  it("counts messages in and out, reductions, and names the callback running", function()
    local me = process.self()
    local S = { name = "timers_spec_srv", vsn = "7.1" }
    function S.init() return "ok", 0 end
    function S.handle_call(req, _, s)
      if req == "where" then return "reply", process.info(process.self()).current, s end
      if req == "block" then
        process.send(me, "blocked")
        process.receive(function(m) return m == "go" end, 5000)
      end
      return "reply", s, s
    end
    function S.handle_cast(_, s) process.send(me, "seen") return "noreply", s + 1 end
    local pid = assert(gs.start(S))
    local before = process.info(pid)
    gs.cast(pid, 1)
    process.receive(is_tick("seen"), 5000)
    gs.call(pid, "get")
    local after = process.info(pid)
    assert.are.equal(before.messages_in + 2, after.messages_in)
    assert.are.equal(before.messages_out + 2, after.messages_out) -- "seen", the reply
    assert.are.equal(before.reductions + 2, after.reductions)
    assert.are.equal("handle_call", gs.call(pid, "where"))
    assert.is_nil(process.info(pid).current) -- waiting for a message
    assert.are.equal("7.1", after.vsn)
    assert.is_true(after.server)
    assert.is_nil(process.info(process.self()).server)
    assert.are.equal("timers_spec_srv", after.module)
    -- while a call is being handled, current says so
    local req = gs.send_request(pid, "block")
    process.receive(is_tick("blocked"), 5000)
    assert.are.equal("handle_call", process.info(pid).current)
    process.send(pid, "go")
    gs.wait_response(req, 5000)
    gs.stop(pid)
  end)

  it("keeps the fields it had: status, mailbox, memory, name, links", function()
    local pid = process.spawn_link(function() process.receive() end)
    local info = process.info(pid)
    assert.is_string(info.status)
    assert.are.equal(0, info.mailbox)
    assert.are.equal("integer", math.type(info.memory))
    assert.are.same({ process.self() }, info.links)
    process.unlink(pid)
    process.send(pid, "stop")
  end)
end)

-- The timers live in shards, one per arming thread (csrc/core/timer.c): a
-- timer id names its shard, and one timer thread sleeps until the earliest
-- deadline over all of them. These prove what that must keep: an early
-- timer armed on any shard while the thread sleeps toward a later one
-- wakes it; ids of cancelled timers never cancel a newer timer in the same
-- slot; many processes arming, cancelling and firing at once lose nothing.
describe("timers across shards", function()
  local WAIT = 10000 -- ms: "soon", with room for a loaded machine

  it("a timer earlier than every other one fires while the timer thread sleeps", function()
    local me = process.self()
    -- the thread's next wake-up is this one, a minute away
    local far = process.send_after(60000, me, "far")
    process.sleep(20) -- its own timer fires; the thread then sleeps toward "far"
    -- armed from another process (a worker's shard, not this thread's)
    process.spawn(function()
      local p = require "genserver.process"
      p.send_after(10, me, "early from a process")
    end)
    assert.are.equal("early from a process", process.receive(is_tick("early from a process"), WAIT))
    process.sleep(20)
    -- and from this thread's shard, whose top is the far timer's
    process.send_after(10, me, "early from here")
    assert.are.equal("early from here", process.receive(is_tick("early from here"), WAIT))
    assert.is_true(process.cancel_timer(far) > 0)
  end)

  it("timers armed by several processes reach one process in deadline order", function()
    local me = process.self()
    local base = process.now() + 1000 -- every process arms well before this
    for i, off in ipairs({ 400, 0, 200 }) do
      process.spawn(function()
        local p = require "genserver.process"
        local ms = math.max(0, math.floor(base + off - p.now()))
        p.send_after(ms, me, { "ordered", off })
        p.send(me, { "armed", i })
      end)
    end
    local got = {}
    for _ = 1, 3 do
      local m = process.receive(function(m) return type(m) == "table" and m[1] == "ordered" end, WAIT)
      assert.is_table(m)
      got[#got + 1] = m[2]
    end
    assert.are.same({ 0, 200, 400 }, got)
    for _ = 1, 3 do
      process.receive(function(m) return type(m) == "table" and m[1] == "armed" end, WAIT)
    end
  end)

  it("a cancelled timer's id does not cancel the timer that reuses its slot", function()
    local me = process.self()
    local old = process.send_after(60000, me, "old")
    assert.is_true(process.cancel_timer(old) > 0)
    local new = process.send_after(20, me, "new") -- the freed slot, a new generation
    assert.are_not.equal(old, new)
    assert.is_false(process.cancel_timer(old))
    assert.are.equal("new", process.receive(is_tick("new"), WAIT))
    assert.is_false(process.cancel_timer(new))
  end)

  it("many processes arming, cancelling and firing timers at once lose none", function()
    local me = process.self()
    local N, ROUNDS = 16, 150
    local S = { handle_call = function(req, _, st)
      if req == "slow" then return "noreply", st end
      return "reply", req, st
    end }
    local server = assert(gs.start(S, {}))
    local tick = process.send_interval(2, me, "stress tick")
    for w = 1, N do
      process.spawn(function()
        local p = require "genserver.process"
        local g = require "genserver"
        local self = p.self()
        local bad
        for r = 1, ROUNDS do
          -- one armed far away and cancelled: its ms left is a number
          local far = p.send_after(60000, self, "far")
          -- one that must fire, between others armed and cancelled
          p.send_after(r % 3, self, { "due", r })
          local left = p.cancel_timer(far)
          if math.type(left) ~= "integer" then bad = "cancel gave " .. tostring(left) break end
          local m = p.receive(function(x) return type(x) == "table" and x[1] == "due" and x[2] == r end, 10000)
          if not m then bad = "timer " .. r .. " never came" break end
          -- a receive time-out, and a call answered before its time-out
          if p.receive(function(x) return x == "nothing" end, r % 2) ~= nil then bad = "receive" break end
          if g.call(server, r, 10000) ~= r then bad = "call" break end
          if r % 25 == 0 then
            local ok, err = pcall(g.call, server, "slow", 1 + r % 3)
            if ok or type(err) ~= "table" or err.reason ~= "timeout" then bad = "slow call" break end
          end
        end
        if p.receive(function(x) return x == "far" end, 0) then bad = "a cancelled timer fired" end
        p.send(me, { "stress done", w, bad or "ok" })
      end)
    end
    local done = {}
    for _ = 1, N do
      local m = process.receive(function(x) return type(x) == "table" and x[1] == "stress done" end, 120000)
      assert.is_table(m, "a process never finished")
      done[m[2]] = m[3]
    end
    for w = 1, N do assert.are.equal("ok", done[w], "process " .. w) end
    assert.are.equal("stress tick", process.receive(is_tick("stress tick"), WAIT))
    assert.is_true(process.cancel_timer(tick) >= 0)
    while process.receive(is_tick("stress tick"), 0) do end
    gs.stop(server)
  end)
end)
