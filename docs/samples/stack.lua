-- stack.lua: a callback module in its own file. A server started with
-- genserver.start("stack", ...) requires it in its own state.
local genserver = require "genserver"

local Stack = {}

-- The client API: plain functions that hide the messages.
function Stack.start(items, opts)
  return genserver.start("stack", items, opts)
end

function Stack.push(server, item) return genserver.cast(server, { "push", item }) end
function Stack.pop(server) return genserver.call(server, "pop") end
function Stack.size(server) return genserver.call(server, "size") end

-- The callbacks: they run in the server.
function Stack.init(items)
  if type(items) ~= "table" then return "stop", "items must be a list" end
  return "ok", items
end

function Stack.handle_call(request, _from, items)
  if request == "pop" then
    return "reply", table.remove(items), items
  elseif request == "size" then
    return "reply", #items, items
  end
  return "reply", nil, items
end

function Stack.handle_cast(msg, items)
  if msg[1] == "push" then items[#items + 1] = msg[2] end
  return "noreply", items
end

return Stack
