-- spec/support/pr_body_main.lua: a spawn body given by module name; the
-- module is a table with `main`.
local process = require "genserver.process"

local M = {}

function M.main(reply_to, x)
  process.send(reply_to, { "pr_body_main", x * 2, self = process.self() })
end

return M
