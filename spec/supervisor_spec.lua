-- Specs for genserver.supervisor (DESIGN.md §2.4), modelled on OTP's
-- supervisor_SUITE: restart types x exit reasons, the four strategies,
-- escalation when the restart intensity is exceeded (and restarts spread
-- over time not counted), temporary children under one_for_all, the child
-- admin functions and their errors, the shutdown protocol (reverse order,
-- time-out, brutal_kill, infinity, children that unlink themselves or exit
-- by themselves meanwhile), a 10,000-child simple_one_for_one supervisor,
-- nested supervisors, restart backoff, invalid specs, and crash storms.
--
-- Children are spec/support/sup_child.lua (started by name). They report
-- { "started", id, pid } and { "terminated", id, reason } to the main
-- script, registered as "sup_rec". Reports (crash and supervisor reports)
-- go to spec/support/sup_sink.lua through the logger handler
-- spec/support/sup_log_handler.lua, so nothing is printed and the specs can
-- read them.
--
-- No assertion is about speed: waits are bounded polls or receives with a
-- time-out, and "not restarted" is checked after the supervisor has
-- visibly handled the exit.
package.path = "spec/support/?.lua;" .. package.path

local gs = require "genserver"
local process = require "genserver.process"
local runtime = require "genserver.runtime"
local supervisor = require "genserver.supervisor"
local S = require "sup_util"

local is_pid = process.is_pid

-- Supervisors started by a test, stopped after it.
local started = {}

local function start_sup(spec, opts)
  local pid, reason = supervisor.start(spec, opts)
  assert(pid, "supervisor did not start: " .. gs.describe(reason))
  started[#started + 1] = pid
  return pid
end

local function ids(list)
  local out = {}
  for i, c in ipairs(list) do out[i] = c.id end
  return out
end

-- Waits until the supervisor has handled the end of `old` (child `id`):
-- returns the child's which_children entry, or "gone" if it was removed.
local function after_exit(sup, id, old)
  return S.eventually(function()
    local c = S.child(sup, id)
    if c == nil then return "gone" end
    if c.pid ~= old then return c end
    return nil
  end, "the supervisor handled the exit of " .. tostring(id))
end

local function crash(pid)
  local ref = process.monitor(pid)
  gs.cast(pid, "crash")
  S.await_down(ref)
end

local FLAG = "sup_spec_fail_flag" -- while registered, children with fail_if fail in init
local flag_holder

local function raise_flag()
  flag_holder = process.spawn("sup_quick_sleeper")
  process.register(FLAG, flag_holder)
end

local function lower_flag()
  if flag_holder then
    process.unregister(FLAG)
    process.exit(flag_holder, "kill")
    flag_holder = nil
  end
end

describe("genserver.supervisor", function()
  setup(function()
    S.recorder()
    S.capture_reports()
  end)

  before_each(function()
    S.recorder()
    S.flush()
    S.reports()
  end)

  after_each(function()
    lower_flag()
    for i = #started, 1, -1 do S.stop(started[i]) end
    started = {}
    S.flush()
  end)

  -- =============================================== restart types x reasons
  describe("restart types x exit reasons (one_for_one)", function()
    local reasons = {
      { "normal", function(p) gs.cast(p, { "stop", "normal" }) end, quiet = true },
      { "shutdown", function(p) gs.cast(p, { "stop", "shutdown" }) end, quiet = true },
      { "{ shutdown = detail }", function(p) gs.cast(p, { "stop", { shutdown = "detail" } }) end,
        quiet = true },
      { "an abnormal reason", function(p) gs.cast(p, { "stop", "boom" }) end },
      { "a Lua error", function(p) gs.cast(p, "crash") end },
      { "killed", function(p) process.exit(p, "kill") end },
    }
    local expect = {
      permanent = function() return "restarted" end,
      transient = function(r) return r.quiet and "kept" or "restarted" end,
      temporary = function() return "removed" end,
    }
    for _, restart in ipairs({ "permanent", "transient", "temporary" }) do
      for _, r in ipairs(reasons) do
        local want = expect[restart](r)
        it(("a %s child that exits with %s is %s"):format(restart, r[1], want), function()
          local s = start_sup({ intensity = 10, children = {
            S.spec("c", nil, { restart = restart }) } })
          local old = S.pid_of(s, "c")
          local ref = process.monitor(old)
          r[2](old)
          S.await_down(ref)
          local c = after_exit(s, "c", old)
          if want == "restarted" then
            assert.is_table(c)
            assert.is_true(is_pid(c.pid) and c.pid ~= old and process.alive(c.pid))
          elseif want == "kept" then
            assert.is_table(c)
            assert.is_nil(c.pid)
            assert.are.equal(1, supervisor.count_children(s).specs)
          else
            assert.are.equal("gone", c)
            assert.are.equal(0, supervisor.count_children(s).specs)
          end
          -- OTP reports every end of a permanent child, and the abnormal
          -- ends of the others
          local reported = #S.filter(S.reports(), "supervisor", "child_terminated")
          local should = (restart == "permanent" or not r.quiet) and 1 or 0
          assert.are.equal(should, reported)
        end)
      end
    end
  end)

  -- ============================================================ strategies
  describe("strategies", function()
    local function three(strategy, extra)
      local children = { S.spec("a", { trap = true }), S.spec("b", { trap = true }),
                         S.spec("c", { trap = true }) }
      for _, c in ipairs(extra or {}) do children[#children + 1] = c end
      local s = start_sup({ strategy = strategy, intensity = 10, children = children })
      local pids = {}
      for _, c in ipairs(supervisor.which_children(s)) do pids[c.id] = c.pid end
      return s, pids
    end

    -- terminated messages received now (but the crashed child's own), in
    -- order, as "id:reason" strings
    local function terminated(crashed)
      local out = {}
      while true do
        local m = process.receive(function(x)
          return type(x) == "table" and x[1] == "terminated" and x[2] ~= crashed
        end, 0)
        if not m then return out end
        out[#out + 1] = tostring(m[2]) .. ":" .. tostring(m[3])
      end
    end

    it("one_for_one restarts only the child that ended", function()
      local s, p = three("one_for_one")
      crash(p.b)
      local nb = S.restarted(s, "b", p.b)
      assert.are.equal(p.a, S.pid_of(s, "a"))
      assert.are.equal(p.c, S.pid_of(s, "c"))
      assert.are_not.equal(p.b, nb)
      assert.are.same({ "a", "b", "c" }, ids(supervisor.which_children(s)))
      assert.are.same({}, terminated("b"))
    end)

    it("one_for_all stops the others (in reverse order) and restarts all", function()
      local s, p = three("one_for_all")
      crash(p.b)
      local nb = S.restarted(s, "b", p.b)
      local na, nc = S.pid_of(s, "a"), S.pid_of(s, "c")
      assert.is_true(na ~= p.a and nc ~= p.c and nb ~= p.b)
      assert.is_false(process.alive(p.a))
      assert.is_false(process.alive(p.c))
      assert.are.same({ "c:shutdown", "a:shutdown" }, terminated("b"))
      assert.are.same({ "a", "b", "c" }, ids(supervisor.which_children(s)))
    end)

    it("rest_for_one restarts the child and those started after it", function()
      local s, p = three("rest_for_one", { S.spec("d", { trap = true }) })
      crash(p.b)
      S.restarted(s, "b", p.b)
      assert.are.equal(p.a, S.pid_of(s, "a"))
      assert.are_not.equal(p.c, S.pid_of(s, "c"))
      assert.are_not.equal(p.d, S.pid_of(s, "d"))
      assert.are.same({ "d:shutdown", "c:shutdown" }, terminated("b"))
      -- the last one: only itself
      local d = S.pid_of(s, "d")
      local c = S.pid_of(s, "c")
      crash(d)
      S.restarted(s, "d", d)
      assert.are.equal(c, S.pid_of(s, "c"))
    end)

    it("one_for_all and rest_for_one do not restart temporary children", function()
      for _, strategy in ipairs({ "one_for_all", "rest_for_one" }) do
        local s = start_sup({ strategy = strategy, intensity = 10, children = {
          S.spec("a", { trap = true }),
          S.spec("t", { trap = true }, { restart = "temporary" }),
          S.spec("c", { trap = true }),
        } })
        S.await_tag("started", "t")
        local a = S.pid_of(s, "a")
        crash(a)
        S.restarted(s, "a", a)
        assert.are.same({ "a", "c" }, ids(supervisor.which_children(s)), strategy)
        assert.are.equal("shutdown", S.await_tag("terminated", "t")[3])
        assert.is_nil(process.receive(function(m)
          return type(m) == "table" and m[1] == "started" and m[2] == "t"
        end, 0), strategy .. ": the temporary child was started again")
        S.stop(s)
      end
    end)

    it("simple_one_for_one: start_child passes the extra argument", function()
      local s = start_sup({ strategy = "simple_one_for_one", intensity = 10, children = {
        { start = { "sup_child", { base = 1 } } } } })
      local p1 = assert(supervisor.start_child(s, { extra = 2, "x" }))
      local a1 = gs.call(p1, "arg")
      assert.are.equal(1, a1.base)
      assert.are.equal(2, a1.extra)
      assert.are.equal("x", a1[1])
      -- no template arg: the extra argument as it is
      local s2 = start_sup({ strategy = "simple_one_for_one", children = {
        { start = { "sup_child" } } } })
      local p2 = assert(supervisor.start_child(s2, { only = true }))
      assert.is_true(gs.call(p2, "arg").only)
      -- a plain value next to a table arg: { arg, extra }
      local p3 = assert(supervisor.start_child(s, 7))
      local a3 = gs.call(p3, "arg")
      assert.are.equal(1, a3[1].base)
      assert.are.equal(7, a3[2])
      local p4 = assert(supervisor.start_child(s))
      assert.are.equal(1, gs.call(p4, "arg").base)
      assert.are.same({ specs = 1, active = 3, supervisors = 0, workers = 3 },
        supervisor.count_children(s))
    end)

    it("simple_one_for_one restarts a child with the same arguments", function()
      local s = start_sup({ strategy = "simple_one_for_one", intensity = 10, children = {
        { start = { "sup_child", { base = 1 } } } } })
      local p = assert(supervisor.start_child(s, { n = 42 }))
      crash(p)
      local np = S.eventually(function()
        local l = supervisor.which_children(s)
        if #l == 1 and is_pid(l[1].pid) and l[1].pid ~= p then return l[1].pid end
        return nil
      end, "dynamic child restarted")
      assert.are.equal(42, gs.call(np, "arg").n)
      local l = supervisor.which_children(s)
      assert.is_nil(l[1].id)
      assert.are.equal("worker", l[1].type)
      assert.are.equal("sup_child", l[1].module)
    end)

    it("simple_one_for_one: restart types, terminate_child by pid, admin errors", function()
      local s = start_sup({ strategy = "simple_one_for_one", intensity = 10, children = {
        { start = { "sup_child" }, restart = "transient" } } })
      local p1 = assert(supervisor.start_child(s, { id = 1 }))
      local p2 = assert(supervisor.start_child(s, { id = 2 }))
      -- transient: a normal end forgets it
      local ref = process.monitor(p1)
      gs.cast(p1, { "stop", "normal" })
      S.await_down(ref)
      S.eventually(function() return supervisor.count_children(s).workers == 1 end, "p1 forgotten")
      -- terminate_child by pid
      assert.is_true(supervisor.terminate_child(s, p2))
      assert.is_false(process.alive(p2))
      assert.are.equal(0, supervisor.count_children(s).workers)
      assert.is_true(supervisor.terminate_child(s, p2)) -- a dead pid: as OTP, ok
      local other = process.spawn("sup_quick_sleeper")
      assert.are.same({ nil, "not_found" }, { supervisor.terminate_child(s, other) })
      process.exit(other, "kill")
      assert.are.same({ nil, "simple_one_for_one" }, { supervisor.terminate_child(s, "id") })
      assert.are.same({ nil, "simple_one_for_one" }, { supervisor.restart_child(s, "id") })
      assert.are.same({ nil, "simple_one_for_one" }, { supervisor.delete_child(s, "id") })
      -- a child whose init fails or ignores
      assert.are.same({ nil, "init_error" }, { supervisor.start_child(s, { init = "error" }) })
      assert.are.same({ nil, "ignore" }, { supervisor.start_child(s, { init = "ignore" }) })
      assert.are.equal(0, supervisor.count_children(s).workers)
    end)
  end)

  -- ============================================================ escalation
  describe("restart intensity", function()
    for _, strategy in ipairs({ "one_for_one", "one_for_all", "rest_for_one" }) do
      it(strategy .. ": more than `intensity` restarts in `period` stops the supervisor", function()
        local s = start_sup({ strategy = strategy, intensity = 2, period = 5, children = {
          S.spec("a", { trap = true }), S.spec("b", { trap = true }) } })
        local down = process.monitor(s)
        local last
        for i = 1, 3 do
          local a = S.pid_of(s, "a")
          last = { a, S.pid_of(s, "b") }
          crash(a)
          if i < 3 then S.restarted(s, "a", a) end
        end
        assert.are.equal("shutdown", S.await_down(down).reason)
        assert.is_false(process.alive(last[1]))
        assert.is_false(process.alive(last[2]))
        local reps = S.reports()
        local give_up = S.filter(reps, "supervisor", "shutdown")
        assert.are.equal(1, #give_up)
        assert.are.equal("reached_max_restart_intensity", give_up[1].reason)
        assert.are.equal(3, #S.filter(reps, "supervisor", "child_terminated"))
      end)
    end

    it("simple_one_for_one gives up too", function()
      local s = start_sup({ strategy = "simple_one_for_one", intensity = 1, children = {
        { start = { "sup_child" } } } })
      local down = process.monitor(s)
      local p1 = assert(supervisor.start_child(s, {}))
      local p2 = assert(supervisor.start_child(s, {}))
      crash(p1)
      S.eventually(function()
        local l = supervisor.which_children(s)
        for _, c in ipairs(l) do if is_pid(c.pid) and c.pid ~= p1 and c.pid ~= p2 then return true end end
        return nil
      end, "p1 restarted")
      crash(p2)
      assert.are.equal("shutdown", S.await_down(down).reason)
    end)

    it("intensity 0: the first restart is one too many", function()
      local s = start_sup({ intensity = 0, children = { S.spec("a") } })
      local down = process.monitor(s)
      crash(S.pid_of(s, "a"))
      assert.are.equal("shutdown", S.await_down(down).reason)
    end)

    it("restarts spread over more than `period` are not counted together", function()
      local s = start_sup({ intensity = 1, period = 0.3, children = { S.spec("a") } })
      for _ = 1, 4 do
        local a = S.pid_of(s, "a")
        crash(a)
        S.restarted(s, "a", a)
        process.sleep(400) -- the last restart leaves the 0.3 s window
      end
      assert.is_true(process.alive(s))
      -- the same two crashes back to back are one restart too many
      local down = process.monitor(s)
      local a = S.pid_of(s, "a")
      crash(a)
      crash(S.restarted(s, "a", a))
      assert.are.equal("shutdown", S.await_down(down).reason)
    end)

    it("a child that cannot be restarted makes the supervisor give up", function()
      local s = start_sup({ intensity = 3, children = {
        S.spec("a", { fail_if = FLAG }), S.spec("b") } })
      local down = process.monitor(s)
      raise_flag()
      crash(S.pid_of(s, "a"))
      assert.are.equal("shutdown", S.await_down(down).reason)
      local reps = S.reports()
      assert.is_true(#S.filter(reps, "supervisor", "start_error") >= 3)
      assert.are.equal("told_to_fail", S.filter(reps, "supervisor", "start_error")[1].reason)
    end)

    it("one_for_all: another child failing to restart is retried, then given up", function()
      local s = start_sup({ strategy = "one_for_all", intensity = 4, children = {
        S.spec("a"), S.spec("b", { fail_if = FLAG }), S.spec("c") } })
      local down = process.monitor(s)
      raise_flag()
      crash(S.pid_of(s, "a"))
      assert.are.equal("shutdown", S.await_down(down).reason)
      local errs = S.filter(S.reports(), "supervisor", "start_error")
      assert.is_true(#errs >= 1)
      for _, e in ipairs(errs) do assert.are.equal("b", e.child.id) end
    end)

    it("start_link: the caller (trapping exits) gets the supervisor's EXIT 'shutdown'", function()
      local old = process.trap_exit(true)
      local s = assert(supervisor.start_link({ intensity = 0, children = { S.spec("a") } }))
      crash(S.pid_of(s, "a"))
      local m = S.await(function(x)
        return type(x) == "table" and x[1] == "EXIT" and x.pid == s
      end, "EXIT from the supervisor")
      process.trap_exit(old)
      assert.are.equal("shutdown", m.reason)
    end)
  end)

  -- ========================================================== child admin
  describe("child admin", function()
    it("start, terminate, restart and delete children, with OTP's errors", function()
      local s = start_sup({ children = { S.spec("a") } })
      local b = assert(supervisor.start_child(s, S.spec("b")))
      assert.are.same({ "a", "b" }, ids(supervisor.which_children(s)))
      assert.are.same({ nil, { already_started = b } }, { supervisor.start_child(s, S.spec("b")) })
      assert.are.same({ nil, "running" }, { supervisor.restart_child(s, "b") })
      assert.are.same({ nil, "running" }, { supervisor.delete_child(s, "b") })
      assert.is_true(supervisor.terminate_child(s, "b"))
      assert.is_false(process.alive(b))
      assert.is_nil(S.child(s, "b").pid)
      assert.are.same({ specs = 2, active = 1, supervisors = 0, workers = 2 },
        supervisor.count_children(s))
      assert.are.same({ nil, "already_present" }, { supervisor.start_child(s, S.spec("b")) })
      assert.is_true(supervisor.terminate_child(s, "b")) -- already stopped: ok
      local b2 = assert(supervisor.restart_child(s, "b"))
      assert.are_not.equal(b, b2)
      assert.are.equal("pong", gs.call(b2, "ping"))
      assert.is_true(supervisor.terminate_child(s, "b"))
      assert.is_true(supervisor.delete_child(s, "b"))
      assert.are.same({ "a" }, ids(supervisor.which_children(s)))
      for _, f in ipairs({ "terminate_child", "restart_child", "delete_child" }) do
        assert.are.same({ nil, "not_found" }, { supervisor[f](s, "b") }, f)
      end
      -- the id is free again
      assert.is_true(is_pid(supervisor.start_child(s, S.spec("b"))))
    end)

    it("start_child: bad specs, failing and ignoring children, name clashes", function()
      local s = start_sup({ children = {} })
      local _, r = supervisor.start_child(s, { id = "x", start = { "sup_child" }, restart = "sometimes" })
      assert.are.equal("x", r.bad_child_spec)
      assert.are.equal("restart", r.field)
      assert.are.same({ nil, "init_error" },
        { supervisor.start_child(s, S.spec("e", { init = "error" })) })
      _, r = supervisor.start_child(s, S.spec("k", { init = "crash" }))
      assert.matches("init_crash", r.error)
      assert.are.equal(0, supervisor.count_children(s).specs)
      -- ignore: the spec is kept, not running (OTP's {ok, undefined})...
      assert.are.same({ nil, "ignore" }, { supervisor.start_child(s, S.spec("i", { init = "ignore" })) })
      assert.are.same({ { id = "i", type = "worker", module = "sup_child" } },
        supervisor.which_children(s))
      -- ...unless it is temporary
      assert.are.same({ nil, "ignore" }, { supervisor.start_child(s,
        S.spec("ti", { init = "ignore" }, { restart = "temporary" })) })
      assert.are.equal(1, supervisor.count_children(s).specs)
      -- a registered name already taken
      local holder = assert(gs.start("sup_child", {}, { name = "sup_spec_taken" }))
      local c = S.spec("n")
      c.start[3] = { name = "sup_spec_taken" }
      assert.are.same({ nil, { already_started = holder } }, { supervisor.start_child(s, c) })
      gs.stop(holder)
    end)

    it("terminate_child of a temporary child forgets it", function()
      local s = start_sup({ children = { S.spec("t", nil, { restart = "temporary" }) } })
      assert.is_true(supervisor.terminate_child(s, "t"))
      assert.are.same({}, supervisor.which_children(s))
    end)

    it("a child whose init returns 'ignore' at start is kept, not running", function()
      local s = start_sup({ children = { S.spec("i", { init = "ignore" }), S.spec("a"),
        S.spec("ti", { init = "ignore" }, { restart = "temporary" }) } })
      assert.are.same({ "i", "a" }, ids(supervisor.which_children(s)))
      assert.is_nil(S.child(s, "i").pid)
      assert.are.same({ specs = 2, active = 1, supervisors = 0, workers = 2 },
        supervisor.count_children(s))
    end)

    it("a child failing to start stops the ones started and fails start_link", function()
      local pid, reason = supervisor.start_link({ children = {
        S.spec("a", { trap = true }), S.spec("b", { init = "error" }), S.spec("c") } })
      assert.is_nil(pid)
      assert.are.same({ shutdown = { failed_to_start_child = "b", reason = "init_error" } }, reason)
      assert.are.equal("shutdown", S.await_tag("terminated", "a")[3])
      assert.is_nil(process.receive(function(m)
        return type(m) == "table" and m[1] == "started" and m[2] == "c"
      end, 0))
      -- the caller was linked and is still fine
      assert.are.equal("pong", gs.call(assert(gs.start("sup_child", {})), "ping"))
      local errs = S.filter(S.reports(), "supervisor", "start_error")
      assert.are.equal(1, #errs)
      assert.are.equal("b", errs[1].child.id)
    end)

    it("names: the supervisor by name, named children re-registered on restart", function()
      local c = S.spec("named")
      c.start[3] = { name = "sup_spec_named_child" }
      start_sup({ children = { c } }, { name = "sup_spec_named_sup" })
      local old = process.whereis("sup_spec_named_child")
      assert.is_true(is_pid(old))
      assert.are.equal(old, S.pid_of("sup_spec_named_sup", "named"))
      crash(old)
      local new = S.restarted("sup_spec_named_sup", "named", old)
      assert.are.equal(new, process.whereis("sup_spec_named_child"))
      assert.are.equal("pong", gs.call("sup_spec_named_child", "ping"))
      local again = { supervisor.start({}, { name = "sup_spec_named_sup" }) }
      assert.is_nil(again[1])
      assert.is_true(is_pid(again[2].already_started))
    end)
  end)

  -- ============================================================= shutdown
  describe("shutdown", function()
    local function order(n)
      local out = {}
      for _ = 1, n do out[#out + 1] = S.await_tag("terminated")[2] end
      return out
    end

    it("starts children in order and stops them in reverse order", function()
      local s = start_sup({ children = {
        S.spec("a", { trap = true }), S.spec("b", { trap = true }),
        S.spec("c", { trap = true }), S.spec("d", { trap = true }) } })
      local st = {}
      for _ = 1, 4 do st[#st + 1] = S.await_tag("started")[2] end
      assert.are.same({ "a", "b", "c", "d" }, st)
      -- a child added later is stopped first
      assert(supervisor.start_child(s, S.spec("e", { trap = true })))
      gs.stop(s)
      assert.are.same({ "e", "d", "c", "b", "a" }, order(5))
    end)

    it("a child that does not stop within its shutdown time is killed", function()
      local s = start_sup({ children = {
        S.spec("slow", { trap = true, term_block = true }, { shutdown = 100 }),
        S.spec("fine", { trap = true }) } })
      local slow = S.pid_of(s, "slow")
      local ref = process.monitor(slow)
      gs.stop(s)
      assert.are.equal("fine", S.await_tag("terminated")[2])
      assert.are.equal("killed", S.await_down(ref).reason)
      local errs = S.filter(S.reports(), "supervisor", "shutdown_error")
      assert.are.equal(1, #errs)
      assert.are.equal("killed", errs[1].reason)
      assert.are.equal("slow", errs[1].child.id)
    end)

    it("brutal_kill kills at once: terminate does not run, no report", function()
      local s = start_sup({ children = {
        S.spec("bk", { trap = true }, { shutdown = "brutal_kill" }) } })
      local ref = process.monitor(S.pid_of(s, "bk"))
      gs.stop(s)
      assert.are.equal("killed", S.await_down(ref).reason)
      assert.is_nil(process.receive(function(m)
        return type(m) == "table" and m[1] == "terminated"
      end, 0))
      assert.are.equal(0, #S.filter(S.reports(), "supervisor", "shutdown_error"))
    end)

    it("'infinity' waits for a slow terminate to finish", function()
      local s = start_sup({ children = {
        S.spec("inf", { trap = true, term_sleep = 300 }, { shutdown = "infinity" }),
        S.spec("def", { trap = true, term_sleep = 100 }) } }) -- default 5000 ms
      gs.stop(s)
      local d = S.await_tag("terminated", "def")
      local i = S.await_tag("terminated", "inf")
      assert.are.equal("shutdown", d[3])
      assert.are.equal("shutdown", i[3])
      assert.are.equal(0, #S.filter(S.reports(), "supervisor", "shutdown_error"))
    end)

    it("a child that unlinked itself cannot hang the supervisor", function()
      local s = start_sup({ children = {
        S.spec("u1"),
        S.spec("u2", { trap = true, term_block = true }, { shutdown = 100 }) } })
      local u1, u2 = S.pid_of(s, "u1"), S.pid_of(s, "u2")
      assert.is_true(gs.call(u1, { "unlink", s }))
      assert.is_true(gs.call(u2, { "unlink", s }))
      local r1, r2 = process.monitor(u1), process.monitor(u2)
      local rs = process.monitor(s)
      gs.stop(s)
      assert.are.equal("normal", S.await_down(rs).reason)
      assert.are.equal("killed", S.await_down(r2).reason)
      assert.are.equal("shutdown", S.await_down(r1).reason)
    end)

    it("children that exit by themselves during the shutdown", function()
      -- b is stopped first; its terminate tells a to stop (abnormally),
      -- so a ends while the supervisor is busy with b
      local a = S.spec("a")
      a.start[3] = { name = "sup_spec_self_exit" }
      local s = start_sup({ children = {
        a,
        S.spec("n", { trap = true }),
        S.spec("b", { trap = true, term_sleep = 100,
          term_send = { "sup_spec_self_exit", { "stop", "on_my_own" } } }) } })
      local pa = S.pid_of(s, "a")
      local ra, rs = process.monitor(pa), process.monitor(s)
      gs.stop(s)
      assert.are.equal("on_my_own", S.await_down(ra).reason)
      assert.are.equal("normal", S.await_down(rs).reason)
      -- nobody was restarted
      local starts = 0
      while process.receive(function(m)
        return type(m) == "table" and m[1] == "started"
      end, 0) do starts = starts + 1 end
      assert.are.equal(3, starts)
      -- a's own end is the error reported, if any (never a hang)
      for _, e in ipairs(S.filter(S.reports(), "supervisor", "shutdown_error")) do
        assert.are.equal("a", e.child.id)
        assert.is_true(e.reason == "on_my_own" or e.reason == "noproc")
      end
    end)

    it("runtime shutdown (program exit) stops a supervision tree in order", function()
      local script = os.tmpname()
      local f = assert(io.open(script, "w"))
      f:write(("package.path = %q\npackage.cpath = %q\n"):format(package.path, package.cpath))
      f:write([[
        local supervisor = require "genserver.supervisor"
        local function c(id) return { id = id, start = { "sup_child",
          { id = id, trap = true, print_term = true } } } end
        local sub = { children = { c("s1"), c("s2") } }
        assert(supervisor.start({ children = { c("a"),
          { id = "sub", start = { "genserver.supervisor", sub } }, c("b") } }))
        print("started")
      ]])
      f:close()
      local p = assert(io.popen(("timeout -k 1 20 lua5.4 %q 2>&1"):format(script)))
      local out = p:read("a")
      p:close()
      os.remove(script)
      local got = {}
      for id, reason in out:gmatch("terminated (%S+) (%S+)") do got[#got + 1] = id .. ":" .. reason end
      assert.are.same({ "b:shutdown", "s2:shutdown", "s1:shutdown", "a:shutdown" }, got, out)
    end)

    it("a 10,000-child simple_one_for_one supervisor starts and stops", function()
      local N = 10000
      local before = runtime.stats().processes
      local s = start_sup({ strategy = "simple_one_for_one", children = {
        { start = { "sup_min" }, restart = "temporary" } } })
      local pids = {}
      for i = 1, N do
        local p, r = supervisor.start_child(s, i)
        assert(p, gs.describe(r))
        pids[i] = p
      end
      assert.are.same({ specs = 1, active = N, supervisors = 0, workers = N },
        supervisor.count_children(s))
      assert.are.equal(N, #supervisor.which_children(s))
      assert.is_true(runtime.stats().processes >= before + N)
      gs.stop(s)
      local alive = 0
      for i = 1, N do if process.alive(pids[i]) then alive = alive + 1 end end
      assert.are.equal(0, alive)
      assert.are.equal(before, S.settle(before))
      assert.are.equal(0, #S.filter(S.reports(), "supervisor", "shutdown_error"))
    end)

    it("simple_one_for_one children that ignore 'shutdown' are killed after the time", function()
      local s = start_sup({ strategy = "simple_one_for_one", children = {
        { start = { "sup_child", { trap = true, term_block = true } }, shutdown = 100 } } })
      local refs = {}
      for i = 1, 20 do refs[i] = process.monitor(assert(supervisor.start_child(s, { id = i }))) end
      gs.stop(s)
      for i = 1, 20 do assert.are.equal("killed", S.await_down(refs[i]).reason) end
      local errs = S.filter(S.reports(), "supervisor", "shutdown_error")
      assert.are.equal(1, #errs) -- one report per reason, with the count
      assert.are.equal(20, errs[1].child.count)
    end)
  end)

  -- ====================================================== nested supervisors
  describe("nested supervisors", function()
    it("a supervision tree: restarts stay local, escalation goes up, stop goes down", function()
      local sub = { strategy = "one_for_one", intensity = 1, period = 5, children = {
        S.spec("sa", { trap = true }), S.spec("sb", { trap = true }) } }
      local top = start_sup({ intensity = 5, children = {
        S.spec("w1", { trap = true }),
        { id = "sub", start = { "genserver.supervisor", sub } },
        S.spec("w2", { trap = true }) } })
      local c = S.child(top, "sub")
      assert.are.equal("supervisor", c.type)
      assert.are.equal("genserver.supervisor", c.module)
      assert.are.same({ specs = 3, active = 3, supervisors = 1, workers = 2 },
        supervisor.count_children(top))
      local sub1 = c.pid
      -- a crash inside the sub-tree is handled there
      local sa = S.pid_of(sub1, "sa")
      crash(sa)
      S.restarted(sub1, "sa", sa)
      assert.are.equal(sub1, S.pid_of(top, "sub"))
      -- the sub-supervisor gives up: the top one restarts it
      local sb = S.pid_of(sub1, "sb")
      crash(sb)
      local sub2 = S.restarted(top, "sub", sub1)
      assert.is_false(process.alive(sub1))
      assert.are.same({ "sa", "sb" }, ids(supervisor.which_children(sub2)))
      local reps = S.reports()
      assert.are.equal(1, #S.filter(reps, "supervisor", "shutdown"))
      S.flush()
      -- stopping the top stops everything, in reverse order, depth first
      gs.stop(top)
      local got = {}
      for _ = 1, 4 do got[#got + 1] = S.await_tag("terminated")[2] end
      assert.are.same({ "w2", "sb", "sa", "w1" }, got)
      assert.is_false(process.alive(sub2))
    end)

    it("a nested supervisor with a bad spec fails to start with the reason", function()
      local top = start_sup({ children = {} })
      local pid, r = supervisor.start_child(top, { id = "bad",
        start = { "genserver.supervisor", { strategy = "nope" } } })
      assert.is_nil(pid)
      assert.are.equal("strategy", r.bad_flags)
    end)
  end)

  -- ============================================================== backoff
  describe("restart backoff (beyond OTP)", function()
    it("a restart waits; meanwhile the supervisor answers and shows 'restarting'", function()
      local s = start_sup({ intensity = 10, backoff = { initial = 600000 },
        children = { S.spec("a"), S.spec("b") } })
      local a = S.pid_of(s, "a")
      crash(a)
      local c = after_exit(s, "a", a)
      assert.are.equal("restarting", c.pid)
      assert.are.same({ specs = 2, active = 1, supervisors = 0, workers = 2 },
        supervisor.count_children(s))
      assert.are.same({ nil, "restarting" }, { supervisor.restart_child(s, "a") })
      assert.are.same({ nil, "restarting" }, { supervisor.delete_child(s, "a") })
      assert.are.equal("pong", gs.call(S.pid_of(s, "b"), "ping"))
      -- terminate_child cancels the pending restart
      assert.is_true(supervisor.terminate_child(s, "a"))
      assert.is_nil(S.child(s, "a").pid)
      local a2 = assert(supervisor.restart_child(s, "a"))
      assert.are.equal("pong", gs.call(a2, "ping"))
      -- and a supervisor with a restart pending stops at once
      crash(a2)
      assert.are.equal("restarting", after_exit(s, "a", a2).pid)
      local down = process.monitor(s)
      gs.stop(s)
      assert.are.equal("normal", S.await_down(down).reason)
    end)

    it("the restart happens after the delay", function()
      local s = start_sup({ intensity = 10, backoff = { initial = 50 },
        children = { S.spec("a") } })
      local a = S.pid_of(s, "a")
      crash(a)
      local a2 = S.restarted(s, "a", a)
      assert.are.equal("pong", gs.call(a2, "ping"))
      local t = S.filter(S.reports(), "supervisor", "child_terminated")
      assert.are.equal(50, t[1].restart_delay)
    end)

    it("the delay doubles while the child keeps failing, up to max", function()
      local s = start_sup({ intensity = 100,
        backoff = { initial = 10, max = 40, reset = 600000 }, children = { S.spec("a") } })
      for _ = 1, 5 do
        local a = S.pid_of(s, "a")
        crash(a)
        S.restarted(s, "a", a)
      end
      local delays = {}
      for i, r in ipairs(S.filter(S.reports(), "supervisor", "child_terminated")) do
        delays[i] = r.restart_delay
      end
      assert.are.same({ 10, 20, 40, 40, 40 }, delays)
    end)

    it("a child whose start keeps failing is retried later, and recovers", function()
      local s = start_sup({ intensity = 1000, backoff = { initial = 20, max = 100 },
        children = { S.spec("a", { fail_if = FLAG }) } })
      raise_flag()
      local a = S.pid_of(s, "a")
      crash(a)
      S.wait_reports(function(all)
        return #S.filter(all, "supervisor", "start_error") >= 2
      end, "two failed restarts")
      assert.are.equal("restarting", S.child(s, "a").pid)
      lower_flag()
      local a2 = S.restarted(s, "a", a)
      assert.are.equal("pong", gs.call(a2, "ping"))
    end)

    it("one_for_all: the group waits together; stopping one child does not strand the others", function()
      local s = start_sup({ strategy = "one_for_all", intensity = 10, backoff = { initial = 1000 },
        children = { S.spec("a"), S.spec("b"), S.spec("c") } })
      local pb, pc = S.pid_of(s, "b"), S.pid_of(s, "c")
      crash(S.pid_of(s, "a"))
      S.eventually(function()
        local l = supervisor.which_children(s)
        return l[1].pid == "restarting" and l[2].pid == "restarting" and l[3].pid == "restarting"
      end, "the whole group restarting")
      assert.is_false(process.alive(pb))
      assert.is_false(process.alive(pc))
      -- take the child whose crash started it all out of the picture
      assert.is_true(supervisor.terminate_child(s, "a"))
      assert.is_true(supervisor.delete_child(s, "a"))
      local nb = S.restarted(s, "b", pb)
      local nc = S.restarted(s, "c", pc)
      assert.are.equal("pong", gs.call(nb, "ping"))
      assert.are.equal("pong", gs.call(nc, "ping"))
      assert.are.same({ "b", "c" }, ids(supervisor.which_children(s)))
    end)

    it("simple_one_for_one children wait as 'restarting' too", function()
      local s = start_sup({ strategy = "simple_one_for_one", intensity = 10,
        backoff = { initial = 600000 }, children = { { start = { "sup_child" } } } })
      local p = assert(supervisor.start_child(s, {}))
      assert(supervisor.start_child(s, {}))
      crash(p)
      S.eventually(function()
        for _, c in ipairs(supervisor.which_children(s)) do
          if c.pid == "restarting" then return true end
        end
        return nil
      end, "a restarting dynamic child")
      assert.are.same({ specs = 1, active = 1, supervisors = 0, workers = 2 },
        supervisor.count_children(s))
      assert.is_true(supervisor.terminate_child(s, p)) -- forgets the pending restart
      assert.are.equal(1, supervisor.count_children(s).workers)
    end)
  end)

  -- ======================================================== invalid specs
  describe("invalid specs are rejected, naming the field", function()
    local ok_child = { id = "a", start = { "sup_child" } }
    local function with_child(fields)
      local c = { id = "a", start = { "sup_child" } }
      for k, v in pairs(fields) do c[k] = v end
      return { children = { c } }
    end
    local cases = {
      { "spec not a table", "nope", "bad_flags", "spec" },
      { "unknown strategy", { strategy = "bogus" }, "bad_flags", "strategy" },
      { "strategy not a string", { strategy = 1 }, "bad_flags", "strategy" },
      { "negative intensity", { intensity = -1 }, "bad_flags", "intensity" },
      { "fractional intensity", { intensity = 1.5 }, "bad_flags", "intensity" },
      { "intensity as a string", { intensity = "3" }, "bad_flags", "intensity" },
      { "zero period", { period = 0 }, "bad_flags", "period" },
      { "period as a string", { period = "5" }, "bad_flags", "period" },
      { "backoff not a table", { backoff = 5 }, "bad_flags", "backoff" },
      { "backoff.initial 0", { backoff = { initial = 0 } }, "bad_flags", "backoff" },
      { "backoff.max < initial", { backoff = { initial = 100, max = 50 } }, "bad_flags", "backoff" },
      { "backoff unknown field", { backoff = { initial = 10, maximum = 1 } }, "bad_flags", "backoff" },
      { "children not a table", { children = "x" }, "bad_flags", "children" },
      { "children not a list", { children = { x = ok_child } }, "bad_flags", "children" },
      { "misspelt flag", { stratgey = "one_for_one" }, "bad_flags", "stratgey" },
      { "simple_one_for_one without a template", { strategy = "simple_one_for_one" },
        "bad_flags", "children" },
      { "simple_one_for_one with two", { strategy = "simple_one_for_one",
        children = { ok_child, ok_child } }, "bad_flags", "children" },
      { "child not a table", { children = { "x" } }, "bad_child_spec", "spec" },
      { "child without id", { children = { { start = { "sup_child" } } } }, "bad_child_spec", "id" },
      { "child id a table", with_child({ id = {} }), "bad_child_spec", "id" },
      { "duplicate ids", { children = { ok_child, ok_child } }, "bad_child_spec", "id" },
      { "start missing", { children = { { id = "a" } } }, "bad_child_spec", "start" },
      { "start empty", with_child({ start = {} }), "bad_child_spec", "start" },
      { "start module a number", with_child({ start = { 42 } }), "bad_child_spec", "start" },
      { "start opts not a table", with_child({ start = { "m", nil, "o" } }), "bad_child_spec", "start" },
      { "start opts.name not a string", with_child({ start = { "m", nil, { name = 5 } } }),
        "bad_child_spec", "start" },
      { "bad restart", with_child({ restart = "sometimes" }), "bad_child_spec", "restart" },
      { "negative shutdown", with_child({ shutdown = -1 }), "bad_child_spec", "shutdown" },
      { "shutdown word", with_child({ shutdown = "soon" }), "bad_child_spec", "shutdown" },
      { "bad type", with_child({ type = "manager" }), "bad_child_spec", "type" },
      { "misspelt child field", with_child({ restrat = "temporary" }), "bad_child_spec", "restrat" },
    }
    for _, case in ipairs(cases) do
      it(case[1], function()
        local before = runtime.stats().processes
        local pid, r = supervisor.start(case[2])
        assert.is_nil(pid)
        assert.is_table(r)
        assert.is_not_nil(r[case[3]], gs.describe(r))
        assert.are.equal(case[4], r.field)
        assert.is_string(r.message)
        assert.matches(case[4], r.message, 1, true)
        assert.are.same({ nil, r }, { supervisor.check_spec(case[2]) })
        assert.are.same({ nil, r }, { supervisor.start_link(case[2]) })
        assert.are.equal(before, runtime.stats().processes) -- nothing was spawned
      end)
    end

    it("a bad spec reaching init (nested) gives the same reason", function()
      local top = start_sup({ children = {} })
      local _, r = supervisor.start_child(top, { id = "n",
        start = { "genserver.supervisor", with_child({ type = "manager" }) } })
      assert.are.equal("a", r.bad_child_spec)
      assert.are.equal("type", r.field)
    end)

    it("opts must be a table", function()
      assert.has_error(function() supervisor.start({}, "name") end)
    end)
  end)

  -- =========================================================== crash storms
  describe("crash storms", function()
    local N = 300

    local function storm_spec(intensity)
      local children = {}
      for i = 1, N do
        children[i] = { id = i, start = { "sup_child", { id = i }, { name = "sup_storm_" .. i } } }
      end
      return { strategy = "one_for_one", intensity = intensity, period = 5, children = children }
    end

    local function names()
      local set = {}
      for _, n in ipairs(process.registered()) do set[n] = true end
      return set
    end

    it("300 children crashing 5 times each: every crash restarted, nothing leaked", function()
      local before, names_before = runtime.stats().processes, names()
      local s = start_sup(storm_spec(100000))
      local ROUNDS = 5
      for _ = 1, ROUNDS do
        local pids = {}
        for _, c in ipairs(supervisor.which_children(s)) do
          pids[c.id] = c.pid
          gs.cast(c.pid, "crash")
        end
        S.eventually(function()
          for _, c in ipairs(supervisor.which_children(s)) do
            if not is_pid(c.pid) or c.pid == pids[c.id] then return nil end
          end
          return true
        end, "all 300 restarted", 3000)
      end
      assert.are.same({ specs = N, active = N, supervisors = 0, workers = N },
        supervisor.count_children(s))
      for i = 1, N, 37 do assert.are.equal("pong", gs.call("sup_storm_" .. i, "ping")) end
      local reps = S.reports()
      assert.are.equal(N * ROUNDS, #S.filter(reps, "supervisor", "child_terminated"))
      assert.are.equal(N * ROUNDS, #S.filter(reps, "crash"))
      assert.are.equal(0, #S.filter(reps, "supervisor", "shutdown"))
      gs.stop(s)
      assert.are.equal(before, S.settle(before))
      assert.are.same(names_before, names())
    end)

    it("300 children crashing at once past the intensity: the supervisor gives up cleanly", function()
      local before, names_before = runtime.stats().processes, names()
      local s = start_sup(storm_spec(10))
      local down = process.monitor(s)
      for _, c in ipairs(supervisor.which_children(s)) do gs.cast(c.pid, "crash") end
      assert.are.equal("shutdown", S.await_down(down).reason)
      assert.are.equal(before, S.settle(before))
      assert.are.same(names_before, names())
      local reps = S.reports()
      -- OTP's decisions: 10 restarts, the 11th is one too many
      assert.are.equal(11, #S.filter(reps, "supervisor", "child_terminated"))
      assert.are.equal(1, #S.filter(reps, "supervisor", "shutdown"))
    end)
  end)
end)
