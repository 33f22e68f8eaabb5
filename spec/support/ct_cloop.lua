-- Child script of spec/containment_spec.lua (run under `timeout`): a
-- process loops forever in Lua code called back from a C function (the
-- site named by $CT_SITE); the main script kills it and prints what it saw.
-- $CT_CATCH=1 wraps the loop in pcall calls, so the kill must get past them.
-- $CT_END=exit: the program just ends while it loops (prints "end").
-- Prints "other ran before" (with more than one worker, another process
-- runs meanwhile), then "DOWN <reason>", "other ran after".
local process = require "genserver.process"

local site = assert(os.getenv("CT_SITE"), "CT_SITE")
local catch = os.getenv("CT_CATCH") == "1"
local workers = tonumber(os.getenv("GENSERVER_WORKERS") or "1")

local function body(parent, site, catch)
  local process = require "genserver.process"
  local function spin()
    local n = 0
    if catch then
      while true do -- whatever is raised in there is caught, over and over
        pcall(function() while true do n = n + 1 end end)
        n = n + 1
      end
    end
    while true do n = n + 1 end
  end
  process.send(parent, "in")
  if site == "sort" then
    table.sort({ 3, 2, 1 }, function() spin() end)
  elseif site == "gsub" then
    string.gsub("abc", "%w", function() spin() end)
  elseif site == "tostring" then
    tostring(setmetatable({}, { __tostring = function() spin() end }))
  elseif site == "close" then
    -- a __close run by coroutine.close (a C call, in another Lua thread)
    local co = coroutine.create(function()
      local x <close> = setmetatable({}, { __close = function() spin() end })
      coroutine.yield()
    end)
    coroutine.resume(co)
    coroutine.close(co)
  elseif site == "xpcall" then
    xpcall(error, function() spin() end, "boom")
  elseif site == "load" then
    load(function() spin() end)
  elseif site == "require" then
    require "ct_loopmod"
  elseif site == "coroutine" then
    -- a coroutine resumed from a comparator: nested, and inside a C call
    table.sort({ 3, 2, 1 }, function()
      coroutine.wrap(spin)()
    end)
  else
    error("unknown site " .. site)
  end
end

local self = process.self()
local pid = process.spawn(body, self, site, catch)
local ref = process.monitor(pid)
assert(process.receive(function(m) return m == "in" end, 10000), "the looper did not start")
if os.getenv("CT_END") == "exit" then -- the program ends while it loops
  print("end")
  return
end

-- another process, started while the looper loops
local other = process.spawn(function(parent)
  local process = require "genserver.process"
  process.send(parent, "other")
  local m = process.receive(10000)
  if m == "again" then process.send(parent, "other again") end
end, self)
if workers > 1 then
  if process.receive(function(m) return m == "other" end, 10000) then
    print("other ran before")
  end
end

process.exit(pid, "kill")
local down = process.receive(function(m)
  return type(m) == "table" and m[1] == "DOWN" and m.ref == ref
end, 10000)
local reason = down and down.reason
if type(reason) == "table" then reason = tostring(reason.error) end
print("DOWN " .. tostring(reason))

if workers == 1 then process.receive(function(m) return m == "other" end, 10000) end
process.send(other, "again")
if process.receive(function(m) return m == "other again" end, 10000) then
  print("other ran after")
end
