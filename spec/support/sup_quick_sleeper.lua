-- spec/support/sup_quick_sleeper.lua: a process body that waits (for
-- nothing) up to 60 s; specs kill it when done with it.
return function()
  local process = require "genserver.process"
  process.receive(function() return false end, 60000)
end
