-- spec/sandbox_spec.lua: the sandbox is a boundary both ways (DESIGN §5),
-- and what a process does to its own `package` stays its own (the
-- runtime's module cache).
--
-- Run: make test SPECS=spec/sandbox_spec.lua   (under GENSERVER_WORKERS=1 and 4)
-- A sandboxed server (spec/support/sb_probe.lua) tries each way out it can
-- think of and answers what happened; the files it is pointed at would
-- write a marker file if they ever ran with `io`, so an escape shows as a
-- marker, not only as an answer.

local gs = require "genserver"
local process = require "genserver.process"
local core = require "genserver.core"

local T = 5000

local function shquote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local dir -- a temporary directory for modules, files to escape to and markers
local function path_of(name) return dir .. "/" .. name end

local function exists(file)
  local h = io.open(file, "r")
  if h then h:close() end
  return h ~= nil
end

local function write(file, text)
  local h = assert(io.open(file, "w"))
  h:write(text)
  h:close()
end

-- Lua code that writes `marker` if it can reach io, and says it ran
local function evil_code(marker)
  return ("if io then local h = io.open(%q, 'w'); h:write('escaped'); h:close() end\n" ..
          "_G.SB_RAN = true\n" ..
          "return { init = function() return 'ok', 'evil' end,\n" ..
          "  handle_call = function(_, _, s) return 'reply', 'evil', s end }\n"):format(marker)
end

local function await(match, what)
  local m = process.receive(match, T)
  if m == nil then error("timed out waiting for " .. what, 2) end
  return m
end

local function tagged(tag)
  return function(m) return type(m) == "table" and m[1] == tag end
end

setup(function()
  dir = assert(io.popen("mktemp -d")):read("l")
  assert(dir and dir:match("^/tmp/"), "mktemp -d failed")
  -- callback modules for the module-cache tests, one per test (the cache
  -- lives as long as the runtime, i.e. this whole file)
  for i = 1, 4 do
    write(path_of(("sb_target%d.lua"):format(i)),
      "local M = {}\nfunction M.init(a) return 'ok', a end\n" ..
      "function M.handle_call(_, _, s) return 'reply', 'real', s end\nreturn M\n")
  end
  package.path = dir .. "/?.lua;" .. package.path
end)

teardown(function()
  if dir and dir:match("^/tmp/") then os.execute("rm -rf " .. shquote(dir)) end
end)

describe("a sandboxed process", function()
  local pid, marker

  local function probe(what, a, b)
    local ok, r = pcall(gs.call, pid, { what, a, b }, T)
    assert(ok, tostring(r))
    return r
  end

  local function is_sandboxed(st)
    assert.are.same({ io = "nil", os = "nil", debug = "nil", loadlib = "nil", loadfile = "nil" }, st)
  end

  before_each(function()
    while process.receive(0) ~= nil do end
    marker = path_of("marker")
    os.remove(marker)
    pid = assert(gs.start("sb_probe", nil, { sandbox = true }))
  end)

  after_each(function()
    if process.alive(pid) then gs.stop(pid) end
    assert.is_false(exists(marker), "a file was written from inside the sandbox")
  end)

  it("is itself sandboxed", function()
    is_sandboxed(probe("state"))
  end)

  describe("everything it spawns or starts is sandboxed too", function()
    it("refuses to spawn a function (no function leaves a sandbox)", function()
      local r = probe("spawn_fn", marker)
      assert.is_false(r.ok)
      assert.matches("body: cannot send a function out of a sandboxed process", r.err, 1, true)
    end)

    it("spawns a module by name into a sandbox", function()
      local r = probe("spawn_name", nil, process.self())
      assert.is_true(r.ok)
      local m = await(tagged("sb_child"), "the child's report")
      assert.are.same({ "sb_child", io = "nil", os = "nil", debug = "nil" }, m)
    end)

    it("cannot turn the sandbox off with spawn options", function()
      local r = probe("spawn_unsandboxed", nil, process.self())
      assert.is_true(r.ok)
      local m = await(tagged("sb_child"), "the child's report")
      assert.are.same({ "sb_child", io = "nil", os = "nil", debug = "nil" }, m)
    end)

    it("refuses to start a table module (its functions would leave the sandbox)", function()
      local r = probe("start_table", marker)
      assert.is_false(r.ok)
      assert.matches("module.init: cannot send a function out of a sandboxed process", r.err, 1, true)
    end)

    it("starts a server by name sandboxed, even with sandbox = false", function()
      is_sandboxed(probe("start_name"))
    end)

    it("start_links a server by name sandboxed", function()
      is_sandboxed(probe("start_link_name"))
    end)

    it("starts a supervisor whose children are sandboxed", function()
      is_sandboxed(probe("supervisor"))
    end)
  end)

  describe("no function crosses into or out of it", function()
    it("cannot send a function out: refused at the sender, path named", function()
      local r = probe("send_fn", nil, process.self())
      assert.is_false(r.ok)
      assert.matches("message.cb: cannot send a function out of a sandboxed process", r.err, 1, true)
      assert.is_nil(process.receive(0))
    end)

    it("cannot reply with a function", function()
      local ok, err = pcall(gs.call, pid, { "reply_fn" }, T)
      assert.is_false(ok)
      assert.matches("cannot send a function out of a sandboxed process", tostring(err), 1, true)
    end)

    it("is not sent a function by call, cast or send: the sender gets the error", function()
      local bad = { deep = { cb = function() return 1 end } }
      local ok, err = pcall(gs.call, pid, bad, T)
      assert.is_false(ok)
      assert.matches("request.deep.cb: cannot send a function to a sandboxed process", err, 1, true)
      ok, err = pcall(gs.cast, pid, bad)
      assert.is_false(ok)
      assert.matches("message.deep.cb: cannot send a function to a sandboxed process", err, 1, true)
      ok, err = pcall(process.send, pid, bad)
      assert.is_false(ok)
      assert.matches("message.deep.cb: cannot send a function to a sandboxed process", err, 1, true)
      -- it lives on and still takes data, and loaded modules by name
      is_sandboxed(probe("state", string.format, gs))
    end)

    it("cannot be handed io or os functions by name", function()
      for _, f in ipairs({ os.execute, io.popen, io.open, debug.getregistry, loadfile }) do
        local ok, err = pcall(gs.call, pid, { "state", f }, T)
        assert.is_false(ok)
        assert.matches("undecodable", tostring(err))
      end
      is_sandboxed(probe("state"))
    end)

    it("is not sent a function by a timer to its pid", function()
      local ok, err = pcall(process.send_after, 10, pid, { cb = function() end })
      assert.is_false(ok)
      assert.matches("message.cb: cannot send a function to a sandboxed process", err, 1, true)
    end)

    it("refuses bytecode at decode too (the receiving side's second line)", function()
      -- a timer to a registered name is encoded before anybody knows who
      -- will hold the name: the sandboxed receiver's decoder refuses it
      core.spawn("sb_recv", { sandbox = true }, process.self(), "sb_recv_name")
      local child = await(tagged("sb_ready"), "the receiver")[2]
      process.send_after(0, "sb_recv_name", { cb = function() return 1 end })
      local m = await(tagged("sb_got"), "the receiver's report")
      assert.is_false(m.ok)
      assert.matches("function", m.err)
      assert.is_false(process.alive(child) and m.ok)
    end)
  end)

  describe("runtime-wide settings", function()
    it("cannot configure the runtime", function()
      local r = probe("configure")
      assert.is_false(r.ok)
      assert.matches("not allowed in a sandboxed process", r.err, 1, true)
      -- and every other process still sends messages of any size
      process.send(process.self(), ("x"):rep(100))
      assert.are.equal(("x"):rep(100), process.receive(T))
      r = probe("configure_workers")
      assert.is_false(r.ok)
      assert.matches("not allowed in a sandboxed process", r.err, 1, true)
    end)

    it("cannot end or stop a process outside any sandbox", function()
      local victim = assert(gs.start("sb_probe", nil))
      local r = probe("kill_outside", nil, victim)
      assert.is_false(r.ok)
      assert.matches("may not send exit signals to a process outside its sandbox", r.err, 1, true)
      r = probe("kill_outside", nil, process.self()) -- the main script
      assert.is_false(r.ok)
      r = probe("stop_outside", nil, victim)
      assert.is_false(r.ok)
      assert.matches("may not send system requests", r.err, 1, true)
      assert.is_true(process.alive(victim))
      gs.stop(victim)
    end)

    it("cannot take over a name held outside any sandbox", function()
      local holder = assert(gs.start("sb_probe", nil, { name = "sb_outside_name" }))
      local r = probe("unregister", "sb_outside_name")
      assert.is_false(r.ok)
      assert.matches("may not unregister a name held outside its sandbox", r.err, 1, true)
      assert.are.equal(holder, process.whereis("sb_outside_name"))
      gs.stop(holder)
    end)

    it("still ends the sandboxed processes it started", function()
      local r = probe("kill_inside")
      assert.is_true(r.ok)
      assert.are.equal("killed", r.down)
    end)

    it("cannot shut the runtime down", function()
      local r = probe("shutdown")
      assert.is_false(r.ok)
      assert.matches("only the main script or host may shut down", r.err, 1, true)
      assert.is_true(process.alive(pid))
    end)
  end)

  describe("its lookups stay inside the paths it was given", function()
    it("does not run a file package.path points at", function()
      local file = path_of("not_a_module.txt")
      write(file, evil_code(marker))
      local r = probe("path", file)
      assert.is_false(r.ok)
      assert.matches("module 'sb_anything' not found", r.err, 1, true)
      assert.is_nil(r.err:find(file, 1, true))
    end)

    it("does not run a module from a directory added to package.path", function()
      write(path_of("evil") .. ".lua", evil_code(marker))
      os.execute("mkdir -p " .. shquote(path_of("elsewhere")))
      write(path_of("elsewhere/sb_evil.lua"), evil_code(marker))
      local r = probe("path_pattern", path_of("elsewhere"))
      assert.is_false(r.ok)
      assert.matches("module 'sb_evil' not found", r.err, 1, true)
    end)

    it("ignores its own package.searchpath", function()
      local file = path_of("evil2.lua")
      write(file, evil_code(marker))
      local r = probe("searchpath", file)
      assert.is_false(r.ok)
      assert.matches("module 'sb_evil2' not found", r.err, 1, true)
    end)

    it("has no loadfile for a searcher of its own to use", function()
      local file = path_of("evil3.lua")
      write(file, evil_code(marker))
      local r = probe("searchers", file)
      assert.is_false(r.ok)
      assert.matches("no loadfile", r.err, 1, true)
    end)

    it("gives the processes it spawns its own paths, not its package.path", function()
      os.execute("mkdir -p " .. shquote(path_of("elsewhere")))
      write(path_of("elsewhere/sb_evil.lua"), evil_code(marker))
      local r = probe("child_path", path_of("elsewhere"))
      assert.matches("module 'sb_evil' not found", r.reason, 1, true)
    end)

    it("loads text chunks only", function()
      local r = probe("binary")
      for _, k in ipairs({ "a", "b", "c" }) do
        assert.is_true(r[k].ok)
        assert.is_nil(r[k][1])
        assert.matches("binary chunk", r[k][2])
      end
    end)

    it("cannot require io, os or debug", function()
      local r = probe("require_libs")
      assert.is_false(r.io.ok)
      assert.is_false(r.os.ok)
      assert.is_false(r.debug.ok)
      assert.is_true(r.string.ok)
    end)

    it("changes only its own package.loaded", function()
      local r = probe("loaded_override")
      assert.is_true(r.ok)
      assert.are.equal("poisoned", r[1]) -- its own require sees its own table
      local supervisor = require "genserver.supervisor"
      local sup = assert(supervisor.start({ children = {} }))
      gs.stop(sup)
    end)
  end)
end)

describe("the module cache", function()
  -- a process that changes its own package must not change what a later
  -- genserver.start(name) runs anywhere else (DESIGN §5)
  local marker

  before_each(function()
    while process.receive(0) ~= nil do end
    marker = path_of("cache_marker")
    os.remove(marker)
  end)

  after_each(function()
    assert.is_false(exists(marker), "the poisoned module ran")
  end)

  local function poison(how, name, evil)
    process.spawn("sb_poison", process.self(), how, name, evil)
    return await(tagged("poisoned"), "the poisoner's report")
  end

  local function started_is_real(name)
    local pid = assert(gs.start(name, 0))
    local answer = gs.call(pid, "which")
    gs.stop(pid)
    assert.are.equal("real", answer)
  end

  it("is not poisoned by a process's package.searchpath", function()
    local evil = path_of("evil_sp.lua")
    write(evil, evil_code(marker))
    poison("searchpath", "sb_target1", evil)
    started_is_real("sb_target1")
  end)

  it("is not poisoned by a process's package.path", function()
    os.execute("mkdir -p " .. shquote(path_of("pp")))
    write(path_of("pp/sb_target2.lua"), evil_code(marker))
    local r = poison("path", "sb_target2", path_of("pp/?.lua"))
    assert.is_true(r.ok) -- it found its own copy, which ran in its state
    os.remove(marker)
    started_is_real("sb_target2")
  end)

  it("is not poisoned by a process's package.loaded", function()
    local r = poison("loaded", "sb_target3")
    assert.is_true(r.ok)
    started_is_real("sb_target3")
  end)

  it("is not poisoned by a process's own searcher", function()
    local evil = path_of("evil_se.lua")
    write(evil, evil_code(marker))
    local r = poison("searchers", "sb_target4", evil)
    assert.is_true(r.ok)
    os.remove(marker)
    started_is_real("sb_target4")
  end)
end)
