-- Specs for genserver.agent (DESIGN.md §2.8): start/start_link (fn's
-- value, a failing fn, names), get, update, get_and_update, cast, stop,
-- functions crossing with their upvalues, errors raised as call raises
-- them, and an agent as a supervisor's child.
local gs = require "genserver"
local process = require "genserver.process"
local agent = require "genserver.agent"
local supervisor = require "genserver.supervisor"
local error = error

local function raises(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok)
  return err
end

describe("agent.start", function()
  it("holds the value fn() returns", function()
    local a = assert(agent.start(function() return { 1, 2, 3 } end))
    assert.are.same({ 1, 2, 3 }, agent.get(a, function(v) return v end))
    agent.stop(a)
  end)

  it("takes genserver.start's options (a name)", function()
    local a = assert(agent.start(function() return 0 end, { name = "agent_named" }))
    assert.are.equal(a, process.whereis("agent_named"))
    assert.are.equal(0, agent.get("agent_named", function(v) return v end))
    agent.stop("agent_named")
  end)

  it("returns nil, reason when fn raises", function()
    local pid, reason = agent.start(function() error("no value") end)
    assert.is_nil(pid)
    assert.matches("no value", reason.error)
  end)

  it("refuses a fn that is not a function", function()
    assert.matches("fn must be a function", raises(function() agent.start(1) end))
    assert.matches("fn must be a function", raises(function() agent.start_link("x") end))
  end)

  it("start_link links the agent to the caller", function()
    local a = assert(agent.start_link(function() return 1 end))
    local linked = false
    for _, p in ipairs(process.info(process.self()).links) do
      if p == a then linked = true end
    end
    assert.is_true(linked)
    agent.stop(a)
  end)
end)

describe("agent get/update/get_and_update/cast", function()
  local a
  before_each(function() a = assert(agent.start(function() return { n = 0 } end)) end)
  after_each(function() if process.alive(a) then agent.stop(a) end end)

  it("get returns fn(value), computed in the agent", function()
    local k = 10 -- crosses as an upvalue
    assert.are.equal(10, agent.get(a, function(v) return v.n + k end))
    assert.are.equal(a, agent.get(a, function() return process.self() end))
  end)

  it("update replaces the value and returns true", function()
    assert.is_true(agent.update(a, function(v) v.n = v.n + 5 return v end))
    assert.are.equal(5, agent.get(a, function(v) return v.n end))
  end)

  it("get_and_update returns the reply and keeps the new value", function()
    local r = agent.get_and_update(a, function(v) return v.n, { n = v.n + 1 } end)
    assert.are.equal(0, r)
    assert.are.equal(1, agent.get(a, function(v) return v.n end))
  end)

  it("cast updates without waiting, in order with calls", function()
    assert.is_true(agent.cast(a, function(v) v.n = 42 return v end))
    assert.are.equal(42, agent.get(a, function(v) return v.n end))
  end)

  it("an error in fn crashes the agent and raises as call does", function()
    local err = raises(function() agent.get(a, function() error("bad get") end) end)
    assert.is_true(gs.is_error(err))
    assert.are.equal("call", err.op)
    assert.matches("bad get", err.reason.error)
    assert.is_false(process.alive(a))
  end)

  it("a call on a dead agent raises noproc, and a time-out raises timeout", function()
    local err = raises(function()
      agent.get(a, function() process.sleep(1000) end, 20)
    end)
    assert.are.equal("timeout", err.reason)
    agent.stop(a)
    err = raises(function() agent.update(a, function(v) return v end) end)
    assert.are.equal("noproc", err.reason)
  end)

  it("refuses a fn that is not a function", function()
    assert.matches("fn must be a function", raises(function() agent.get(a, 1) end))
    assert.matches("fn must be a function", raises(function() agent.update(a) end))
    assert.matches("fn must be a function", raises(function() agent.get_and_update(a, {}) end))
    assert.matches("fn must be a function", raises(function() agent.cast(a, "x") end))
  end)
end)

describe("agent.stop", function()
  it("stops the agent with a reason", function()
    local a = assert(agent.start(function() return 1 end))
    local ref = process.monitor(a)
    assert.is_true(agent.stop(a, "shutdown"))
    local down = process.receive(function(m) return type(m) == "table" and m.ref == ref end, 5000)
    assert.are.equal("shutdown", down.reason)
  end)
end)

describe("an agent under a supervisor", function()
  it("is restarted with a fresh value after a crash", function()
    local sup = assert(supervisor.start({
      strategy = "one_for_one",
      children = { { id = "store", start = { "genserver.agent", function() return 0 end,
                                               { name = "agent_sup_store" } } } },
    }))
    agent.update("agent_sup_store", function() return 7 end)
    local old = process.whereis("agent_sup_store")
    pcall(agent.get, "agent_sup_store", function() error("crash") end)
    local new
    for _ = 1, 500 do
      new = process.whereis("agent_sup_store")
      if new and new ~= old then break end
      process.sleep(10)
    end
    assert.are_not.equal(old, new)
    assert.are.equal(0, agent.get("agent_sup_store", function(v) return v end))
    gs.stop(sup)
  end)
end)
