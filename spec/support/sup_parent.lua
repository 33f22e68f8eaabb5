-- spec/support/sup_parent.lua: a process body (spawned by name) that
-- starts something linked to itself, tells `main`, then waits:
--   sup_parent(main, "supervisor", spec)          supervisor.start_link(spec)
--   sup_parent(main, "server", { module, arg, opts }) genserver.start_link(...)
-- It sends { "parent_started", self, pid, reason } to main, then on
-- { "exit", reason } exits with that reason; on { "trap" } starts trapping
-- exits and forwards every EXIT to main as { "parent_got", msg }.
local process = require "genserver.process"
local gs = require "genserver"

return function(main, what, arg)
  local pid, reason
  if what == "supervisor" then
    pid, reason = require("genserver.supervisor").start_link(arg)
  else
    pid, reason = gs.start_link(arg[1], arg[2], arg[3])
  end
  process.send(main, { "parent_started", process.self(), pid, reason })
  while true do
    local m = process.receive(30000)
    if m == nil then return end
    if type(m) == "table" and m[1] == "exit" then process.exit(m[2]) end
    if type(m) == "table" and m[1] == "trap" then
      process.trap_exit(true)
      process.send(main, { "trapping", process.self() })
    elseif type(m) == "table" and m[1] == "EXIT" then
      process.send(main, { "parent_got", m })
    end
  end
end
