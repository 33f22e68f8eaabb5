-- spec/support/vis_trapper.lua: a gen_server that traps exits and says on
-- stdout when its terminate runs (visibility_spec: program end). Its
-- handle_info prints any message it gets, so that an EXIT from the
-- runtime reaching it would show.
local process = require "genserver.process"

local M = {}

function M.init(label)
  process.trap_exit(true)
  return "ok", label
end

function M.handle_call(req, _from, label)
  return "reply", req, label
end

function M.handle_info(msg, label)
  io.write(("%s handle_info %s\n"):format(label, require("genserver").describe(msg)))
  io.stdout:flush()
  return "noreply", label
end

function M.terminate(reason, label)
  io.write(("%s terminate %s\n"):format(label, tostring(reason)))
  io.stdout:flush()
end

return M
