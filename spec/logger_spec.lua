-- Specs for genserver.logger and crash reports (DESIGN.md §2.2: every
-- crash is reported; "normal", "shutdown" and { shutdown = ... } are
-- quiet): the fields of a crash report as a custom handler module sees
-- them, format_status, unsendable states, supervisor reports through the
-- same logger, handler management, the default handler's text on stderr,
-- starting the logger on demand from dying servers (also many at once),
-- a failing handler, and a logger that was killed.
--
-- The custom handler is spec/support/sup_log_handler.lua (loaded by name in
-- the logger's state); it passes reports to spec/support/sup_sink.lua.
-- What only stderr shows is checked in a child lua5.4 (killed after a
-- bounded time).
package.path = "spec/support/?.lua;" .. package.path

local gs = require "genserver"
local process = require "genserver.process"
local logger = require "genserver.logger"
local supervisor = require "genserver.supervisor"
local S = require "sup_util"

local contains, count = require("pr_util").contains, require("pr_util").count

-- Runs `body` in a child lua5.4 (same module paths), killed after `secs`
-- seconds; returns its stdout and stderr together.
local function run_child(body, secs)
  local _, _, out = require("pr_util").run_child(body, { timeout = secs or 20 })
  return out
end

-- The crash reports received since the last take, once there are n.
local function crash_reports(n)
  return S.filter(S.wait_reports(function(all)
    return #S.filter(all, "crash") >= n
  end, n .. " crash report(s)"), "crash")
end

describe("genserver.logger", function()
  setup(function()
    S.recorder()
    S.capture_reports()
  end)

  before_each(function()
    S.flush()
    S.reports()
  end)

  it("a crash in a call: the report has who, the message, the caller, the state, the reason and the traceback", function()
    local server = assert(gs.start("sup_status", {}, { name = "logger_spec_named" }))
    local ok, err = pcall(gs.call, server, "crash")
    assert.is_false(ok)
    assert.is_true(gs.is_error(err))
    local r = crash_reports(1)[1]
    assert.are.equal("crash", r.kind)
    assert.are.equal(server, r.pid)
    assert.are.equal("logger_spec_named", r.name)
    assert.are.equal("sup_status", r.module)
    assert.are.equal("call", r.message_kind)
    assert.are.equal("crash", r.message)
    assert.are.equal(process.self(), r.caller)
    assert.is_table(r.reason)
    assert.matches("status_crash_marker", r.error)
    assert.are.equal(r.reason.error, r.error)
    assert.is_string(r.traceback)
    assert.matches("sup_status.lua:", r.traceback, 1, true)
    -- the state went through format_status
    assert.are.equal("<redacted>", r.state.secret)
    assert.are.equal("shown", r.state.visible)
    assert.is_number(r.time)
    -- and it reads well
    local text = logger.format(r)
    assert.is_true(contains(text, "=CRASH REPORT===="))
    assert.is_true(contains(text, '"logger_spec_named"'))
    assert.is_true(contains(text, "last message: call \"crash\" from " .. tostring(process.self())))
    assert.is_true(contains(text, "status_crash_marker"))
    assert.is_true(contains(text, "stack traceback"))
    assert.is_false(contains(text, "hunter2"))
  end)

  it("a crash in a cast: the message, no caller, a table error", function()
    local server = assert(gs.start("sup_status", {}))
    local ref = process.monitor(server)
    gs.cast(server, "crash")
    S.await_down(ref)
    local r = crash_reports(1)[1]
    assert.are.equal("cast", r.message_kind)
    assert.are.equal("crash", r.message)
    assert.is_nil(r.caller)
    assert.is_nil(r.name)
    assert.are.same({ table_error = "cast_marker" }, r.error)
  end)

  it("a bad return value and a stop with a reason are crashes too", function()
    local server = assert(gs.start("sup_child", {}))
    local ref = process.monitor(server)
    gs.cast(server, { "stop", { custom = "stop_marker" } })
    S.await_down(ref)
    local r = crash_reports(1)[1]
    assert.are.same({ custom = "stop_marker" }, r.reason)
    assert.is_nil(r.error)
    assert.are.equal("cast", r.message_kind)
  end)

  it("'normal', 'shutdown' and { shutdown = ... } produce no report", function()
    for _, reason in ipairs({ "normal", "shutdown", { shutdown = "detail" } }) do
      local server = assert(gs.start("sup_child", {}))
      local ref = process.monitor(server)
      gs.cast(server, { "stop", reason })
      S.await_down(ref)
    end
    local server = assert(gs.start("sup_child", {}))
    gs.stop(server, "shutdown")
    -- then a crash, as a marker: it is the only report
    local marker = assert(gs.start("sup_child", {}))
    local ref = process.monitor(marker)
    gs.cast(marker, "crash")
    S.await_down(ref)
    local all = S.wait_reports(function(l) return #l >= 1 end, "the marker's report")
    assert.are.equal(1, #all)
    assert.are.equal(marker, all[1].pid)
  end)

  it("a state that cannot be sent is described instead", function()
    local server = assert(gs.start("sup_status", { unsendable = true }))
    pcall(gs.call, server, "crash")
    local r = crash_reports(1)[1]
    assert.are.equal(server, r.pid)
    assert.is_string(r.state)
    assert.is_true(contains(r.state, "<redacted>"))
    assert.is_string(r.reason)
  end)

  it("supervisors report through the same logger", function()
    local sup = assert(supervisor.start({ intensity = 0, children = {
      { id = "w", start = { "sup_child", {} } } } }, { name = "logger_spec_sup" }))
    local down = process.monitor(sup)
    local w = S.pid_of(sup, "w")
    gs.cast(w, "crash")
    assert.are.equal("shutdown", S.await_down(down).reason)
    local all = S.reports()
    local crash = S.filter(all, "crash")
    local term = S.filter(all, "supervisor", "child_terminated")
    local gave_up = S.filter(all, "supervisor", "shutdown")
    assert.are.equal(1, #crash)
    assert.are.equal(1, #term)
    assert.are.equal(1, #gave_up)
    assert.are.equal(sup, term[1].supervisor)
    assert.are.equal("logger_spec_sup", term[1].supervisor_name)
    assert.are.equal("w", term[1].child.id)
    assert.are.equal(w, term[1].child.pid)
    assert.are.equal("permanent", term[1].child.restart)
    assert.are.equal("reached_max_restart_intensity", gave_up[1].reason)
    local text = logger.format(term[1])
    assert.is_true(contains(text, "=SUPERVISOR REPORT===="))
    assert.is_true(contains(text, "context: child_terminated"))
    assert.is_true(contains(text, "crash_on_cast"))
    assert.is_true(contains(text, 'offender: id "w"'))
  end)

  it("set_handler: by module name only; a module without handle_report is refused", function()
    assert.are.equal("sup_log_handler", logger.get_handler())
    local ok, err = logger.set_handler("logger_spec_no_such_module")
    assert.is_nil(ok)
    assert.matches("cannot load handler", err)
    ok, err = logger.set_handler("sup_min") -- a table without handle_report
    assert.is_nil(ok)
    assert.matches("handle_report", err)
    assert.has_error(function() logger.set_handler({ handle_report = print }) end)
    assert.are.equal("sup_log_handler", logger.get_handler()) -- unchanged
    assert.is_true(logger.set_handler(nil))
    assert.is_nil(logger.get_handler())
    assert.is_true(logger.set_handler("sup_log_handler"))
  end)

  it("the logger is a registered gen_server; sync waits for what was sent before", function()
    local pid = process.whereis(logger.NAME)
    assert.is_true(process.is_pid(pid))
    assert.are.equal(pid, logger.start())
    assert.is_true(logger.report({ kind = "custom", reason = "by_hand" }))
    assert.is_true(logger.sync())
    local all = gs.call(S.SINK, "take")
    assert.are.equal(1, #all)
    assert.are.equal("by_hand", all[1].reason)
  end)

  it("format: any report reads as text", function()
    assert.is_string(logger.format({ kind = "custom", reason = { 1, 2 } }))
    assert.is_string(logger.format("not a table"))
    local t = logger.format({ kind = "supervisor", supervisor = process.self(), context = "start_error",
      reason = "init_error", child = { id = 3, module = "m", restart = "transient",
      shutdown = 5000, type = "worker" }, restart_delay = 40 })
    assert.is_true(contains(t, "context: start_error"))
    assert.is_true(contains(t, "offender: id 3"))
    assert.is_true(contains(t, "restart in: 40 ms"))
  end)

  -- ===================================================== in a child lua5.4
  describe("on stderr (child interpreter)", function()
    it("the default handler prints a readable report; the logger starts on demand", function()
      local out = run_child([[
        local gs = require "genserver"
        local process = require "genserver.process"
        assert(process.whereis("genserver.logger") == nil)
        local pid, ref = gs.start_monitor("sup_status", {}, { name = "named_crasher" })
        pcall(gs.call, pid, "crash")
        process.receive(function(m) return type(m) == "table" and m.ref == ref end, 5000)
        -- the crashing server could not wait for the logger to start: a
        -- helper started it and forwards the report; wait until it is in
        local lpid
        for _ = 1, 500 do
          lpid = process.whereis("genserver.logger")
          if lpid and gs.call(lpid, "count") >= 1 then break end
          process.sleep(10)
        end
        print("logger running:", lpid ~= nil)
        print("child done")
      ]])
      assert.is_true(contains(out, "child done"), out)
      assert.is_true(contains(out, "logger running:\ttrue"), out)
      assert.is_true(contains(out, "=CRASH REPORT==== server"), out)
      assert.is_true(contains(out, '"named_crasher" (module sup_status)'), out)
      assert.is_true(contains(out, "reason: "), out)
      assert.is_true(contains(out, "status_crash_marker"), out)
      assert.is_true(contains(out, 'last message: call "crash" from'), out)
      assert.is_true(contains(out, "stack traceback"), out)
      assert.is_false(contains(out, "hunter2"), out)
    end)

    it("reports queued when the program ends are still printed", function()
      local out = run_child([[
        local gs = require "genserver"
        local process = require "genserver.process"
        local logger = require "genserver.logger"
        assert(logger.start())
        assert(logger.set_handler("sup_log_slow"))
        for i = 1, 5 do
          local pid, ref = gs.start_monitor("sup_child", {})
          gs.cast(pid, { "stop", "exit_marker_" .. i })
          process.receive(function(m) return type(m) == "table" and m.ref == ref end, 5000)
        end
        print("child done") -- and exit at once: the logger is still busy
      ]])
      assert.is_true(contains(out, "child done"), out)
      for i = 1, 5 do assert.is_true(contains(out, "exit_marker_" .. i), out) end
    end)

    it("many servers crashing at once start one logger, and every crash is reported", function()
      local out = run_child([[
        local gs = require "genserver"
        local process = require "genserver.process"
        local refs = {}
        for i = 1, 30 do
          local pid, ref = gs.start_monitor("sup_child", { id = i })
          refs[i] = ref
          gs.cast(pid, "crash")
        end
        for i = 1, 30 do
          process.receive(function(m) return type(m) == "table" and m.ref == refs[i] end, 5000)
        end
        local logger = require "genserver.logger"
        -- reports whose sender had to start the logger travel through a
        -- helper process: wait until the logger has seen all 30
        local pid = process.whereis("genserver.logger")
        for _ = 1, 500 do
          if pid and gs.call(pid, "count") >= 30 then break end
          process.sleep(10)
          pid = process.whereis("genserver.logger")
        end
        local loggers = 0
        for _, n in ipairs(process.registered()) do
          if n == "genserver.logger" then loggers = loggers + 1 end
        end
        print("loggers:", loggers, "handled:", gs.call(pid, "count"))
        local runtime = require "genserver.runtime"
        for _ = 1, 200 do
          if runtime.stats().processes == 1 then break end
          process.sleep(10)
        end
        print("processes:", runtime.stats().processes)
      ]])
      assert.is_true(contains(out, "loggers:\t1\thandled:\t30"), out)
      assert.are.equal(30, count(out, "=CRASH REPORT===="), out)
      -- only the logger is left (helper processes have ended)
      assert.is_true(contains(out, "processes:\t1"), out)
    end)

    it("a failing handler does not take the logger down; the report is printed", function()
      local out = run_child([[
        local gs = require "genserver"
        local process = require "genserver.process"
        local logger = require "genserver.logger"
        local lpid = assert(logger.start())
        assert(logger.set_handler("sup_log_broken"))
        local pid, ref = gs.start_monitor("sup_child", {})
        gs.cast(pid, "crash")
        process.receive(function(m) return type(m) == "table" and m.ref == ref end, 5000)
        logger.sync()
        print("same logger:", process.whereis("genserver.logger") == lpid)
      ]])
      assert.is_true(contains(out, "same logger:\ttrue"), out)
      assert.is_true(contains(out, "handler_is_broken"), out)
      assert.is_true(contains(out, "crash_on_cast"), out)
    end)

    it("a killed logger is started again by the next report", function()
      local out = run_child([[
        local gs = require "genserver"
        local process = require "genserver.process"
        local logger = require "genserver.logger"
        local first = assert(logger.start())
        local ref = process.monitor(first)
        process.exit(first, "kill")
        process.receive(function(m) return type(m) == "table" and m.ref == ref end, 5000)
        local pid, r2 = gs.start_monitor("sup_child", {})
        gs.cast(pid, { "stop", "second_marker" })
        process.receive(function(m) return type(m) == "table" and m.ref == r2 end, 5000)
        local second
        for _ = 1, 200 do
          second = process.whereis("genserver.logger")
          if second then break end
          process.sleep(10)
        end
        logger.sync()
        print("new logger:", second ~= nil and second ~= first)
      ]])
      assert.is_true(contains(out, "new logger:\ttrue"), out)
      assert.is_true(contains(out, "second_marker"), out)
    end)
  end)
end)
