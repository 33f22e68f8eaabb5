--[[
examples/chat_tcp.lua — a chat room over TCP that telnet can join.

What it shows:
  * genserver.tcp with line framing (packet = "line": one message per line,
    the "\n" kept) and credit-based active sockets;
  * one process per connection (its socket's controlling process), a room
    gen_server that broadcasts, and monitors that notice a member leaving
    (its process ends, so its socket closes, and the room says goodbye);
  * sockets in messages: the acceptor hands each socket to its session.

Run it from the repository root (after `make`):
  eval "$(make -s env)"; lua5.4 examples/chat_tcp.lua            -- a short demo
  lua5.4 examples/chat_tcp.lua --serve [PORT] [--for MS]          -- then: telnet 127.0.0.1 PORT
In serve mode it prints "listening on PORT"; type your name, then lines;
"/quit" leaves.
]]

local gs = require "genserver"
local process = require "genserver.process"
local tcp = require "genserver.tcp"

-- -------------------------------------------------------------- the room

local Room = {}

function Room.init()
  return "ok", { members = {} } -- session pid -> { name = ..., ref = monitor }
end

local function broadcast(st, text)
  local process = require "genserver.process"
  for pid in pairs(st.members) do process.send(pid, { "line", text }) end
end

function Room.handle_cast(msg, st)
  local process = require "genserver.process"
  if msg[1] == "join" then
    local pid, name = msg[2], msg[3]
    st.members[pid] = { name = name, ref = process.monitor(pid) }
    broadcast(st, ("* %s joined\n"):format(name))
  elseif msg[1] == "say" then
    local m = st.members[msg[2]]
    if m then broadcast(st, ("%s: %s"):format(m.name, msg[3])) end
  end
  return "noreply", st
end

function Room.handle_call(req, _from, st)
  if req == "who" then
    local names = {}
    for _, m in pairs(st.members) do names[#names + 1] = m.name end
    table.sort(names)
    return "reply", names, st
  end
  return "reply", nil, st
end

function Room.handle_info(msg, st)
  if type(msg) == "table" and msg[1] == "DOWN" and st.members[msg.pid] then
    local name = st.members[msg.pid].name
    st.members[msg.pid] = nil
    broadcast(st, ("* %s left\n"):format(name))
  end
  return "noreply", st
end

-- ----------------------------------------------------------- a session

local function session()
  local tcp = require "genserver.tcp"
  local process = require "genserver.process"
  local gs = require "genserver"
  local m = process.receive(function(m) return type(m) == "table" and m[1] == "own" end, 5000)
  if not m then return end
  local s, name = m[2], nil
  tcp.setopts(s, { active = true })
  tcp.send(s, "name? ")
  while true do
    local msg = process.receive()
    if type(msg) == "table" and msg.sock == s then
      if msg[1] ~= "tcp" then return end -- the peer left
      local line = msg.data:gsub("\r?\n$", "")
      if name == nil then
        if line ~= "" then
          name = line
          gs.cast("room", { "join", process.self(), name })
        else
          tcp.send(s, "name? ")
        end
      elseif line == "/quit" then
        tcp.send(s, "bye\n")
        return -- ending closes the socket; the room sees the DOWN
      elseif line == "/who" then
        tcp.send(s, "here: " .. table.concat(gs.call("room", "who"), ", ") .. "\n")
      else
        gs.cast("room", { "say", process.self(), line .. "\n" })
      end
    elseif type(msg) == "table" and msg[1] == "line" then
      tcp.send(s, msg[2])
    end
  end
end

-- ------------------------------------------------------------- acceptor

local function acceptor(ls, session)
  local tcp = require "genserver.tcp"
  local process = require "genserver.process"
  while true do
    local s, err = tcp.accept(ls)
    if not s then return err end
    local pid = process.spawn(session)
    tcp.controlling_process(s, pid)
    process.send(pid, { "own", s })
  end
end

-- ----------------------------------------------------------------- main

local function start(port)
  assert(gs.start(Room, nil, { name = "room" }))
  local ls = assert(tcp.listen(port, { packet = "line", active = false }))
  process.spawn(acceptor, ls, session)
  return ls, tcp.sockname(ls).port
end

local args = { ... }
io.stdout:setvbuf("line")
if args[1] == "--serve" then
  local port, ms = tonumber(args[2]) or 0, nil
  for i = 2, #args do if args[i] == "--for" then ms = tonumber(args[i + 1]) end end
  local _, p = start(port)
  print("listening on " .. p)
  process.sleep(ms or "infinity")
  return
end

local _, port = start(0)
print(("chat room on 127.0.0.1:%d (try: lua5.4 examples/chat_tcp.lua --serve 5555, telnet)"):format(port))

-- two clients, as telnet would be: lines in, lines out
local function client(name)
  local c = assert(tcp.connect("127.0.0.1", port, { active = false }, 5000))
  assert(tcp.recv(c, 6, 5000) == "name? ") -- a prompt: no "\n", so read it raw
  tcp.setopts(c, { packet = "line" })
  tcp.send(c, name .. "\r\n")
  return c
end
local function read(c, who)
  local line = tcp.recv(c, 0, 5000)
  io.write(("  %-6s reads: %s"):format(who, line or "(nothing)\n"))
  return line
end

local alice = client("alice")
assert(read(alice, "alice") == "* alice joined\n")
local bob = client("bob")
read(alice, "alice")
read(bob, "bob")
tcp.send(alice, "hi bob\n")
read(alice, "alice")
read(bob, "bob")
tcp.send(bob, "/who\n")
read(bob, "bob")
tcp.send(bob, "/quit\n")
read(bob, "bob")
read(alice, "alice")
tcp.close(bob)
tcp.close(alice)
print("done")
