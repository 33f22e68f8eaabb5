--[[
examples/tcp_echo.lua — a TCP echo server: an acceptor pool under a supervisor.

What it shows:
  * genserver.tcp: listen, accept, controlling_process, active sockets whose
    data arrive as { "tcp", sock = s, data = d } messages;
  * the supervision tree (rest_for_one): a "listener" server owns the
    listening socket; after it, a pool of acceptor servers, each waiting in
    accept with a short time-out so that it stays a well-behaved gen_server
    (accept yields the process, never the worker thread); each accepted
    connection gets its own handler process, made its controlling process;
  * if the listener dies its socket closes with it, the acceptors' accept
    returns nil, "closed" and they stop, and rest_for_one restarts the
    listener and then the pool.

Run it from the repository root (after `make`):
  eval "$(make -s env)"; lua5.4 examples/tcp_echo.lua            -- a short demo
  lua5.4 examples/tcp_echo.lua --serve [PORT] [--for MS]           -- serve (telnet 127.0.0.1 PORT)
In serve mode it prints "listening on PORT" and runs until killed (or MS ms).
]]

local gs = require "genserver"
local process = require "genserver.process"
local supervisor = require "genserver.supervisor"
local tcp = require "genserver.tcp"

-- ---------------------------------------------------------- the listener

-- Owns the listening socket; hands it to the acceptors.
local Listener = {}

function Listener.init(port)
  local tcp = require "genserver.tcp"
  local ls, err = tcp.listen(port, { backlog = 128, active = false })
  if not ls then return "stop", "listen: " .. err end
  return "ok", { ls = ls }
end

function Listener.handle_call(req, _from, st)
  if req == "socket" then return "reply", st.ls, st end
  if req == "port" then return "reply", require("genserver.tcp").sockname(st.ls).port, st end
  return "reply", nil, st
end

-- ------------------------------------------------------- the handlers

-- One process per connection: echoes until the peer closes.
local function handler()
  local tcp = require "genserver.tcp"
  local process = require "genserver.process"
  local m = process.receive(function(m) return type(m) == "table" and m[1] == "own" end, 5000)
  if not m then return end
  local s = m[2]
  tcp.setopts(s, { active = true }) -- credit-based: never floods this mailbox
  while true do
    local msg = process.receive()
    if type(msg) == "table" and msg.sock == s then
      if msg[1] ~= "tcp" then return end -- tcp_closed / tcp_error
      tcp.send(s, msg.data)
    end
  end
end

-- --------------------------------------------------------- the acceptors

local Acceptor = {}

function Acceptor.init(n)
  local gs = require "genserver"
  local ls = gs.call("echo_listener", "socket")
  gs.cast(require("genserver.process").self(), "accept")
  return "ok", { ls = ls, n = n, served = 0, handler = handler }
end

function Acceptor.handle_cast(_msg, st)
  local tcp = require "genserver.tcp"
  local process = require "genserver.process"
  local gs = require "genserver"
  -- a short time-out keeps the server answering its own messages
  local s, err = tcp.accept(st.ls, 200)
  if s then
    local pid = process.spawn(st.handler)
    tcp.controlling_process(s, pid)
    process.send(pid, { "own", s })
    st.served = st.served + 1
  elseif err ~= "timeout" then
    -- "closed": the listener is gone. Stop quietly; rest_for_one restarts
    -- this pool after the new listener (transient: not restarted alone)
    return "stop", "normal", st
  end
  gs.cast(process.self(), "accept")
  return "noreply", st
end

function Acceptor.handle_call(req, _from, st)
  if req == "served" then return "reply", st.served, st end
  return "reply", nil, st
end

-- --------------------------------------------------------------- main

local function start(port, pool)
  local acceptors = {}
  for i = 1, pool do
    acceptors[i] = { id = "acceptor" .. i, start = { Acceptor, i }, restart = "transient" }
  end
  return assert(supervisor.start_link({
    strategy = "rest_for_one", intensity = 5, period = 5,
    children = {
      { id = "listener", start = { Listener, port, { name = "echo_listener" } } },
      { id = "acceptors", start = { "genserver.supervisor",
          { strategy = "one_for_one", children = acceptors } }, type = "supervisor" },
    },
  }, { name = "echo_sup" }))
end

local args = { ... }
if args[1] == "--serve" then
  local port, ms = tonumber(args[2]) or 0, nil
  for i = 2, #args do if args[i] == "--for" then ms = tonumber(args[i + 1]) end end
  local sup = start(port, 4)
  io.stdout:setvbuf("line")
  print("listening on " .. gs.call("echo_listener", "port"))
  process.sleep(ms or "infinity")
  gs.stop(sup)
  return
end

io.stdout:setvbuf("line")
local sup = start(0, 4)
local port = gs.call("echo_listener", "port")
print(("echo server on 127.0.0.1:%d with 4 acceptors"):format(port))

-- twenty clients at once, each its own process
local me = process.self()
for i = 1, 20 do
  process.spawn(function(port, i, me)
    local tcp = require "genserver.tcp"
    local process = require "genserver.process"
    local c = assert(tcp.connect("127.0.0.1", port, { active = false }, 5000))
    local msg = ("hello from client %d"):format(i)
    tcp.send(c, msg)
    local back = tcp.recv(c, #msg, 5000)
    tcp.close(c)
    process.send(me, { "done", i, back == msg })
  end, port, i, me)
end
local ok = 0
for _ = 1, 20 do
  local m = process.receive(function(m) return type(m) == "table" and m[1] == "done" end, 10000)
  if m and m[3] then ok = ok + 1 end
end
print(("%d of 20 clients got their echo"):format(ok))

-- kill the listener: its socket closes, the acceptors fail, rest_for_one restarts them
local old = process.whereis("echo_listener")
process.exit(old, "kill")
local new
for _ = 1, 500 do
  new = process.whereis("echo_listener")
  if new and new ~= old then break end
  process.sleep(10)
end
port = gs.call("echo_listener", "port")
local c = assert(tcp.connect("127.0.0.1", port, { active = false }, 5000))
tcp.send(c, "after the restart")
print(("listener restarted (%s -> %s), echo: %s"):format(tostring(old), tostring(new),
  tostring(tcp.recv(c, #"after the restart", 5000))))
tcp.close(c)
gs.stop(sup)
print("done")
