-- spec/udp_spec.lua: genserver.udp (DESIGN.md §2.10) over loopback.
--
-- Run: make test SPECS=spec/udp_spec.lua   (under GENSERVER_WORKERS=1 and 4)
-- Loopback UDP does not lose datagrams while the receiver keeps up; every
-- wait is bounded all the same.

local U = require "pr_util"
local process = require "genserver.process"
local udp = require "genserver.udp"

local function udp_msg(sock)
  return function(m)
    return type(m) == "table" and m[1] == "udp" and m.sock == sock
  end
end

describe("genserver.udp", function()

  before_each(function() U.flush() end)

  it("delivers datagrams as { \"udp\", sock, ip, port, data } to the opener", function()
    local a = assert(udp.open(0))
    local b = assert(udp.open(0))
    local pa, pb = udp.sockname(a).port, udp.sockname(b).port
    assert.are.equal("127.0.0.1", udp.sockname(a).ip)
    assert.is_true(udp.send(a, "127.0.0.1", pb, "hello"))
    local m = U.await(udp_msg(b))
    assert.are.equal("hello", m.data)
    assert.are.equal("127.0.0.1", m.ip)
    assert.are.equal(pa, m.port)
    assert.is_true(udp.send(b, m.ip, m.port, "back"))
    assert.are.equal("back", U.await(udp_msg(a)).data)
    udp.close(a); udp.close(b)
  end)

  it("keeps datagram boundaries, empty ones included", function()
    local a, b = assert(udp.open(0)), assert(udp.open(0))
    local pb = udp.sockname(b).port
    for _, d in ipairs({ "one", "", string.rep("z", 60000) }) do
      assert.is_true(udp.send(a, "127.0.0.1", pb, d))
      assert.are.equal(d, U.await(udp_msg(b)).data)
    end
    udp.close(a); udp.close(b)
  end)

  it("works in a spawned process, which owns its socket", function()
    local me = process.self()
    process.spawn(function(me)
      local udp = require "genserver.udp"
      local process = require "genserver.process"
      local s = assert(udp.open(0))
      process.send(me, { "port", udp.sockname(s).port })
      local m = process.receive(function(m) return type(m) == "table" and m[1] == "udp" end, 5000)
      udp.send(s, m.ip, m.port, "pong:" .. m.data)
      process.receive(function(m) return m == "bye" end, 5000)
    end, me)
    local port = U.await(function(m) return type(m) == "table" and m[1] == "port" end)[2]
    local a = assert(udp.open(0))
    assert.is_true(udp.send(a, "127.0.0.1", port, "ping"))
    assert.are.equal("pong:ping", U.await(udp_msg(a)).data)
    udp.close(a)
  end)

  it("closes a dead owner's socket: its port can be bound again", function()
    local me = process.self()
    local pid = process.spawn(function(me)
      local udp = require "genserver.udp"
      local process = require "genserver.process"
      local s = assert(udp.open(0))
      process.send(me, { "port", udp.sockname(s).port })
      process.receive(5000)
    end, me)
    local port = U.await(function(m) return type(m) == "table" and m[1] == "port" end)[2]
    local s2, err = udp.open(port)
    assert.is_nil(s2)
    assert.are.equal("eaddrinuse", err)
    U.kill(pid)
    -- the loop closes it soon after the death; bounded retries
    for _ = 1, 100 do
      s2 = udp.open(port)
      if s2 then break end
      process.sleep(10)
    end
    assert.is_truthy(s2)
    udp.close(s2)
  end)

  it("send on a closed socket is nil, \"closed\"; bad arguments raise", function()
    local a = assert(udp.open(0))
    udp.close(a)
    local ok, err = udp.send(a, "127.0.0.1", 9, "x")
    assert.is_nil(ok)
    assert.are.equal("closed", err)
    local b = assert(udp.open(0))
    ok, err = udp.send(b, "127.0.0.1", 9, string.rep("x", 70000))
    assert.is_nil(ok)
    assert.are.equal("emsgsize", err)
    assert.has_error(function() udp.send(b, "127.0.0.1", 70000, "x") end)
    assert.has_error(function() udp.send("nope", "127.0.0.1", 9, "x") end)
    udp.close(b)
  end)
end)
