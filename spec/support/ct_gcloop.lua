-- Child script of spec/containment_spec.lua (run under `timeout`): a
-- process loops forever in a finalizer (Lua runs finalizers with hooks
-- off, so nothing can stop it in its thread) calling into the library,
-- then the program ends.
-- $CT_END: "exit" ends right away; "kill" kills it first and prints the
-- DOWN, whether its name was released, whether another process still
-- runs, and runtime.stats().abandoned_states; "close" does the same, but
-- the process returns and its finalizer loops when its state is closed;
-- "return" is "kill", but the finalizer returns after 2 s of CPU time and a
-- plain loop follows: prints whether the thread count is back to before.
local process = require "genserver.process"
local runtime = require "genserver.runtime"

local mode = os.getenv("CT_END") or "exit"
local self = process.self()
local pid = process.spawn(function(parent, mode)
  local process = require "genserver.process"
  process.register("ct_gcloop")
  -- (it calls the library all the time: process.self is its code)
  setmetatable({}, { __gc = function()
    local t0 = os.clock()
    while mode ~= "return" or os.clock() - t0 < 2 do process.self() end
  end })
  process.send(parent, "in")
  if mode == "close" then
    process.receive(function(m) return m == "go" end, 10000)
    return -- the finalizer runs when the state is closed
  end
  collectgarbage()
  while true do end -- "return": after the finalizer, a loop in plain Lua
end, self, mode)

-- threads of this program now
local function threads()
  local f = assert(io.open("/proc/self/status"))
  local n = tonumber(f:read("a"):match("\nThreads:%s*(%d+)"))
  f:close()
  return n
end
local before = threads()
local ref = process.monitor(pid)
assert(process.receive(function(m) return m == "in" end, 10000), "the looper did not start")
if mode == "kill" or mode == "close" or mode == "return" then
  if mode == "close" then process.send(pid, "go") else process.exit(pid, "kill") end
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
  if mode == "return" then
    -- the abandoned thread got out of the finalizer, stopped the loop
    -- after it, gave the slot back and left: as many threads as before
    -- (its replacement counts for it); bounded wait, long enough for a
    -- loaded machine, where the finalizer's 2 s of CPU take far longer
    for _ = 1, 600 do
      if threads() == before then break end
      process.sleep(50)
    end
    print("threads " .. (threads() == before and "back" or "more"))
  end
end
print("end")
