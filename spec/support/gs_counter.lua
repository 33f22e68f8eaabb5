-- A counter server, started by module name in spec/genserver_spec.lua.
--
-- init(arg): arg is a number (the start count) or a table
--   { start = n, main = pid, name = registered name to look up in init }.
-- Calls: "get", "saw_self", { "add", n }. Casts: { "add", n }.
-- terminate sends { "counter_terminated", reason, count } to arg.main.
local process = require "genserver.process"

local Counter = {}

function Counter.init(arg)
  if type(arg) ~= "table" then return "ok", { count = arg or 0 } end
  local state = { count = arg.start or 0, main = arg.main }
  if arg.name then
    -- the name is registered before init runs
    state.saw_self = process.whereis(arg.name) == process.self()
  end
  return "ok", state
end

function Counter.handle_call(request, _from, state)
  if request == "get" then return "reply", state.count, state end
  if request == "saw_self" then return "reply", state.saw_self, state end
  if type(request) == "table" and request[1] == "add" then
    state.count = state.count + request[2]
    return "reply", state.count, state
  end
  return "reply", nil, state
end

function Counter.handle_cast(msg, state)
  if type(msg) == "table" and msg[1] == "add" then
    state.count = state.count + msg[2]
  end
  return "noreply", state
end

function Counter.terminate(reason, state)
  if state.main then
    process.send(state.main, { "counter_terminated", reason, state.count })
  end
end

return Counter
