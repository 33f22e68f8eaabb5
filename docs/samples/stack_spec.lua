-- stack_spec.lua: busted specs for stack.lua. Run from this directory:
--   busted --lua=lua5.4 stack_spec.lua
package.path = "./?.lua;" .. package.path

local genserver = require "genserver"
local process = require "genserver.process"
local Stack = require "stack"

describe("the stack server", function()
  local s

  before_each(function()
    s = assert(Stack.start({ "a", "b" }))
  end)

  after_each(function()
    if process.alive(s) then genserver.stop(s) end
  end)

  it("pops what was pushed, last in first out", function()
    Stack.push(s, "c")
    assert.are.equal("c", Stack.pop(s))
    assert.are.equal("b", Stack.pop(s))
    assert.are.equal(1, Stack.size(s))
  end)

  it("refuses a start argument that is not a list", function()
    local pid, reason = Stack.start("nope")
    assert.is_nil(pid)
    assert.are.equal("items must be a list", reason)
  end)

  it("raises a genserver error when the server is gone", function()
    genserver.stop(s)
    local ok, err = pcall(Stack.size, s)
    assert.is_false(ok)
    assert.is_true(genserver.is_error(err))
    assert.are.equal("noproc", err.reason)
  end)

  it("serves a process written right here in the spec", function()
    local me = process.self()
    process.spawn(function()
      process.send(me, "size " .. tostring(Stack.size(s)))   -- globals work in there
    end)
    assert.are.equal("size 2", process.receive(5000))
  end)

  it("can be watched with a monitor: waits are bounded receives", function()
    local ref = process.monitor(s)
    genserver.cast(s, { "push", "x" })
    process.exit(s, "kill")
    local down = process.receive(function(m) return m[1] == "DOWN" and m.ref == ref end, 5000)
    assert.is_table(down, "no DOWN within 5 s")
    assert.are.equal("killed", down.reason)
  end)
end)
