-- spec/support/vis_exiter.lua: a gen_server whose callbacks call
-- process.exit(reason) (visibility_spec: OTP's exit/1 in a callback).
-- terminate sends { "terminated", reason, state } to the pid in its state.
local process = require "genserver.process"

local M = {}

function M.init(arg)
  if arg.exit_in_init then process.exit(arg.exit_in_init) end
  return "ok", arg
end

function M.handle_call(req, _from, st)
  if req[1] == "exit" then process.exit(req[2]) end
  if req[1] == "pcall_exit" then
    local ok = pcall(process.exit, req[2]) -- caught, as Erlang's catch does
    return "reply", ok, st
  end
  return "reply", req, st
end

function M.handle_cast(msg, st)
  if msg[1] == "exit" then process.exit(msg[2]) end
  return "noreply", st
end

function M.terminate(reason, st)
  process.send(st.to, { "terminated", reason, st.tag })
end

return M
