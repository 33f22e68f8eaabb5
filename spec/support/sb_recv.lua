-- spec/support/sb_recv.lua: a process body for spec/sandbox_spec.lua
-- (spawned by name with sandbox = true): registers as `name`,
-- says so to `to`, then tells `to` what receiving its next message gave.
return function(to, name)
  local process = require "genserver.process"
  process.register(name, process.self())
  process.send(to, { "sb_ready", process.self() })
  local ok, m = pcall(process.receive, 5000)
  process.send(to, { "sb_got", ok = ok, err = not ok and tostring(m) or nil })
end
