-- spec/tcp_examples_spec.lua: examples/tcp_echo.lua and examples/chat_tcp.lua
-- run briefly, each in a child lua5.4 under `timeout` (so a hang is a failed
-- test): their demo mode, and their serve mode against a loopback client
-- driven from here.
--
-- Run: make test SPECS=spec/tcp_examples_spec.lua

local U = require "pr_util"
local tcp = require "genserver.tcp"

local T = U.TIMEOUT

-- Run a command; returns its output and exit status line. Its stderr stays
-- the spec's own, so a sanitizer report in the child fails the run too.
local function run(cmd)
  local p = assert(io.popen(cmd .. "; echo rc=$?"))
  local out = p:read("a")
  p:close()
  return out
end

-- Start an example in serve mode: returns its port and a function that
-- stops it (TERM to `timeout`, which passes it on) and returns its output.
local function serve(example)
  local outf = os.tmpname()
  local p = assert(io.popen(("sh -c 'echo $$; exec timeout 60 lua5.4 %s --serve 0 > %s' &")
    :format(example, outf)))
  local pid = assert(tonumber(p:read("l")))
  p:close()
  local port
  for _ = 1, 3000 do -- bounded: 30 s
    local f = io.open(outf)
    local first = f and f:read("l")
    if f then f:close() end
    port = first and tonumber(first:match("^listening on (%d+)"))
    if port then break end
    require("genserver.process").sleep(10)
  end
  return port, function()
    os.execute("kill " .. pid .. " 2>/dev/null")
    local f = io.open(outf)
    local out = f and f:read("a") or ""
    if f then f:close() end
    os.remove(outf)
    return out
  end
end

describe("TCP examples", function()
  it("tcp_echo.lua: the demo echoes 20 clients and survives its listener's death", function()
    local out = run("timeout 60 lua5.4 examples/tcp_echo.lua")
    assert.matches("20 of 20 clients got their echo", out, 1, true)
    assert.matches("echo: after the restart", out, 1, true)
    assert.matches("done\n", out, 1, true)
    assert.matches("rc=0", out, 1, true)
  end)

  it("tcp_echo.lua --serve echoes for a loopback client", function()
    local port, stop = serve("examples/tcp_echo.lua")
    assert.is_number(port)
    local c = assert(tcp.connect("127.0.0.1", port, { active = false }, T))
    assert(tcp.send(c, "ping 1"))
    assert.are.equal("ping 1", tcp.recv(c, 6, T))
    assert(tcp.send(c, string.rep("x", 100000)))
    assert.are.equal(string.rep("x", 100000), tcp.recv(c, 100000, T))
    tcp.close(c)
    stop()
  end)

  it("chat_tcp.lua: the demo's two clients talk", function()
    local out = run("timeout 60 lua5.4 examples/chat_tcp.lua")
    assert.matches("bob    reads: alice: hi bob", out, 1, true)
    assert.matches("alice  reads: * bob left", out, 1, true)
    assert.matches("rc=0", out, 1, true)
  end)

  it("chat_tcp.lua --serve: a telnet-like client joins and is echoed to the room", function()
    local port, stop = serve("examples/chat_tcp.lua")
    assert.is_number(port)
    local c = assert(tcp.connect("127.0.0.1", port, { active = false }, T))
    assert.are.equal("name? ", tcp.recv(c, 6, T))
    assert(tcp.setopts(c, { packet = "line" }))
    assert(tcp.send(c, "carol\r\n"))
    assert.are.equal("* carol joined\n", tcp.recv(c, 0, T))
    assert(tcp.send(c, "hello\r\n"))
    assert.are.equal("carol: hello\n", tcp.recv(c, 0, T))
    assert(tcp.send(c, "/quit\r\n"))
    assert.are.equal("bye\n", tcp.recv(c, 0, T))
    assert.are.equal("closed", select(2, tcp.recv(c, 0, T)))
    tcp.close(c)
    stop()
  end)
end)
