--- bench/bench_server.lua — the gen_server callback module of the benchmark
-- (the Erlang side uses the same callbacks, in bench/bench.erl).
-- Started by name ("bench_server"), so each server `require`s it in its own state.
local S = {}

function S.init(arg)
  return "ok", arg
end

function S.handle_call(request, _from, state)
  if request == "ping" then return "reply", "pong", state end
  return "reply", state, state -- "get"
end

function S.handle_cast(msg, state)
  return "noreply", state + msg[2] -- { "inc", n, meta }
end

function S.handle_info(_msg, state)
  return "noreply", state
end

return S
