--[[
examples/chat_room.lua — a chat room whose monitors clean up its members.

What it shows:
  * a room server that keeps its members in its state: `join` records the
    caller's pid and nick, and *monitors* the caller (process.monitor), so
    that when a member's process ends — normally, by a crash, or killed —
    a {"DOWN", ref =, pid =, reason =} message reaches the room's
    handle_info, which removes the member and tells the others;
  * `from[1]` in handle_call is the caller's pid;
  * members are plain processes (process.spawn) that receive messages in
    a loop and print what they hear;
  * a cast (`say`) fanned out to every member with process.send;
  * a member that crashes (a Lua error in its body) is removed just like
    one that leaves, with no `leave` call: nobody has to remember to clean
    up, which is what monitors are for.

Run it from the repository root (after `make`):
  eval "$(make -s env)"; lua5.4 examples/chat_room.lua
]]

local gs = require "genserver"
local process = require "genserver.process"

-- ------------------------------------------------------------------ room

local Room = { name = "chat_room" }

function Room.init(topic)
  -- members: pid -> { nick =, ref = }; the monitor ref finds the member on DOWN
  return "ok", { topic = topic, members = {}, count = 0 }
end

local function broadcast(state, msg, except)
  for pid in pairs(state.members) do
    if pid ~= except then process.send(pid, msg) end
  end
end

function Room.handle_call(req, from, state)
  local who = from[1] -- the caller's pid
  if req[1] == "join" then
    if state.members[who] then return "reply", false, state end
    local ref = process.monitor(who)
    state.members[who] = { nick = req[2], ref = ref }
    state.count = state.count + 1
    broadcast(state, { "joined", nick = req[2] }, who)
    return "reply", state.topic, state
  elseif req[1] == "leave" then
    local m = state.members[who]
    if not m then return "reply", false, state end
    process.demonitor(m.ref, "flush") -- no DOWN will come for it now
    state.members[who] = nil
    state.count = state.count - 1
    broadcast(state, { "left", nick = m.nick, reason = "left" })
    return "reply", true, state
  elseif req[1] == "members" then
    local nicks = {}
    for _, m in pairs(state.members) do nicks[#nicks + 1] = m.nick end
    table.sort(nicks)
    return "reply", nicks, state
  end
  return "reply", nil, state
end

function Room.handle_cast(msg, state)
  if msg[1] == "say" then
    local m = state.members[msg.pid]
    if m then broadcast(state, { "said", nick = m.nick, text = msg.text }, msg.pid) end
  end
  return "noreply", state
end

function Room.handle_info(msg, state)
  if type(msg) == "table" and msg[1] == "DOWN" then
    local m = state.members[msg.pid]
    if m then
      state.members[msg.pid] = nil
      state.count = state.count - 1
      local reason = type(msg.reason) == "table" and "crashed" or tostring(msg.reason)
      broadcast(state, { "left", nick = m.nick, reason = reason })
    end
  end
  return "noreply", state
end

-- --------------------------------------------------------------- members

-- A member's body: join, then print what it hears and obey the main
-- script's commands ("say", "leave", "crash", "quit"). Each line it prints
-- is also sent to the main script, so the script can wait for it.
local function member(room, nick, main)
  local topic = gs.call(room, { "join", nick })
  process.send(main, { "ready", nick = nick, topic = topic })
  while true do
    local m = process.receive()
    if m[1] == "joined" then
      process.send(main, { "heard", nick = nick, line = m.nick .. " joined" })
    elseif m[1] == "left" then
      process.send(main, { "heard", nick = nick, line = m.nick .. " left (" .. m.reason .. ")" })
    elseif m[1] == "said" then
      process.send(main, { "heard", nick = nick, line = "<" .. m.nick .. "> " .. m.text })
    elseif m[1] == "say" then
      gs.cast(room, { "say", pid = process.self(), text = m.text })
    elseif m[1] == "leave" then
      gs.call(room, { "leave" })
      return
    elseif m[1] == "crash" then
      error("member " .. nick .. " tripped over a cable")
    end
  end
end

-- ---------------------------------------------------------------- script

local main = process.self()
local room = assert(gs.start(Room, "lua and otp", { name = "lobby" }))

-- waits for `n` heard lines and prints them sorted (delivery order across
-- members is not fixed, the order each member hears things is)
local function hear(n)
  local lines = {}
  for _ = 1, n do
    local m = process.receive(function(x) return x[1] == "heard" end, 5000)
    assert(m, "a member did not hear what it should have")
    lines[#lines + 1] = ("  %s hears: %s"):format(m.nick, m.line)
  end
  table.sort(lines)
  for _, l in ipairs(lines) do print(l) end
end

local pids = {}
for i, nick in ipairs({ "ada", "bob", "cy" }) do
  pids[nick] = process.spawn(member, room, nick, main)
  local r = process.receive(function(x) return x[1] == "ready" and x.nick == nick end, 5000)
  assert(r, nick .. " did not join")
  print(("%s joined the room (topic %q)"):format(nick, r.topic))
  hear(i - 1) -- everyone already there hears about the newcomer
end
print("members: " .. table.concat(gs.call("lobby", { "members" }), ", "))

process.send(pids.ada, { "say", text = "hello all" })
hear(2)

-- bob leaves politely: the room demonitors him
process.send(pids.bob, { "leave" })
hear(2)
print("members: " .. table.concat(gs.call("lobby", { "members" }), ", "))

-- cy crashes: no leave call, the room's monitor cleans up
print("cy crashes")
process.send(pids.cy, { "crash" })
hear(1)
print("members: " .. table.concat(gs.call("lobby", { "members" }), ", "))

-- ada is killed from outside: same clean-up
process.exit(pids.ada, "kill")
for _ = 1, 100 do
  if #gs.call("lobby", { "members" }) == 0 then break end
  process.sleep(10)
end
print("after ada was killed, members: " .. #gs.call("lobby", { "members" }))
gs.stop(room)
print("done")
