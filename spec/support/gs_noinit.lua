-- No init, no handle_cast, no handle_info, no terminate: only handle_call,
-- which replies with the whole state (so the state = the start argument).
return {
  handle_call = function(request, _from, state)
    if request == "state" then return "reply", state, state end
    return "reply", request, state
  end,
}
