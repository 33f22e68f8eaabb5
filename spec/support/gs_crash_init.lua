-- init raises a Lua error (line 3): the crash reason's traceback names it.
local M = {}
function M.init() error("boom in gs_crash_init") end
return M
