local process = require "genserver.process"

-- spawn a process; it gets its own Lua state, the function is copied into it
local echo = process.spawn(function()
  local process = require "genserver.process"
  while true do
    local msg = process.receive()                 -- waits for the next message
    if msg == "stop" then return end
    process.send(msg.from, { "echo", msg.text })
  end
end)

process.send(echo, { from = process.self(), text = "hello" })
local reply = process.receive(1000)               -- nil after 1000 ms without a message
print(reply[1], reply[2])                         --> echo	hello

-- selective receive: take the first message that matches, leave the others queued
process.send(process.self(), "first")
process.send(process.self(), { "wanted" })
print(process.receive(function(m) return type(m) == "table" end, 0)[1])  --> wanted
print(process.receive(0))                         --> first

-- monitors: a DOWN message when the process ends
local ref = process.monitor(echo)
process.send(echo, "stop")
local down = process.receive(function(m) return m[1] == "DOWN" and m.ref == ref end, 1000)
print(down.reason)                                --> normal

-- names and timers
process.register("me", process.self())
process.send_after(20, "me", "tick")              -- delivered in 20 ms
print(process.receive(1000))                      --> tick

-- links: trap exits to get an EXIT message instead of dying with the linked process
process.trap_exit(true)
local doomed = process.spawn_link(function() error("oops") end)
local exit = process.receive(function(m) return m[1] == "EXIT" and m.pid == doomed end, 1000)
print(exit.reason.error:match("oops"))            --> oops
