-- Scheduling and receive edge cases found in review: each test failed (or
-- crashed) before its fix.
package.path = "spec/support/?.lua;" .. package.path

local gs = require "genserver"
local process = require "genserver.process"
local core = require "genserver.core"
local U = require "pr_util"

describe("receive with a match function", function()
  it("refuses to receive or wait inside the match function, and loses nothing", function()
    local me = process.self()
    local pid = process.spawn(function(parent)
      local P = require "genserver.process"
      local me2 = P.self()
      for _, v in ipairs({ "a", "b", "c" }) do P.send(me2, v) end
      local ok, err = pcall(P.receive, function(m)
        P.receive(0) -- would free the messages being walked
        return m == "c"
      end, 100)
      local rest = {}
      for _ = 1, 3 do rest[#rest + 1] = P.receive(100) end
      P.send(parent, { ok = ok, err = tostring(err), rest = rest })
    end, me)
    local r = process.receive(function(m) return type(m) == "table" and m.rest end, 5000)
    assert.is_not_nil(r, "the process answered")
    assert.is_false(r.ok)
    assert.matches("inside a receive match function", r.err)
    assert.are.same({ "a", "b", "c" }, r.rest)
    assert.is_false(process.alive(pid) and false)
  end)
end)

describe("fairness", function()
  it("a call/reply pair handing each other the worker does not starve the rest", function()
    -- with one worker the pair used to keep the runnext slot forever
    local echo = assert(gs.start("gs_echo", nil))
    local me = process.self()
    local pinger = process.spawn(function(server)
      local g = require "genserver"
      while true do g.call(server, "ping") end
    end, echo)
    process.sleep(20)
    local late = process.spawn(function(parent)
      require("genserver.process").send(parent, "late one ran")
    end, me)
    assert.are.equal("late one ran", process.receive(function(m) return m == "late one ran" end, 5000))
    process.exit(pinger, "kill")
    gs.stop(echo)
    assert.is_not_nil(late)
  end)

  it("nor a process queued behind it on the same worker's own queue", function()
    -- spawned by a process, the late one waits on its worker's own queue
    -- (with one worker: nobody is idle to take it from the shared queue)
    local me = process.self()
    local driver = process.spawn(function(parent)
      local P = require "genserver.process"
      local g = require "genserver"
      local echo = assert(g.start("gs_echo", nil))
      local pinger = P.spawn(function(server)
        local g2 = require "genserver"
        while true do g2.call(server, "ping") end
      end, echo)
      P.sleep(20)
      P.spawn(function(to)
        require("genserver.process").send(to, "late one ran")
      end, parent)
      P.send(parent, { "pair", pinger, echo })
      P.receive(10000)
    end, me)
    local pair = process.receive(function(m) return type(m) == "table" and m[1] == "pair" end, 5000)
    assert.is_not_nil(pair, "the driver spawned the late one")
    local late = process.receive(function(m) return m == "late one ran" end, 5000)
    process.exit(pair[2], "kill")
    gs.stop(pair[3])
    process.exit(driver, "kill")
    assert.are.equal("late one ran", late)
  end)
end)

describe("spawn", function()
  it("reads options without metamethods and leaks no process when one raises", function()
    local before = require("genserver.runtime").stats().processes
    local opts = setmetatable({}, { __index = function(_, k)
      if k == "module" then error("boom") end
    end })
    local pid = core.spawn(function() end, opts)
    assert.is_true(core.is_pid(pid))
    local bad = setmetatable({}, { __index = function() error("boom") end })
    assert.has_error(function() core.spawn(function() end, bad) end)
    for _ = 1, 200 do
      if require("genserver.runtime").stats().processes <= before then break end
      process.sleep(5)
    end
    assert.is_true(require("genserver.runtime").stats().processes <= before)
  end)
end)

describe("time-outs near the bound", function()
  it("a time-out of 1.8e13 ms waits (it used to wrap around and expire at once)", function()
    local me = process.self()
    process.spawn(function(parent)
      local P = require "genserver.process"
      P.sleep(30)
      P.send(parent, "woke")
    end, me)
    assert.are.equal("woke", process.receive(1.8446744e13))
  end)
end)

describe("the timer thread's wake-ups", function()
  -- The timer thread is signalled only for a deadline earlier than its own
  -- next wake-up (timer.c): a short timer armed while it sleeps until a long
  -- one must still wake it, and so must a short one after a cancelled top.
  it("fires a short timer armed after a long one, before the long one", function()
    local me = process.self()
    local long = process.send_after(20000, me, "long")
    process.send_after(20, me, "short")
    assert.are.equal("short", process.receive(10000))
    process.cancel_timer(long)
    local t2 = process.send_after(30000, me, "long2")
    process.cancel_timer(t2)
    process.send_after(10, me, "short2")
    assert.are.equal("short2", process.receive(10000))
    assert.is_nil(process.receive(0))
  end)
end)

describe("busy loops inside nested coroutines", function()
  local function spin_in(kind)
    return process.spawn(function(k)
      if k == "wrap" then
        coroutine.wrap(function() while true do end end)()
      else
        local co = coroutine.create(function() local x = 0 while true do x = x + 1 end end)
        coroutine.resume(co)
      end
    end, kind)
  end

  for _, kind in ipairs({ "wrap", "resume" }) do
    it("(" .. kind .. ") are preempted: others still run, and kill ends them", function()
      local spinner = spin_in(kind)
      process.sleep(30)
      local echo = assert(gs.start("gs_echo", nil))
      for i = 1, 5 do assert.are.equal(i, gs.call(echo, i)) end
      gs.stop(echo)
      local ref = process.monitor(spinner)
      process.exit(spinner, "kill")
      local down = process.receive(function(m)
        return type(m) == "table" and m[1] == "DOWN" and m.ref == ref
      end, 5000)
      assert.is_not_nil(down)
      assert.are.equal("killed", down.reason)
    end)
  end

  it("coroutines keep their usual behaviour in a process", function()
    local me = process.self()
    process.spawn(function(parent)
      local P = require "genserver.process"
      local gen = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end return "done" end)
      local out = { gen(), gen(), gen(), gen() }
      local co = coroutine.create(function(a, b) local c = coroutine.yield(a + b) return c * 2 end)
      local r1 = { coroutine.resume(co, 1, 2) }
      local r2 = { coroutine.resume(co, 10) }
      local r3 = { coroutine.resume(co) }
      local ok, e = pcall(coroutine.wrap(function() error("oops") end))
      P.send(parent, { out = out, r1 = r1, r2 = r2, r3 = r3, ok = ok, e = e,
                       st = coroutine.status(co), self = { coroutine.resume(coroutine.running()) } })
    end, me)
    local r = process.receive(function(m) return type(m) == "table" and m.out end, 5000)
    assert.are.same({ 1, 2, 3, "done" }, r.out)
    assert.are.same({ true, 3 }, r.r1)
    assert.are.same({ true, 20 }, r.r2)
    assert.are.same({ false, "cannot resume dead coroutine" }, r.r3)
    assert.is_false(r.ok)
    assert.matches("oops", r.e)
    assert.are.equal("dead", r.st)
    assert.is_false(r.self[1])
  end)
end)

describe("a callback blocked in a long C call", function()
  -- With a run queue per worker, a server whose home worker was blocked in
  -- a C call (here os.execute("sleep 2") in another process's turn) was
  -- queued there, or stayed queued there, until the call returned: a call
  -- to it from the other worker timed out although that worker idled. In
  -- a child lua5.4 with 2 workers, so a hang is a failed test.
  local CHILD = [[
    package.path = "spec/support/?.lua;" .. package.path
    local gs = require "genserver"
    local process = require "genserver.process"
    local me, wake = process.self(), os.getenv("SC_WAKE") == "1"
    process.spawn(function(main, wake)
      local g = require "genserver"
      local pr = require "genserver.process"
      local T = {}
      function T.init() return "ok", 0 end
      function T.handle_call(r, _, s) return "reply", r, s end
      function T.handle_info(_, s) return "noreply", s end
      local srv = assert(g.start(T, nil))
      g.call(srv, "hello") -- the server runs on this worker: its home
      pr.send(main, srv)
      if wake then pr.send(srv, "wake") end -- queued on this worker
      os.execute("sleep 2") -- this worker is held for 2 s
    end, me, wake)
    local srv = process.receive(5000)
    process.sleep(100)
    process.spawn(function(main, srv)
      local g = require "genserver"
      local ok, r = pcall(g.call, srv, "ping", 1000)
      require("genserver.process").send(main, ok and r or ("failed: " .. tostring(r and r.reason or r)))
    end, me, srv)
    print(process.receive(5000))
  ]]
  for _, wake in ipairs({ false, true }) do
    it(("does not hold up a server homed on its worker%s"):format(
      wake and ", already queued there" or ""), function()
      local ok, code, out = U.run_child(CHILD, {
        timeout = 30, env = { GENSERVER_WORKERS = "2", SC_WAKE = wake and "1" or "0" } })
      assert.is_true(ok, out)
      assert.are.equal(0, code, out)
      assert.are.equal("ping\n", out)
    end)
  end
end)
