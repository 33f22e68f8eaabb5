-- Child script of spec/containment_spec.lua (run under `timeout`): a process
-- with max_heap grows by $CT_GROW ("strings" or "tables"), inside pcall
-- calls that catch everything over and over when $CT_CATCH is 1. Prints
-- ($CT_SERVER=1: in a gen_server callback instead.) "DOWN max_heap=<bytes>" (or what else the reason was), then "other ran"
-- when a process started before it still answers.
local core = require "genserver.core"
local process = require "genserver.process"

local grow = assert(os.getenv("CT_GROW"), "CT_GROW")
local catch = os.getenv("CT_CATCH") == "1"
local cap = 1024 * 1024

local other = process.spawn(function(parent)
  local process = require "genserver.process"
  local m = process.receive(20000)
  if m == "ping" then process.send(parent, "pong") end
end, process.self())

local function body(grow, catch)
  local function by_strings()
    local s = "x"
    while true do s = s .. s end
  end
  local function by_tables()
    local t = {}
    for i = 1, math.huge do t[i] = i end
  end
  local f = grow == "strings" and by_strings or by_tables
  if catch then
    while true do pcall(f) end -- "not enough memory" is caught, forever
  end
  f()
end

local ref
if os.getenv("CT_SERVER") == "1" then -- the growth in a gen_server callback
  local gs = require "genserver"
  local pid
  pid, ref = assert(gs.start_monitor("ct_heap_server", nil, { max_heap = cap }))
  process.spawn(function(pid, grow)
    pcall(require("genserver").call, pid, grow, 20000)
  end, pid, grow)
else
  _, ref = core.spawn(body, { monitor = true, max_heap = cap }, grow, catch)
end
local down = process.receive(function(m)
  return type(m) == "table" and m[1] == "DOWN" and m.ref == ref
end, 15000)
local reason = down and down.reason
if type(reason) == "table" and reason.max_heap then
  reason = "max_heap=" .. tostring(reason.max_heap)
elseif type(reason) == "table" then
  reason = tostring(reason.error)
end
print("DOWN " .. tostring(reason) .. " cap=" .. cap)
process.send(other, "ping")
if process.receive(function(m) return m == "pong" end, 10000) then print("other ran") end
