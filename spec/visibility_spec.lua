-- Specs for program end and visibility (DESIGN.md §1.7), two conformance
-- points of §1.5 (link to a dead pid, a failed start_monitor) and errors
-- that say what was wrong (§2.2): option checks, readable reasons,
-- argument errors that blame the caller, tracebacks without the runtime's
-- own frames, bounded error messages.
--
-- What happens when the program ends, and what only stderr shows, is
-- checked in a child lua5.4 killed after a bounded time (timeout(1)), so a
-- hang is a failed test: the child must end by itself (exit status 0, not
-- timeout's 124) and print what terminate printed. No test asserts a time.
--
-- Callback modules are in spec/support/vis_*.lua, started by name.

local gs = require "genserver"
local process = require "genserver.process"
local runtime = require "genserver.runtime"
local supervisor = require "genserver.supervisor"
local U = require "pr_util"

local contains, count = U.contains, U.count

-- Runs a script in a child lua5.4 (killed after 20 s); returns its exit
-- status (124: it had to be killed) and its stdout and stderr together.
local function child(source)
  local _, code, out = U.run_child(source, { timeout = 20 })
  return code, out
end

local function down_of(ref)
  return U.await(function(m)
    return type(m) == "table" and m[1] == "DOWN" and m.ref == ref
  end, U.TIMEOUT, "a DOWN")
end

local function raises(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return err
end

-- =========================================================== program end

describe("program end (child lua5.4)", function()
  it("a trapping server, started or start_linked, runs terminate('shutdown'); " ..
     "handle_info never sees the runtime's EXIT", function()
    local code, out = child([[
      local gs = require "genserver"
      assert(gs.start("vis_trapper", "started"))
      assert(gs.start_link("vis_trapper", "linked"))
      print("main end")
    ]])
    assert.are.equal(0, code, out)
    assert.is_true(contains(out, "main end"), out)
    assert.is_true(contains(out, "started terminate shutdown"), out)
    assert.is_true(contains(out, "linked terminate shutdown"), out)
    assert.is_false(contains(out, "handle_info"), out)
  end)

  it("a supervised trapping server runs terminate('shutdown') once, " ..
     "stopped by its supervisor; no EXIT reaches handle_info", function()
    local code, out = child([[
      local supervisor = require "genserver.supervisor"
      assert(supervisor.start_link({ strategy = "one_for_one", children = {
        { id = "c", start = { "vis_trapper", "supervised" } } } }))
      print("main end")
    ]])
    assert.are.equal(0, code, out)
    assert.are.equal(1, count(out, "supervised terminate shutdown"), out)
    assert.is_false(contains(out, "handle_info"), out)
  end)

  it("supervisors first, newest first (each its children in reverse order), " ..
     "then the other servers", function()
    local code, out = child([[
      local gs = require "genserver"
      local supervisor = require "genserver.supervisor"
      assert(gs.start("vis_trapper", "S_alone"))
      assert(supervisor.start_link({ strategy = "one_for_one", children = {
        { id = 1, start = { "vis_trapper", "A1" } },
        { id = 2, start = { "vis_trapper", "A2" } } } }))
      assert(supervisor.start({ strategy = "one_for_one", children = {
        { id = 1, start = { "vis_trapper", "B1" } } } }))
      print("main end")
    ]])
    assert.are.equal(0, code, out)
    local order = {}
    for label in out:gmatch("(%S+) terminate shutdown") do order[#order + 1] = label end
    assert.are.same({ "B1", "A2", "A1", "S_alone" }, order, out)
  end)

  it("runtime.shutdown() runs terminate before it returns", function()
    local code, out = child([[
      local gs = require "genserver"
      local runtime = require "genserver.runtime"
      assert(gs.start("vis_trapper", "T"))
      print("shutdown returned", runtime.shutdown())
    ]])
    assert.are.equal(0, code, out)
    local t, r = out:find("T terminate shutdown", 1, true), out:find("shutdown returned\ttrue", 1, true)
    assert.is_truthy(t, out)
    assert.is_truthy(r, out)
    assert.is_true(t < r, out)
  end)

  it("a process that ignores the shutdown is killed, and the program ends", function()
    local code, out = child([[
      local process = require "genserver.process"
      process.spawn("vis_ignorer")
      print("main end")
    ]])
    assert.are.equal(0, code, out)
    assert.is_true(contains(out, "main end"), out)
  end)

  it("a crash report made just before the end is printed (6 runs)", function()
    -- the call fails as soon as the server is down; the script ends at
    -- once, while the report is on its way to the logger
    for run = 1, 6 do
      local code, out = child([[
        local gs = require "genserver"
        local pid = assert(gs.start("vis_badret", 1))
        pcall(gs.call, pid, "crash")
      ]])
      assert.are.equal(0, code, out)
      assert.are.equal(1, count(out, "=CRASH REPORT===="), "run " .. run .. ":\n" .. out)
      assert.is_true(contains(out, "vis_crash_marker"), out)
    end
  end)

  it("a plain process that raises is reported as Erlang does; exits through a " ..
     "link, normal and shutdown are quiet", function()
    local code, out = child([[
      local process = require "genserver.process"
      local function wait(ref)
        process.receive(function(m) return type(m) == "table" and m.ref == ref end, 5000)
      end
      local _, r1 = process.spawn_monitor("vis_crasher")
      wait(r1)
      -- dies because a linked process crashed: only the crasher is reported
      local _, r2 = process.spawn_monitor(function()
        local p = require "genserver.process"
        p.spawn_link("vis_crasher")
        p.receive()
      end)
      wait(r2)
      local _, r3 = process.spawn_monitor(function() end)
      wait(r3)
      local _, r4 = process.spawn_monitor(function()
        require("genserver.process").exit("shutdown")
      end)
      wait(r4)
      print("main end")
    ]])
    assert.are.equal(0, code, out)
    assert.are.equal(2, count(out, "Error in process <"), out)
    assert.are.equal(2, count(out, "vis_body_crash"), out)
    assert.is_true(contains(out, "with exit value:"), out)
    assert.is_true(contains(out, "stack traceback:"), out)
    assert.is_true(contains(out, "vis_crasher.lua:4"), out)
  end)

  it("process.exit(reason) in a callback is reported as a crash, after terminate", function()
    local code, out = child([[
      local gs = require "genserver"
      local process = require "genserver.process"
      local pid, ref = gs.start_monitor("vis_exiter", { to = process.self(), tag = "x" })
      gs.cast(pid, { "exit", "vis_exit_reason" })
      local t = process.receive(function(m) return m[1] == "terminated" end, 5000)
      print("terminated with", t and t[2])
      process.receive(function(m) return m.ref == ref end, 5000)
    ]])
    assert.are.equal(0, code, out)
    assert.is_true(contains(out, "terminated with\tvis_exit_reason"), out)
    assert.is_true(contains(out, "=CRASH REPORT===="), out)
    assert.is_true(contains(out, "vis_exit_reason"), out)
  end)
end)

-- ================================================ process.exit in a callback

describe("process.exit(reason) in a gen_server callback (OTP's exit/1)", function()
  it("in handle_call: terminate(reason, state) runs, the server exits with reason", function()
    local me = process.self()
    local pid, ref = gs.start_monitor("vis_exiter", { to = me, tag = "call" })
    local err = raises(gs.call, pid, { "exit", "vis_call_exit" })
    assert.are.equal("vis_call_exit", err.reason)
    local t = U.await(function(m) return type(m) == "table" and m[1] == "terminated" end)
    assert.are.same({ "terminated", "vis_call_exit", "call" }, t)
    assert.are.equal("vis_call_exit", down_of(ref).reason)
  end)

  it("'normal' in handle_cast: terminate('normal') runs, DOWN normal", function()
    local pid, ref = gs.start_monitor("vis_exiter", { to = process.self(), tag = "cast" })
    gs.cast(pid, { "exit", "normal" })
    local t = U.await(function(m) return type(m) == "table" and m[1] == "terminated" end)
    assert.are.same({ "terminated", "normal", "cast" }, t)
    assert.are.equal("normal", down_of(ref).reason)
  end)

  it("in init: start returns nil, reason", function()
    local pid, reason = gs.start("vis_exiter", { exit_in_init = "vis_init_exit" })
    assert.is_nil(pid)
    assert.are.equal("vis_init_exit", reason)
  end)

  it("a pcall around it catches it (as Erlang's catch): the server lives on", function()
    local pid = assert(gs.start("vis_exiter", { to = process.self() }))
    assert.is_false(gs.call(pid, { "pcall_exit", "caught" }))
    assert.are.same({ "echo" }, gs.call(pid, { "echo" }))
    gs.stop(pid)
    U.flush()
  end)
end)

-- ============================================================ conformance

describe("links and monitors (DESIGN 1.5)", function()
  it("link to a dead pid raises a catchable noproc; the caller lives on", function()
    local dead, r = process.spawn_monitor("vis_quick")
    down_of(r)
    local me = process.self()
    local err = raises(process.link, dead)
    assert.is_true(gs.is_error(err))
    assert.are.equal("noproc", err.reason)
    assert.are.equal("link", err.op)
    assert.are.equal(me, process.self()) -- the same process
  end)

  it("a trapping process gets { 'EXIT', pid = pid, reason = 'noproc' }", function()
    local dead, r = process.spawn_monitor("vis_quick")
    down_of(r)
    local old = process.trap_exit(true)
    local ok = pcall(process.link, dead)
    local m = process.receive(function(x)
      return type(x) == "table" and x[1] == "EXIT" and x.pid == dead
    end, U.TIMEOUT)
    process.trap_exit(old)
    assert.is_true(ok)
    assert.is_truthy(m)
    assert.are.equal("noproc", m.reason)
  end)

  it("a failed start_monitor leaves no DOWN in the caller's mailbox", function()
    U.flush()
    local pid, reason = gs.start_monitor("vis_badret", { tell = process.self() })
    assert.is_nil(pid)
    assert.are.equal("vis_no_start", reason)
    local said = U.await(function(m) return type(m) == "table" and m[1] == "vis_pid" end)
    local server = said[2]
    -- our own monitor's DOWN comes after any DOWN of the start's monitor
    down_of(process.monitor(server))
    local stray = process.receive(function(m)
      return type(m) == "table" and m[1] == "DOWN" and m.pid == server
    end, 0)
    assert.is_nil(stray, stray and gs.describe(stray))
  end)
end)

-- ================================================================= errors

describe("start options are checked (DESIGN 2.2)", function()
  local cases = {
    { { nmae = "x" }, 'unknown option "nmae" (did you mean "name"?)' },
    { { name = 5 }, 'option "name"' },
    { { timeout = "soon" }, 'option "timeout"' },
    { { hibernate_after = "soon" }, 'option "hibernate_after"' },
    { { hibernate_after = -1 }, 'option "hibernate_after"' },
    { { trap_exit = "yes" }, 'option "trap_exit"' },
    { { mailbox_limit = 0 }, 'option "mailbox_limit"' },
    { { mailbox_limit = 5, overflow = "explode" }, 'option "overflow"' },
    { { overflow = "drop" }, 'option "overflow" needs option "mailbox_limit"' },
    { { max_heap = -5 }, 'option "max_heap"' },
    { { sandbox = 1 }, 'option "sandbox"' },
    { { debug = "trace" }, 'option "debug"' },
    { { debug = { "trace", "bogus" } }, 'option "debug"' },
    { { [1] = "name" }, "unknown option 1" },
  }
  for _, c in ipairs(cases) do
    it(("refuses %s, naming it, before any process is made"):format(gs.describe(c[1])), function()
      local before = runtime.stats().spawned
      local err = raises(function() gs.start("vis_trapper", "x", c[1]) end)
      assert.is_true(contains(err, c[2]), err)
      assert.matches("^spec/visibility_spec%.lua:%d+: genserver%.start: ", err)
      assert.are.equal(before, runtime.stats().spawned)
    end)
  end

  it("accepts every documented option with good values", function()
    local pid = assert(gs.start("vis_trapper", "opts", {
      name = "vis_opts", timeout = 5000, hibernate_after = 50, trap_exit = true,
      mailbox_limit = 10, overflow = "reject", max_heap = 64 * 1024 * 1024,
      sandbox = false, debug = { "trace", "statistics", "log" } }))
    assert.are.equal(pid, process.whereis("vis_opts"))
    gs.stop(pid)
    pid = assert(gs.start("vis_trapper", "opts", { hibernate_after = "infinity",
                                                   timeout = "infinity" }))
    gs.stop(pid)
  end)

  it("a supervisor refuses a child spec with a bad option, naming it", function()
    local sup, reason = supervisor.start({ strategy = "one_for_one", children = {
      { id = "c", start = { "vis_trapper", "x", { nmae = "c" } } } } })
    assert.is_nil(sup)
    assert.are.equal("c", reason.bad_child_spec)
    assert.is_true(contains(tostring(reason.message), '"nmae"'), gs.describe(reason))
  end)

  it("a supervisor passes a child's options through unchanged", function()
    local sup = assert(supervisor.start({ strategy = "one_for_one", children = {
      { id = "c", start = { "vis_trapper", "x",
                            { name = "vis_sup_child", hibernate_after = 10 } } } } }))
    local kids = supervisor.which_children(sup)
    assert.are.equal(kids[1].pid, process.whereis("vis_sup_child"))
    gs.stop(sup, "shutdown")
  end)
end)

describe("reasons print readably (DESIGN 2.2)", function()
  it("start's reason for a bad init return names init and the shapes it may return", function()
    local pid, reason = gs.start("vis_badret", "bad")
    assert.is_nil(pid)
    assert.are.same({ "okay" }, reason.bad_return_value)
    assert.are.equal("init", reason.callback)
    local s = tostring(reason)
    assert.is_false(contains(s, "table: 0x"), s)
    assert.is_true(contains(s, 'bad return value from init: "okay"'), s)
    assert.is_true(contains(s, '"ok", state [, action]'), s)
    -- the README's assert(genserver.start(...)) says what went wrong
    local err = raises(function() assert(gs.start("vis_badret", "bad")) end)
    assert.is_true(contains(tostring(err), "bad return value from init"), tostring(err))
  end)

  it("a DOWN's table reason prints readably (bad handle_cast return)", function()
    local pid, ref = gs.start_monitor("vis_badret", 1)
    gs.cast(pid, "bad")
    local reason = down_of(ref).reason
    assert.are.equal("handle_cast", reason.callback)
    local s = tostring(reason)
    assert.is_true(contains(s, "bad return value from handle_cast: \"noreply\""), s)
    assert.is_true(contains(s, '"noreply", state [, action] | "stop", reason, state'), s)
  end)

  it("an EXIT's and a call error's crash reasons print the error and the traceback", function()
    local old = process.trap_exit(true)
    local pid = assert(gs.start_link("vis_badret", 1))
    local err = raises(gs.call, pid, "crash")
    local m = U.await(function(x) return type(x) == "table" and x[1] == "EXIT" and x.pid == pid end)
    process.trap_exit(old)
    for _, r in ipairs({ err.reason, m.reason }) do
      local s = tostring(r)
      assert.is_false(contains(s, "table: 0x"), s)
      assert.is_true(contains(s, "vis_crash_marker"), s)
      assert.is_true(contains(s, "stack traceback:"), s)
    end
  end)

  it("error(nil) in a callback reads sensibly", function()
    local pid, reason = gs.start("vis_badret", "nil_error")
    assert.is_nil(pid)
    assert.are.equal("(error object is a nil value)", reason.error)
    assert.is_true(contains(tostring(reason), "(error object is a nil value)"))
  end)
end)

describe("errors point at what was wrong (DESIGN 2.2)", function()
  it("genserver.call(nil, ...) blames the caller's line, not the library", function()
    local err = raises(function() gs.call(nil, "x") end)
    assert.matches("^spec/visibility_spec%.lua:%d+: bad argument #1 to 'genserver%.call'", err)
    err = raises(function() gs.stop(nil) end)
    assert.matches("^spec/visibility_spec%.lua:%d+: bad argument #1 to 'genserver%.stop'", err)
  end)

  it("crash tracebacks end at the user's code, not the runtime's frames", function()
    local pid, ref = gs.start_monitor("vis_badret", 1)
    pcall(gs.call, pid, "crash")
    local tb1 = down_of(ref).reason.traceback
    local _, r2 = process.spawn_monitor("vis_crasher")
    local tb2 = down_of(r2).reason.traceback
    for _, tb in ipairs({ tb1, tb2 }) do
      assert.is_false(contains(tb, "genserver.core.serve"), tb)
      assert.is_nil(tb:match("%[C%]: in %?$"), tb)
    end
    assert.is_true(contains(tb1, "vis_badret.lua"), tb1)
    assert.is_true(contains(tb2, "vis_crasher.lua"), tb2)
  end)

  it("a module that is not found carries its search list once", function()
    local pid, reason = gs.start("vis_no_such_module_here")
    assert.is_nil(pid)
    assert.are.equal(1, count(reason.error, "no field package.preload"), reason.error)
    assert.are.equal(0, count(reason.traceback, "no file"), reason.traceback)
    assert.are.equal(1, count(tostring(reason), "no field package.preload"), tostring(reason))
  end)

  it("a 20 MB key or value makes a short error message", function()
    local big = string.rep("k", 20 * 1000 * 1000)
    local err = raises(process.send, process.self(), { [big] = coroutine.create(print) })
    assert.is_true(#err < 1000, "error of " .. #err .. " bytes")
    assert.is_true(contains(err, "(20000000 bytes)"), err:sub(1, 300))
    -- a call error quotes the request: bounded too
    local dead, r = process.spawn_monitor("vis_quick")
    down_of(r)
    local cerr = raises(gs.call, dead, big)
    assert.is_true(#tostring(cerr) < 1000, "error of " .. #tostring(cerr) .. " bytes")
    -- and so does a huge module name
    err = raises(gs.start, big)
    assert.is_true(#err < 1000, "error of " .. #err .. " bytes")
  end)
end)
