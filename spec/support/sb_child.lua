-- spec/support/sb_child.lua: a process body (spawned by name from
-- spec/support/sb_probe.lua) that tells `to` what its state can reach.
return function(to)
  local process = require "genserver.process"
  process.send(to, { "sb_child", io = type(io), os = type(os), debug = type(debug) })
end
