-- Child script of spec/containment_spec.lua (run under `timeout`): a
-- process loops forever in a finalizer (Lua runs finalizers with hooks
-- off, so nothing can stop it in its thread) calling into the library,
-- then the program ends.
-- $CT_END: "exit" ends right away; "kill" kills it first and prints the
-- DOWN, whether its name was released, whether another process still
-- runs, and runtime.stats().abandoned_states; "close" does the same, but
-- the process returns and its finalizer loops when its state is closed.
local process = require "genserver.process"
local runtime = require "genserver.runtime"

local mode = os.getenv("CT_END") or "exit"
local self = process.self()
local pid = process.spawn(function(parent, mode)
  local process = require "genserver.process"
  process.register("ct_gcloop")
  -- (it calls the library all the time: process.self is its code)
  setmetatable({}, { __gc = function() while true do process.self() end end })
  process.send(parent, "in")
  if mode == "close" then
    process.receive(function(m) return m == "go" end, 10000)
    return -- the finalizer runs when the state is closed
  end
  collectgarbage()
end, self, mode)
local ref = process.monitor(pid)
assert(process.receive(function(m) return m == "in" end, 10000), "the looper did not start")
if mode == "kill" or mode == "close" then
  if mode == "kill" then process.exit(pid, "kill") else process.send(pid, "go") end
  local down = process.receive(function(m)
    return type(m) == "table" and m[1] == "DOWN" and m.ref == ref
  end, 15000)
  print("DOWN " .. tostring(down and down.reason))
  print("name " .. tostring(process.whereis("ct_gcloop")))
  local other = process.spawn(function(parent)
    require("genserver.process").send(parent, "other")
  end, self)
  if process.receive(function(m) return m == "other" end, 10000) then print("other ran") end
  -- the state is given up on a while after its end: wait for it (bounded)
  for _ = 1, 200 do
    if (runtime.stats().abandoned_states or 0) > 0 then break end
    process.sleep(50)
  end
  print("abandoned " .. tostring(runtime.stats().abandoned_states))
end
print("end")
