-- spec/support/sup_log_broken.lua: a logger handler that fails.
return { handle_report = function() error("handler_is_broken") end }
