-- Echo server: replies to every call with the request itself and counts
-- the calls; "count" returns how many calls it answered before.
local Echo = {}

function Echo.init() return "ok", { calls = 0 } end

function Echo.handle_call(request, _from, state)
  if request == "count" then return "reply", state.calls, state end
  state.calls = state.calls + 1
  return "reply", request, state
end

return Echo
