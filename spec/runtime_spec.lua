-- spec/runtime_spec.lua: genserver.runtime (DESIGN.md §2.6): stats,
-- configure, GENSERVER_WORKERS, and how a program ends (idle servers left
-- running, runtime.shutdown()). The "how a program ends" tests run child
-- lua5.4 processes under `timeout 20`, so a hang is a failure, not a stall.
--
-- Run: make test SPECS=spec/runtime_spec.lua   (under GENSERVER_WORKERS=1 and 4)

local U = require "pr_util"
local process = require "genserver.process"
local runtime = require "genserver.runtime"


--- A script in a child lua5.4 under `timeout 20`: ok, exit code, output.
local function run_child(source, env)
  return U.run_child(source, { env = env, timeout = 20 })
end

local IDLE_SERVER = [[
local Idle = {}
function Idle.init(n) return "ok", { n = n } end
function Idle.handle_call(req, from, s) return "reply", s.n, s end
function Idle.handle_cast(msg, s) return "noreply", s end
]]

describe("genserver.runtime", function()

  before_each(function() U.flush() end)

  describe("stats", function()
    it("reports workers, processes, run_queue and messages", function()
      U.await_down(select(2, process.spawn_monitor(function() end))) -- started
      local s = runtime.stats()
      for _, k in ipairs({ "workers", "processes", "run_queue", "messages" }) do
        assert.are.equal("integer", math.type(s[k]), k)
        assert.is_true(s[k] >= 0, k)
      end
      assert.is_true(s.workers >= 1)
      assert.is_true(s.started)
    end)

    it("counts processes woken onto a worker's own run queue in run_queue", function()
      -- a process on a worker wakes five idle ones: they wait on that
      -- worker's own queue (or their busy home's) until it yields, and
      -- run_queue counts them there, not only the shared queue (which
      -- they never enter: it read 0). A loop that sends may give the
      -- worker up once in a while, letting some of them run first.
      local me = process.self()
      process.spawn(function()
        local pr = require "genserver.process"
        local rt = require "genserver.runtime"
        local pids = {}
        for i = 1, 5 do pids[i] = pr.spawn(function() pr.receive(10000) end) end
        pr.sleep(100) -- each one is waiting in receive now
        for i = 1, 5 do pr.send(pids[i], "go") end
        pr.send(me, { "rq", rt.stats().run_queue }) -- before this turn ends
      end)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "rq" end)
      assert.is_true(m[2] >= 1, tostring(m[2]))
    end)

    it("counts live processes", function()
      -- (no process of this spec is being started meanwhile; some may still
      -- be ending, so the counts are only compared one way)
      local pids = {}
      for i = 1, 5 do pids[i] = process.spawn(U.sleeper) end
      local mid = runtime.stats().processes
      assert.is_true(mid >= 5)
      for i = 1, 5 do U.kill(pids[i]) end
      -- DOWN comes before a dead process's state is closed and its slot
      -- freed (dying cannot be blocked), so the count may lag: bounded wait.
      for _ = 1, 500 do
        if runtime.stats().processes <= mid - 5 then break end
        process.sleep(10)
      end
      assert.is_true(runtime.stats().processes <= mid - 5)
    end)

    it("counts messages", function()
      local before = runtime.stats().messages
      for i = 1, 10 do process.send(process.self(), i) end
      for _ = 1, 10 do process.receive(1000) end
      assert.is_true(runtime.stats().messages >= before + 10)
    end)

    it("messages is a running total: it does not go down when processes end", function()
      local pid, ref = process.spawn_monitor(U.dozer, 50)
      for i = 1, 100 do process.send(pid, i) end
      local before = runtime.stats().messages -- the 100 are counted now
      U.await_down(ref)
      -- new processes reuse the dead ones' slots
      for _ = 1, 500 do
        local _, r = process.spawn_monitor(function() end)
        U.await_down(r)
      end
      -- since `before`: at least 1 + 500 DOWN messages to this script
      local after = runtime.stats().messages
      assert.is_true(after >= before + 501,
        ("stats().messages: %d before, %d after 501 more messages"):format(before, after))
    end)

    it("honours GENSERVER_WORKERS", function()
      local env = tonumber(os.getenv("GENSERVER_WORKERS") or "")
      if env and env >= 1 then
        assert.are.equal(math.min(env, 1024), runtime.stats().workers)
      end
      local ok, code, out = run_child([[
        local runtime = require "genserver.runtime"
        require("genserver.process").spawn(function() end)
        io.write("workers=", runtime.stats().workers, "\n")
      ]], { GENSERVER_WORKERS = "3" })
      assert.is_true(ok, out)
      assert.are.equal(0, code)
      assert.matches("workers=3\n", out)
    end)
  end)

  describe("configure", function()
    it("after the first process started, setting workers raises a clear error", function()
      process.spawn(function() end)
      local ok, err = pcall(runtime.configure, { workers = 2 })
      assert.is_false(ok)
      assert.matches("workers", tostring(err))
      assert.matches("before", tostring(err))
      ok, err = pcall(runtime.configure, { max_processes = 100 })
      assert.is_false(ok)
      assert.matches("max_processes", tostring(err))
    end)

    it("before the first process, workers is taken (and beats GENSERVER_WORKERS)", function()
      local ok, code, out = run_child([[
        local runtime = require "genserver.runtime"
        assert(runtime.configure({ workers = 2 }) == true)
        require("genserver.process").spawn(function() end)
        io.write("workers=", runtime.stats().workers, "\n")
      ]], { GENSERVER_WORKERS = "3" })
      assert.is_true(ok, out)
      assert.are.equal(0, code, out)
      assert.matches("workers=2\n", out)
    end)

    it("rejects bad values", function()
      assert.has_error(function() runtime.configure({ max_depth = 0 }) end)
      assert.has_error(function() runtime.configure({ budget = 0 }) end)
      assert.has_error(function() runtime.configure("workers") end)
    end)

    it("says which bound a refused value passed (the C API's own message)", function()
      -- 2^30 passes the binding's range check; this runtime's process table
      -- holds fewer, which only gs_runtime_configure knows
      local ok, err = pcall(runtime.configure, { max_processes = 1 << 30 })
      assert.is_false(ok)
      assert.matches("max_processes must be at most %d+ for this runtime", tostring(err))
    end)

    it("is all or nothing: a bad field leaves the good ones unapplied", function()
      local ok, code, out = run_child([[
        local runtime = require "genserver.runtime"
        assert(not pcall(runtime.configure, { workers = 3, budget = 0 }))
        require("genserver.process").spawn(function() end)
        io.write("workers=", runtime.stats().workers, "\n")
      ]], { GENSERVER_WORKERS = "2" })
      assert.is_true(ok, out)
      assert.are.equal(0, code, out)
      assert.matches("workers=2\n", out)
    end)

    it("the main script only may shut the runtime down", function()
      local me = process.self()
      process.spawn(function()
        local ok, err = pcall(require("genserver.runtime").shutdown)
        require("genserver.process").send(me, { "shutdown_from_process", ok, tostring(err) })
      end)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "shutdown_from_process" end)
      assert.is_false(m[2])
      assert.matches("shutdown", m[3])
    end)
  end)

  describe("program end", function()
    it("a script that returns with 100 idle servers exits promptly with status 0", function()
      local ok, code, out = run_child(IDLE_SERVER .. [[
        local gs = require "genserver"
        local pids = {}
        for i = 1, 100 do pids[i] = assert(gs.start(Idle, i)) end
        assert(gs.call(pids[100], "n") == 100)
        io.write("started ", #pids, "\n")
      ]])
      assert.is_true(ok, out)
      assert.are.equal(0, code, out)
      assert.are.equal("started 100\n", out)
    end)

    it("idle plain processes, named ones and sleepers do not keep it alive", function()
      local ok, code, out = run_child([[
        local process = require "genserver.process"
        for i = 1, 50 do process.spawn(function() process.receive() end) end
        process.register("some_name", process.spawn(function() process.receive() end))
        for i = 1, 10 do process.spawn(function() process.sleep(60000) end) end
        process.send_after(60000, process.self(), "never")
        io.write("done\n")
      ]])
      assert.is_true(ok, out)
      assert.are.equal(0, code, out)
      assert.are.equal("done\n", out)
    end)

    it("runtime.shutdown() stops every process and returns true", function()
      local ok, code, out = run_child(IDLE_SERVER .. [[
        local gs = require "genserver"
        local process = require "genserver.process"
        local runtime = require "genserver.runtime"
        for i = 1, 100 do assert(gs.start(Idle, i)) end
        for i = 1, 20 do process.spawn(function() process.receive() end) end
        io.write("before ", runtime.stats().processes, "\n")
        io.write("shutdown ", tostring(runtime.shutdown()), "\n")
        io.write("after\n")
      ]])
      assert.is_true(ok, out)
      assert.are.equal(0, code, out)
      assert.matches("before 120\n", out)
      assert.matches("shutdown true\n", out)
      assert.matches("after\n$", out)
    end)

    it("runtime.shutdown() sends 'shutdown' to processes that trap exits", function()
      local ok, code, out = run_child([[
        local process = require "genserver.process"
        local runtime = require "genserver.runtime"
        local me = process.self()
        process.spawn(function()
          process.trap_exit(true)
          process.send(me, "trapping")
          local m = process.receive(function(x)
            return type(x) == "table" and x[1] == "EXIT"
          end, 10000)
          io.write("trapper got ", tostring(m and m.reason), "\n")
          io.flush()
        end)
        assert(process.receive(5000) == "trapping")
        io.write("shutdown ", tostring(runtime.shutdown(4000)), "\n")
      ]])
      assert.is_true(ok, out)
      assert.are.equal(0, code, out)
      assert.matches("trapper got shutdown\n", out)
      assert.matches("shutdown true\n", out)
    end)

    it("a script that ends with an error still exits (status 1), no hang", function()
      local ok, code, out = run_child(IDLE_SERVER .. [[
        local gs = require "genserver"
        for i = 1, 10 do assert(gs.start(Idle, i)) end
        error("script failed on purpose")
      ]])
      assert.is_falsy(ok)
      assert.are.equal(1, code, out)
      assert.matches("script failed on purpose", out)
    end)
  end)

  -- A Lua loop that never blocks (DESIGN.md §1.2: a watchdog preempts it).
  -- Run in a child with one worker, so that a runaway cannot starve this
  -- spec's own processes; the child's waits are short and it runs under
  -- `timeout 20`.
  describe("a runaway loop (child process, GENSERVER_WORKERS=1)", function()
    local ok, code, out
    setup(function()
      ok, code, out = run_child([[
        local process = require "genserver.process"
        local pid, ref = process.spawn_monitor(function()
          local x = 0
          while true do x = x + 1 end
        end)
        process.sleep(10)
        local _, oref = process.spawn_monitor(function() return 1 end)
        local m = process.receive(function(x)
          return type(x) == "table" and x.ref == oref
        end, 2000)
        io.write("other: ", tostring(m and m.reason), "\n")
        process.exit(pid, "kill")
        m = process.receive(function(x) return type(x) == "table" and x.ref == ref end, 2000)
        io.write("runaway: ", tostring(m and m.reason), "\n")
        io.write("leaving\n")
      ]], { GENSERVER_WORKERS = "1" })
    end)

    it("does not stop the script from ending (status 0)", function()
      assert.is_true(ok, out)
      assert.are.equal(0, code, out)
      assert.matches("leaving\n", out)
    end)

    it("does not starve other processes (it is preempted)", function()
      assert.matches("other: normal\n", out)
    end)

    it("is ended by exit(pid, 'kill')", function()
      assert.matches("runaway: killed\n", out)
    end)
  end)
end)
