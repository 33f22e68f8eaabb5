--[[
examples/kv_store.lua — a named key/value server.

What it shows:
  * a callback module written as a plain Lua table in the same file and
    passed to genserver.start as the table itself: it is copied into the
    server's own Lua state (functions, upvalues and all);
  * registering the server under a name (opts.name) and reaching it by that
    name from the main script and from other processes;
  * cast for fire-and-forget updates (put) and call for questions (get,
    delete, keys). Messages from one sender arrive in the order they were
    sent, so a get right after a put sees the new value;
  * the server's state never being shared: clients only ever see copies;
  * genserver.stop running terminate, and what a call to a server that is
    gone raises.

Run it from the repository root (after `make`):
  eval "$(make -s env)"; lua5.4 examples/kv_store.lua
or simply `make demo`.
]]

local gs = require "genserver"
local process = require "genserver.process"

-- ----------------------------------------------------------------- server
-- The callback module. These functions run inside the server process.

local KV = { name = "kv_store" }

function KV.init(initial)
  local data = {}
  for k, v in pairs(initial or {}) do data[k] = v end
  return "ok", data
end

function KV.handle_cast(msg, data)
  if msg[1] == "put" then
    data[msg[2]] = msg[3]
  end
  return "noreply", data
end

function KV.handle_call(request, from, data)
  local op, key = request[1], request[2]
  if op == "get" then
    return "reply", data[key], data
  elseif op == "delete" then
    local existed = data[key] ~= nil
    data[key] = nil
    return "reply", existed, data
  elseif op == "keys" then
    local keys = {}
    for k in pairs(data) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    return "reply", keys, data
  end
  return "reply", nil, data
end

function KV.terminate(reason, data)
  local n = 0
  for _ in pairs(data) do n = n + 1 end
  io.write(("  [kv] terminate(%s): %d keys dropped\n"):format(tostring(reason), n))
  io.flush()
end

-- ------------------------------------------------------------- client API
-- Plain functions around cast/call: what a module would export.

local NAME = "kv"
local kv = {}

function kv.start(initial) return gs.start(KV, initial, { name = NAME }) end
function kv.put(key, value) return gs.cast(NAME, { "put", key, value }) end
function kv.get(key) return gs.call(NAME, { "get", key }) end
function kv.delete(key) return gs.call(NAME, { "delete", key }) end
function kv.keys() return gs.call(NAME, { "keys" }) end
function kv.stop() return gs.stop(NAME) end

-- ------------------------------------------------------------------- demo

local function show(label, value)
  if type(value) == "table" then value = "{ " .. table.concat(value, ", ") .. " }" end
  io.write(("  %-28s %s\n"):format(label, tostring(value)))
end

io.write("starting the key/value server\n")
local pid = assert(kv.start({ language = "Lua" }))
show("started as", ("%s, registered as %q"):format(tostring(pid), NAME))
show("whereis(\"kv\")", process.whereis(NAME))

io.write("\nputs (cast) and gets (call) from the main script\n")
kv.put("answer", 42)
kv.put("pi", 3.14159)
kv.put("greeting", "hello")
show("get(\"answer\")", kv.get("answer"))
show("get(\"pi\")", kv.get("pi"))
show("get(\"missing\")", kv.get("missing"))
show("keys()", kv.keys())

io.write("\nthree other processes write at the same time\n")
local me = process.self()
for i = 1, 3 do
  process.spawn(function()
    for j = 1, 5 do kv.put(("worker%d.item%d"):format(i, j), i * 10 + j) end
    -- a call after the casts: our casts are all handled once it returns
    process.send(me, { "written", i, #kv.keys() >= 5 })
  end)
end
for _ = 1, 3 do
  local m = process.receive(function(x) return type(x) == "table" and x[1] == "written" end, 5000)
  assert(m, "a worker did not finish")
  show(("worker %d done"):format(m[2]), m[3] and "ok, its keys are in" or "keys missing!")
end
show("number of keys", #kv.keys())
show("get(\"worker2.item3\")", kv.get("worker2.item3"))

io.write("\nvalues are copied, never shared\n")
local list = { 1, 2, 3 }
kv.put("list", list)
list[4] = 4 -- changes our copy only
show("#list here", #list)
show("#get(\"list\")", #kv.get("list"))

io.write("\ndeletes\n")
show("delete(\"pi\")", kv.delete("pi"))
show("delete(\"pi\") again", kv.delete("pi"))
show("get(\"pi\")", kv.get("pi"))

io.write("\nstopping\n")
kv.stop()
show("whereis(\"kv\")", process.whereis(NAME))
local ok, err = pcall(kv.get, "answer")
show("get after stop raises", not ok and gs.is_error(err))
show("  reason", err.reason)
show("  message", tostring(err))
io.write("done\n")
