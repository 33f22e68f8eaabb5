--[[
examples/counter.lua — a counter server and several concurrent clients.

What it shows:
  * genserver.start with a callback table, init returning an action
    ({ continue = ... }) so that handle_continue runs before the first
    message;
  * cast (add) and call (get) from many client processes at once: the
    server handles one message at a time, so no increment is lost;
  * a timeout action: handle_cast/handle_call return a number of ms, and
    when no message comes within that time handle_info("timeout") runs —
    here it tells the main script that the counter has gone idle;
  * genserver.stop(server, reason) running terminate(reason, state).

Run it from the repository root (after `make`):
  eval "$(make -s env)"; lua5.4 examples/counter.lua
or simply `make demo`.
]]

local gs = require "genserver"
local process = require "genserver.process"

local IDLE_MS = 200 -- the server reports when it has been idle this long

-- ----------------------------------------------------------------- server

local Counter = { name = "counter" }

function Counter.init(arg)
  io.write(("  [counter] init: starting at %d\n"):format(arg.start))
  local state = { count = arg.start, casts = 0, calls = 0, watcher = arg.watcher }
  return "ok", state, { continue = "warm up" }
end

function Counter.handle_continue(what, state)
  io.write(("  [counter] handle_continue(%q): runs before any message\n"):format(what))
  return "noreply", state
end

function Counter.handle_cast(msg, state)
  if msg[1] == "add" then
    state.count = state.count + msg[2]
    state.casts = state.casts + 1
  end
  return "noreply", state, IDLE_MS
end

function Counter.handle_call(request, from, state)
  state.calls = state.calls + 1
  if request == "get" then return "reply", state.count, state, IDLE_MS end
  return "reply", nil, state, IDLE_MS
end

function Counter.handle_info(msg, state)
  if msg == "timeout" then
    process.send(state.watcher, { "idle", state.count })
  end
  return "noreply", state
end

function Counter.terminate(reason, state)
  io.write(("  [counter] terminate(%q): count %d after %d casts and %d calls\n")
    :format(tostring(reason), state.count, state.casts, state.calls))
  io.flush()
end

-- ------------------------------------------------------------------- demo

local CLIENTS, ADDS = 8, 500

io.write("starting the counter\n")
local me = process.self()
local counter = assert(gs.start(Counter, { start = 0, watcher = me }, { name = "counter" }))
io.write(("  started %s, registered as \"counter\"\n"):format(tostring(counter)))

io.write(("\n%d clients each cast { \"add\", 1 } %d times, concurrently\n"):format(CLIENTS, ADDS))
for i = 1, CLIENTS do
  process.spawn(function()
    for _ = 1, ADDS do gs.cast("counter", { "add", 1 }) end
    -- this client's casts were sent before its call, so they are counted
    local seen = gs.call("counter", "get")
    process.send(me, { "client done", i, seen })
  end)
end
for _ = 1, CLIENTS do
  local m = process.receive(function(x)
    return type(x) == "table" and x[1] == "client done"
  end, 5000)
  assert(m, "a client did not finish")
  io.write(("  client %d done (it saw the count at %d)\n"):format(m[2], m[3]))
end

local final = gs.call("counter", "get")
local expected = CLIENTS * ADDS
io.write(("\nfinal count: %d (expected %d) %s\n"):format(final, expected,
  final == expected and "OK" or "WRONG"))

io.write(("\nwaiting for the server to be idle for %d ms\n"):format(IDLE_MS))
local idle = process.receive(function(x) return type(x) == "table" and x[1] == "idle" end, 5000)
io.write(("  handle_info(\"timeout\") ran: idle at count %s\n"):format(tostring(idle and idle[2])))

io.write("\nstopping\n")
gs.stop("counter", "shutdown")
io.write("done\n")

if final ~= expected or not idle then os.exit(1) end
