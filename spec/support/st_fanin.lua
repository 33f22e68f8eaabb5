-- spec/support/st_fanin.lua: many senders, one receiver
-- (spec/stress_spec.lua).
--   sink(main, nsenders, per)   receives { "seq", sender_id, k } messages
--     and checks that each sender's k come as 1, 2, 3, ... (FIFO per
--     sender); when all nsenders * per arrived it sends main
--     { "fanin_done", total, problem_or_nil }.
--   sender(sink, id, per)       sends its `per` numbered messages.
local process = require "genserver.process"

local M = {}

function M.sink(main, nsenders, per)
  local last, total, problem = {}, 0, nil
  for id = 1, nsenders do last[id] = 0 end
  while total < nsenders * per do
    local m = process.receive(60000)
    if m == nil then problem = ("stalled after %d messages"):format(total) break end
    if type(m) ~= "table" or m[1] ~= "seq" or last[m[2]] == nil then
      problem = "unexpected message " .. require("genserver").describe(m)
      break
    end
    local id, k = m[2], m[3]
    if k ~= last[id] + 1 then
      problem = ("sender %d: message %d after %d (FIFO per sender broken)"):format(id, k, last[id])
      break
    end
    last[id] = k
    total = total + 1
  end
  process.send(main, { "fanin_done", total, problem })
end

function M.sender(sink, id, per)
  for k = 1, per do process.send(sink, { "seq", id, k }) end
end

return M
