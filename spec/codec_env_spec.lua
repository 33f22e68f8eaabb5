-- spec/codec_env_spec.lua: the codec's rules for a function's globals
-- (DESIGN §1.4): the _ENV rule, and standard library functions by name.
--
-- Run: make test SPECS=spec/codec_env_spec.lua   (under GENSERVER_WORKERS=1 and 4)
-- The functions below are defined in this file, which busted runs under
-- its own environment (a table whose metatable's __index is a function
-- falling back to _G): they are spawned as they are, with no workaround.

local process = require "genserver.process"
local core = require "genserver.core"

local T = 5000

-- a global of this spec file: busted keeps it in its environment, not in _G
SPEC_GLOBAL = "set by the spec file"

local function await(tag)
  local m = process.receive(function(x) return type(x) == "table" and x[1] == tag end, T)
  if m == nil then error("timed out waiting for " .. tag, 2) end
  return m
end

local function down_reason(ref)
  local m = process.receive(function(x)
    return type(x) == "table" and x[1] == "DOWN" and x.ref == ref
  end, T)
  return m and m.reason
end

describe("the _ENV rule", function()
  before_each(function() while process.receive(0) ~= nil do end end)

  it("spawns a function written in a busted spec that uses globals", function()
    assert.are_not.equal(_G, _ENV) -- the premise: busted's own environment
    assert.is_nil(rawget(_G, "SPEC_GLOBAL"))
    process.spawn(function(to)
      local p = require "genserver.process"
      p.send(to, { "globals", tostring(42), string.format("%d-%s", 7, "x"), SPEC_GLOBAL,
                   type(print), math.floor(2.5), select("#", 1, 2) })
    end, process.self())
    local m = await("globals")
    assert.are.same({ "globals", "42", "7-x", "set by the spec file", "function", 2, 2 }, m)
  end)

  it("carries the globals that nested functions read", function()
    process.spawn(function(to)
      local function helper() return ("%s!"):format(SPEC_GLOBAL) end
      local p = require "genserver.process"
      p.send(to, { "nested", (function() return helper() end)() })
    end, process.self())
    assert.are.same({ "nested", "set by the spec file!" }, await("nested"))
  end)

  it("gives a function under setmetatable({}, {__index = _G}) its own fields and the receiver's globals", function()
    local env = setmetatable({ MINE = "own field" }, { __index = _G })
    local f = load([[
      local to = ...
      local p = require "genserver.process"
      MINE2 = "set inside"
      p.send(to, { "direct", MINE, MINE2, tostring(1), getmetatable(_ENV) ~= nil,
                   rawget(_ENV, "print") == nil })
    ]], "=direct", "t", env)
    process.spawn(f, process.self())
    assert.are.same({ "direct", "own field", "set inside", "1", true, true }, await("direct"))
  end)

  it("follows a chain of environments to _G", function()
    local mid = setmetatable({ MID = "from the middle" }, { __index = _G })
    local env = setmetatable({ OWN = "own" }, { __index = mid })
    local f = load([[
      local to = ...
      require("genserver.process").send(to, { "chain", OWN, MID, type(string.rep) })
    ]], "=chain", "t", env)
    process.spawn(f, process.self())
    assert.are.same({ "chain", "own", "from the middle", "function" }, await("chain"))
  end)

  it("shares one environment between the functions that had it", function()
    local env = setmetatable({ COUNT = 0 }, { __index = _G })
    local bump = load("COUNT = COUNT + 1 return COUNT", "=bump", "t", env)
    local read = load("return COUNT", "=read", "t", env)
    process.spawn(function(to, b, r)
      b()
      b()
      require("genserver.process").send(to, { "shared", r() })
    end, process.self(), bump, read)
    assert.are.same({ "shared", 2 }, await("shared"))
  end)

  it("binds a function whose _ENV is the sender's _G to the receiver's globals", function()
    local f = load([[
      local to = ...
      require("genserver.process").send(to, { "plain", _ENV == _G, type(tostring) })
    ]], "=plain", "t", _G)
    process.spawn(f, process.self())
    assert.are.same({ "plain", true, "function" }, await("plain"))
  end)

  it("leaves a plain table _ENV (no metatable) a plain table", function()
    local f = load([[
      local to = ...
      to.p.send(to.pid, { "bare", type(print) })
    ]], "=bare", "t", { })
    local _, ref = core.spawn(f, { monitor = true }, { p = process, pid = process.self() })
    assert.is_not_nil(down_reason(ref))
    assert.is_nil(process.receive(function(x) return type(x) == "table" and x[1] == "bare" end, 0))
  end)

  it("does not make the receiver's _G the sender's: a global set there stays there", function()
    process.spawn(function(to)
      SET_BY_CHILD = true
      require("genserver.process").send(to, { "set" })
    end, process.self())
    await("set")
    assert.is_nil(rawget(_G, "SET_BY_CHILD"))
  end)
end)

describe("standard library functions by name", function()
  before_each(function() while process.receive(0) ~= nil do end end)

  it("resolves `local req = require` in a receiver that has not opened package", function()
    local req = require
    process.spawn(function(to)
      req("genserver.process").send(to, { "req", type(req) })
    end, process.self())
    assert.are.same({ "req", "function" }, await("req"))
  end)

  it("resolves every standard library's functions as upvalues", function()
    local fns = { print = print, format = string.format, insert = table.insert,
                  floor = math.floor, wrap = coroutine.wrap, char = utf8.char,
                  pcall = pcall, require = require, searchpath = package.searchpath }
    process.spawn(function(to)
      local ok = {}
      for k, f in pairs(fns) do ok[k] = type(f) end
      local t = {}
      fns.insert(t, fns.format("%s", fns.char(72)))
      ok.used = t[1]
      require("genserver.process").send(to, { "std", ok })
    end, process.self())
    local m = await("std")
    assert.are.equal("H", m[2].used)
    for k in pairs(fns) do assert.are.equal("function", m[2][k], k) end
  end)
end)
