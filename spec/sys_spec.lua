-- Specs for genserver.sys (DESIGN.md §2.5): get_state, replace_state (and
-- that a failing fn leaves the state, its own mutations included),
-- get_status through format_status, suspend/resume (calls wait and are
-- answered after resume, casts queue in order), system messages keep the
-- idle time-out, trace through the logger, statistics, log, the debug
-- start option, and the same functions on a supervisor.
--
-- No assertion is about speed: every wait is bounded, and "not answered
-- while suspended" is checked with a short wait on a server that cannot
-- answer.
package.path = "spec/support/?.lua;" .. package.path

-- functions that cross into servers use these as upvalues (standard
-- functions cross by name), not as globals of busted's environment
local error, io = error, io

local gs = require "genserver"
local process = require "genserver.process"
local sys = require "genserver.sys"
local supervisor = require "genserver.supervisor"
local logger = require "genserver.logger"

-- A server whose state is { n =, seen = { ... } }: "get" -> n, "seen" ->
-- the list of what it handled, cast { "add", k } adds k.
local Counter = { name = "sys_counter" }
function Counter.init(n) return "ok", { n = n or 0, seen = {} } end
function Counter.handle_call(req, _from, s)
  s.seen[#s.seen + 1] = req
  if req == "get" then return "reply", s.n, s end
  if req == "seen" then return "reply", s.seen, s end
  return "reply", nil, s
end
function Counter.handle_cast(msg, s)
  s.seen[#s.seen + 1] = msg[2]
  if msg[1] == "add" then s.n = s.n + msg[2] end
  return "noreply", s
end

local started = {}
local function start(mod, arg, opts)
  local pid = assert(gs.start(mod, arg, opts))
  started[#started + 1] = pid
  return pid
end

after_each(function()
  for _, pid in ipairs(started) do
    if process.alive(pid) then pcall(gs.stop, pid) end
  end
  started = {}
end)

local function raises(fn, check)
  local ok, err = pcall(fn)
  assert.is_false(ok)
  if check then check(err) end
  return err
end

describe("sys.get_state", function()
  it("returns the server's state, by pid or by name", function()
    local pid = start(Counter, 5, { name = "sys_gs_named" })
    assert.are.equal(5, sys.get_state(pid).n)
    assert.are.equal(5, sys.get_state("sys_gs_named").n)
  end)

  it("raises noproc as a genserver error for a dead pid or unknown name", function()
    local pid = start(Counter, 1)
    gs.stop(pid)
    raises(function() sys.get_state(pid) end, function(err)
      assert.is_true(gs.is_error(err))
      assert.are.equal("noproc", err.reason)
      assert.are.equal("sys.get_state", err.op)
    end)
    raises(function() sys.get_state("sys_nobody") end, function(err)
      assert.are.equal("noproc", err.reason)
    end)
  end)

  it("refuses bad arguments with a clear error", function()
    raises(function() sys.get_state(42) end, function(err)
      assert.matches("server must be a pid or a registered name", err)
    end)
    raises(function() sys.get_state(start(Counter), -1) end, function(err)
      assert.matches("timeout must be", err)
    end)
  end)

  it("does not count as a message of the server nor disturb their order", function()
    local pid = start(Counter, 0)
    for i = 1, 5 do
      gs.cast(pid, { "add", i })
      sys.get_state(pid)
    end
    assert.are.same({ 1, 2, 3, 4, 5, "seen" }, gs.call(pid, "seen"))
  end)

  it("answers for a server whose state cannot be sent with an error", function()
    local U = {}
    function U.init() return "ok", { f = io.stdout } end
    local pid = start(U)
    raises(function() sys.get_state(pid) end, function(err)
      assert.matches("cannot send", tostring(err.reason))
    end)
    assert.is_true(process.alive(pid))
  end)
end)

describe("sys.replace_state", function()
  it("runs fn in the server and returns the new state", function()
    local pid = start(Counter, 1)
    local k = 41
    local new = sys.replace_state(pid, function(s) s.n = s.n + k return s end)
    assert.are.equal(42, new.n)
    assert.are.equal(42, gs.call(pid, "get"))
  end)

  it("leaves the state as it was when fn raises, its mutations included", function()
    local pid = start(Counter, 7)
    gs.cast(pid, { "add", 0 })
    local err = raises(function()
      sys.replace_state(pid, function(s)
        s.n = 1000
        s.seen[1] = "changed"
        s.seen[2] = "added"
        s.extra = { deep = true }
        error("replace failed")
      end)
    end)
    assert.is_true(gs.is_error(err))
    assert.are.equal("sys.replace_state", err.op)
    assert.matches("replace failed", tostring(err.reason))
    assert.matches("replace failed", tostring(err))
    local s = sys.get_state(pid)
    assert.are.equal(7, s.n)
    assert.are.same({ 0 }, s.seen)
    assert.is_nil(s.extra)
    -- the server kept running with the same tables
    gs.cast(pid, { "add", 1 })
    assert.are.equal(8, gs.call(pid, "get"))
  end)

  it("keeps shared and cyclic tables of the state as they were", function()
    local C = {}
    function C.init()
      local shared = { v = 1 }
      local s = { a = shared, b = shared }
      s.self = s
      return "ok", s
    end
    function C.handle_call(_, _, s) return "reply", s.a == s.b and s.self == s and s.a.v, s end
    local pid = start(C)
    raises(function()
      sys.replace_state(pid, function(s) s.a.v = 2 s.self = nil error("no") end)
    end)
    assert.are.equal(1, gs.call(pid, "check"))
  end)

  it("refuses something that is not a function", function()
    local pid = start(Counter)
    raises(function() sys.replace_state(pid, 42) end, function(err)
      assert.matches("fn must be a function", err)
    end)
  end)
end)

describe("sys.get_status", function()
  it("gives pid, name, module, status, parent, state and counts", function()
    local pid = start(Counter, 3, { name = "sys_status_srv" })
    gs.call(pid, "get")
    local st = sys.get_status(pid)
    assert.are.equal(pid, st.pid)
    assert.are.equal("sys_status_srv", st.name)
    assert.are.equal("sys_counter", st.module)
    assert.are.equal("running", st.status)
    assert.are.equal(process.self(), st.parent)
    assert.are.equal(3, st.state.n)
    assert.is_true(st.messages_in >= 2)
    assert.is_true(st.reductions >= 2)
  end)

  it("goes through format_status, which can redact the state", function()
    local C = {}
    function C.init() return "ok", { user = "ann", password = "secret" } end
    function C.format_status(status)
      status.state = { user = status.state.user, password = "***" }
      return status
    end
    local pid = start(C)
    local st = sys.get_status(pid)
    assert.are.same({ user = "ann", password = "***" }, st.state)
    -- the server's own state is untouched
    assert.are.equal("secret", sys.get_state(pid).password)
  end)
end)

describe("sys.suspend and sys.resume", function()
  it("make calls wait until resume, then answer them", function()
    local pid = start(Counter, 1)
    assert.is_true(sys.suspend(pid))
    assert.are.equal("suspended", sys.get_status(pid).status)
    local req = gs.send_request(pid, "get")
    local ok, why = gs.wait_response(req, 50)
    assert.is_false(ok)
    assert.are.equal("timeout", why) -- still pending: the server is suspended
    gs.cast(pid, { "add", 10 })
    -- system messages are still answered, and the cast has not run
    assert.are.equal(1, sys.get_state(pid).n)
    assert.is_true(sys.resume(pid))
    local ok2, v = gs.wait_response(req, 5000)
    assert.is_true(ok2)
    assert.are.equal(1, v) -- the call came before the cast
    assert.are.equal(11, gs.call(pid, "get"))
    assert.are.same({ "get", 10, "get", "seen" }, gs.call(pid, "seen"))
  end)

  it("a call that times out while suspended leaves no trace", function()
    local pid = start(Counter, 1)
    sys.suspend(pid)
    local ok, err = pcall(gs.call, pid, "get", 30)
    assert.is_false(ok)
    assert.are.equal("timeout", err.reason)
    sys.resume(pid)
    assert.are.equal(1, gs.call(pid, "get"))
    assert.is_nil(process.receive(0)) -- the late reply was dropped
  end)

  it("a suspended server can still be stopped", function()
    local pid = start(Counter, 1)
    sys.suspend(pid)
    assert.is_true(gs.stop(pid))
    assert.is_false(process.alive(pid))
  end)

  it("a suspended server still ends when its parent exits (it traps exits)", function()
    local C = {}
    function C.init() return "ok", 0 end
    process.register("sys_spec_main")
    local parent = process.spawn(function(mod)
      local pid = gs.start_link(mod, nil, { trap_exit = true })
      sys.suspend(pid)
      process.send("sys_spec_main", pid)
      process.receive()
    end, C)
    local pid = process.receive(5000)
    process.unregister("sys_spec_main")
    assert.is_true(process.is_pid(pid))
    local ref = process.monitor(pid)
    process.exit(parent, "bye")
    local down = process.receive(function(m) return type(m) == "table" and m.ref == ref end, 5000)
    assert.is_not_nil(down)
    assert.are.equal("bye", down.reason)
  end)

  it("keep the idle time-out running: system messages do not reset it", function()
    local me = process.self()
    local C = {}
    function C.init(dest) return "ok", dest, 200 end
    function C.handle_info(msg, dest)
      process.send(dest, { "idle", msg })
      return "noreply", dest
    end
    local pid = start(C, me)
    -- a system message every 20 ms for at most 5 s: the time-out still fires
    local got
    for _ = 1, 250 do
      sys.get_state(pid)
      got = process.receive(20)
      if got then break end
    end
    assert.are.same({ "idle", "timeout" }, got)
  end)

  it("resume on a server that is not suspended changes nothing", function()
    local pid = start(Counter, 2)
    assert.is_true(sys.resume(pid))
    assert.are.equal(2, gs.call(pid, "get"))
  end)
end)

describe("sys.change_code", function()
  it("returns nil, not_suspended on a running server and changes nothing", function()
    local pid = start("gs_counter", 4)
    local ok, why = sys.change_code(pid, "gs_counter", nil, nil)
    assert.is_nil(ok)
    assert.are.equal("not_suspended", why)
    assert.are.equal("running", sys.get_status(pid).status)
  end)

  it("refuses a module the server does not run", function()
    local pid = start("gs_counter", 4)
    sys.suspend(pid)
    local ok, why = sys.change_code(pid, "gs_echo", nil, nil)
    sys.resume(pid)
    assert.is_nil(ok)
    assert.are.equal("not_running_module", why)
  end)
end)

describe("sys.trace", function()
  local sink
  before_each(function()
    sink = assert(gs.start("sup_sink", nil, { name = "sup_log_sink" }))
    assert(logger.set_handler("sup_log_handler"))
  end)
  after_each(function()
    logger.set_handler(nil)
    gs.stop(sink)
  end)

  local function take_traces(want)
    local all = {}
    for _ = 1, 500 do
      logger.sync()
      for _, r in ipairs(gs.call(sink, "take")) do
        if r.kind == "trace" then all[#all + 1] = r end
      end
      if #all >= want then break end
      process.sleep(10)
    end
    return all
  end

  it("reports every message in and every reply or new state out through the logger", function()
    local pid = start(Counter, 0)
    assert.is_true(sys.trace(pid, true))
    gs.cast(pid, { "add", 2 })
    assert.are.equal(2, gs.call(pid, "get"))
    local t = take_traces(4)
    assert.are.equal(4, #t)
    assert.are.equal("in", t[1].event)
    assert.are.equal("cast", t[1].event_kind)
    assert.are.equal("noreply", t[2].event)
    assert.are.equal(2, t[2].state.n)
    assert.are.equal("in", t[3].event)
    assert.are.equal("call", t[3].event_kind)
    assert.are.equal("reply", t[4].event)
    assert.are.equal(2, t[4].reply)
    assert.are.equal(process.self(), t[4].to)
    assert.matches("=TRACE====", logger.format(t[4]))
    -- off again: nothing more
    sys.trace(pid, false)
    gs.call(pid, "get")
    logger.sync()
    local more = 0
    for _, r in ipairs(gs.call(sink, "take")) do
      if r.kind == "trace" then more = more + 1 end
    end
    assert.are.equal(0, more)
  end)

  it("refuses a flag that is not a boolean", function()
    raises(function() sys.trace(start(Counter), "yes") end)
  end)
end)

describe("sys.statistics", function()
  it("counts messages in and out, callbacks and the mailbox since it was turned on", function()
    local pid = start(Counter, 0)
    assert.is_false(sys.statistics(pid, "get"))
    assert.is_true(sys.statistics(pid, true))
    for i = 1, 3 do gs.cast(pid, { "add", i }) end
    gs.call(pid, "get")
    gs.call(pid, "get")
    local st = sys.statistics(pid, "get")
    assert.are.equal(5, st.reductions)
    assert.are.equal(6, st.messages_in)   -- 3 casts, 2 calls, this request
    assert.are.equal(3, st.messages_out)  -- the answer to `true`, 2 replies
    assert.are.equal(0, st.mailbox)
    assert.is_true(st.current_time >= st.start_time)
    assert.is_true(sys.statistics(pid, false))
    assert.is_false(sys.statistics(pid, "get"))
  end)

  it("refuses a bad flag", function()
    raises(function() sys.statistics(start(Counter), 3) end)
  end)
end)

describe("sys.log", function()
  it("keeps the last n events, oldest first", function()
    local pid = start(Counter, 0)
    assert.is_true(sys.log(pid, 3))
    for i = 1, 4 do gs.cast(pid, { "add", i }) end
    local ev = sys.log(pid, "get")
    assert.are.equal(3, #ev)
    assert.are.equal("noreply", ev[1].event) -- after add 3
    assert.are.equal("in", ev[2].event)
    assert.are.equal("cast", ev[2].kind)
    assert.are.equal(4, ev[2].message[2])
    assert.are.equal("noreply", ev[3].event)
    assert.are.equal(10, ev[3].state.n)
    assert.is_true(sys.log(pid, false))
    assert.are.same({}, sys.log(pid, "get"))
  end)

  it("true keeps 10 events", function()
    local pid = start(Counter, 0)
    sys.log(pid, true)
    for i = 1, 20 do gs.cast(pid, { "add", i }) end
    assert.are.equal(10, #sys.log(pid, "get"))
  end)

  it("refuses a bad flag", function()
    raises(function() sys.log(start(Counter), 0) end)
    raises(function() sys.log(start(Counter), "all") end)
  end)
end)

describe("the debug start option", function()
  it("turns statistics and log on from the start", function()
    local pid = start(Counter, 0, { debug = { "statistics", "log" } })
    gs.cast(pid, { "add", 1 })
    gs.call(pid, "get")
    local st = sys.statistics(pid, "get")
    assert.are.equal(2, st.reductions)
    assert.are.equal(4, #sys.log(pid, "get"))
    assert.are.same({ trace = false, log = true, statistics = true }, sys.get_status(pid).debug)
  end)
end)

describe("sys on a supervisor", function()
  local Child = {}
  function Child.init(n) return "ok", n end
  function Child.handle_call(_, _, s) return "reply", s, s end

  it("answers get_state, replace_state, get_status, suspend and resume", function()
    local sup = assert(supervisor.start({
      strategy = "one_for_one",
      children = { { id = "c", start = { Child, 1 } } },
    }))
    started[#started + 1] = sup
    local st = sys.get_state(sup)
    assert.are.equal("table", type(st))
    local status = sys.get_status(sup)
    assert.are.equal("genserver.supervisor", status.module)
    assert.are.equal("running", status.status)
    local same = sys.replace_state(sup, function(s) return s end)
    assert.are.equal("table", type(same))
    assert.is_true(sys.suspend(sup))
    local req = gs.send_request(sup, "which_children")
    assert.are.equal("timeout", select(2, gs.wait_response(req, 30)))
    assert.is_true(sys.resume(sup))
    assert.is_true((gs.wait_response(req, 5000)))
    assert.are.equal(1, #supervisor.which_children(sup))
  end)
end)
