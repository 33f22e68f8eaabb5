-- spec/support/vis_quiet_handler.lua: a genserver.logger handler that
-- drops every report. Specs whose processes crash by the thousand on
-- purpose (spec/stress_spec.lua's races) use it to keep the test output
-- readable: a plain process that raises is reported (DESIGN 1.7).
local M = {}

function M.handle_report(_report) end

return M
