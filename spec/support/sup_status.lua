-- spec/support/sup_status.lua: a server with a secret in its state that
-- format_status hides (for crash report specs). Calls: "crash", "get".
-- Casts: "crash". With arg.unsendable the state holds a userdata too.
local S = {}

function S.init(arg)
  arg = arg or {}
  local st = { secret = "hunter2", visible = "shown", n = 0 }
  if arg.unsendable then st.handle = io.stderr end
  return "ok", st
end

function S.handle_call(req, _from, st)
  if req == "crash" then error("status_crash_marker") end
  return "reply", st.n, st
end

function S.handle_cast(msg, st)
  if msg == "crash" then error({ table_error = "cast_marker" }) end
  return "noreply", st
end

function S.format_status(status)
  if type(status.state) == "table" and status.state.secret then
    local copy = {}
    for k, v in pairs(status.state) do copy[k] = v end
    copy.secret = "<redacted>"
    status.state = copy
  end
  return status
end

return S
