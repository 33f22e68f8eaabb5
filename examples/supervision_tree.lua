--[[
examples/supervision_tree.lua — a small supervised application.

What it shows:
  * genserver.supervisor.start_link with a `rest_for_one` strategy and two
    children: a named cache server ("cache") and a worker that depends on
    it (it writes a heartbeat into the cache every 100 ms). rest_for_one
    means: if the cache dies, the worker (started after it) is restarted
    too; if the worker dies, only the worker is;
  * which_children / count_children;
  * a crash provoked on purpose (a "poisoned" key makes the cache raise a
    Lua error in handle_call): the caller gets a genserver error, and the
    logger (genserver.logger) prints a CRASH REPORT (who crashed, the last
    message and its caller, the state, the error and its traceback) and a
    SUPERVISOR REPORT (child_terminated) on stderr;
  * the supervisor restarts the cache (with a fresh state) under the same
    name and the worker after it, and the restarted cache answers again;
  * stopping the supervisor stops its children in reverse start order.

Run it from the repository root (after `make`):
  eval "$(make -s env)"; lua5.4 examples/supervision_tree.lua
or simply `make demo`.
]]

local gs = require "genserver"
local process = require "genserver.process"
local supervisor = require "genserver.supervisor"
local logger = require "genserver.logger"

-- ------------------------------------------------------------ the cache

local Cache = { name = "cache" }

function Cache.init(opts)
  io.write(("  [cache] init: room for %d items\n"):format(opts.size))
  return "ok", { size = opts.size, items = {} }
end

function Cache.handle_call(req, _from, st)
  local op, key = req[1], req[2]
  if op == "get" then
    if key == "poison" then error("cache corrupted by key '" .. key .. "'") end
    return "reply", st.items[key], st
  end
  if op == "put" then
    st.items[key] = req[3]
    return "reply", true, st
  end
  return "reply", nil, st
end

function Cache.handle_cast(msg, st)
  if msg[1] == "put" then st.items[msg[2]] = msg[3] end
  return "noreply", st
end

local function why(reason)
  if type(reason) == "table" and reason.error then return "crashed: " .. tostring(reason.error) end
  return gs.describe(reason)
end

function Cache.terminate(reason)
  io.write(("  [cache] terminate (%s)\n"):format(why(reason)))
end

-- ----------------------------------------------------------- the worker

local Worker = { name = "worker" }

function Worker.init()
  io.write("  [worker] init\n")
  process.send_after(100, process.self(), "tick")
  return "ok", { beats = 0 }
end

function Worker.handle_info(msg, st)
  if msg == "tick" then
    st.beats = st.beats + 1
    gs.cast("cache", { "put", "heartbeat", st.beats }) -- never fails, even mid-restart
    process.send_after(100, process.self(), "tick")
  end
  return "noreply", st
end

function Worker.terminate(reason, st)
  io.write(("  [worker] terminate (%s) after %d beats\n"):format(gs.describe(reason), st.beats))
end

-- --------------------------------------------------------------- main

local function show_children(sup)
  for _, c in ipairs(supervisor.which_children(sup)) do
    io.write(("    %-7s %-10s %s\n"):format(c.id, tostring(c.pid), c.type))
  end
end

io.stdout:setvbuf("line") -- reports go to stderr: keep the two in order

-- Start the logger first, so that every report goes straight to it.
assert(logger.start())

local sup = assert(supervisor.start_link({
  strategy = "rest_for_one", intensity = 3, period = 5,
  children = {
    -- trap_exit: so that terminate runs when the supervisor stops them
    { id = "cache", start = { Cache, { size = 100 }, { name = "cache", trap_exit = true } } },
    { id = "worker", start = { Worker, nil, { trap_exit = true } }, shutdown = 1000 },
  },
}, { name = "app_sup" }))

print("supervisor started; children:")
show_children(sup)

gs.call("cache", { "put", "greeting", "hello" })
process.sleep(350)
print(("cache: greeting = %s, heartbeat = %s"):format(
  gs.call("cache", { "get", "greeting" }), gs.call("cache", { "get", "heartbeat" })))

print("\nprovoking a crash: get 'poison'")
local old = process.whereis("cache")
local ok, err = pcall(gs.call, "cache", { "get", "poison" })
print(("the call failed (%s): %s"):format(tostring(not ok),
  tostring(err.reason.error)))

-- wait (bounded) until the supervisor has restarted the cache
local new
for _ = 1, 500 do
  new = process.whereis("cache")
  if new and new ~= old then break end
  process.sleep(10)
end
logger.sync() -- let the logger print the reports before we go on
process.sleep(50)

print(("\nthe cache was restarted: %s -> %s; children:"):format(tostring(old), tostring(new)))
show_children(sup)
print(("the restarted cache answers: greeting = %s (a fresh state)"):format(
  tostring(gs.call("cache", { "get", "greeting" }))))
gs.call("cache", { "put", "greeting", "hello again" })
process.sleep(250)
print(("cache: greeting = %s, heartbeat = %s (the restarted worker counts from 1)"):format(
  gs.call("cache", { "get", "greeting" }), tostring(gs.call("cache", { "get", "heartbeat" }))))
local counts = supervisor.count_children(sup)
print(("count_children: specs %d, active %d, workers %d, supervisors %d"):format(
  counts.specs, counts.active, counts.workers, counts.supervisors))

print("\nstopping the supervisor (children stop in reverse order)")
gs.stop(sup)
print("done")
