-- A counter for spec/limits_spec.lua that can be kept busy (call "block"
-- sleeps 300 ms), so that its mailbox fills up meanwhile.
local process = require "genserver.process"

local M = {}

function M.init() return "ok", 0 end

function M.handle_call(req, _, n)
  if req == "block" then
    process.sleep(300)
  end
  return "reply", n, n
end

function M.handle_cast(_, n) return "noreply", n + 1 end

function M.handle_info(_, n) return "noreply", n end

return M
