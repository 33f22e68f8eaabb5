--- greeter.lua - the Lua server that examples/c_host/c_host.c embeds.
--
-- A plain gen_server callback module. The one unusual thing: it uses a
-- global `host`, which is not a Lua library. The C host put it into this
-- server's lua_State with its state hook (see state_hook in c_host.c), so
-- host.now() and host.log() are C functions of the host program.

local Greeter = {}

function Greeter.init(prefix)
  host.log("greeter starting, prefix " .. tostring(prefix))
  return "ok", { prefix = prefix or "hi", calls = 0, started = host.now() }
end

--- A string request gets a string reply; { "stats" } gets a table.
function Greeter.handle_call(request, _from, state)
  if type(request) == "string" then
    state.calls = state.calls + 1
    return "reply", ("%s #%d: %s"):format(state.prefix, state.calls, request:upper()), state
  end
  if type(request) == "table" and request[1] == "stats" then
    return "reply", { calls = state.calls, uptime_ms = host.now() - state.started }, state
  end
  return "reply", nil, state
end

function Greeter.handle_cast(msg, state)
  host.log("cast: " .. tostring(msg))
  return "noreply", state
end

function Greeter.terminate(reason, state)
  host.log(("greeter stopping (%s) after %d calls"):format(tostring(reason), state.calls))
end

return Greeter
