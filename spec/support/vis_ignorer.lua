-- spec/support/vis_ignorer.lua: a plain process body that traps exits and
-- ignores every message, the runtime's shutdown included (visibility_spec:
-- what ignores the shutdown is killed, and the program still ends).
return function()
  local process = require "genserver.process"
  process.trap_exit(true)
  while true do process.receive() end
end
