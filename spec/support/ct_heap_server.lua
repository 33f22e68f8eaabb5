-- A callback module for spec/support/ct_heap.lua: handle_call("grow", kind)
-- grows its state by strings or tables until max_heap ends it.
local M = {}
function M.init() return "ok", {} end
function M.handle_call(req, _, st)
  if req == "strings" then
    local s = "x"
    while true do s = s .. s end
  elseif req == "tables" then
    local t = {}
    for i = 1, math.huge do t[i] = i end
  end
  return "reply", req, st
end
return M
