-- spec/support/sup_quick.lua: a process body that exits at once with the
-- given reason (for link/monitor races).
return function(reason)
  require("genserver.process").exit(reason)
end
