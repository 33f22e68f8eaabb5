-- spec/support/sup_log_handler.lua: a genserver.logger handler (loaded by
-- name in the logger's state) that passes every report to the server
-- registered as "sup_log_sink" (spec/support/sup_sink.lua), if any.
local gs = require "genserver"

local H = {}

function H.handle_report(r)
  gs.cast("sup_log_sink", { "report", r })
end

return H
