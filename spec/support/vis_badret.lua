-- spec/support/vis_badret.lua: callbacks returning what the test asks
-- for (visibility_spec: readable reasons).
local M = {}

function M.init(arg)
  if type(arg) == "table" and arg.tell then
    -- says who it is, then fails (a failed start_monitor)
    local process = require "genserver.process"
    process.send(arg.tell, { "vis_pid", process.self() })
    return "stop", "vis_no_start"
  end
  if arg == "bad" then return "okay" end
  if arg == "nil_error" then error(nil) end
  return "ok", arg
end

function M.handle_cast(msg, st)
  if msg == "bad" then return "noreply" end
  return "noreply", st
end

function M.handle_call(req, _from, st)
  if req == "crash" then error("vis_crash_marker") end
  return "reply", req, st
end

return M
