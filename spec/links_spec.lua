-- Specs for links and monitors at the gen_server level (DESIGN.md §1.5,
-- §2.2): start_link propagation both ways, a server trapping exits (EXIT
-- from a non-parent in handle_info; EXIT from its parent ends it through
-- terminate), kill, demonitor with and without flush, monitoring by name,
-- monitoring what is already dead, and races (a process dying while it is
-- being linked or monitored, a server stopping while it is called) run in
-- bounded loops.
--
-- Servers are spec/support/sup_child.lua; parents are processes running
-- spec/support/sup_parent.lua (started by name: a function defined in this
-- file would lose its globals in another state).
package.path = "spec/support/?.lua;" .. package.path

local gs = require "genserver"
local process = require "genserver.process"
local runtime = require "genserver.runtime"
local S = require "sup_util"

local ME = process.self

-- Spawns a sup_parent that starts a sup_child server linked to itself.
-- Returns parent, server.
local function parent_with_server(arg, opts)
  local parent = process.spawn("sup_parent", ME(), "server", { "sup_child", arg or {}, opts })
  local m = S.await(function(x)
    return type(x) == "table" and x[1] == "parent_started" and x[2] == parent
  end, "parent_started")
  assert(m[3], gs.describe(m[4]))
  return parent, m[3]
end

local function is_exit_from(pid)
  return function(m) return type(m) == "table" and m[1] == "EXIT" and m.pid == pid end
end

describe("links and monitors at the gen_server level", function()
  local baseline

  setup(function()
    S.recorder()
    S.capture_reports()
    baseline = runtime.stats().processes
  end)

  before_each(function()
    S.recorder()
    S.flush()
  end)

  after_each(function()
    process.trap_exit(false)
    S.flush()
  end)

  teardown(function()
    -- every test cleaned up after itself
    assert.are.equal(baseline, S.settle(baseline))
  end)

  -- ============================================================ start_link
  describe("start_link", function()
    it("a crashing server takes its (non-trapping) parent down with its reason", function()
      local parent, server = parent_with_server({ id = "s" })
      local rp, rs = process.monitor(parent), process.monitor(server)
      gs.cast(server, "crash")
      local ds, dp = S.await_down(rs), S.await_down(rp)
      assert.matches("crash_on_cast", ds.reason.error)
      assert.are.same(ds.reason, dp.reason)
    end)

    it("a parent ending abnormally takes its (non-trapping) server down, no terminate", function()
      local parent, server = parent_with_server({ id = "s", rec = S.REC })
      local rs = process.monitor(server)
      process.send(parent, { "exit", "parent_boom" })
      assert.are.equal("parent_boom", S.await_down(rs).reason)
      assert.is_nil(process.receive(function(m)
        return type(m) == "table" and m[1] == "terminated"
      end, 0))
    end)

    it("a parent ending 'normal' leaves a non-trapping server running", function()
      local parent, server = parent_with_server({ id = "s" })
      local rp = process.monitor(parent)
      process.send(parent, { "exit", "normal" })
      S.await_down(rp)
      assert.are.equal("pong", gs.call(server, "ping"))
      gs.stop(server)
    end)

    it("a trapping parent gets the server's EXIT with its reason", function()
      local parent, server = parent_with_server({ id = "s" })
      process.send(parent, { "trap" })
      S.await_tag("trapping")
      gs.cast(server, { "stop", "server_reason" })
      local m = S.await_tag("parent_got")
      assert.are.equal("EXIT", m[2][1])
      assert.are.equal(server, m[2].pid)
      assert.are.equal("server_reason", m[2].reason)
      local rp = process.monitor(parent)
      process.send(parent, { "exit", "normal" })
      S.await_down(rp)
    end)

    it("the main script (trapping) sees a linked server's end as an EXIT", function()
      process.trap_exit(true)
      local server = assert(gs.start_link("sup_child", {}))
      gs.cast(server, { "stop", "bye" })
      assert.are.equal("bye", S.await(is_exit_from(server), "EXIT").reason)
      -- 'normal' too, when trapping
      server = assert(gs.start_link("sup_child", {}))
      gs.stop(server)
      assert.are.equal("normal", S.await(is_exit_from(server), "EXIT").reason)
    end)
  end)

  -- ==================================================== a trapping server
  describe("a server that traps exits", function()
    it("gets EXITs from non-parents in handle_info and lives on", function()
      local parent, server = parent_with_server({ id = "s", trap = true, rec = S.REC })
      -- a linked process that dies
      local q = process.spawn("sup_quick_sleeper")
      assert.is_true(gs.call(server, { "link", q }))
      process.exit(q, "kill")
      -- an exit signal from a stranger (the main script)
      process.exit(server, "from_a_stranger")
      local infos = S.eventually(function()
        local l = gs.call(server, "infos")
        return #l >= 2 and l or nil
      end, "both EXITs reached handle_info")
      local by = {}
      for _, m in ipairs(infos) do
        assert.are.equal("EXIT", m[1])
        by[m.pid] = m.reason
      end
      assert.are.equal("killed", by[q])
      assert.are.equal("from_a_stranger", by[ME()])
      assert.is_true(process.alive(server))
      -- even 'normal' from the parent ends a trapping server (OTP)
      local rp = process.monitor(parent)
      process.send(parent, { "exit", "normal" })
      S.await_down(rp)
      assert.are.equal("normal", S.await_tag("terminated", "s")[3])
    end)

    it("an EXIT from its parent ends it through terminate, with the parent's reason", function()
      local parent, server = parent_with_server({ id = "s", trap = true, rec = S.REC })
      local rs = process.monitor(server)
      process.send(parent, { "exit", "parent_gone" })
      assert.are.equal("parent_gone", S.await_tag("terminated", "s")[3])
      assert.are.equal("parent_gone", S.await_down(rs).reason)
    end)

    it("exit(server, 'normal') from a stranger: ignored unless trapping", function()
      local plain = assert(gs.start("sup_child", {}))
      -- (the starter is the parent: the stranger here is the main script)
      local parent, trapping = parent_with_server({ trap = true })
      process.exit(plain, "normal")
      process.exit(trapping, "normal")
      assert.are.equal("pong", gs.call(plain, "ping"))
      local infos = S.eventually(function()
        local l = gs.call(trapping, "infos")
        return #l > 0 and l or nil
      end, "EXIT normal in handle_info")
      assert.are.equal("normal", infos[1].reason)
      assert.are.equal(ME(), infos[1].pid)
      gs.stop(plain)
      local rs = process.monitor(trapping)
      process.send(parent, { "exit", "normal" })
      S.await_down(rs)
    end)
  end)

  -- ================================================================= kill
  describe("kill", function()
    it("kills a trapping server: no terminate, DOWN and EXIT say 'killed'", function()
      process.trap_exit(true)
      local server = assert(gs.start_link("sup_child", { id = "k", trap = true, rec = S.REC }))
      local ref = process.monitor(server)
      process.exit(server, "kill")
      assert.are.equal("killed", S.await_down(ref).reason)
      assert.are.equal("killed", S.await(is_exit_from(server), "EXIT").reason)
      assert.is_nil(process.receive(function(m)
        return type(m) == "table" and m[1] == "terminated"
      end, 0))
    end)

    it("'killed' propagates to non-trapping linked servers as 'killed'", function()
      local parent, server = parent_with_server({ id = "s" })
      local rs = process.monitor(server)
      process.exit(parent, "kill")
      assert.are.equal("killed", S.await_down(rs).reason)
    end)
  end)

  -- ============================================================== monitors
  describe("monitors", function()
    it("start_monitor: DOWN with the crash reason", function()
      local server, ref = gs.start_monitor("sup_child", {})
      gs.cast(server, "crash")
      local d = S.await_down(ref)
      assert.are.equal(server, d.pid)
      assert.matches("crash_on_cast", d.reason.error)
    end)

    it("demonitor with 'flush' drops a DOWN already queued", function()
      local server = assert(gs.start("sup_child", {}))
      local ref = process.monitor(server)
      local ref2 = process.monitor(server)
      gs.stop(server)
      S.await_down(ref2) -- so the first DOWN is queued too
      process.demonitor(ref, "flush")
      assert.is_nil(process.receive(function(m)
        return type(m) == "table" and m.ref == ref
      end, 0))
    end)

    it("demonitor without flush keeps a DOWN already queued", function()
      local server = assert(gs.start("sup_child", {}))
      local ref = process.monitor(server)
      local ref2 = process.monitor(server)
      gs.stop(server)
      S.await_down(ref2)
      process.demonitor(ref)
      assert.is_table(process.receive(function(m)
        return type(m) == "table" and m.ref == ref
      end, 0))
    end)

    it("demonitor before the end: no DOWN ever comes", function()
      local server = assert(gs.start("sup_child", {}))
      local ref = process.monitor(server)
      local ref2 = process.monitor(server)
      process.demonitor(ref)
      gs.stop(server)
      S.await_down(ref2)
      assert.is_nil(process.receive(function(m)
        return type(m) == "table" and m.ref == ref
      end, 50))
    end)

    it("monitoring by registered name", function()
      local server = assert(gs.start("sup_child", {}, { name = "links_spec_named" }))
      local ref = process.monitor("links_spec_named")
      gs.stop("links_spec_named", "bye")
      local d = S.await_down(ref)
      assert.are.equal(server, d.pid)
      assert.are.equal("bye", d.reason)
      -- the name is free once it is down
      assert.is_nil(process.whereis("links_spec_named"))
    end)

    it("monitoring a name nobody holds: DOWN noproc at once", function()
      local ref = process.monitor("links_spec_nobody")
      assert.are.equal("noproc", S.await_down(ref).reason)
    end)

    it("monitoring a dead server: DOWN noproc at once", function()
      local server = assert(gs.start("sup_child", {}))
      gs.stop(server)
      local ref = process.monitor(server)
      local d = S.await_down(ref)
      assert.are.equal("noproc", d.reason)
      assert.are.equal(server, d.pid)
    end)

    it("a call to a server that dies meanwhile fails with its reason", function()
      local server = assert(gs.start("sup_child", {}))
      gs.cast(server, { "stop", "went_away" })
      local ok, err = pcall(gs.call, server, { "sleep", 0 })
      if not ok then
        assert.is_true(gs.is_error(err))
        assert.is_true(err.reason == "went_away" or err.reason == "noproc")
      end
    end)
  end)

  -- ================================================================ races
  describe("races (bounded loops)", function()
    local N = 500

    it("linking to a process as it dies: exactly one EXIT, its reason or noproc", function()
      process.trap_exit(true)
      local counts = { race_reason = 0, noproc = 0 }
      for _ = 1, N do
        local p = process.spawn("sup_quick", "race_reason")
        process.link(p)
        local m = S.await(is_exit_from(p), "EXIT")
        counts[m.reason] = (counts[m.reason] or 0) + 1
        assert.is_nil(process.receive(is_exit_from(p), 0), "a second EXIT")
      end
      assert.are.equal(N, counts.race_reason + counts.noproc)
    end)

    it("monitoring a process as it dies: exactly one DOWN, its reason or noproc", function()
      local counts = { race_reason = 0, noproc = 0 }
      for _ = 1, N do
        local p = process.spawn("sup_quick", "race_reason")
        local ref = process.monitor(p)
        local d = S.await_down(ref)
        counts[d.reason] = (counts[d.reason] or 0) + 1
        assert.are.equal(p, d.pid)
        assert.is_nil(process.receive(function(m)
          return type(m) == "table" and m.ref == ref
        end, 0), "a second DOWN")
      end
      assert.are.equal(N, counts.race_reason + counts.noproc)
    end)

    it("linking to a server as it stops by itself", function()
      process.trap_exit(true)
      for _ = 1, N do
        local s = assert(gs.start("sup_child", { exit_after = { 0, "server_race" } }))
        process.link(s)
        local m = S.await(is_exit_from(s), "EXIT")
        assert.is_true(m.reason == "server_race" or m.reason == "noproc", gs.describe(m.reason))
      end
    end)

    it("killing a server right after start_link: one EXIT 'killed'", function()
      process.trap_exit(true)
      for _ = 1, N do
        local s = assert(gs.start_link("sup_child", {}))
        process.exit(s, "kill")
        assert.are.equal("killed", S.await(is_exit_from(s), "EXIT").reason)
      end
    end)

    it("calling a server while it stops: a reply or a clean error, never a hang", function()
      local replies, errors = 0, 0
      for _ = 1, N do
        local s = assert(gs.start("sup_child", {}))
        gs.cast(s, { "stop", "normal" })
        local ok, r = pcall(gs.call, s, "ping", S.WAIT)
        if ok then
          assert.are.equal("pong", r)
          replies = replies + 1
        else
          assert.is_true(gs.is_error(r))
          assert.is_true(r.reason == "normal" or r.reason == "noproc", gs.describe(r.reason))
          errors = errors + 1
        end
      end
      assert.are.equal(N, replies + errors)
    end)

    it("a parent and its linked server dying at once", function()
      for _ = 1, 100 do
        local parent, server = parent_with_server({})
        local rs = process.monitor(server)
        process.send(parent, { "exit", "both" })
        gs.cast(server, { "stop", "self" })
        local r = S.await_down(rs).reason
        assert.is_true(r == "both" or r == "self", gs.describe(r))
      end
    end)
  end)
end)
