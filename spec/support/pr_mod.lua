-- spec/support/pr_mod.lua: a user module that crosses the codec by name.
-- `state_tag` is different in every Lua state that loads the module, so a
-- receiver can tell whether it got its own copy.
local M = {}

M.state_tag = tostring({}):gsub("^table: ", "")

function M.double(x) return 2 * x end

return M
