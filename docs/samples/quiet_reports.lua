-- quiet_reports.lua: a logger handler (genserver.logger.set_handler) that
-- drops every report. A real one would write them to a log.
return {
  handle_report = function(report) end,
}
