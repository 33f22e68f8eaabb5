-- Scheduling and receive edge cases found in review: each test failed (or
-- crashed) before its fix.
package.path = "spec/support/?.lua;" .. package.path

local gs = require "genserver"
local process = require "genserver.process"
local core = require "genserver.core"
local U = require "pr_util"

describe("receive with a match function", function()
  it("refuses to receive or wait inside the match function, and loses nothing", function()
    local me = process.self()
    local pid = process.spawn(U.portable(function(parent)
      local P = require "genserver.process"
      local me2 = P.self()
      for _, v in ipairs({ "a", "b", "c" }) do P.send(me2, v) end
      local ok, err = pcall(P.receive, function(m)
        P.receive(0) -- would free the messages being walked
        return m == "c"
      end, 100)
      local rest = {}
      for _ = 1, 3 do rest[#rest + 1] = P.receive(100) end
      P.send(parent, { ok = ok, err = tostring(err), rest = rest })
    end), me)
    local r = process.receive(function(m) return type(m) == "table" and m.rest end, 5000)
    assert.is_not_nil(r, "the process answered")
    assert.is_false(r.ok)
    assert.matches("inside a receive match function", r.err)
    assert.are.same({ "a", "b", "c" }, r.rest)
    assert.is_false(process.alive(pid) and false)
  end)
end)

describe("fairness", function()
  it("a call/reply pair handing each other the worker does not starve the rest", function()
    -- with one worker the pair used to keep the runnext slot forever
    local echo = assert(gs.start("gs_echo", nil))
    local me = process.self()
    local pinger = process.spawn(U.portable(function(server)
      local g = require "genserver"
      while true do g.call(server, "ping") end
    end), echo)
    process.sleep(20)
    local late = process.spawn(U.portable(function(parent)
      require("genserver.process").send(parent, "late one ran")
    end), me)
    assert.are.equal("late one ran", process.receive(function(m) return m == "late one ran" end, 5000))
    process.exit(pinger, "kill")
    gs.stop(echo)
    assert.is_not_nil(late)
  end)
end)

describe("spawn", function()
  it("reads options without metamethods and leaks no process when one raises", function()
    local before = require("genserver.runtime").stats().processes
    local opts = setmetatable({}, { __index = function(_, k)
      if k == "module" then error("boom") end
    end })
    local pid = core.spawn(U.portable(function() end), opts)
    assert.is_true(core.is_pid(pid))
    local bad = setmetatable({}, { __index = function() error("boom") end })
    assert.has_error(function() core.spawn(U.portable(function() end), bad) end)
    for _ = 1, 200 do
      if require("genserver.runtime").stats().processes <= before then break end
      process.sleep(5)
    end
    assert.is_true(require("genserver.runtime").stats().processes <= before)
  end)
end)

describe("time-outs near the bound", function()
  it("a time-out of 1.8e13 ms waits (it used to wrap around and expire at once)", function()
    local me = process.self()
    process.spawn(U.portable(function(parent)
      local P = require "genserver.process"
      P.sleep(30)
      P.send(parent, "woke")
    end), me)
    assert.are.equal("woke", process.receive(1.8446744e13))
  end)
end)
