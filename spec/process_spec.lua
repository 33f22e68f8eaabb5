-- spec/process_spec.lua: the process primitives of genserver.process
-- (DESIGN.md §2.3, with §1.2 and §1.5 for exit signals and foreign processes).
--
-- Run: make test SPECS=spec/process_spec.lua   (under GENSERVER_WORKERS=1 and 4)
-- Every wait has a time-out, so a broken primitive fails a test instead of
-- hanging the run; no test measures time.

local U = require "pr_util"
local process = require "genserver.process"
local genserver = require "genserver"

local T = U.TIMEOUT

local function is_down(ref)
  return function(m) return type(m) == "table" and m[1] == "DOWN" and m.ref == ref end
end

describe("genserver.process", function()

  before_each(function() U.flush() end)

  -- ------------------------------------------------------------- self

  describe("self", function()
    it("returns the same pid object every time", function()
      local a, b = process.self(), process.self()
      assert.is_true(rawequal(a, b))
      assert.is_true(process.is_pid(a))
      assert.is_false(process.is_ref(a))
    end)

    it("prints as <0.N.G>", function()
      assert.matches("^<0%.%d+%.%d+>$", tostring(process.self()))
    end)

    it("gives a spawned process its own pid, the one spawn returned", function()
      local me = process.self()
      local pid = process.spawn(function(parent)
        local p = require "genserver.process"
        p.send(parent, { "me", p.self(), rawequal(p.self(), p.self()) })
      end, me)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "me" end)
      assert.are.equal(pid, m[2])
      assert.is_true(m[3])
      assert.are_not.equal(me, m[2])
    end)
  end)

  -- ------------------------------------------------------------ spawn

  describe("spawn", function()
    it("runs a function with its upvalues copied", function()
      local n, t = 21, { x = 1, list = { "a", "b" } }
      local insert = table.insert
      local gs = require "genserver"
      local me = process.self()
      process.spawn(function()
        local out = {}
        insert(out, n * 2)
        insert(out, t.x + #t.list)
        insert(out, type(gs.call) == "function" and rawequal(gs, require "genserver"))
        insert(out, rawequal(insert, require("table").insert))
        require("genserver.process").send(me, { "up", out })
      end)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "up" end)
      assert.are.same({ 42, 3, true, true }, m[2])
    end)

    it("copies upvalues: changes in the child do not reach the parent", function()
      local t = { v = 1 }
      local me = process.self()
      process.spawn(function()
        t.v = 99
        require("genserver.process").send(me, { "changed", t.v })
      end)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "changed" end)
      assert.are.equal(99, m[2])
      assert.are.equal(1, t.v)
    end)

    it("passes spawn arguments, nils and count included", function()
      local me = process.self()
      process.spawn(function(parent, a, b, c, d)
        require("genserver.process").send(parent,
          { "args", n = select("#", a, b, c, d), a, b, c, d })
      end, me, 1, nil, { k = "v" }, "four")
      local m = U.await(function(x) return type(x) == "table" and x[1] == "args" end)
      assert.are.equal(1, m[2])
      assert.is_nil(m[3])
      assert.are.same({ k = "v" }, m[4])
      assert.are.equal("four", m[5])
      assert.are.equal(4, m.n)
    end)

    it("runs a module given by name that returns a function", function()
      local pid = process.spawn("pr_body_fn", process.self(), "x", nil, 3)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "pr_body_fn" end)
      assert.are.equal(3, m.n)
      assert.are.equal("x", m[2])
      assert.is_nil(m[3])
      assert.are.equal(3, m[4])
      assert.is_true(process.is_pid(pid))
    end)

    it("runs a module given by name that is a table with main", function()
      local pid = process.spawn("pr_body_main", process.self(), 21)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "pr_body_main" end)
      assert.are.equal(42, m[2])
      assert.are.equal(pid, m.self)
    end)

    it("a module that cannot be loaded ends the process with an error reason", function()
      local pid, ref = process.spawn_monitor("pr_no_such_module_anywhere")
      local d = U.await_down(ref)
      assert.are.equal(pid, d.pid)
      assert.are.equal("table", type(d.reason))
      assert.matches("pr_no_such_module_anywhere", tostring(d.reason.error))
    end)

    it("refuses a body that is neither a function nor a name", function()
      assert.has_error(function() process.spawn(42) end)
      assert.has_error(function() process.spawn({}) end)
    end)
  end)

  describe("spawn_monitor", function()
    it("returns pid and ref; DOWN 'normal' when the body returns", function()
      local pid, ref = process.spawn_monitor(function() return 1 end)
      assert.is_true(process.is_pid(pid))
      assert.is_true(process.is_ref(ref))
      local d = U.await_down(ref)
      assert.are.equal("DOWN", d[1])
      assert.are.equal(pid, d.pid)
      assert.are.equal(ref, d.ref)
      assert.are.equal("normal", d.reason)
    end)

    it("DOWN with { error, traceback } when the body raises", function()
      local pid, ref = process.spawn_monitor(function()
        local function deep() error("kaboom") end
        deep()
      end)
      local d = U.await_down(ref)
      assert.are.equal(pid, d.pid)
      assert.are.equal("table", type(d.reason))
      assert.matches("kaboom", d.reason.error)
      assert.are.equal("string", type(d.reason.traceback))
      assert.matches("deep", d.reason.traceback) -- taken at the crash site
    end)

    it("a table error value crosses as the error", function()
      local _, ref = process.spawn_monitor(function() error({ code = 7 }) end)
      local d = U.await_down(ref)
      assert.are.same({ code = 7 }, d.reason.error)
    end)
  end)

  describe("spawn_link", function()
    it("links the new process to the caller (both ways)", function()
      local me = process.self()
      local pid = process.spawn(function(parent)
        local p = require "genserver.process"
        local child = p.spawn_link(function() p.receive(30000) end)
        p.send(parent, { "child", child, p.info(child).links, p.info(p.self()).links })
        p.receive(30000)
      end, me)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "child" end)
      local child = m[2]
      assert.are.same({ pid }, m[3])
      assert.are.same({ child }, m[4])
      U.kill(pid)
    end)

    it("a linked child that crashes takes the parent with it, same reason", function()
      local pid, ref = process.spawn_monitor(function()
        local p = require "genserver.process"
        p.spawn_link(function() require("genserver.process").exit("child_crashed") end)
        p.receive(30000)
        p.exit("parent_survived")
      end)
      local d = U.await_down(ref)
      assert.are.equal(pid, d.pid)
      assert.are.equal("child_crashed", d.reason)
    end)
  end)

  -- ------------------------------------------------------ send/receive

  describe("send and receive", function()
    it("send returns true and the message arrives", function()
      assert.is_true(process.send(process.self(), "hello"))
      assert.are.equal("hello", process.receive(T))
    end)

    it("keeps FIFO order from one sender (1000 messages)", function()
      local me = process.self()
      process.spawn(function()
        local p = require "genserver.process"
        for i = 1, 1000 do p.send(me, { "seq", i }) end
      end)
      for i = 1, 1000 do
        local m = U.await(function(x) return type(x) == "table" and x[1] == "seq" end)
        assert.are.equal(i, m[2])
      end
    end)

    it("keeps FIFO order main script -> process -> main script", function()
      local echo = U.echo()
      for i = 1, 200 do
        process.send(echo, { op = "echo", from = process.self(), tag = "fifo", value = i })
      end
      for i = 1, 200 do
        assert.are.equal(i, U.await_tag("fifo").value)
      end
      process.send(echo, "stop")
    end)

    it("receive(timeout) returns nil when nothing comes", function()
      assert.is_nil(process.receive(20))
    end)

    it("receive with a very long timeout (1e14 ms) waits for the message", function()
      local me = process.self()
      process.spawn(function()
        require("genserver.process").sleep(20)
        require("genserver.process").send(me, "late but wanted")
      end)
      local m = process.receive(1e14)
      U.flush()
      assert.are.equal("late but wanted", m)
    end)

    it("receive with a very long timeout waits in a spawned process too", function()
      local me = process.self()
      local pid = process.spawn(function()
        local p = require "genserver.process"
        p.send(me, { "long_wait", p.receive(1e14) })
      end)
      process.sleep(20)
      process.send(pid, "for the long waiter")
      local m = U.await(function(x) return type(x) == "table" and x[1] == "long_wait" end)
      assert.are.equal("for the long waiter", m[2])
    end)

    it("receive('infinity') and receive(math.huge) wait without a limit", function()
      process.send(process.self(), 1)
      assert.are.equal(1, process.receive("infinity"))
      process.send(process.self(), 2)
      assert.are.equal(2, process.receive(math.huge))
      process.send(process.self(), 3)
      assert.are.equal(3, process.receive(function() return true end, "infinity"))
    end)

    it("a match function that raises: the error propagates, the queue is intact", function()
      local me = process.self()
      process.send(me, "a")
      process.send(me, "b")
      local ok, err = pcall(process.receive, function(m)
        if m == "b" then error("match_failed") end
        return false
      end, 100)
      assert.is_false(ok)
      assert.matches("match_failed", tostring(err))
      assert.are.equal("a", process.receive(0))
      assert.are.equal("b", process.receive(0))
    end)

    it("receive(0) polls: nil when empty, the message when there is one", function()
      assert.is_nil(process.receive(0))
      process.send(process.self(), "queued")
      assert.are.equal("queued", process.receive(0))
      assert.is_nil(process.receive(0))
    end)

    it("receive(timeout) works in a spawned process too", function()
      local me = process.self()
      process.spawn(function()
        local p = require "genserver.process"
        local a = p.receive(10)
        p.send(p.self(), "x")
        local b = p.receive(0)
        p.send(me, { "rt", a == nil, b })
      end)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "rt" end)
      assert.is_true(m[2])
      assert.are.equal("x", m[3])
    end)

    it("receive without a timeout waits for the message", function()
      local me = process.self()
      local pid = process.spawn(function()
        local p = require "genserver.process"
        local m = p.receive()
        p.send(me, { "got", m })
      end)
      process.send(pid, "wake up")
      local m = U.await(function(x) return type(x) == "table" and x[1] == "got" end)
      assert.are.equal("wake up", m[2])
    end)

    it("selective receive takes the first match; others stay queued in order", function()
      local me = process.self()
      for i = 1, 6 do process.send(me, i) end
      assert.are.equal(4, process.receive(function(m) return m % 2 == 0 and m > 2 end, T))
      assert.are.equal(2, process.receive(function(m) return m % 2 == 0 end, T))
      for _, want in ipairs({ 1, 3, 5, 6 }) do
        assert.are.equal(want, process.receive(T))
      end
      assert.is_nil(process.receive(0))
    end)

    it("selective receive with no match times out and leaves the queue intact", function()
      local me = process.self()
      process.send(me, "a")
      process.send(me, "b")
      assert.is_nil(process.receive(function(m) return m == "z" end, 20))
      assert.are.equal("a", process.receive(T))
      assert.are.equal("b", process.receive(T))
    end)

    it("selective receive waits for a matching message that comes later", function()
      local me = process.self()
      process.send(me, "early")
      process.spawn(function()
        local p = require "genserver.process"
        p.sleep(5)
        p.send(me, "noise")
        p.send(me, "wanted")
      end)
      assert.are.equal("wanted", process.receive(function(m) return m == "wanted" end, T))
      assert.are.equal("early", process.receive(T))
      assert.are.equal("noise", process.receive(T))
    end)

    it("selective receive in a spawned process keeps the others in order", function()
      local me = process.self()
      local pid = process.spawn(function()
        local p = require "genserver.process"
        local first = p.receive(function(m) return m == "go" end, 5000)
        local rest = {}
        for _ = 1, 3 do rest[#rest + 1] = p.receive(5000) end
        p.send(me, { "sel", first, rest })
      end)
      process.send(pid, "x1")
      process.send(pid, "x2")
      process.send(pid, "go")
      process.send(pid, "x3")
      local m = U.await(function(x) return type(x) == "table" and x[1] == "sel" end)
      assert.are.equal("go", m[2])
      assert.are.same({ "x1", "x2", "x3" }, m[3])
    end)

    it("a message sent before an exit signal arrives before it (same sender)", function()
      local me = process.self()
      local pid = process.spawn(function()
        local p = require "genserver.process"
        p.trap_exit(true)
        p.send(me, { "trapping" })
        local a, b = p.receive(5000), p.receive(5000)
        p.send(me, { "order", a, type(b) == "table" and b[1] or b })
      end)
      U.await(function(x) return type(x) == "table" and x[1] == "trapping" end)
      process.send(pid, "m1")
      process.exit(pid, "after_m1")
      local m = U.await(function(x) return type(x) == "table" and x[1] == "order" end)
      assert.are.equal("m1", m[2])
      assert.are.equal("EXIT", m[3])
    end)

    it("a crashing process's last message arrives before its EXIT", function()
      local me = process.self()
      process.spawn(function()
        local p = require "genserver.process"
        p.trap_exit(true)
        local self_ = p.self()
        p.spawn_link(function()
          require("genserver.process").send(self_, "last words")
          error("crash after sending")
        end)
        local a, b = p.receive(5000), p.receive(5000)
        p.send(me, { "last", a, type(b) == "table" and b[1] or b })
      end)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "last" end)
      assert.are.equal("last words", m[2])
      assert.are.equal("EXIT", m[3])
    end)

    it("a process's last message arrives before its DOWN (100 times)", function()
      local me = process.self()
      for i = 1, 100 do
        local _, ref = process.spawn_monitor(function()
          require("genserver.process").send(me, "bye")
        end)
        local first = U.await(function(m)
          return m == "bye" or (type(m) == "table" and m.ref == ref)
        end)
        assert.are.equal("bye", first, "round " .. i)
        U.await_down(ref)
      end
    end)

    it("ping-pong between two processes (5000 round trips)", function()
      local me = process.self()
      local pong = process.spawn(function()
        local p = require "genserver.process"
        while true do
          local m = p.receive(10000)
          if m == nil or m == "stop" then return end
          p.send(m, "pong")
        end
      end)
      process.spawn(function(peer)
        local p = require "genserver.process"
        local n = 0
        for _ = 1, 5000 do
          p.send(peer, p.self())
          if p.receive(5000) == "pong" then n = n + 1 end
        end
        p.send(me, { "pingpong", n })
      end, pong)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "pingpong" end, 20000)
      assert.are.equal(5000, m[2])
      process.send(pong, "stop")
    end)

    it("2000 processes alive at once, then all killed", function()
      local pids, refs = {}, {}
      for i = 1, 2000 do pids[i] = process.spawn(U.sleeper) end
      local live = {}
      for _, p in ipairs(process.list()) do live[p] = true end
      for i = 1, 2000 do assert.is_true(live[pids[i]]) end
      for i = 1, 2000 do
        refs[i] = process.monitor(pids[i])
        process.exit(pids[i], "kill")
      end
      for i = 1, 2000 do assert.are.equal("killed", U.await_down(refs[i]).reason) end
      for i = 1, 2000 do assert.is_false(process.alive(pids[i])) end
    end)

    it("send to a dead pid is dropped silently and returns true", function()
      local pid, ref = process.spawn_monitor(function() end)
      U.await_down(ref)
      assert.is_true(process.send(pid, "into the void"))
    end)

    it("send to an unknown name raises", function()
      assert.has_error(function() process.send("pr_nobody_has_this_name", 1) end)
    end)
  end)

  describe("waiting and coroutines", function()
    it("a process cannot wait inside a nested coroutine: a clear error, no hang", function()
      local me = process.self()
      process.spawn(function()
        local p = require "genserver.process"
        local ok1, e1 = pcall(coroutine.wrap(function() return p.receive(10) end))
        local ok2, e2 = pcall(coroutine.wrap(function() return p.sleep(5) end))
        p.send(p.self(), "polled")
        local ok3, v3 = pcall(coroutine.wrap(function() return p.receive(0) end))
        p.send(me, { "nested", ok1, tostring(e1), ok2, tostring(e2), ok3, v3 })
      end)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "nested" end)
      assert.is_false(m[2])
      assert.matches("cannot wait here", m[3])
      assert.is_false(m[4])
      assert.matches("cannot wait here", m[5])
      assert.is_true(m[6]) -- receive(0) does not wait
      assert.are.equal("polled", m[7])
    end)

    it("a bare coroutine.yield in a process body does not end it", function()
      local me = process.self()
      local _, ref = process.spawn_monitor(function()
        coroutine.yield()
        coroutine.yield(1, 2, 3)
        require("genserver.process").send(me, "after yields")
      end)
      assert.are.equal("after yields", process.receive(function(m) return m == "after yields" end, T))
      assert.are.equal("normal", U.await_down(ref).reason)
    end)

    it("the main script may wait inside a coroutine (it blocks its thread)", function()
      local me = process.self()
      local got = coroutine.wrap(function()
        process.send(me, "inside a coroutine")
        return process.receive(T)
      end)()
      assert.are.equal("inside a coroutine", got)
    end)
  end)

  -- -------------------------------------------------------------- sleep

  describe("sleep", function()
    it("returns in the main script and keeps messages queued", function()
      process.send(process.self(), "kept")
      assert.has_no.errors(function() process.sleep(10) end)
      assert.are.equal("kept", process.receive(0))
    end)

    it("works in a spawned process (messages stay queued)", function()
      local me = process.self()
      local pid = process.spawn(function()
        local p = require "genserver.process"
        p.sleep(20)
        p.send(me, { "woke", p.receive(0) })
      end)
      process.send(pid, "during sleep")
      local m = U.await(function(x) return type(x) == "table" and x[1] == "woke" end)
      assert.are.equal("during sleep", m[2])
    end)

    it("many sleeping processes all wake up", function()
      local me = process.self()
      for i = 1, 50 do
        process.spawn(function()
          local p = require "genserver.process"
          p.sleep(i % 7)
          p.send(me, { "slept", i })
        end)
      end
      local seen = {}
      for _ = 1, 50 do
        local m = U.await(function(x) return type(x) == "table" and x[1] == "slept" end)
        seen[m[2]] = true
      end
      for i = 1, 50 do assert.is_true(seen[i]) end
    end)
  end)

  -- ----------------------------------------------------------- monitors

  describe("monitor", function()
    it("by pid: DOWN carries ref, pid and reason", function()
      local pid = process.spawn(U.sleeper)
      local ref = process.monitor(pid)
      assert.is_true(process.is_ref(ref))
      process.exit(pid, "kill")
      local d = U.await_down(ref)
      assert.are.equal("DOWN", d[1])
      assert.are.equal(ref, d.ref)
      assert.are.equal(pid, d.pid)
      assert.are.equal("killed", d.reason)
    end)

    it("by pid: DOWN 'normal' when the process returns", function()
      local pid = process.spawn(U.sleeper)
      local ref = process.monitor(pid)
      process.send(pid, "stop")
      assert.are.equal("normal", U.await_down(ref).reason)
    end)

    it("by registered name", function()
      local pid = process.spawn(U.sleeper)
      process.register("pr_monitored", pid)
      local ref = process.monitor("pr_monitored")
      process.send("pr_monitored", "stop")
      local d = U.await_down(ref)
      assert.are.equal(ref, d.ref)
      assert.are.equal("normal", d.reason)
      assert.are.equal(pid, d.pid)
    end)

    it("a dead pid gives DOWN 'noproc' at once", function()
      local pid, r0 = process.spawn_monitor(function() end)
      U.await_down(r0)
      local ref = process.monitor(pid)
      local d = process.receive(is_down(ref), 0) -- already there: no wait needed
      assert.is_table(d)
      assert.are.equal("noproc", d.reason)
      assert.are.equal(pid, d.pid)
    end)

    it("an unknown name gives DOWN 'noproc' at once", function()
      local ref = process.monitor("pr_never_registered")
      local d = process.receive(is_down(ref), 0)
      assert.is_table(d)
      assert.are.equal("noproc", d.reason)
    end)

    it("two monitors on one process give two DOWNs", function()
      local pid = process.spawn(U.sleeper)
      local r1, r2 = process.monitor(pid), process.monitor(pid)
      assert.are_not.equal(r1, r2)
      process.send(pid, "stop")
      assert.are.equal(pid, U.await_down(r2).pid)
      assert.are.equal(pid, U.await_down(r1).pid)
    end)

    it("a spawned process can monitor and get DOWN", function()
      local me = process.self()
      process.spawn(function()
        local p = require "genserver.process"
        local victim = p.spawn(function()
          p.receive(function(m) return m == "go" end, 5000)
          p.exit("victim_reason")
        end)
        local ref = p.monitor(victim)
        p.send(victim, "go")
        local d = p.receive(function(m) return type(m) == "table" and m.ref == ref end, 5000)
        p.send(me, { "seen", d and d.reason, d and d.pid == victim })
      end)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "seen" end)
      assert.are.equal("victim_reason", m[2])
      assert.is_true(m[3])
    end)
  end)

  describe("more monitor/link cases", function()
    it("the same pid object also works after a crash: monitor, then DOWN, then noproc", function()
      local pid = process.spawn(U.sleeper)
      local r1 = process.monitor(pid)
      U.kill(pid)
      assert.are.equal("killed", U.await_down(r1).reason)
      local r2 = process.monitor(pid)
      assert.are.equal("noproc", U.await_down(r2, 1000).reason)
    end)

    it("many processes linked in a chain all die with the same reason", function()
      local me = process.self()
      local head = process.spawn(U.sleeper)
      local prev, refs = head, {}
      for i = 1, 20 do
        local pid = process.spawn(function(peer)
          local p = require "genserver.process"
          p.link(peer)
          p.send(me, { "chain_linked", i })
          p.receive(30000)
        end, prev)
        refs[#refs + 1] = process.monitor(pid)
        U.await(function(x) return type(x) == "table" and x[1] == "chain_linked" and x[2] == i end)
        prev = pid
      end
      process.exit(head, "chain_reaction")
      for _, r in ipairs(refs) do
        assert.are.equal("chain_reaction", U.await_down(r).reason)
      end
    end)
  end)

  describe("demonitor", function()
    it("no DOWN comes after demonitor", function()
      local pid = process.spawn(U.sleeper)
      local ref = process.monitor(pid)
      local guard = process.monitor(pid)
      assert.is_true(process.demonitor(ref))
      process.send(pid, "stop")
      U.await_down(guard)
      assert.is_nil(U.maybe_down(ref, 20))
    end)

    it("without 'flush', a DOWN already delivered stays (looked at or not)", function()
      -- Erlang: demonitor(Ref) leaves a DOWN already in the mailbox; only
      -- [flush] removes it. Here the outcome must not depend on whether
      -- the mailbox happened to be drained before demonitor.
      local me = process.self()
      -- (a) the DOWN was already taken into the saved queue
      local pid = process.spawn(U.sleeper)
      local ref, guard = process.monitor(pid), process.monitor(pid)
      process.send(pid, "stop")
      U.await_down(guard)
      process.demonitor(ref)
      assert.is_table(U.maybe_down(ref, 0), "drained case: DOWN dropped")
      -- (b) the DOWN is in the mailbox, nothing looked at it yet
      pid = process.spawn(U.sleeper)
      ref = process.monitor(pid)
      process.send(pid, "stop")
      for _ = 1, 2000 do -- info() and sleep-free polling do not drain
        if process.info(me).mailbox >= 1 then break end
        local t = os.clock() + 0.001
        while os.clock() < t do end
      end
      assert.are.equal(1, process.info(me).mailbox)
      process.demonitor(ref)
      assert.is_table(U.maybe_down(ref, 0), "undrained case: DOWN dropped")
    end)

    it("with 'flush' removes a DOWN already queued", function()
      local pid = process.spawn(U.sleeper)
      local ref = process.monitor(pid)
      local guard = process.monitor(pid)
      process.send(pid, "stop")
      U.await_down(guard) -- monitors fire together: ref's DOWN is queued too
      process.demonitor(ref, "flush")
      assert.is_nil(U.maybe_down(ref, 0))
      assert.is_nil(U.maybe_down(ref, 20))
    end)

    it("with 'flush' leaves other messages alone", function()
      local pid = process.spawn(U.sleeper)
      local ref = process.monitor(pid)
      local guard = process.monitor(pid)
      process.send(process.self(), "before")
      process.send(pid, "stop")
      U.await_down(guard)
      process.send(process.self(), "after")
      process.demonitor(ref, "flush")
      assert.are.equal("before", process.receive(0))
      assert.are.equal("after", process.receive(0))
      assert.is_nil(process.receive(0))
    end)
  end)

  -- ------------------------------------------------- links and exits

  describe("link", function()
    it("a linked process dies with the same reason", function()
      local a = process.spawn(U.sleeper)
      local me = process.self()
      local b = process.spawn(function(peer)
        local p = require "genserver.process"
        p.link(peer)
        p.send(me, { "linked" })
        p.receive(30000)
        p.exit("b_survived")
      end, a)
      U.await(function(x) return type(x) == "table" and x[1] == "linked" end)
      local rb = process.monitor(b)
      process.exit(a, "boom")
      local d = U.await_down(rb)
      assert.are.equal("boom", d.reason)
      assert.is_false(process.alive(a))
    end)

    it("a table reason propagates through a link", function()
      local a = process.spawn(U.sleeper)
      local b = process.spawn(function(peer)
        local p = require "genserver.process"
        p.link(peer)
        p.receive(30000)
      end, a)
      local rb = process.monitor(b)
      -- make sure b has linked: the link is visible in a's info
      for _ = 1, 1000 do
        if #(process.info(a) or { links = {} }).links > 0 then break end
        process.sleep(1)
      end
      process.exit(a, { shutdown = "detail" })
      assert.are.same({ shutdown = "detail" }, U.await_down(rb).reason)
    end)

    it("a 'normal' exit does not kill linked processes", function()
      local me = process.self()
      local a = process.spawn(U.sleeper)
      local b = process.spawn(function(peer)
        local p = require "genserver.process"
        p.link(peer)
        p.send(me, { "linked" })
        while true do
          local m = p.receive(30000)
          if m == nil or m == "stop" then return end
          if type(m) == "table" and m[1] == "ping" then p.send(m[2], { "pong", p.self() }) end
        end
      end, a)
      U.await(function(x) return type(x) == "table" and x[1] == "linked" end)
      local ra = process.monitor(a)
      process.send(a, "stop")
      assert.are.equal("normal", U.await_down(ra).reason)
      assert.is_true(U.ping(b))
      assert.is_true(process.alive(b))
      process.send(b, "stop")
    end)

    it("exit(pid, 'normal') does not kill a process that does not trap exits", function()
      local pid = process.spawn(U.sleeper)
      process.exit(pid, "normal")
      assert.is_true(U.ping(pid))
      process.send(pid, "stop")
    end)

    it("unlink removes the link both ways", function()
      local me = process.self()
      local a = process.spawn(U.sleeper)
      local b = process.spawn(function(peer)
        local p = require "genserver.process"
        p.link(peer)
        p.unlink(peer)
        p.send(me, { "unlinked", #p.info(p.self()).links })
        while true do
          local m = p.receive(30000)
          if m == nil or m == "stop" then return end
          if type(m) == "table" and m[1] == "ping" then p.send(m[2], { "pong", p.self() }) end
        end
      end, a)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "unlinked" end)
      assert.are.equal(0, m[2])
      assert.are.same({}, process.info(a).links)
      U.kill(a)
      assert.is_true(U.ping(b))
      process.send(b, "stop")
    end)

    it("linking to a dead pid raises a catchable 'noproc' error (DESIGN 1.5)", function()
      local dead, r0 = process.spawn_monitor(function() end)
      U.await_down(r0)
      local pid, ref = process.spawn_monitor(function(d)
        local gs = require "genserver"
        local ok, err = pcall(require("genserver.process").link, d)
        assert(not ok and gs.is_error(err) and err.reason == "noproc")
        require("genserver.process").exit("still_alive")
      end, dead)
      assert.are.equal("still_alive", U.await_down(ref).reason)
      assert.is_truthy(pid)
    end)
  end)

  describe("trap_exit", function()
    it("returns the old setting", function()
      local me = process.self()
      process.spawn(function()
        local p = require "genserver.process"
        local a = p.trap_exit(true)
        local b = p.trap_exit(false)
        local c = p.trap_exit(false)
        p.send(me, { "trap", a, b, c })
      end)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "trap" end)
      assert.are.same({ "trap", false, true, false }, m)
    end)

    it("turns exit signals into { 'EXIT', pid =, reason = } messages", function()
      local me = process.self()
      local pid, ref = process.spawn_monitor(function()
        local p = require "genserver.process"
        p.trap_exit(true)
        local child = p.spawn_link(function() require("genserver.process").exit("child_boom") end)
        local m = p.receive(function(x) return type(x) == "table" and x[1] == "EXIT" end, 5000)
        p.send(me, { "trapped", m, child })
      end)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "trapped" end)
      assert.is_table(m[2])
      assert.are.equal("EXIT", m[2][1])
      assert.are.equal(m[3], m[2].pid)
      assert.are.equal("child_boom", m[2].reason)
      assert.are.equal("normal", U.await_down(ref).reason)
      assert.is_truthy(pid)
    end)

    it("a trapping process gets EXIT 'normal' from a linked process that returns", function()
      local me = process.self()
      process.spawn(function()
        local p = require "genserver.process"
        p.trap_exit(true)
        local child = p.spawn_link(function() end)
        local m = p.receive(function(x) return type(x) == "table" and x[1] == "EXIT" end, 5000)
        p.send(me, { "trapped_normal", m and m.reason, m and m.pid == child })
      end)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "trapped_normal" end)
      assert.are.equal("normal", m[2])
      assert.is_true(m[3])
    end)

    it("exit(pid, reason) to a trapping process becomes an EXIT message from the sender", function()
      local me = process.self()
      local pid = process.spawn(function()
        local p = require "genserver.process"
        p.trap_exit(true)
        p.send(me, { "trapping" })
        local m = p.receive(function(x) return type(x) == "table" and x[1] == "EXIT" end, 5000)
        p.send(me, { "got_exit", m })
      end)
      U.await(function(x) return type(x) == "table" and x[1] == "trapping" end)
      process.exit(pid, "please")
      local m = U.await(function(x) return type(x) == "table" and x[1] == "got_exit" end)
      assert.are.equal("please", m[2].reason)
      assert.are.equal(process.self(), m[2].pid)
    end)
  end)

  describe("exit", function()
    it("exit(pid, 'kill') kills a trapping process with reason 'killed'", function()
      local me = process.self()
      local pid = process.spawn(function()
        local p = require "genserver.process"
        p.trap_exit(true)
        p.send(me, { "trapping" })
        while true do
          local m = p.receive(30000)
          if m == nil then return end
          p.send(me, { "trapper_got", m })
        end
      end)
      U.await(function(x) return type(x) == "table" and x[1] == "trapping" end)
      local ref = process.monitor(pid)
      process.exit(pid, "kill")
      local d = U.await_down(ref)
      assert.are.equal("killed", d.reason)
      assert.is_nil(process.receive(function(x)
        return type(x) == "table" and x[1] == "trapper_got"
      end, 0))
    end)

    it("processes linked to a killed process get 'killed', not 'kill'", function()
      local me = process.self()
      local victim = process.spawn(U.sleeper)
      process.spawn(function(v)
        local p = require "genserver.process"
        p.trap_exit(true)
        p.link(v)
        p.send(me, { "ready" })
        local m = p.receive(function(x) return type(x) == "table" and x[1] == "EXIT" end, 5000)
        p.send(me, { "linked_saw", m and m.reason })
      end, victim)
      U.await(function(x) return type(x) == "table" and x[1] == "ready" end)
      process.exit(victim, "kill")
      local m = U.await(function(x) return type(x) == "table" and x[1] == "linked_saw" end)
      assert.are.equal("killed", m[2])
    end)

    it("exit(pid, reason) kills a non-trapping process with that reason", function()
      local pid = process.spawn(U.sleeper)
      local ref = process.monitor(pid)
      process.exit(pid, "go_away")
      assert.are.equal("go_away", U.await_down(ref).reason)
    end)

    it("exit(reason) ends the calling process with that reason", function()
      local me = process.self()
      local _, ref = process.spawn_monitor(function()
        local p = require "genserver.process"
        p.exit("by_choice")
        p.send(me, "not reached")
      end)
      assert.are.equal("by_choice", U.await_down(ref).reason)
      assert.is_nil(process.receive(function(m) return m == "not reached" end, 0))
    end)

    it("exit(reason) with a table reason", function()
      local _, ref = process.spawn_monitor(function()
        require("genserver.process").exit({ shutdown = { why = "test" } })
      end)
      assert.are.same({ shutdown = { why = "test" } }, U.await_down(ref).reason)
    end)

    it("exit(reason) from inside pcall still ends the process", function()
      local _, ref = process.spawn_monitor(function()
        local p = require "genserver.process"
        pcall(p.exit, "through_pcall")
        p.exit("after_pcall")
      end)
      assert.are.equal("through_pcall", U.await_down(ref).reason)
    end)
  end)

  -- ------------------------------------------------------------- names

  describe("register / unregister / whereis / registered", function()
    it("registers, finds, lists and unregisters a name", function()
      local pid = process.spawn(U.sleeper)
      assert.is_true(process.register("pr_reg_a", pid))
      assert.are.equal(pid, process.whereis("pr_reg_a"))
      local found = false
      for _, n in ipairs(process.registered()) do found = found or n == "pr_reg_a" end
      assert.is_true(found)
      assert.is_true(process.send("pr_reg_a", { "ping", process.self() }))
      assert.is_truthy(process.receive(function(m)
        return type(m) == "table" and m[1] == "pong" and m[2] == pid
      end, T))
      assert.is_true(process.unregister("pr_reg_a"))
      assert.is_nil(process.whereis("pr_reg_a"))
      assert.is_false(process.unregister("pr_reg_a"))
      process.send(pid, "stop")
    end)

    it("registers the caller when no pid is given", function()
      process.register("pr_reg_self")
      assert.are.equal(process.self(), process.whereis("pr_reg_self"))
      process.send("pr_reg_self", "to myself")
      assert.are.equal("to myself", process.receive(T))
      process.unregister("pr_reg_self")
    end)

    it("whereis of an unknown name is nil", function()
      assert.is_nil(process.whereis("pr_nobody"))
    end)

    it("registering a taken name raises", function()
      local a, b = process.spawn(U.sleeper), process.spawn(U.sleeper)
      process.register("pr_taken", a)
      local ok, err = pcall(process.register, "pr_taken", b)
      assert.is_false(ok)
      assert.matches("pr_taken", tostring(err))
      assert.are.equal(a, process.whereis("pr_taken"))
      process.unregister("pr_taken")
      process.send(a, "stop")
      process.send(b, "stop")
    end)

    it("a name is released when its process dies", function()
      local pid = process.spawn(U.sleeper)
      process.register("pr_released", pid)
      U.kill(pid)
      assert.is_nil(process.whereis("pr_released"))
      for _, n in ipairs(process.registered()) do assert.are_not.equal("pr_released", n) end
      -- and can be taken again
      local pid2 = process.spawn(U.sleeper)
      assert.is_true(process.register("pr_released", pid2))
      assert.are.equal(pid2, process.whereis("pr_released"))
      U.kill(pid2)
      assert.is_nil(process.whereis("pr_released"))
    end)

    it("a process may register itself", function()
      local me = process.self()
      local pid = process.spawn(function()
        local p = require "genserver.process"
        p.register("pr_self_named")
        p.send(me, { "named" })
        p.receive(30000)
      end)
      U.await(function(x) return type(x) == "table" and x[1] == "named" end)
      assert.are.equal(pid, process.whereis("pr_self_named"))
      U.kill(pid)
      assert.is_nil(process.whereis("pr_self_named"))
    end)

    it("info gives the whole of the longest allowed name (255 bytes)", function()
      local pid = process.spawn(U.sleeper)
      local long = ("pr_long_"):rep(32):sub(1, 255)
      assert.is_true(process.register(long, pid))
      assert.are.equal(pid, process.whereis(long))
      local name = process.info(pid).name
      U.kill(pid)
      assert.are.equal(255, #name)
      assert.are.equal(long, name)
    end)

    it("refuses names that are empty, too long or hold a zero byte", function()
      local pid = process.spawn(U.sleeper)
      for _, bad in ipairs({ "", ("x"):rep(256), "a\0b" }) do
        local ok, err = pcall(process.register, bad, pid)
        assert.is_false(ok)
        assert.matches("1 to 255 bytes", tostring(err))
      end
      assert.is_nil(process.info(pid).name)
      U.kill(pid)
    end)

    it("a process can hold only one name", function()
      local pid = process.spawn(U.sleeper)
      process.register("pr_first_name", pid)
      assert.has_error(function() process.register("pr_second_name", pid) end)
      assert.is_nil(process.whereis("pr_second_name"))
      assert.are.equal(pid, process.whereis("pr_first_name"))
      U.kill(pid)
    end)

    it("unregister of a name frees it for another process", function()
      local a, b = process.spawn(U.sleeper), process.spawn(U.sleeper)
      process.register("pr_moving", a)
      process.unregister("pr_moving")
      assert.is_true(process.register("pr_moving", b))
      assert.are.equal(b, process.whereis("pr_moving"))
      U.kill(a)
      U.kill(b)
    end)

    it("registering a dead pid raises", function()
      local pid, ref = process.spawn_monitor(function() end)
      U.await_down(ref)
      assert.has_error(function() process.register("pr_dead_name", pid) end)
      assert.is_nil(process.whereis("pr_dead_name"))
    end)
  end)

  -- ------------------------------------------------------------ timers

  describe("send_after / cancel_timer", function()
    it("delivers the message later", function()
      local tref = process.send_after(10, process.self(), "tick")
      assert.is_true(process.is_ref(tref))
      assert.are.equal("tick", process.receive(function(m) return m == "tick" end, T))
    end)

    it("delivers to a registered name (resolved when it fires)", function()
      local echo = U.echo()
      process.send_after(10, "pr_timer_target", { op = "echo", from = process.self(),
                                                   tag = "timed", value = 7 })
      process.register("pr_timer_target", echo)
      assert.are.equal(7, U.await_tag("timed").value)
      process.unregister("pr_timer_target")
      process.send(echo, "stop")
    end)

    it("works from a spawned process", function()
      local me = process.self()
      process.spawn(function()
        local p = require "genserver.process"
        p.send_after(5, p.self(), "self_tick")
        p.send(me, { "spawned_timer", p.receive(5000) })
      end)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "spawned_timer" end)
      assert.are.equal("self_tick", m[2])
    end)

    it("timers with different delays fire in delay order", function()
      local me = process.self()
      process.send_after(60, me, 3)
      process.send_after(0, me, 1)
      process.send_after(30, me, 2)
      for i = 1, 3 do assert.are.equal(i, process.receive(T)) end
    end)

    it("cancel_timer returns the ms left as a number and nothing arrives", function()
      local tref = process.send_after(60000, process.self(), "never")
      local left = process.cancel_timer(tref)
      assert.are.equal("number", type(left))
      assert.is_true(left > 0 and left <= 60000)
      assert.is_nil(process.receive(function(m) return m == "never" end, 20))
      assert.is_false(process.cancel_timer(tref)) -- already cancelled
    end)

    it("a timer to a name nobody holds is dropped", function()
      process.send_after(1, "pr_nobody_at_all", "lost")
      process.sleep(20)
      assert.is_nil(process.receive(function(m) return m == "lost" end, 0))
    end)

    it("cancel_timer of a ref that is not a timer returns false", function()
      assert.is_false(process.cancel_timer(process.make_ref()))
    end)

    it("a timer to a process that died in the meantime does no harm", function()
      local pid = process.spawn(U.sleeper)
      process.send_after(10, pid, "too late")
      U.kill(pid)
      process.sleep(30)
      assert.is_false(process.alive(pid))
    end)

    it("send_after(math.huge) does not fire at once (or is refused)", function()
      for _, ms in ipairs({ math.huge, 1e30 }) do
        local ok, tref = pcall(process.send_after, ms, process.self(), { "far", ms })
        if ok then
          local m = process.receive(function(x)
            return type(x) == "table" and x[1] == "far" and x[2] == ms
          end, 30)
          process.cancel_timer(tref)
          assert.is_nil(m, ("send_after(%s) fired at once"):format(tostring(ms)))
        end
      end
    end)

    it("send_after with a NaN delay raises (as receive does)", function()
      assert.has_error(function() process.receive(0 / 0) end)
      local ok, tref = pcall(process.send_after, 0 / 0, process.self(), "nan_timer")
      if ok then process.cancel_timer(tref) end
      U.flush()
      assert.is_false(ok, "send_after(NaN) was accepted")
    end)

    it("cancel_timer returns false after the timer fired", function()
      local tref = process.send_after(1, process.self(), "fired")
      assert.are.equal("fired", process.receive(function(m) return m == "fired" end, T))
      assert.is_false(process.cancel_timer(tref))
    end)
  end)

  -- -------------------------------------------------------------- refs

  describe("make_ref", function()
    it("makes unique references usable as table keys", function()
      local seen, list = {}, {}
      for i = 1, 1000 do
        local r = process.make_ref()
        assert.is_true(process.is_ref(r))
        assert.is_nil(seen[r])
        seen[r] = i
        list[i] = r
      end
      for i = 1, 1000 do assert.are.equal(i, seen[list[i]]) end
      assert.matches("^#Ref<", tostring(list[1]))
      assert.are_not.equal(list[1], list[2])
    end)

    it("a ref is unique across processes", function()
      local me = process.self()
      local mine = process.make_ref()
      process.spawn(function()
        local p = require "genserver.process"
        p.send(me, { "their_ref", p.make_ref(), mine })
      end)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "their_ref" end)
      assert.are_not.equal(mine, m[2])
      assert.is_true(rawequal(mine, m[3]))
    end)
  end)

  -- ---------------------------------------------------- introspection

  describe("alive / list / info", function()
    it("alive tells live from dead", function()
      assert.is_true(process.alive(process.self()))
      local pid, ref = process.spawn_monitor(function() end)
      U.await_down(ref)
      assert.is_false(process.alive(pid))
      local live = process.spawn(U.sleeper)
      assert.is_true(process.alive(live))
      process.send(live, "stop")
    end)

    it("list contains live pids and not dead ones", function()
      local a, b = process.spawn(U.sleeper), process.spawn(U.sleeper)
      local dead, ref = process.spawn_monitor(function() end)
      U.await_down(ref)
      local set = {}
      for _, p in ipairs(process.list()) do
        assert.is_true(process.is_pid(p))
        set[p] = true
      end
      assert.is_true(set[a])
      assert.is_true(set[b])
      assert.is_nil(set[dead])
      process.send(a, "stop")
      process.send(b, "stop")
    end)

    it("info describes a process", function()
      local pid = process.spawn(U.dozer, 30000)
      process.register("pr_info_target", pid)
      local linker = process.spawn(function(v)
        require("genserver.process").link(v)
        require("genserver.process").receive(30000)
      end, pid)
      for i = 1, 3 do process.send(pid, i) end
      local info
      for _ = 1, 2000 do -- until the link and the messages are in
        info = process.info(pid)
        if #info.links == 1 and info.messages_in >= 3 and info.status == "waiting" then break end
        process.sleep(1)
      end
      assert.are.equal("waiting", info.status)
      assert.are.equal(3, info.mailbox)
      assert.are.equal(3, info.messages_in)
      assert.is_number(info.memory)
      assert.is_true(info.memory > 0)
      assert.are.equal("pr_info_target", info.name)
      assert.are.same({ linker }, info.links)
      U.kill(pid)
      U.flush()
    end)

    it("info lists the monitors on a process in monitored_by", function()
      local pid = process.spawn(U.sleeper)
      local r1, r2 = process.monitor(pid), process.monitor(pid)
      local info = process.info(pid)
      assert.are.same({ process.self(), process.self() }, info.monitored_by)
      process.demonitor(r1)
      process.demonitor(r2)
      process.send(pid, "stop")
    end)

    it("info of the main script works", function()
      local info = process.info(process.self())
      assert.is_table(info)
      assert.are.equal("string", type(info.status))
    end)

    it("a process sees itself running", function()
      local me = process.self()
      process.spawn(function()
        local p = require "genserver.process"
        p.send(me, { "own_info", p.info(p.self()).status })
      end)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "own_info" end)
      assert.are.equal("running", m[2])
    end)

    it("info of a dead pid is nil", function()
      local pid, ref = process.spawn_monitor(function() end)
      U.await_down(ref)
      assert.is_nil(process.info(pid))
    end)
  end)

  -- ------------------------------------------------- pids and identity

  describe("pids", function()
    it("work as table keys across a round trip", function()
      local echo = U.echo()
      local a = process.spawn(U.sleeper)
      local t = { [a] = "a", [process.self()] = "me" }
      local back = U.roundtrip(echo, { a, process.self(), t })
      assert.is_true(rawequal(a, back[1]))
      assert.is_true(rawequal(process.self(), back[2]))
      assert.are.equal("a", back[3][a])
      assert.are.equal("me", back[3][process.self()])
      assert.are.equal("a", t[back[1]])
      process.send(a, "stop")
      process.send(echo, "stop")
    end)

    it("a pid seen by another process compares equal there", function()
      local me = process.self()
      local a = process.spawn(U.sleeper)
      process.spawn(function(x, y)
        local p = require "genserver.process"
        local t = { [x] = 1 }
        p.send(me, { "eq", rawequal(x, y), t[y] })
      end, a, a)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "eq" end)
      assert.is_true(m[2])
      assert.are.equal(1, m[3])
      process.send(a, "stop")
    end)

    it("a pid of a slot reused later is not equal to the old pid", function()
      local old, ref = process.spawn_monitor(function() end)
      U.await_down(ref)
      local fresh = {}
      for i = 1, 20 do fresh[i] = process.spawn(U.sleeper) end
      for i = 1, 20 do
        assert.are_not.equal(old, fresh[i])
        process.send(fresh[i], "stop")
      end
      assert.is_false(process.alive(old))
    end)
  end)

  -- ------------------------------------- exit signals to the main script

  describe("the main script (a foreign process)", function()
    it("a linked crash is raised at its next genserver call; then it carries on", function()
      local old = process.self()
      local pid = process.spawn_link(function()
        require("genserver.process").exit("linked_crash")
      end)
      local ok, err
      for _ = 1, 100 do -- until the signal is raised
        ok, err = pcall(process.receive, 50)
        if not ok then break end
      end
      assert.is_false(ok)
      assert.is_true(genserver.is_error(err))
      assert.are.equal("linked_crash", err.reason)
      assert.is_string(tostring(err))
      local new = process.self()
      assert.are_not.equal(old, new)
      assert.is_false(process.alive(old))
      assert.is_true(process.alive(new))
      -- things work again
      process.send(new, "again")
      assert.are.equal("again", process.receive(T))
      assert.is_truthy(pid)
    end)

    it("a linked Lua error is raised with the { error, traceback } reason", function()
      process.spawn_link(function() error("main_linked_error") end)
      local ok, err
      for _ = 1, 100 do
        ok, err = pcall(process.receive, 50)
        if not ok then break end
      end
      assert.is_false(ok)
      assert.is_true(genserver.is_error(err))
      assert.is_table(err.reason)
      assert.matches("main_linked_error", err.reason.error)
      assert.has_no.errors(function() process.send(process.self(), 1) end)
      assert.are.equal(1, process.receive(T))
    end)

    -- A process that monitors this main script (its current pid) and, once
    -- that pid has died, tells what its DOWN said (watch_report below).
    local function watch_me()
      local old = process.self()
      local watcher = process.spawn(function(target)
        local p = require "genserver.process"
        local ref = p.monitor(target)
        local d = p.receive(function(m) return type(m) == "table" and m.ref == ref end, 5000)
        -- the monitor ran under the old pid; report to whoever asks next
        local ask = p.receive(function(m) return type(m) == "table" and m[1] == "report_to" end, 5000)
        if ask then p.send(ask[2], { "watch_report", d and d.reason, d and d.pid }) end
      end, old)
      -- make sure the watcher monitors us before we die
      for _ = 1, 2000 do
        if #(process.info(old) or { monitored_by = { 1 } }).monitored_by > 0 then break end
        process.sleep(1)
      end
      return old, watcher
    end

    -- The DOWN reason and pid the watcher of watch_me saw (asked by the new pid).
    local function watch_report(watcher)
      process.send(watcher, { "report_to", process.self() })
      local r = U.await(function(m) return type(m) == "table" and m[1] == "watch_report" end)
      return r[2], r[3]
    end

    it("its old pid's links and monitors fire when it is killed", function()
      local old, watcher = watch_me()
      process.spawn_link(function() require("genserver.process").exit("fg_died") end)
      local ok, err
      for _ = 1, 100 do
        ok, err = pcall(process.receive, 50)
        if not ok then break end
      end
      assert.is_false(ok)
      assert.are.equal("fg_died", err.reason)
      local reason, pid = watch_report(watcher)
      assert.are.equal("fg_died", reason)
      assert.are.equal(old, pid)
    end)

    it("exit(self(), reason) is raised at once", function()
      local old = process.self()
      local ok, err = pcall(process.exit, old, "self_signal")
      assert.is_false(ok)
      assert.is_true(genserver.is_error(err))
      assert.are.equal("self_signal", err.reason)
      assert.are_not.equal(old, process.self())
    end)

    it("a blocking receive is woken by the signal (not left to time out)", function()
      process.spawn_link(function()
        local p = require "genserver.process"
        p.sleep(20)
        p.exit("wake_the_main_script")
      end)
      local ok, err = pcall(process.receive, function() return false end, 10000)
      assert.is_false(ok, "receive returned instead of raising the exit signal")
      assert.are.equal("wake_the_main_script", err.reason)
    end)

    it("a sleep is interrupted by the signal", function()
      process.spawn_link(function()
        local p = require "genserver.process"
        p.sleep(20)
        p.exit("wake_the_sleeper")
      end)
      local ok, err = pcall(process.sleep, 10000)
      assert.is_false(ok, "sleep returned instead of raising the exit signal")
      assert.are.equal("wake_the_sleeper", err.reason)
    end)

    it("exit(main, reason) from another process is raised at its next call", function()
      local me = process.self()
      process.spawn(function()
        require("genserver.process").exit(me, "remote_exit")
      end)
      local ok, err = pcall(process.receive, function() return false end, 10000)
      assert.is_false(ok)
      assert.is_true(genserver.is_error(err))
      assert.are.equal("remote_exit", err.reason)
      assert.are_not.equal(me, process.self())
    end)

    it("exit(main, 'kill') is raised with reason 'killed'", function()
      local old = process.self()
      local ok, err = pcall(process.exit, old, "kill")
      assert.is_false(ok)
      assert.is_true(genserver.is_error(err))
      assert.are.equal("killed", err.reason)
      assert.is_false(process.alive(old))
    end)

    it("killed by 'kill', its old pid's monitors see 'killed' too (as from the C API)", function()
      local old, watcher = watch_me()
      local ok, err = pcall(process.exit, old, "kill")
      assert.is_false(ok)
      assert.are.equal("killed", err.reason)
      local reason, pid = watch_report(watcher)
      assert.are.equal("killed", reason)
      assert.are.equal(old, pid)
    end)

    it("its registered name is released when it is killed", function()
      local old = process.self()
      process.register("pr_main_name")
      assert.are.equal(old, process.whereis("pr_main_name"))
      local ok = pcall(process.exit, old, "bye")
      assert.is_false(ok)
      assert.is_nil(process.whereis("pr_main_name"))
    end)

    it("a linked 'normal' exit does not disturb it", function()
      local _ = process.spawn_link(function() end)
      process.sleep(10)
      local old = process.self()
      assert.has_no.errors(function() process.receive(10) end)
      assert.are.equal(old, process.self())
    end)

    it("trapping exits, it gets EXIT messages instead", function()
      local old_trap = process.trap_exit(true)
      local ok, res = pcall(function()
        local pid = process.spawn_link(function()
          require("genserver.process").exit("trapped_in_main")
        end)
        -- its own EXIT: a late 'normal' one from the test before (its
        -- process may end after that test's short sleep) is not this one
        local m = U.await(function(x)
          return type(x) == "table" and x[1] == "EXIT" and x.pid == pid
        end)
        return { pid = pid, m = m }
      end)
      process.trap_exit(old_trap)
      assert.is_true(ok, tostring(res))
      assert.are.equal(res.pid, res.m.pid)
      assert.are.equal("trapped_in_main", res.m.reason)
    end)
  end)
end)
