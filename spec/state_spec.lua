-- spec/state_spec.lua: what a process's own Lua state gives the code in it
-- (DESIGN.md §1.1): libraries opened on first use, modules compiled once per
-- runtime, crash reasons, cleanup when a process is killed, a call's from.
--
-- Run: make test SPECS=spec/state_spec.lua   (under GENSERVER_WORKERS=1 and 4)
-- Every wait has a time-out, so a failure cannot hang the run.

local U = require "pr_util"
local process = require "genserver.process"
local genserver = require "genserver"

local T = U.TIMEOUT

-- Runs fn(...) in a new process and returns what it sent back.
local function there(fn, ...)
  local me = process.self()
  local tag = {}
  process.spawn(function(parent, f, ...)
    local P = require "genserver.process"
    P.send(parent, { "there", table.pack(pcall(f, ...)) })
  end, me, fn, ...)
  local m = process.receive(function(m) return type(m) == "table" and m[1] == "there" end, T)
  assert.is_not_nil(m, "no answer from the process")
  local r = m[2]
  assert.is_true(r[1], tostring(r[2]))
  return table.unpack(r, 2, r.n)
end

describe("a process's state", function()

  before_each(function() U.flush() end)

  describe("libraries on first use", function()
    it("converts strings in arithmetic before the string library is used", function()
      local a, b, c, d, e = there(function()
        return "10" + 1, -"3", "7" // "2", "2" ^ 3, "9" % "4"
      end)
      assert.are.equal(11, a)
      assert.are.equal(-3, b)
      assert.are.equal(3, c)
      assert.are.equal(8.0, d)
      assert.are.equal(1, e)
    end)

    it("calls string methods before the string library is used", function()
      assert.are.equal("ABC", there(function() return ("abc"):upper() end))
    end)

    it("puts a base function in _G when it is first used", function()
      local before, got, after = there(function()
        local b = rawget(_G, "collectgarbage")
        local f = collectgarbage
        return b, type(f), rawget(_G, "collectgarbage") == f
      end)
      assert.is_nil(before)
      assert.are.equal("function", got)
      assert.is_true(after)
    end)

    it("loads a module that arrives by name from the module cache, without opening package", function()
      -- the codec requires it with the boot path's require (the builtin
      -- hook's answer): the first state may compile it, which opens its
      -- package library as require does; the next loads the cached chunk
      local pr_mod = require "pr_mod"
      local me = process.self()
      local function probe(parent, send, m)
        send(parent, { "probe", rawget(_G, "package") == nil, m.double(21), m.state_tag })
      end
      local tags = {}
      for round = 1, 2 do
        process.spawn(probe, me, process.send, pr_mod)
        local m = process.receive(function(x) return type(x) == "table" and x[1] == "probe" end, T)
        assert.is_not_nil(m, "no answer from the process")
        assert.are.equal(42, m[3])
        assert.are_not.equal(pr_mod.state_tag, m[4]) -- its own copy
        tags[round] = m[4]
        if round == 2 then assert.is_true(m[2], "package was opened") end
      end
      assert.are_not.equal(tags[1], tags[2])
    end)

    it("keeps package and string methods working around each other's first use", function()
      local before, path, loaded, again, after = there(function()
        local b = ("ab"):rep(2)
        local p = package.path
        package.loaded.st_fake = { v = 7 }
        local l = require("st_fake").v
        local a = ("ab"):upper()
        return b, type(p) == "string" and #p > 0, l, require("st_fake") == package.loaded.st_fake, a
      end)
      assert.are.equal("abab", before)
      assert.is_true(path)
      assert.are.equal(7, loaded)
      assert.is_true(again)
      assert.are.equal("AB", after)
    end)

    it("opens package and require on first use", function()
      local t1, t2 = there(function()
        return type(package.path), type(require("table").concat)
      end)
      assert.are.equal("string", t1)
      assert.are.equal("function", t2)
    end)
  end)

  describe("load", function()
    it("returns a syntax error as a string", function()
      local ok, kind, deep = there(function()
        local f, err = load("return ((((")
        local g, err2 = load("return " .. ("("):rep(300) .. "1" .. (")"):rep(300))
        return f == nil, type(err), g == nil and type(err2) or "loaded"
      end)
      assert.is_true(ok)
      assert.are.equal("string", kind)
      assert.are.equal("string", deep)
    end)
  end)

  describe("load in a gen_server callback", function()
    it("returns its errors as strings, and the server lives on", function()
      local Srv = {
        handle_call = function(req, from, st)
          local _, e1 = load("return ((((")
          local _, e2 = load("return " .. ("("):rep(300) .. "1" .. (")"):rep(300))
          return "reply", { type(e1), type(e2) }, st
        end,
      }
      local pid = assert(genserver.start(Srv, 0))
      local r = genserver.call(pid, "go")
      assert.are.same({ "string", "string" }, r)
      assert.are.same({ "string", "string" }, genserver.call(pid, "again"))
      genserver.stop(pid)
    end)
  end)

  describe("crash reasons", function()
    it("keep the error and the traceback from where it was raised", function()
      local pid, ref = process.spawn_monitor(function()
        local function deep_inside() error("boom at the bottom") end
        deep_inside()
      end)
      local down = U.await_down(ref)
      assert.is_not_nil(down)
      assert.are.equal(pid, down.pid)
      assert.matches("boom at the bottom", down.reason.error)
      assert.matches("stack traceback", down.reason.traceback)
      assert.matches("deep_inside", down.reason.traceback)
    end)

    it("keep a table error as it is", function()
      local _, ref = process.spawn_monitor(function() error({ code = 42 }) end)
      local down = U.await_down(ref)
      assert.are.equal(42, down.reason.error.code)
    end)

    it("are normal when the body returns after catching an error", function()
      local _, ref = process.spawn_monitor(function()
        load("return " .. ("("):rep(300) .. "1" .. (")"):rep(300))
        pcall(error, "caught")
        return "done"
      end)
      assert.are.equal("normal", U.await_down(ref).reason)
    end)
  end)

  describe("a killed process", function()
    it("runs its pending <close> handlers (which can no longer send)", function()
      local me = process.self()
      local mark = os.tmpname()
      os.remove(mark)
      local pid, ref = process.spawn_monitor(function(parent, file)
        local P = require "genserver.process"
        local guard <close> = setmetatable({}, { __close = function()
          local f = io.open(file, "w")
          f:write("closed")
          f:close()
          P.send(parent, "sent from a killed process")
        end })
        P.send(parent, "ready")
        P.receive()
      end, me, mark)
      assert.are.equal("ready", process.receive(T))
      process.exit(pid, "kill")
      assert.are.equal("killed", U.await_down(ref).reason)
      -- DOWN is sent before the state is closed (dying cannot be blocked), so
      -- the handler may still be running: wait for its file, bounded.
      local f
      for _ = 1, 500 do
        f = io.open(mark, "r")
        if f then
          if f:read("a") == "closed" then f:seek("set") break end
          f:close(); f = nil
        end
        process.sleep(10)
      end
      assert.is_not_nil(f, "the <close> handler did not run")
      assert.are.equal("closed", f:read("a"))
      f:close()
      os.remove(mark)
      assert.is_nil(process.receive(function(m) return m == "sent from a killed process" end, 0))
    end)

    it("stops a <close> handler that never ends, and the runtime goes on", function()
      local me = process.self()
      local pid, ref = process.spawn_monitor(function(parent)
        local P = require "genserver.process"
        local guard <close> = setmetatable({}, { __close = function()
          while true do end
        end })
        P.send(parent, "ready")
        P.receive()
      end, me)
      assert.are.equal("ready", process.receive(T))
      process.exit(pid, "kill")
      local down = U.await_down(ref)
      assert.is_not_nil(down, "the killed process never ended")
      assert.are.equal("killed", down.reason)
      -- the worker is free: a new process runs and answers
      assert.are.equal(3, there(function() return 1 + 2 end))
    end)
  end)

  describe("a call's from", function()
    it("is { caller pid, integer tag } and answers through reply", function()
      local Srv = {
        handle_call = function(req, from, st)
          local P = require "genserver.process"
          local gs = require "genserver"
          gs.reply(from, { P.is_pid(from[1]), math.type(from[2]) })
          return "noreply", st
        end,
      }
      local pid = assert(genserver.start(Srv, 0))
      local r = genserver.call(pid, "who")
      assert.is_true(r[1])
      assert.are.equal("integer", r[2])
      genserver.stop(pid)
    end)

    it("a from with a forged tag is refused", function()
      local Srv = {
        handle_call = function(req, from, st)
          local gs = require "genserver"
          local ok = pcall(gs.reply, { from[1], "nope" }, 1)
          return "reply", ok, st
        end,
      }
      local pid = assert(genserver.start(Srv, 0))
      assert.is_false(genserver.call(pid, "x"))
      genserver.stop(pid)
    end)
  end)

  describe("modules started by name", function()
    local dir

    before_each(function()
      dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -p '" .. dir .. "'"))
      package.path = dir .. "/?.lua;" .. package.path
    end)

    after_each(function()
      package.path = package.path:gsub("^" .. dir:gsub("%p", "%%%0") .. "/%?%.lua;", "")
      os.execute("rm -rf '" .. dir .. "'")
    end)

    local function write_module(name, answer)
      local f = assert(io.open(dir .. "/" .. name .. ".lua", "w"))
      f:write(("return { handle_call = function(_, _, st) return 'reply', %q, st end }")
        :format(answer))
      f:close()
    end

    it("are compiled once per runtime, as OTP loads a module once", function()
      local name = "st_mod_" .. tostring(os.time()) .. "_" .. math.random(1e6)
      write_module(name, "first")
      local a = assert(genserver.start(name, 0))
      assert.are.equal("first", genserver.call(a, "q"))
      write_module(name, "second") -- the file changes while the runtime runs
      local b = assert(genserver.start(name, 0))
      assert.are.equal("first", genserver.call(b, "q"))
      genserver.stop(a)
      genserver.stop(b)
    end)

    it("name the module's file in a crash traceback", function()
      local name = "st_crash_" .. tostring(os.time()) .. "_" .. math.random(1e6)
      local f = assert(io.open(dir .. "/" .. name .. ".lua", "w"))
      f:write("local M = {}\nfunction M.handle_call() error('from the file') end\nreturn M\n")
      f:close()
      for _ = 1, 2 do -- the second one loads the compiled chunk
        local pid = assert(genserver.start(name, 0))
        local ref = process.monitor(pid)
        local ok, err = pcall(genserver.call, pid, "q")
        assert.is_false(ok)
        assert.matches(name .. "%.lua:2:", tostring(err.reason.error))
        assert.matches(name .. "%.lua:2:", err.reason.traceback)
        assert.is_not_nil(U.await_down(ref))
      end
    end)
  end)
end)
