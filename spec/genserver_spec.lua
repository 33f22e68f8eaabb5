-- Specs for the gen_server behaviour (DESIGN.md §2.1 callback module, §2.2
-- the `genserver` API): every callback return shape, every client function,
-- the start rules, error objects, bad inputs and two scale tests.
--
-- Run in-tree (also with GENSERVER_WORKERS=4):
--   LUA_PATH="$PWD/lua/?.lua;$PWD/lua/?/init.lua;$PWD/spec/support/?.lua;;" \
--   LUA_CPATH="$PWD/build/?.so;;" GENSERVER_WORKERS=1 \
--   lua5.4 "$(command -v busted)" --ignore-lua spec/genserver_spec.lua
--
-- New server states inherit package.path from the spawner, so the callback
-- modules in spec/support (gs_*.lua) can be started by name.
package.path = "spec/support/?.lua;" .. package.path

local gs = require "genserver"
local process = require "genserver.process"
local runtime = require "genserver.runtime"

local insert = table.insert

-- A bad_return_value reason (DESIGN 2.1, 2.2): every value the callback
-- returned, the callback's name and the shapes it may return.
local function assert_brv(values, reason, callback)
  assert.are.same(values, reason.bad_return_value)
  assert.are.equal(callback, reason.callback)
  assert.are.equal("string", type(reason.expected))
end

-- ----------------------------------------------------------------- helpers

local WAIT = 5000 -- ms: upper bound for anything that should happen "soon"

-- Servers started by a test, stopped after it (processes leak otherwise).
local started = {}

local function track(pid)
  if pid ~= nil then started[#started + 1] = pid end
  return pid
end

local function start_ok(mod, arg, opts)
  local pid, reason = gs.start(mod, arg, opts)
  assert(pid, "start failed: " .. gs.describe(reason))
  return track(pid)
end

-- Drop whatever earlier tests left in the main script's mailbox.
local function flush()
  while process.receive(0) ~= nil do end
end

-- The first message { tag, ... } (others stay queued), or nil after timeout.
local function recv(tag, timeout)
  return process.receive(function(m)
    return type(m) == "table" and m[1] == tag
  end, timeout or WAIT)
end

-- Waits for the DOWN of monitor `ref`; returns the message.
local function await_down_msg(ref, timeout)
  local m = process.receive(function(msg)
    return type(msg) == "table" and msg[1] == "DOWN" and msg.ref == ref
  end, timeout or WAIT)
  assert(m, "no DOWN message arrived")
  return m
end

-- Waits for the DOWN of monitor `ref`; returns its reason.
local function await_down(ref, timeout)
  return await_down_msg(ref, timeout).reason
end

-- Runs f(...) and returns the genserver error it must raise.
local function gs_error(f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error, got success")
  assert(gs.is_error(err), "expected a genserver error, got: " .. tostring(err))
  return err
end

-- Line where function f is defined (the callbacks that crash are one-liners,
-- so this is also the line of their error).
local function line_of(f)
  return debug.getinfo(f, "S").linedefined
end

local contains = require("pr_util").contains

local function assert_crash_reason(reason, message, line)
  assert.is_table(reason)
  assert.is_truthy(contains(reason.error, message),
    "reason.error should contain " .. message .. ", got " .. gs.describe(reason))
  assert.is_string(reason.traceback)
  if line then
    assert.is_truthy(contains(reason.traceback, "genserver_spec.lua:" .. line .. ":"),
      "traceback should name genserver_spec.lua:" .. line .. ", got:\n" ..
      tostring(reason.traceback))
  end
end

-- Runs `body` in a child lua5.4 (same module paths, GENSERVER_WORKERS
-- inherited), killed after `secs` seconds; returns its stdout and stderr.
-- For what the main script cannot observe (stderr) or could hang on.
local function run_child(body, secs)
  local _, _, out = require("pr_util").run_child(body, { timeout = secs or 20 })
  return out
end

-- A fresh registered name per use.
local name_seq = 0
local function fresh_name(prefix)
  name_seq = name_seq + 1
  return ("%s_%d_%s"):format(prefix or "gs_spec", name_seq, tostring(process.self()))
end

local ME = process.self

-- A configurable server: `behaviour` (copied with the server) maps a
-- request/message to what the callback returns. Every event is logged in
-- state.log, which the call "log" returns.
local function logger(extra)
  local S = {
    init = function(arg)
      return "ok", { main = arg and arg.main, log = {} }, arg and arg.action
    end,
    handle_call = function(req, _from, st)
      if req == "log" then
        st.log[#st.log + 1] = "call:log"
        return "reply", st.log, st
      end
      st.log[#st.log + 1] = "call:" .. tostring(req)
      return "reply", req, st
    end,
    handle_cast = function(msg, st)
      st.log[#st.log + 1] = "cast:" .. tostring(msg)
      return "noreply", st
    end,
    handle_info = function(msg, st)
      st.log[#st.log + 1] = "info:" .. tostring(msg)
      return "noreply", st
    end,
  }
  for k, v in pairs(extra or {}) do S[k] = v end
  return S
end

-- --------------------------------------------------------------------------

describe("genserver", function()
  before_each(function()
    flush()
  end)

  after_each(function()
    for i = #started, 1, -1 do
      local pid = started[i]
      started[i] = nil
      if process.alive(pid) then
        local ok = pcall(gs.stop, pid, "normal", 2000)
        if not ok and process.alive(pid) then process.exit(pid, "kill") end
      end
    end
    flush()
  end)

  -- ======================================================== §2.1 init
  describe("init", function()
    it("returning 'ok', state: start returns a pid and the state is kept", function()
      local pid = start_ok("gs_counter", 41)
      assert.is_true(process.is_pid(pid))
      assert.is_true(process.alive(pid))
      assert.are.equal(41, gs.call(pid, "get"))
      assert.are.equal(42, gs.call(pid, { "add", 1 }))
    end)

    it("returning 'ok', state, timeout: handle_info('timeout') runs", function()
      local S = {
        init = function(main) return "ok", { main = main }, 10 end,
        handle_info = function(msg, st)
          process.send(st.main, { "info", msg })
          return "noreply", st
        end,
      }
      start_ok(S, ME())
      local m = recv("info")
      assert.are.same({ "info", "timeout" }, m)
    end)

    it("returning 'ok', state, 'hibernate': the server keeps working", function()
      local S = {
        init = function(arg) return "ok", { v = arg }, "hibernate" end,
        handle_call = function(_, _, st) return "reply", st.v, st end,
      }
      local pid = start_ok(S, "kept")
      assert.are.equal("kept", gs.call(pid, "get"))
    end)

    it("returning 'ok', state, { continue = v }: handle_continue runs before the first message", function()
      local S = logger {
        handle_continue = function(v, st)
          st.log[#st.log + 1] = "continue:" .. tostring(v)
          return "noreply", st
        end,
      }
      local pid = start_ok(S, { action = { continue = "c1" } })
      assert.are.same({ "continue:c1", "call:log" }, gs.call(pid, "log"))
    end)

    it("returning 'ignore': start returns nil, 'ignore' and the process ends", function()
      local S = {
        init = function(main)
          process.send(main, { "init_pid", process.self() })
          return "ignore"
        end,
      }
      local name = fresh_name()
      local pid, reason = gs.start(S, ME(), { name = name })
      assert.is_nil(pid)
      assert.are.equal("ignore", reason)
      assert.is_nil(process.whereis(name))
      local server = recv("init_pid")[2]
      await_down(process.monitor(server))
      assert.is_false(process.alive(server))
    end)

    it("returning 'stop', reason: start returns nil, reason", function()
      local S = { init = function() return "stop", { why = "bad config" } end }
      local pid, reason = gs.start(S, nil)
      assert.is_nil(pid)
      assert.are.same({ why = "bad config" }, reason)
    end)

    it("returning 'error', reason: start returns nil, reason", function()
      local S = { init = function() return "error", "no database" end }
      local pid, reason = gs.start(S, nil)
      assert.is_nil(pid)
      assert.are.equal("no database", reason)
    end)

    it("missing: the state is the start argument", function()
      local pid = start_ok("gs_noinit", { a = 1, b = { "x" } })
      assert.are.same({ a = 1, b = { "x" } }, gs.call(pid, "state"))
    end)

    it("raising an error: start returns nil, { error =, traceback = } naming the line", function()
      local S = { init = function() error("boom in init") end }
      local pid, reason = gs.start(S, nil)
      assert.is_nil(pid)
      assert_crash_reason(reason, "boom in init", line_of(S.init))
    end)

    it("raising an error in a module started by name: the traceback names the module's line", function()
      local pid, reason = gs.start("gs_crash_init", nil)
      assert.is_nil(pid)
      assert.is_table(reason)
      assert.is_truthy(contains(reason.error, "boom in gs_crash_init"))
      assert.is_truthy(contains(reason.traceback, "gs_crash_init.lua:3:"),
        "traceback: " .. tostring(reason.traceback))
    end)

    it("exiting with process.exit(reason): start returns nil, reason and the name is free", function()
      local S = { init = function() process.exit("left_in_init") end }
      local name = fresh_name()
      local pid, reason = gs.start(S, nil, { name = name })
      assert.is_nil(pid)
      assert.are.equal("left_in_init", reason)
      assert.is_nil(process.whereis(name))
    end)

    it("of a module that cannot be found: start returns nil and a reason", function()
      local pid, reason = gs.start("gs_no_such_module_anywhere", nil)
      assert.is_nil(pid)
      assert.is_truthy(contains(gs.describe(reason), "gs_no_such_module_anywhere"))
    end)

    it("returning a bad value: start returns nil, { bad_return_value = { ... } }", function()
      local S = { init = function() return "okay", 1 end }
      local pid, reason = gs.start(S, nil)
      assert.is_nil(pid)
      assert_brv({ "okay", 1 }, reason, "init")
    end)

    it("returning 'ok' with an invalid action: bad_return_value", function()
      local S = { init = function() return "ok", 5, "sometime" end }
      local pid, reason = gs.start(S, nil)
      assert.is_nil(pid)
      assert_brv({ "ok", 5, "sometime" }, reason, "init")
    end)
  end)

  -- ================================================== §2.1 handle_call
  describe("handle_call", function()
    it("'reply', reply, state: the caller gets the reply, the state is kept", function()
      local S = {
        init = function() return "ok", 0 end,
        handle_call = function(req, _from, n) return "reply", { req, n + 1 }, n + 1 end,
      }
      local pid = start_ok(S)
      assert.are.same({ "a", 1 }, gs.call(pid, "a"))
      assert.are.same({ "b", 2 }, gs.call(pid, "b"))
    end)

    it("'noreply' and a later genserver.reply(from, v) from a cast", function()
      local S = {
        init = function() return "ok", {} end,
        handle_call = function(req, from, st)
          if req == "hold" then
            st.held = from
            return "noreply", st
          end
          return "reply", req, st
        end,
        handle_cast = function(msg, st)
          st.reply_result = gs.reply(st.held, msg)
          return "noreply", st
        end,
      }
      local pid = start_ok(S)
      local req = gs.send_request(pid, "hold")
      assert.is_true(gs.cast(pid, "released"))
      assert.are.same({ true, "released" }, { gs.wait_response(req, WAIT) })
    end)

    it("'noreply' and a reply sent by another process given `from`", function()
      local helper = process.spawn(function()
        local m = process.receive(5000)
        if m then gs.reply(m.from, { "from helper", m.request }) end
      end)
      local S = {
        init = function(h) return "ok", { helper = h } end,
        handle_call = function(req, from, st)
          process.send(st.helper, { from = from, request = req })
          return "noreply", st
        end,
      }
      local pid = start_ok(S, helper)
      assert.are.same({ "from helper", "q" }, gs.call(pid, "q", WAIT))
      -- the server is still there
      assert.is_true(process.alive(pid))
    end)

    it("genserver.reply returns true", function()
      local S = {
        handle_call = function(_, from, st)
          local r = gs.reply(from, "early")
          st.r = r
          return "noreply", st
        end,
        handle_cast = function(main, st)
          process.send(main, { "reply_result", st.r })
          return "noreply", st
        end,
      }
      local pid = start_ok(S, {})
      assert.are.equal("early", gs.call(pid, "x"))
      gs.cast(pid, ME())
      assert.are.same({ "reply_result", true }, recv("reply_result"))
    end)

    it("'stop', reason, reply, state: the caller gets the reply, then the server is gone", function()
      local S = {
        init = function(main) return "ok", { main = main } end,
        handle_call = function(_, _, st) return "stop", "normal", "goodbye", st end,
        terminate = function(reason, st) process.send(st.main, { "terminated", reason }) end,
      }
      local pid = start_ok(S, ME())
      local ref = process.monitor(pid)
      assert.are.equal("goodbye", gs.call(pid, "quit"))
      assert.are.equal("normal", await_down(ref))
      assert.are.same({ "terminated", "normal" }, recv("terminated"))
      assert.is_false(process.alive(pid))
    end)

    it("'stop', reason, state: the caller's call fails with the stop reason", function()
      local S = {
        handle_call = function(_, _, st) return "stop", "going_away", st end,
      }
      local pid = start_ok(S, {})
      local ref = process.monitor(pid)
      local err = gs_error(gs.call, pid, "quit")
      assert.are.equal("going_away", err.reason)
      assert.are.equal("call", err.op)
      assert.are.equal(pid, err.server)
      assert.are.equal("going_away", await_down(ref))
    end)

    it("'reply', reply, state, action: the action applies after the reply", function()
      local S = {
        init = function(main) return "ok", { main = main } end,
        handle_call = function(req, _, st) return "reply", req, st, 10 end,
        handle_info = function(msg, st)
          process.send(st.main, { "info", msg })
          return "noreply", st
        end,
      }
      local pid = start_ok(S, ME())
      assert.are.equal("x", gs.call(pid, "x"))
      assert.are.same({ "info", "timeout" }, recv("info"))
    end)

    it("missing: the call fails and the server exits with a clear reason", function()
      local pid = start_ok("gs_bare", nil)
      local ref = process.monitor(pid)
      local err = gs_error(gs.call, pid, "anything")
      assert.is_truthy(contains(gs.describe(err.reason), "handle_call"),
        "reason: " .. gs.describe(err.reason))
      local reason = await_down(ref)
      assert.are.same(err.reason, reason)
    end)
  end)

  -- ======================================== §2.1 handle_cast, handle_info
  describe("handle_cast", function()
    it("'noreply', state: the new state is kept", function()
      local pid = start_ok("gs_counter", 0)
      assert.is_true(gs.cast(pid, { "add", 5 }))
      assert.is_true(gs.cast(pid, { "add", 2 }))
      assert.are.equal(7, gs.call(pid, "get"))
    end)

    it("'stop', reason, state: the server exits with the reason", function()
      local S = {
        init = function(main) return "ok", { main = main } end,
        handle_cast = function(msg, st) return "stop", msg, st end,
        terminate = function(reason, st) process.send(st.main, { "terminated", reason }) end,
      }
      local pid = start_ok(S, ME())
      local ref = process.monitor(pid)
      gs.cast(pid, { shutdown = "cast" })
      assert.are.same({ shutdown = "cast" }, await_down(ref))
      assert.are.same({ "terminated", { shutdown = "cast" } }, recv("terminated"))
    end)

    it("missing: the server exits with a clear reason", function()
      local pid = start_ok("gs_noinit", {})
      local ref = process.monitor(pid)
      assert.is_true(gs.cast(pid, "hello"))
      local reason = await_down(ref)
      assert.is_truthy(contains(gs.describe(reason), "handle_cast"),
        "reason: " .. gs.describe(reason))
    end)
  end)

  describe("handle_info", function()
    it("'noreply', state: plain messages reach handle_info", function()
      local pid = start_ok(logger(), {})
      process.send(pid, "ping")
      process.send(pid, { 1 })
      local log = gs.call(pid, "log")
      assert.are.equal("info:ping", log[1])
      assert.is_truthy(log[2]:match("^info:table"))
      assert.are.equal("call:log", log[3])
    end)

    it("'stop', reason, state: the server exits with the reason", function()
      local S = {
        handle_info = function(msg, st) return "stop", msg, st end,
      }
      local pid = start_ok(S, {})
      local ref = process.monitor(pid)
      process.send(pid, "info_stop")
      assert.are.equal("info_stop", await_down(ref))
    end)

    it("missing: the message is dropped and the server lives", function()
      local pid = start_ok("gs_noinit", { kept = true })
      process.send(pid, "nobody handles this")
      assert.are.same({ kept = true }, gs.call(pid, "state"))
      assert.is_true(process.alive(pid))
    end)
  end)

  -- =============================================== §2.1 handle_continue
  describe("handle_continue", function()
    local function continuing()
      return logger {
        handle_call = function(req, _, st)
          st.log[#st.log + 1] = "call:" .. tostring(req)
          if req == "log" then return "reply", st.log, st end
          return "reply", req, st, { continue = "after_call" }
        end,
        handle_cast = function(msg, st)
          st.log[#st.log + 1] = "cast:" .. tostring(msg)
          return "noreply", st, { continue = "after_cast" }
        end,
        handle_info = function(msg, st)
          st.log[#st.log + 1] = "info:" .. tostring(msg)
          return "noreply", st, { continue = "after_info" }
        end,
        handle_continue = function(v, st)
          st.log[#st.log + 1] = "continue:" .. tostring(v)
          if v == "after_info" then return "noreply", st, { continue = "chained" } end
          return "noreply", st
        end,
      }
    end

    it("from handle_call, handle_cast and handle_info runs before the next message", function()
      local pid = start_ok(continuing(), {})
      -- queue everything at once: each continue must still run before the
      -- message that follows it
      local r1 = gs.send_request(pid, "c1")
      gs.cast(pid, "m")
      process.send(pid, "i")
      local r2 = gs.send_request(pid, "log")
      assert.are.same({ true, "c1" }, { gs.wait_response(r1, WAIT) })
      local ok, log = gs.wait_response(r2, WAIT)
      assert.is_true(ok)
      assert.are.same({
        "call:c1", "continue:after_call",
        "cast:m", "continue:after_cast",
        "info:i", "continue:after_info", "continue:chained",
        "call:log",
      }, log)
    end)

    it("missing while a continue is asked for: the server exits with a clear reason", function()
      local S = { init = function() return "ok", {}, { continue = "x" } end }
      local pid, ref = gs.start_monitor(S, nil)
      track(pid)
      local reason = await_down(ref)
      assert.is_truthy(contains(gs.describe(reason), "handle_continue"), gs.describe(reason))
    end)

    it("'stop', reason, state from handle_continue stops the server", function()
      local S = {
        init = function() return "ok", {}, { continue = "now" } end,
        handle_continue = function(_, st) return "stop", "continued_to_death", st end,
      }
      local pid, ref = gs.start_monitor(S, nil)
      track(pid)
      assert.are.equal("continued_to_death", await_down(ref))
    end)
  end)

  -- ===================================================== §2.1 terminate
  describe("terminate", function()
    local function terminating()
      return {
        init = function(main) return "ok", { main = main, tag = "state!" } end,
        handle_call = function(req, _, st)
          if req == "crash" then error("crash in call") end
          return "reply", req, st
        end,
        handle_cast = function(_, st) return "stop", "cast_stop", st end,
        terminate = function(reason, st)
          process.send(st.main, { "terminated", reason, st.tag })
        end,
      }
    end

    it("is called with the reason and the state on genserver.stop", function()
      local pid = start_ok(terminating(), ME())
      assert.is_true(gs.stop(pid, "my_reason"))
      assert.are.same({ "terminated", "my_reason", "state!" }, recv("terminated"))
      assert.is_false(process.alive(pid))
    end)

    it("is called with 'normal' when genserver.stop has no reason", function()
      local pid = start_ok(terminating(), ME())
      assert.is_true(gs.stop(pid))
      assert.are.same({ "terminated", "normal", "state!" }, recv("terminated"))
    end)

    it("is called when a callback returns 'stop'", function()
      local pid = start_ok(terminating(), ME())
      gs.cast(pid, "stop please")
      assert.are.same({ "terminated", "cast_stop", "state!" }, recv("terminated"))
    end)

    it("is called with the crash reason when a callback crashes", function()
      local pid = start_ok(terminating(), ME())
      gs_error(gs.call, pid, "crash")
      local m = recv("terminated")
      assert.is_table(m)
      assert_crash_reason(m[2], "crash in call")
      assert.are.equal("state!", m[3])
    end)

    it("missing: stop still works", function()
      local pid = start_ok("gs_noinit", {})
      local ref = process.monitor(pid)
      assert.is_true(gs.stop(pid, "bye"))
      assert.are.equal("bye", await_down(ref))
    end)
  end)

  -- ======================================================= §2.1 actions
  describe("actions", function()
    it("a timeout from handle_cast makes handle_info('timeout') run when no message arrives", function()
      local S = {
        init = function(main) return "ok", { main = main } end,
        handle_cast = function(_, st) return "noreply", st, 5 end,
        handle_info = function(msg, st)
          process.send(st.main, { "info", msg })
          return "noreply", st
        end,
      }
      local pid = start_ok(S, ME())
      gs.cast(pid, "arm")
      assert.are.same({ "info", "timeout" }, recv("info"))
      assert.is_true(process.alive(pid))
    end)

    it("a timeout is cancelled by a message that arrives first", function()
      local S = {
        init = function(main) return "ok", { main = main, fired = 0 }, 300 end,
        handle_call = function(_, _, st) return "reply", st.fired, st end,
        handle_info = function(msg, st)
          if msg == "timeout" then st.fired = st.fired + 1 end
          return "noreply", st
        end,
      }
      local pid = start_ok(S, ME())
      -- the call (no action) normally arrives well within 300 ms; if the
      -- machine was so slow that the timeout fired first, there is nothing
      -- to check (no timing assertion either way)
      if gs.call(pid, "fired?") == 0 then
        process.sleep(600)
        assert.are.equal(0, gs.call(pid, "fired?"))
      end
    end)

    it("'hibernate' from handle_call and handle_cast: the server keeps its state and keeps working", function()
      local S = {
        init = function() return "ok", { n = 0, big = {} } end,
        handle_call = function(req, _, st)
          if req == "get" then return "reply", st.n, st end
          st.n = st.n + 1
          return "reply", st.n, st, "hibernate"
        end,
        handle_cast = function(_, st)
          st.n = st.n + 10
          return "noreply", st, "hibernate"
        end,
      }
      local pid = start_ok(S)
      assert.are.equal(1, gs.call(pid, "inc"))
      gs.cast(pid, "inc10")
      assert.are.equal(12, gs.call(pid, "inc"))
      assert.are.equal(12, gs.call(pid, "get"))
    end)

    it("opts.hibernate_after: an idle server hibernates and keeps working", function()
      local pid = start_ok("gs_counter", 3, { hibernate_after = 1 })
      process.sleep(20)
      assert.are.equal(3, gs.call(pid, "get"))
      gs.cast(pid, { "add", 1 })
      process.sleep(20)
      assert.are.equal(4, gs.call(pid, "get"))
    end)
  end)

  -- ================================================ bad return values
  describe("a bad return value", function()
    it("from handle_call: the server exits with { bad_return_value = { ... } }", function()
      local S = { handle_call = function() return "rep", 1, 2 end }
      local pid = start_ok(S, {})
      local ref = process.monitor(pid)
      local err = gs_error(gs.call, pid, "x")
      assert_brv({ "rep", 1, 2 }, err.reason, "handle_call")
      assert_brv({ "rep", 1, 2 }, await_down(ref), "handle_call")
    end)

    it("from handle_cast: { bad_return_value = { ... } }", function()
      local S = { handle_cast = function() return "noreply", 7, "not an action" end }
      local pid = start_ok(S, {})
      local ref = process.monitor(pid)
      gs.cast(pid, "x")
      assert_brv({ "noreply", 7, "not an action" }, await_down(ref), "handle_cast")
    end)

    it("from handle_info: { bad_return_value = { ... } }", function()
      local S = { handle_info = function() return 42 end }
      local pid = start_ok(S, {})
      local ref = process.monitor(pid)
      process.send(pid, "x")
      assert_brv({ 42 }, await_down(ref), "handle_info")
    end)

    it("from handle_continue: { bad_return_value = { ... } }", function()
      local S = {
        init = function() return "ok", 1, { continue = true } end,
        handle_continue = function() return "huh", "what" end,
      }
      local pid, ref = gs.start_monitor(S, nil)
      track(pid)
      assert_brv({ "huh", "what" }, await_down(ref), "handle_continue")
    end)

    it("holds every returned value, even beyond the fourth", function()
      local S = { handle_info = function() return "noreply", 1, 2, 3, 4 end }
      local pid = start_ok(S, {})
      local ref = process.monitor(pid)
      process.send(pid, "x")
      assert_brv({ "noreply", 1, 2, 3, 4 }, await_down(ref), "handle_info")
    end)

    it("from handle_call with six values holds all six", function()
      local S = { handle_call = function() return "reply", 1, 2, 3, 4, 5 end }
      local pid = start_ok(S, {})
      local err = gs_error(gs.call, pid, "x")
      assert_brv({ "reply", 1, 2, 3, 4, 5 }, err.reason, "handle_call")
    end)

    -- The contract's shapes need the state: `"noreply", state`, `"reply",
    -- reply, state`, `"ok", state`. A return that leaves it out (a common
    -- slip) is "any other return shape" and must not silently set the state
    -- to nil.
    it("'noreply' without a state from handle_cast", function()
      local S = { handle_cast = function() return "noreply" end }
      local pid = start_ok(S, {})
      local ref = process.monitor(pid)
      gs.cast(pid, "x")
      local reason = await_down(ref, 1000)
      assert_brv({ "noreply" }, reason, "handle_cast")
    end)

    it("'reply', reply without a state from handle_call", function()
      local S = { handle_call = function() return "reply", "r" end }
      local pid = start_ok(S, {})
      local ref = process.monitor(pid)
      local ok, err = pcall(gs.call, pid, "x", 1000)
      assert.is_false(ok, "the call should fail, it returned " .. gs.describe(err))
      assert_brv({ "reply", "r" }, err.reason, "handle_call")
      assert_brv({ "reply", "r" }, await_down(ref), "handle_call")
    end)

    it("'ok' without a state from init", function()
      local S = { init = function() return "ok" end }
      local pid, reason = gs.start(S, nil)
      track(pid)
      assert.is_nil(pid)
      assert_brv({ "ok" }, reason, "init")
    end)
  end)

  -- ====================================================== Lua errors
  describe("a Lua error in a callback", function()
    it("in handle_call: the caller gets { error =, traceback = } and the server exits with it", function()
      local S = { handle_call = function() error("boom in handle_call") end }
      local pid = start_ok(S, {})
      local ref = process.monitor(pid)
      local err = gs_error(gs.call, pid, "x")
      assert_crash_reason(err.reason, "boom in handle_call", line_of(S.handle_call))
      assert.is_truthy(contains(tostring(err), "boom in handle_call"))
      local reason = await_down(ref)
      assert_crash_reason(reason, "boom in handle_call", line_of(S.handle_call))
    end)

    it("in handle_cast", function()
      local S = { handle_cast = function(msg) return msg.missing.field end }
      local pid = start_ok(S, {})
      local ref = process.monitor(pid)
      gs.cast(pid, {})
      assert_crash_reason(await_down(ref), "missing", line_of(S.handle_cast))
    end)

    it("in handle_info", function()
      local S = { handle_info = function() error("boom in handle_info") end }
      local pid = start_ok(S, {})
      local ref = process.monitor(pid)
      process.send(pid, "x")
      assert_crash_reason(await_down(ref), "boom in handle_info", line_of(S.handle_info))
    end)

    it("in handle_continue", function()
      local S = {
        init = function() return "ok", 0, { continue = 1 } end,
        handle_continue = function() error("boom in handle_continue") end,
      }
      local pid, ref = gs.start_monitor(S, nil)
      track(pid)
      assert_crash_reason(await_down(ref), "boom in handle_continue", line_of(S.handle_continue))
    end)

    it("in terminate: the exit reason is the terminate crash, and stop raises it", function()
      local S = { terminate = function() error("boom in terminate") end }
      local pid = start_ok(S, {})
      local ref = process.monitor(pid)
      local err = gs_error(gs.stop, pid)
      assert.are.equal("stop", err.op)
      assert_crash_reason(err.reason, "boom in terminate", line_of(S.terminate))
      assert_crash_reason(await_down(ref), "boom in terminate", line_of(S.terminate))
    end)

    it("in terminate after stop with a table reason: stop raises the crash, not true", function()
      local S = { terminate = function() error("boom in terminate") end }
      local pid = start_ok(S, {})
      local ok, err = pcall(gs.stop, pid, { shutdown = "maintenance" })
      assert.is_false(ok, "stop returned true although the server exited with a crash")
      assert.is_true(gs.is_error(err))
      assert_crash_reason(err.reason, "boom in terminate")
    end)
  end)

  -- ========================================================= §2.2 start
  describe("start", function()
    it("by module name", function()
      local pid = start_ok("gs_counter", 1)
      assert.are.equal(1, gs.call(pid, "get"))
      assert.are.equal("gs_counter", process.info(pid).module)
    end)

    it("by table: functions with upvalues `gs = require 'genserver'` and `insert = table.insert`", function()
      -- these functions use no global at all, only their upvalues, which
      -- are loaded modules / functions of loaded modules
      local Stack = {
        init = function(arg) return "ok", { items = { arg } } end,
        handle_call = function(req, from, st)
          if req == "items" then return "reply", st.items, st end
          insert(st.items, req)
          gs.reply(from, #st.items)
          return "noreply", st
        end,
      }
      local names = {}
      for i = 1, 10 do
        local n = debug.getupvalue(Stack.handle_call, i)
        if not n then break end
        names[n] = true
      end
      assert.are.same({ gs = true, insert = true }, names)
      local pid = start_ok(Stack, "first")
      assert.are.equal(2, gs.call(pid, "second"))
      assert.are.equal(3, gs.call(pid, { third = true }))
      assert.are.same({ "first", "second", { third = true } }, gs.call(pid, "items"))
    end)

    it("registers the name before init runs", function()
      local name = fresh_name()
      local pid = start_ok("gs_counter", { name = name }, { name = name })
      assert.is_true(gs.call(pid, "saw_self"))
      assert.are.equal(pid, process.whereis(name))
      assert.are.equal(0, gs.call(name, "get"))
    end)

    it("releases the name before returning when init fails", function()
      local S = {
        init = function(arg)
          if arg == "stop" then return "stop", "no" end
          if arg == "error" then return "error", "no" end
          if arg == "crash" then error("no") end
          if arg == "bad" then return "bad" end
          if arg == "ignore" then return "ignore" end
          return "ok", arg
        end,
        handle_call = function(_, _, st) return "reply", st, st end,
      }
      local name = fresh_name()
      for _, how in ipairs { "stop", "error", "crash", "bad", "ignore" } do
        local pid = gs.start(S, how, { name = name })
        assert.is_nil(pid, how)
        assert.is_nil(process.whereis(name), how)
        -- starting again with the same name succeeds at once
        local again = start_ok(S, "fine after " .. how, { name = name })
        assert.are.equal("fine after " .. how, gs.call(name, "get"))
        assert.is_true(gs.stop(again))
      end
    end)

    it("of a taken name fails with { already_started = pid }", function()
      local name = fresh_name()
      local first = start_ok("gs_counter", 0, { name = name })
      local pid, reason = gs.start("gs_counter", 0, { name = name })
      track(pid)
      assert.is_nil(pid)
      assert.are.same({ already_started = first }, reason)
      assert.are.equal(first, reason.already_started)
      assert.are.equal(first, process.whereis(name))
    end)

    it("with opts.timeout shorter than init returns nil, 'timeout'; the server is gone and its name free", function()
      local S = {
        init = function(arg)
          process.send(arg.main, { "slow_init", process.self() })
          if arg.slow then process.sleep(3000) end
          return "ok", arg
        end,
        handle_call = function(_, _, st) return "reply", st.slow, st end,
      }
      local name = fresh_name()
      local pid, reason = gs.start(S, { main = ME(), slow = true }, { name = name, timeout = 50 })
      assert.is_nil(pid)
      assert.are.equal("timeout", reason)
      assert.is_nil(process.whereis(name))
      local server = recv("slow_init")[2]
      assert.is_false(process.alive(server))
      -- the name can be used again at once
      local again = start_ok(S, { main = ME(), slow = false }, { name = name })
      assert.are.equal(false, gs.call(name, "get"))
      assert.are_not.equal(server, again)
      -- and no stray ack from the killed server shows up later
      assert.is_nil(process.receive(function(m)
        return type(m) == "table" and m[1] ~= "slow_init"
      end, 100))
    end)

    it("with opts.timeout shorter than a CPU-bound init returns nil, 'timeout' (child process)", function()
      -- in a child, because a runtime that cannot stop the loop would hang
      local out = run_child([[
        local gs = require "genserver"
        local process = require "genserver.process"
        local busy = { init = function() local x = 0 while true do x = x + 1 end end }
        local pid, reason = gs.start(busy, nil, { name = "busy_init", timeout = 100 })
        print("start returned", pid, reason, process.whereis("busy_init"))
        io.stdout:flush()
        os.exit(0)
      ]], 5)
      assert.is_truthy(contains(out, "start returned\tnil\ttimeout\tnil"),
        "child output (killed after 5 s if empty):\n" .. out)
    end)

    it("rejects bad arguments", function()
      assert.has_error(function() gs.start(42) end)
      assert.has_error(function() gs.start("gs_counter", 0, "opts") end)
      assert.has_error(function() gs.start("gs_counter", 0, { name = 1 }) end)
    end)
  end)

  describe("start_link", function()
    it("links the new server to the caller", function()
      local pid = track(gs.start_link("gs_counter", 5))
      assert.is_truthy(pid)
      local links = process.info(pid).links
      assert.are.same({ ME() }, links)
      assert.are.equal(5, gs.call(pid, "get"))
      assert.is_true(gs.stop(pid)) -- "normal": the caller is not affected
      assert.are.equal(6, gs.call(start_ok("gs_counter", 6), "get"))
    end)

    it("a crash of the server reaches a linked caller that traps exits", function()
      local S = {
        handle_cast = function() error("linked crash") end,
      }
      process.spawn(function(main, mod)
        process.trap_exit(true)
        local pid = gs.start_link(mod, {})
        gs.cast(pid, "crash")
        local m = process.receive(function(msg)
          return type(msg) == "table" and msg[1] == "EXIT"
        end, 5000)
        process.send(main, { "linked_exit", m and m.pid == pid, m and m.reason })
      end, ME(), S)
      local m = recv("linked_exit")
      assert.is_table(m)
      assert.is_true(m[2])
      assert_crash_reason(m[3], "linked crash", line_of(S.handle_cast))
    end)
  end)

  describe("start_monitor", function()
    it("returns pid, ref; a DOWN with that ref arrives when the server stops", function()
      local pid, ref = gs.start_monitor("gs_counter", 0)
      track(pid)
      assert.is_true(process.is_pid(pid))
      assert.is_true(process.is_ref(ref))
      assert.is_true(gs.stop(pid, "done"))
      local m = await_down_msg(ref)
      assert.are.equal("done", m.reason)
      assert.are.equal(pid, m.pid)
    end)

    it("returns nil, reason when init fails", function()
      local pid, reason = gs.start_monitor({ init = function() return "stop", "nope" end }, nil)
      assert.is_nil(pid)
      assert.are.equal("nope", reason)
    end)
  end)

  -- ========================================================== §2.2 call
  describe("call", function()
    it("by pid and by registered name", function()
      local name = fresh_name()
      local pid = start_ok("gs_echo", nil, { name = name })
      assert.are.same({ "by", "pid" }, gs.call(pid, { "by", "pid" }))
      assert.are.same({ "by", "name" }, gs.call(name, { "by", "name" }))
      assert.are.equal(2, gs.call(name, "count"))
    end)

    it("with the default and explicit timeouts", function()
      local pid = start_ok("gs_echo")
      assert.are.equal("a", gs.call(pid, "a"))
      assert.are.equal("b", gs.call(pid, "b", 1000))
      assert.are.equal("c", gs.call(pid, "c", "infinity"))
      assert.are.equal("d", gs.call(pid, "d", math.huge))
    end)

    it("times out after 5000 ms by default", function()
      local S = { handle_call = function(_, _, st) return "noreply", st end }
      local pid = start_ok(S, {})
      local err = gs_error(gs.call, pid, "never")
      assert.are.equal("timeout", err.reason)
      assert.are.equal(5000, err.timeout)
      assert.is_truthy(contains(tostring(err), "timeout after 5000 ms"), tostring(err))
    end)

    it("times out after an explicit timeout with a readable error", function()
      local S = { handle_call = function(_, _, st) return "noreply", st end }
      local pid = start_ok(S, {})
      local err = gs_error(gs.call, pid, "never", 30)
      assert.are.equal("timeout", err.reason)
      assert.are.equal("call", err.op)
      assert.are.equal(pid, err.server)
      local s = tostring(err)
      assert.is_truthy(contains(s, "timeout after 30 ms"), s)
      assert.is_truthy(contains(s, tostring(pid)), s)
      assert.is_truthy(contains(s, "genserver.call"), s)
      assert.is_true(process.alive(pid))
    end)

    it("fails with the server's exit reason when it dies during the call", function()
      local S = {
        handle_call = function(_, _, st)
          process.exit("died_while_calling")
          return "reply", 1, st
        end,
      }
      local pid = start_ok(S, {})
      local err = gs_error(gs.call, pid, "x", WAIT)
      assert.are.equal("died_while_calling", err.reason)
    end)
  end)

  -- ========================================================== §2.2 cast
  describe("cast", function()
    it("returns true to a live server, an unknown name and a dead pid", function()
      local pid = start_ok("gs_counter", 0)
      assert.is_true(gs.cast(pid, { "add", 1 }))
      assert.is_true(gs.cast(fresh_name("nobody"), "hello"))
      gs.stop(pid)
      assert.is_false(process.alive(pid))
      assert.is_true(gs.cast(pid, "hello"))
    end)
  end)

  -- ========================================================== §2.2 stop
  describe("stop", function()
    it("by name, with the default reason 'normal'", function()
      local name = fresh_name()
      local pid = start_ok("gs_counter", { main = ME() }, { name = name })
      local ref = process.monitor(pid)
      assert.is_true(gs.stop(name))
      assert.are.same({ "counter_terminated", "normal", 0 }, recv("counter_terminated"))
      assert.are.equal("normal", await_down(ref))
      assert.is_nil(process.whereis(name))
    end)

    it("with a custom reason seen by terminate", function()
      local pid = start_ok("gs_counter", { main = ME(), start = 3 })
      assert.is_true(gs.stop(pid, { shutdown = "custom" }))
      assert.are.same({ "counter_terminated", { shutdown = "custom" }, 3 }, recv("counter_terminated"))
    end)

    it("with an explicit timeout", function()
      local pid = start_ok("gs_counter", 0)
      assert.is_true(gs.stop(pid, "shutdown", 2000))
      assert.is_false(process.alive(pid))
    end)

    it("raises noproc for a dead pid and for an unknown name", function()
      local pid = start_ok("gs_counter", 0)
      gs.stop(pid)
      local err = gs_error(gs.stop, pid)
      assert.are.equal("noproc", err.reason)
      assert.are.equal("stop", err.op)
      assert.are.equal(pid, err.server)
      local name = fresh_name("nobody")
      err = gs_error(gs.stop, name)
      assert.are.equal("noproc", err.reason)
      assert.are.equal("stop", err.op)
      assert.are.equal(name, err.server)
      assert.is_truthy(contains(tostring(err), "noproc"))
    end)

    it("raises timeout when terminate takes longer than the timeout", function()
      local S = { terminate = function() process.sleep(300) end }
      local pid = start_ok(S, {})
      local err = gs_error(gs.stop, pid, "normal", 20)
      assert.are.equal("timeout", err.reason)
      assert.are.equal("stop", err.op)
    end)
  end)

  -- ========================================= §2.2 send_request and friends
  describe("send_request", function()
    -- holds calls until a cast "release" answers all of them
    local function holder()
      return {
        init = function() return "ok", { held = {} } end,
        handle_call = function(req, from, st)
          if req == "hold" then
            st.held[#st.held + 1] = from
            return "noreply", st
          end
          return "reply", req, st
        end,
        handle_cast = function(msg, st)
          for _, from in ipairs(st.held) do gs.reply(from, msg) end
          st.held = {}
          return "noreply", st
        end,
      }
    end

    it("+ wait_response: true, reply", function()
      local pid = start_ok("gs_echo")
      local req = gs.send_request(pid, { "hello" })
      assert.is_true(process.is_ref(req))
      local ok, reply = gs.wait_response(req, WAIT)
      assert.is_true(ok)
      assert.are.same({ "hello" }, reply)
    end)

    it("several outstanding requests are answered independently", function()
      local pid = start_ok("gs_echo")
      local reqs = {}
      for i = 1, 20 do reqs[i] = gs.send_request(pid, i) end
      for i = 20, 1, -1 do
        assert.are.same({ true, i }, { gs.wait_response(reqs[i], WAIT) })
      end
    end)

    it("wait_response timeout keeps the request pending: a later wait gets the reply", function()
      local pid = start_ok(holder())
      local req = gs.send_request(pid, "hold")
      assert.are.same({ false, "timeout" }, { gs.wait_response(req, 20) })
      gs.cast(pid, "released")
      assert.are.same({ true, "released" }, { gs.wait_response(req, WAIT) })
    end)

    it("receive_response timeout abandons the request: its late reply is dropped", function()
      local pid = start_ok(holder())
      local req = gs.send_request(pid, "hold")
      assert.are.same({ false, "timeout" }, { gs.receive_response(req, 20) })
      gs.cast(pid, "late")
      -- the server answers in order: once this call is answered, the late
      -- reply has been sent too
      assert.are.equal("ping", gs.call(pid, "ping"))
      assert.is_nil(process.receive(100))
      assert.has_error(function() gs.wait_response(req, 50) end)
    end)

    it("receive_response gets the reply when it comes in time", function()
      local pid = start_ok("gs_echo")
      local req = gs.send_request(pid, "x")
      assert.are.same({ true, "x" }, { gs.receive_response(req, WAIT) })
    end)

    it("wait_response gives false, 'noproc' for a dead server or an unknown name", function()
      local pid = start_ok("gs_echo")
      gs.stop(pid)
      assert.are.same({ false, "noproc" }, { gs.wait_response(gs.send_request(pid, "x"), WAIT) })
      assert.are.same({ false, "noproc" },
        { gs.wait_response(gs.send_request(fresh_name("nobody"), "x"), WAIT) })
    end)

    it("wait_response gives false, exit reason when the server dies before replying", function()
      local pid = start_ok(holder())
      local req = gs.send_request(pid, "hold")
      gs.stop(pid, "stopped_while_pending")
      assert.are.same({ false, "stopped_while_pending" }, { gs.wait_response(req, WAIT) })
    end)

    it("check_response in a server's handle_info: reply, no_reply and error", function()
      local asker = {
        init = function(main) return "ok", { main = main } end,
        handle_cast = function(target, st)
          st.req = gs.send_request(target, { "question" })
          return "noreply", st
        end,
        handle_info = function(msg, st)
          local kind, value = gs.check_response(msg, st.req)
          process.send(st.main, { "checked", kind, value })
          if kind ~= "no_reply" then st.req = nil end
          return "noreply", st
        end,
      }
      local pid = start_ok(asker, ME())
      local echo = start_ok("gs_echo")
      -- an unrelated message is not about the request
      gs.cast(pid, echo)
      -- (the cast is handled before the plain message below)
      process.send(pid, "unrelated")
      local got = {}
      for _ = 1, 2 do
        local m = recv("checked")
        assert.is_table(m)
        got[#got + 1] = m
      end
      table.sort(got, function(a, b) return a[2] < b[2] end)
      assert.are.same({ { "checked", "no_reply" }, { "checked", "reply", { "question" } } }, got)
      -- a request to a dead server answers "error", reason
      gs.stop(echo)
      gs.cast(pid, echo)
      assert.are.same({ "checked", "error", "noproc" }, recv("checked"))
    end)

    it("check_response outside a server: no_reply for other messages", function()
      local req = process.make_ref()
      assert.are.equal("no_reply", gs.check_response("x", req))
      assert.are.equal("no_reply", gs.check_response({ "DOWN", ref = process.make_ref() }, req))
    end)
  end)

  -- ========================================================== errors
  describe("errors", function()
    it("is_error tells genserver errors from other errors", function()
      local err = gs_error(gs.call, fresh_name("nobody"), "x")
      assert.is_true(gs.is_error(err))
      assert.is_false(gs.is_error("a string"))
      assert.is_false(gs.is_error({ reason = "noproc" }))
      assert.is_false(gs.is_error(nil))
    end)

    it("noproc: for a dead pid and an unknown name, without waiting", function()
      local pid = start_ok("gs_echo")
      gs.stop(pid)
      local err = gs_error(gs.call, pid, "x", "infinity")
      assert.are.equal("noproc", err.reason)
      assert.are.equal("call", err.op)
      assert.are.equal(pid, err.server)
      local name = fresh_name("nobody")
      err = gs_error(gs.call, name, "x", "infinity")
      assert.are.equal("noproc", err.reason)
      assert.are.equal(name, err.server)
      local s = tostring(err)
      assert.is_truthy(contains(s, name) and contains(s, "noproc"), s)
    end)

    it("calling_self: a server calling itself (by pid or name) from handle_call", function()
      local S = {
        handle_call = function(req, _, st)
          local target = req == "by_name" and st.name or process.self()
          local ok, e = pcall(gs.call, target, "again", 1000)
          return "reply", { ok, gs.is_error(e), e.reason, e.op, tostring(e) }, st
        end,
      }
      local name = fresh_name()
      local pid = start_ok(S, { name = name }, { name = name })
      for _, how in ipairs { "by_pid", "by_name" } do
        local r = gs.call(pid, how)
        assert.is_false(r[1])
        assert.is_true(r[2])
        assert.are.equal("calling_self", r[3])
        assert.are.equal("call", r[4])
        assert.is_truthy(contains(r[5], "calling_self"), r[5])
      end
      assert.is_true(process.alive(pid))
    end)

    it("calling_self: a server stopping itself with genserver.stop", function()
      local S = {
        handle_call = function(_, _, st)
          local ok, e = pcall(gs.stop, process.self())
          return "reply", { ok, e.reason, e.op }, st
        end,
      }
      local pid = start_ok(S, {})
      assert.are.same({ false, "calling_self", "stop" }, gs.call(pid, "x"))
    end)

    it("a crash caused by a failed inner call reads well (no 'table: 0x...')", function()
      local S = {
        handle_call = function(req, _, st) return "reply", gs.call("gs_spec_nobody_inner", req), st end,
      }
      local pid = start_ok(S, {})
      local err = gs_error(gs.call, pid, "x")
      -- the inner genserver error crossed as a plain table
      assert.are.equal("noproc", err.reason.error.reason)
      local s = tostring(err)
      assert.is_falsy(s:find("table: 0x", 1, true), s)
      assert.is_truthy(contains(s, "noproc"), s)
    end)

    it("exit reason: a crashed server's error reads as a crash", function()
      local S = { handle_call = function() error("kaboom") end }
      local pid = start_ok(S, {})
      local err = gs_error(gs.call, pid, "x")
      assert.is_table(err.reason)
      local s = tostring(err)
      assert.is_truthy(contains(s, "kaboom"), s)
      assert.is_truthy(contains(s, tostring(pid)), s)
    end)
  end)

  -- ========================================================== bad inputs
  describe("bad inputs", function()
    it("a timed-out call leaves no trace: its late reply is dropped", function()
      local S = {
        init = function() return "ok", {} end,
        handle_call = function(req, from, st)
          if req == "hold" then
            st.held = from
            return "noreply", st
          end
          return "reply", { "reply to", req }, st
        end,
        handle_cast = function(_, st)
          gs.reply(st.held, "LATE REPLY")
          return "noreply", st
        end,
      }
      local pid = start_ok(S)
      local err = gs_error(gs.call, pid, "hold", 30)
      assert.are.equal("timeout", err.reason)
      gs.cast(pid, "send the late reply now")
      -- the next call gets its own reply (the server sent the late one first)
      assert.are.same({ "reply to", "next" }, gs.call(pid, "next"))
      assert.is_nil(process.receive(100))
      assert.are.same({ "reply to", "again" }, gs.call(pid, "again"))
    end)

    it("a timed-out call from a server process leaves no trace either", function()
      local S = {
        init = function() return "ok", {} end,
        handle_call = function(req, from, st)
          if req == "hold" then
            st.held = from
            return "noreply", st
          end
          return "reply", { "reply to", req }, st
        end,
        handle_cast = function(_, st)
          gs.reply(st.held, "LATE REPLY")
          return "noreply", st
        end,
      }
      local pid = start_ok(S)
      process.spawn(function(main, srv)
        local ok, e = pcall(gs.call, srv, "hold", 30)
        local timed_out = not ok and gs.is_error(e) and e.reason == "timeout"
        gs.cast(srv, "send the late reply now")
        local next_reply = gs.call(srv, "next")
        local stray = process.receive(100)
        process.send(main, { "late_check", timed_out, next_reply, stray })
      end, ME(), pid)
      local m = recv("late_check")
      assert.is_table(m)
      assert.is_true(m[2])
      assert.are.same({ "reply to", "next" }, m[3])
      assert.is_nil(m[4])
    end)

    it("a second reply to the same call is dropped", function()
      local S = {
        handle_call = function(req, from, st)
          gs.reply(from, "first")
          return "reply", "second", st
        end,
      }
      local pid = start_ok(S, {})
      assert.are.equal("first", gs.call(pid, "x"))
      assert.are.equal("first", gs.call(pid, "y"))
      assert.is_nil(process.receive(100))
    end)

    it("a call with an unsendable value (coroutine) fails at the caller naming the path", function()
      local pid = start_ok("gs_echo")
      local ok, err = pcall(gs.call, pid, { x = coroutine.create(function() end) })
      assert.is_false(ok)
      assert.is_truthy(contains(tostring(err), "request.x"), tostring(err))
      assert.is_truthy(contains(tostring(err), "thread"), tostring(err))
      -- nothing reached the server, which works as before
      assert.are.equal(0, gs.call(pid, "count"))
      assert.are.equal("fine", gs.call(pid, "fine"))
    end)

    it("a cast with an unsendable value (io.stdout) fails at the caller naming the path", function()
      local pid = start_ok("gs_counter", 0)
      local ok, err = pcall(gs.cast, pid, { "add", 1, extra = { io.stdout } })
      assert.is_false(ok)
      assert.is_truthy(contains(tostring(err), "extra[1]"), tostring(err))
      assert.is_truthy(contains(tostring(err), "userdata"), tostring(err))
      assert.are.equal(0, gs.call(pid, "get"))
      assert.is_true(process.alive(pid))
    end)

    it("a start with an unsendable argument fails at the caller and starts nothing", function()
      local before = #process.list()
      local ok, err = pcall(gs.start, "gs_counter", { x = io.stdout })
      assert.is_false(ok)
      assert.is_truthy(contains(tostring(err), ".x"), tostring(err))
      assert.is_truthy(contains(tostring(err), "userdata"), tostring(err))
      assert.are.equal(before, #process.list())
    end)

    it("the error for an unsendable value points at the caller's line, not into genserver", function()
      local pid = start_ok("gs_echo")
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(function() return gs.call(pid, { x = io.stdout }) end)
      assert.is_false(ok)
      assert.is_truthy(contains(tostring(err), "genserver_spec.lua:" .. line .. ":"), tostring(err))
      line = debug.getinfo(1, "l").currentline + 1
      ok, err = pcall(function() return gs.cast(pid, { x = io.stdout }) end)
      assert.is_false(ok)
      assert.is_truthy(contains(tostring(err), "genserver_spec.lua:" .. line .. ":"), tostring(err))
    end)

    it("an unsendable reply fails in the server, not in the caller's state", function()
      local S = {
        handle_call = function(req, _, st)
          if req == "bad" then return "reply", io.stdout, st end
          return "reply", req, st
        end,
      }
      local pid = start_ok(S, {})
      local ref = process.monitor(pid)
      local err = gs_error(gs.call, pid, "bad", WAIT)
      assert.is_truthy(contains(gs.describe(err.reason), "userdata"), gs.describe(err.reason))
      assert.is_truthy(await_down(ref))
    end)

    it("calls to an unknown name and to a dead pid fail with noproc and do not hang", function()
      local pid = start_ok("gs_echo")
      gs.stop(pid)
      for _ = 1, 100 do
        assert.are.equal("noproc", gs_error(gs.call, pid, "x", "infinity").reason)
        assert.are.equal("noproc", gs_error(gs.call, "gs_spec_nobody", "x", "infinity").reason)
      end
    end)
  end)

  -- ===================================================== crash reports
  describe("crash reports (§2.2 exit reasons)", function()
    it("a crash is reported; 'normal', 'shutdown' and { shutdown = ... } are quiet", function()
      local out = run_child([[
        local gs = require "genserver"
        local process = require "genserver.process"
        local function run(reason)
          local pid, ref = gs.start_monitor({
            handle_cast = function(msg, st)
              if msg == "crash" then error("crash_marker_in_cast") end
              return "stop", msg, st
            end,
          }, {})
          gs.cast(pid, reason)
          process.receive(function(m) return type(m) == "table" and m.ref == ref end, 5000)
        end
        run("crash")
        run("custom_marker_reason")
        run("normal")
        run("shutdown")
        run({ shutdown = "quiet_marker_detail" })
        process.sleep(200)
        print("child done")
      ]])
      assert.is_truthy(contains(out, "child done"), out)
      assert.is_truthy(contains(out, "crash_marker_in_cast"), "no crash report in:\n" .. out)
      assert.is_truthy(contains(out, "custom_marker_reason"), "no crash report in:\n" .. out)
      assert.is_falsy(contains(out, "quiet_marker_detail"), out)
    end)
  end)

  -- ============================================================== scale
  describe("at scale", function()
    local function settle(before)
      local now
      for _ = 1, 500 do
        now = runtime.stats().processes
        if now == before then break end
        process.sleep(10)
      end
      return now
    end

    it("starts and stops 5,000 servers", function()
      local N = 5000
      local before = runtime.stats().processes
      local pids = {}
      for i = 1, N do
        local pid, reason = gs.start("gs_counter", i)
        assert(pid, gs.describe(reason))
        pids[i] = pid
      end
      local alive = 0
      for i = 1, N do
        if process.alive(pids[i]) then alive = alive + 1 end
      end
      assert.are.equal(N, alive)
      assert.is_true(runtime.stats().processes >= before + N)
      -- spot checks: each server has its own state
      for _, i in ipairs { 1, 2, 777, 2500, N } do
        assert.are.equal(i, gs.call(pids[i], "get"))
      end
      for i = 1, N do
        assert.is_true(gs.stop(pids[i]))
      end
      alive = 0
      for i = 1, N do
        if process.alive(pids[i]) then alive = alive + 1 end
      end
      assert.are.equal(0, alive)
      assert.are.equal(before, settle(before))
    end)

    it("50 client processes x 200 calls each to one server get their own replies", function()
      local CLIENTS, CALLS = 50, 200
      local server = start_ok("gs_echo")
      local client = function(main, srv, id, calls)
        local wrong, failed = 0, nil
        local ok, e = pcall(function()
          for i = 1, calls do
            local r = gs.call(srv, { id, i })
            if type(r) ~= "table" or r[1] ~= id or r[2] ~= i then wrong = wrong + 1 end
          end
        end)
        if not ok then failed = tostring(e) end
        process.send(main, { "client_done", id, wrong, failed })
      end
      for id = 1, CLIENTS do
        process.spawn(client, ME(), server, id, CALLS)
      end
      local seen = {}
      for _ = 1, CLIENTS do
        local m = recv("client_done", 20000)
        assert.is_table(m, "a client did not report")
        local _, id, wrong, failed = m[1], m[2], m[3], m[4]
        assert.is_nil(failed)
        assert.are.equal(0, wrong)
        assert.is_nil(seen[id])
        seen[id] = true
      end
      assert.are.equal(CLIENTS * CALLS, gs.call(server, "count"))
    end)
  end)
end)
