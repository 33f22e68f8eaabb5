-- Specs for genserver.task (DESIGN.md §2.9): async/await (results, a
-- crash raised as a genserver error with op "await", a time-out that kills
-- the task, awaiting twice, awaiting another process's task), yield,
-- yield_many's shapes, shutdown, async_nolink, async_stream (order, no
-- more than max_concurrency at once -- counted by a gauge server, not
-- timed --, per-item time-outs both ways, leaving the loop early), and
-- start/start_link, also as a supervisor's child.
--
-- Functions that cross into tasks use upvalues (loaded modules and
-- standard functions cross by name), not busted's globals. Every wait is
-- bounded.
local gs = require "genserver"
local process = require "genserver.process"
local task = require "genserver.task"
local supervisor = require "genserver.supervisor"
local error, select, pcall, tostring, type = error, select, pcall, tostring, type

-- The processes without a module (plain processes, so tasks) started
-- since `before` (a set of pids) that are still alive.
local function pids_set()
  local set = {}
  for _, p in ipairs(process.list()) do set[p] = true end
  return set
end
local function new_plain_alive(before)
  local left = {}
  for _, p in ipairs(process.list()) do
    local inf = not before[p] and process.info(p)
    if inf and not inf.foreign and inf.module == nil then left[#left + 1] = p end
  end
  return left
end

local function raises(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok)
  return err
end

-- A gauge: "enter" counts one more running, "leave" one less; "max" is
-- the most ever running at once.
local Gauge = {}
function Gauge.init() return "ok", { cur = 0, max = 0, total = 0 } end
function Gauge.handle_call(req, _, s)
  if req == "enter" then
    s.cur, s.total = s.cur + 1, s.total + 1
    if s.cur > s.max then s.max = s.cur end
  elseif req == "leave" then
    s.cur = s.cur - 1
  end
  return "reply", s, s
end

describe("task.async and task.await", function()
  it("return the function's results", function()
    local t = task.async(function(a, b) return a + b, "two", nil, 4 end, 1, 2)
    assert.is_true(process.is_pid(t.pid))
    local a, b, c, d = task.await(t)
    assert.are.same({ 3, "two", nil, 4 }, { a, b, c, d })
    assert.are.equal(4, select("#", task.await == nil or a, b, c, d))
  end)

  it("links and monitors the task", function()
    local t = task.async(function() process.receive(5000) end)
    local info = process.info(process.self())
    local linked = false
    for _, p in ipairs(info.links) do if p == t.pid then linked = true end end
    assert.is_true(linked)
    process.send(t.pid, "go")
    task.await(t)
  end)

  it("raises once awaited again (an argument error)", function()
    local t = task.async(function() return 1 end)
    task.await(t)
    local err = raises(function() task.await(t) end)
    assert.matches("already awaited", err)
    assert.is_false(gs.is_error(err))
  end)

  it("kills a task that times out: it is dead when await raises", function()
    local t = task.async(function() process.sleep(60000) end)
    local err = raises(function() task.await(t, 20) end)
    assert.is_true(gs.is_error(err))
    assert.are.equal("await", err.op)
    assert.are.equal("timeout", err.reason)
    assert.is_false(process.alive(t.pid))
    assert.is_nil(process.receive(0)) -- nothing left behind
  end)

  it("raises the crash reason of a task as a genserver error", function()
    local t = task.async_nolink(function() error("task failed") end)
    local err = raises(function() task.await(t) end)
    assert.is_true(gs.is_error(err))
    assert.are.equal("await", err.op)
    assert.matches("task failed", err.reason.error)
  end)

  it("an exit reason of a linked task reaches an owner that traps exits as a result", function()
    process.trap_exit(true)
    local t = task.async(function() process.exit("gave_up") end)
    local err = raises(function() task.await(t) end)
    assert.are.equal("gave_up", err.reason)
    -- the EXIT comes after the DOWN: trap until it is here
    local exit = process.receive(function(m) return type(m) == "table" and m[1] == "EXIT" end, 5000)
    process.trap_exit(false)
    assert.are.equal("gave_up", exit.reason)
  end)

  it("only the owner may await", function()
    local t = task.async(function() return 1 end)
    local me = process.self()
    process.spawn(function(tk)
      local ok, e = pcall(task.await, tk)
      process.send(me, { "other", ok, tostring(e) })
    end, t)
    local m = process.receive(function(x) return type(x) == "table" and x[1] == "other" end, 5000)
    table.remove(m, 1)
    assert.is_false(m[1])
    assert.matches("not a task", m[2]) -- a task's table does not carry its identity across
    task.await(t)
  end)

  it("refuses a function that is not one, and a bad timeout", function()
    assert.matches("fn must be a function", raises(function() task.async(42) end))
    local t = task.async(function() return 1 end)
    assert.matches("timeout must be", raises(function() task.await(t, -5) end))
    task.await(t)
  end)
end)

describe("task.yield", function()
  it("gives nil on time-out and leaves the task running; then its results", function()
    local t = task.async(function() return process.receive(5000) end)
    assert.is_nil(task.yield(t, 10))
    assert.is_true(process.alive(t.pid))
    process.send(t.pid, "hello")
    assert.are.same({ true, "hello" }, { task.yield(t, 5000) })
  end)

  it("gives false, reason when the task died", function()
    local t = task.async_nolink(function() process.exit("broke") end)
    assert.are.same({ false, "broke" }, { task.yield(t, 5000) })
  end)
end)

describe("task.yield_many", function()
  it("gives every task's shape, in the tasks' order", function()
    local a = task.async(function() return 1, 2 end)
    local b = task.async_nolink(function() process.exit("b_failed") end)
    local c = task.async(function() process.sleep(60000) end)
    local r = task.yield_many({ a, b, c }, 200)
    assert.are.same({ a, true, 1, 2 }, r[1])
    assert.are.same({ b, false, "b_failed" }, r[2])
    assert.are.same({ c }, r[3])
    assert.is_nil(task.shutdown(c, "brutal_kill"))
    assert.is_false(process.alive(c.pid))
  end)

  it("returns at once when every task is done", function()
    local ts = {}
    for i = 1, 5 do ts[i] = task.async(function(x) return x * 10 end, i) end
    local r = task.yield_many(ts, "infinity")
    for i = 1, 5 do assert.are.equal(i * 10, r[i][3]) end
  end)
end)

describe("task.shutdown", function()
  it("gives the results of a task that had finished", function()
    local t = task.async(function() return "done" end)
    local ref = process.monitor(t.pid) -- its DOWN comes after its answer
    process.receive(function(m) return type(m) == "table" and m.ref == ref end, 5000)
    assert.are.same({ true, "done" }, { task.shutdown(t) })
  end)

  it("stops a running task (nil) and it is dead", function()
    local t = task.async(function() process.sleep(60000) end)
    assert.is_nil(task.shutdown(t, 1000))
    assert.is_false(process.alive(t.pid))
  end)

  it("kills a task that traps exits after the time-out", function()
    local t = task.async(function()
      process.trap_exit(true)
      process.sleep(60000)
    end)
    process.sleep(5)
    assert.is_nil(task.shutdown(t, 20))
    assert.is_false(process.alive(t.pid))
  end)
end)

describe("task.async_nolink", function()
  it("does not link: a crash does not reach the owner", function()
    local t = task.async_nolink(function() error("alone") end)
    local ok, why = task.yield(t, 5000)
    assert.is_false(ok)
    assert.matches("alone", why.error)
    assert.is_nil(process.receive(0))
  end)
end)

describe("task.async_stream", function()
  it("never runs more than max_concurrency at once (counted)", function()
    local gauge = assert(gs.start(Gauge))
    local items = {}
    for i = 1, 20 do items[i] = i end
    local seen = {}
    for i, ok, v in task.async_stream(items, function(x)
      gs.call(gauge, "enter")
      process.sleep(2)
      gs.call(gauge, "leave")
      return x * 2
    end, { max_concurrency = 3 }) do
      assert.is_true(ok)
      assert.are.equal(items[i] * 2, v)
      seen[#seen + 1] = i
    end
    local s = gs.call(gauge, "get")
    assert.are.equal(20, s.total)
    assert.is_true(s.max <= 3, "ran " .. s.max .. " at once")
    assert.are.same(items, seen) -- ordered by default
    gs.stop(gauge)
  end)

  it("max_concurrency defaults to the runtime's workers", function()
    local gauge = assert(gs.start(Gauge))
    local items = {}
    for i = 1, 12 do items[i] = i end
    for _ in task.async_stream(items, function()
      gs.call(gauge, "enter")
      process.sleep(2)
      gs.call(gauge, "leave")
    end) do end
    local s = gs.call(gauge, "get")
    assert.is_true(s.max <= require("genserver.runtime").stats().workers)
    gs.stop(gauge)
  end)

  it("with ordered = false gives results as they finish", function()
    local got = {}
    for i, _, v in task.async_stream({ 1, 2 }, function(x)
      if x == 1 then -- waits until item 2 came out
        process.register("task_spec_item1")
        process.receive(5000)
      end
      return x
    end, { ordered = false, max_concurrency = 2 }) do
      got[#got + 1] = v
      if i == 2 then
        for _ = 1, 5000 do
          if process.whereis("task_spec_item1") then break end
          process.sleep(1)
        end
        process.send("task_spec_item1", "go")
      end
    end
    assert.are.same({ 2, 1 }, got)
  end)

  it("on_timeout = kill_task gives i, false, timeout and goes on", function()
    local res = {}
    for i, ok, v in task.async_stream({ 1, 2, 3 }, function(x)
      if x == 2 then process.sleep(60000) end
      return x
    end, { timeout = 50, on_timeout = "kill_task" }) do
      res[i] = { ok, v }
    end
    assert.are.same({ { true, 1 }, { false, "timeout" }, { true, 3 } }, res)
  end)

  it("without kill_task a time-out raises a genserver error and kills the stream's tasks", function()
    local before = pids_set()
    local err = raises(function()
      for _ in task.async_stream({ 1, 2 }, function(x)
        process.sleep(60000)
        return x
      end, { timeout = 30, max_concurrency = 2 }) do end
    end)
    assert.is_true(gs.is_error(err))
    assert.are.equal("timeout", err.reason)
    assert.are.same({}, new_plain_alive(before))
  end)

  it("leaving the loop early kills the tasks still running", function()
    local before = pids_set()
    local n = 0
    for _ in task.async_stream({ 1, 2, 3, 4 }, function(x)
      if x > 1 then process.sleep(60000) end
      return x
    end, { max_concurrency = 4 }) do
      n = n + 1
      break
    end
    assert.are.equal(1, n)
    assert.are.same({}, new_plain_alive(before))
  end)

  it("refuses bad arguments", function()
    assert.matches("items must be a list", raises(function() task.async_stream(1, print) end))
    assert.matches("fn must be a function", raises(function() task.async_stream({}, 1) end))
    assert.matches("max_concurrency", raises(function()
      task.async_stream({}, print, { max_concurrency = 0 }) end))
    assert.matches("on_timeout", raises(function()
      task.async_stream({}, print, { on_timeout = "ignore" }) end))
  end)

  it("an empty list gives nothing", function()
    for _ in task.async_stream({}, function() end) do error("not reached") end
  end)
end)

describe("task.start and task.start_link", function()
  it("run a function in a process of its own", function()
    local me = process.self()
    local pid = task.start(function(x) process.send(me, { "ran", x }) end, 7)
    assert.is_true(process.is_pid(pid))
    assert.are.same({ "ran", 7 }, process.receive(5000))
  end)

  it("start_link links it to the caller", function()
    local me = process.self()
    local pid = task.start_link(function() process.send(me, "linked ran") end)
    assert.are.equal("linked ran", process.receive(5000))
    local ref = process.monitor(pid)
    process.receive(function(m) return type(m) == "table" and m.ref == ref end, 5000)
  end)

  it("work as a supervisor's child", function()
    local me = process.self()
    local sup = assert(supervisor.start({
      strategy = "one_for_one",
      children = { { id = "job", restart = "temporary",
                     start = { "genserver.task", { function(x) process.send(me, { "job", x }) end, 5 } } } },
    }))
    assert.are.same({ "job", 5 }, process.receive(5000))
    gs.stop(sup)
  end)
end)
