-- spec/support/pr_echo.lua: a helper process for the process and codec specs.
--
-- Messages (tables with `op`):
--   { op = "echo",  from = pid, tag = t, value = v }  -> { tag = t, value = v }
--   { op = "apply", from = pid, tag = t, fn = f, args = {...}, n = n }
--                                   -> { tag = t, ok = bool, value = f(...) }
--   { op = "check_module", from = pid, tag = t, value = v, name = "string" }
--       -> { tag = t, own = (v == require(name)), state_tag = v.state_tag }
--   { op = "dump", from = pid, tag = t } -> { tag = t, value = { other messages } }
--   "stop" -> the process returns
-- Any other message is recorded for "dump". The loop ends by itself after
-- 30 s of silence, so a forgotten echo never keeps a test run alive.
local process = require "genserver.process"

return function()
  local recorded = {}
  while true do
    local m = process.receive(30000)
    if m == nil or m == "stop" then return end
    local op = type(m) == "table" and m.op or nil
    if op == "echo" then
      process.send(m.from, { tag = m.tag, value = m.value })
    elseif op == "apply" then
      local ok, v = pcall(m.fn, table.unpack(m.args or {}, 1, m.n or 0))
      if not ok then v = tostring(v) end
      process.send(m.from, { tag = m.tag, ok = ok, value = v })
    elseif op == "check_module" then
      local own = require(m.name)
      process.send(m.from, { tag = m.tag, own = rawequal(m.value, own),
                             state_tag = type(m.value) == "table" and m.value.state_tag or nil })
    elseif op == "dump" then
      process.send(m.from, { tag = m.tag, value = recorded })
      recorded = {}
    else
      recorded[#recorded + 1] = m
    end
  end
end
