--[[
examples/todo.lua — the to-do system of Saša Jurić's "Elixir in Action",
in Lua: one server per to-do list, started on demand under a
simple_one_for_one supervisor.

What it shows:
  * a supervision tree:
        todo.system (one_for_one)
        ├── todo.server_sup (simple_one_for_one: one todo.server per list)
        └── todo.cache      (name -> list server, starting it on demand)
  * a simple_one_for_one supervisor: its child spec is a template, and
    supervisor.start_child(sup, extra) starts one more child with the
    template's arg plus `extra` (here, the list's name);
  * servers registered under a name made from data ("todo:bob"), so a
    client finds a list's server with process.whereis, and the cache
    starts one only when there is none;
  * `temporary` children: a list server that crashes is not restarted by
    its supervisor; the next request for that list starts a new one on
    demand (as in the book);
  * plain data in a server's state: entries keyed by date.

Run it from the repository root (after `make`):
  eval "$(make -s env)"; lua5.4 examples/todo.lua
]]

local gs = require "genserver"
local process = require "genserver.process"
local supervisor = require "genserver.supervisor"

-- ----------------------------------------------------------- todo.server

-- One to-do list: { next_id, entries = { [id] = { date =, title = } } }.
local TodoServer = { name = "todo.server" }

function TodoServer.init(arg)
  -- arg = the template's arg ({}) with the start_child extra appended: { list_name }
  return "ok", { name = arg[1], next_id = 1, entries = {} }
end

function TodoServer.handle_cast(msg, st)
  if msg[1] == "add_entry" then
    local e = msg[2]
    st.entries[st.next_id] = { id = st.next_id, date = e.date, title = e.title }
    st.next_id = st.next_id + 1
  end
  return "noreply", st
end

function TodoServer.handle_call(req, _from, st)
  if req[1] == "entries" then
    local out = {}
    for _, e in pairs(st.entries) do
      if e.date == req[2] then out[#out + 1] = e end
    end
    table.sort(out, function(a, b) return a.id < b.id end)
    return "reply", out, st
  elseif req[1] == "crash" then
    error("list " .. st.name .. " hit a bug")
  end
  return "reply", nil, st
end

-- ------------------------------------------------------------ todo.cache

-- Finds (or starts) the server of a list. It runs as one server, so two
-- clients asking for the same new list at once get the same server.
local TodoCache = { name = "todo.cache" }

function TodoCache.init()
  return "ok", { started = 0 }
end

function TodoCache.handle_call(req, _from, st)
  if req[1] == "server_process" then
    local name = "todo:" .. req[2]
    local pid = process.whereis(name)
    if pid == nil then
      local reason
      pid, reason = supervisor.start_child("todo.server_sup", { req[2] })
      assert(pid, reason)
      process.register(name, pid)
      st.started = st.started + 1
    end
    return "reply", pid, st
  elseif req[1] == "started" then
    return "reply", st.started, st
  end
  return "reply", nil, st
end

-- ------------------------------------------------------------ client API

local Todo = {}

function Todo.start()
  return supervisor.start({
    strategy = "one_for_one",
    children = {
      { id = "server_sup", type = "supervisor",
        start = { "genserver.supervisor", {
          strategy = "simple_one_for_one",
          children = { { start = { TodoServer, {} }, restart = "temporary" } },
        }, { name = "todo.server_sup" } } },
      { id = "cache", start = { TodoCache, nil, { name = "todo.cache" } } },
    },
  }, { name = "todo.system" })
end

function Todo.server_process(list)
  return gs.call("todo.cache", { "server_process", list })
end

function Todo.add_entry(list, entry)
  gs.cast(Todo.server_process(list), { "add_entry", entry })
end

function Todo.entries(list, date)
  return gs.call(Todo.server_process(list), { "entries", date })
end

-- ---------------------------------------------------------------- script

local sys = assert(Todo.start())
print("todo system started")

local bob = Todo.server_process("bob")
print("bob's list server: " .. tostring(bob == process.whereis("todo:bob")))
print("asking again gives the same server: " .. tostring(Todo.server_process("bob") == bob))
print("alice gets her own: " .. tostring(Todo.server_process("alice") ~= bob))

Todo.add_entry("bob", { date = "2026-12-19", title = "Dentist" })
Todo.add_entry("bob", { date = "2026-12-20", title = "Shopping" })
Todo.add_entry("bob", { date = "2026-12-19", title = "Movies" })
Todo.add_entry("alice", { date = "2026-12-19", title = "Climbing" })

local function show(list, date)
  local titles = {}
  for _, e in ipairs(Todo.entries(list, date)) do titles[#titles + 1] = e.title end
  print(("%s on %s: %s"):format(list, date, #titles > 0 and table.concat(titles, ", ") or "-"))
end
show("bob", "2026-12-19")
show("bob", "2026-12-20")
show("alice", "2026-12-19")

local counts = supervisor.count_children("todo.server_sup")
print(("list servers running: %d"):format(counts.active))

-- A crash ends bob's server (temporary: not restarted); the next request
-- starts a fresh, empty one on demand.
print("bob's server crashes (a crash report follows on stderr)")
local ok, err = pcall(gs.call, bob, { "crash" })
print("the caller gets a genserver error: " .. tostring(not ok and gs.is_error(err)))
for _ = 1, 200 do -- bounded wait for the name to be released
  if process.whereis("todo:bob") == nil then break end
  process.sleep(5)
end
show("bob", "2026-12-19")
print("a new server for bob: " .. tostring(Todo.server_process("bob") ~= bob))
print(("servers started on demand: %d"):format(gs.call("todo.cache", { "started" })))

gs.stop(sys)
print("done")
