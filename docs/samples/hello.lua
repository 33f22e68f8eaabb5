local genserver = require "genserver"

local Counter = {}

function Counter.init(start)                      -- runs in the server's own state
  return "ok", { count = start or 0 }
end

function Counter.handle_call(request, from, state)
  if request == "get" then return "reply", state.count, state end
  return "reply", nil, state
end

function Counter.handle_cast(msg, state)
  if msg[1] == "add" then state.count = state.count + msg[2] end
  return "noreply", state
end

local pid = assert(genserver.start(Counter, 10))  -- the table is copied into the server
genserver.cast(pid, { "add", 5 })
print(genserver.call(pid, "get"))                 --> 15
genserver.stop(pid)
