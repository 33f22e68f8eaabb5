-- spec/support/sup_log_slow.lua: a logger handler that takes its time
-- (50 ms a report), then prints the report as the default handler does.
local process = require "genserver.process"
local logger = require "genserver.logger"

return {
  handle_report = function(r)
    process.sleep(50)
    logger.print(r)
  end,
}
