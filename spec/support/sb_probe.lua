-- spec/support/sb_probe.lua: a callback module for spec/sandbox_spec.lua.
-- Started with `sandbox = true`, it tries to get out of its sandbox in the
-- way a request names and answers what happened (never raising, so one
-- probe cannot hide the next). The same module, started from inside, is
-- also the child whose state is looked at ("state").
local gs = require "genserver"
local process = require "genserver.process"
local core = require "genserver.core"

local M = {}

-- what this state can reach: the answer of an escaped child is "table"
local function state()
  return {
    io = type(io), os = type(os), debug = type(debug),
    loadlib = type(package.loadlib), loadfile = type(loadfile),
  }
end

local function try(f, ...)
  local r = table.pack(pcall(f, ...))
  if not r[1] then return { ok = false, err = tostring(r[2]) } end
  return { ok = true, n = r.n - 1, table.unpack(r, 2, r.n) }
end

-- ask a server started from here what it can reach, then stop it
local function inspect(pid)
  local ok, st = pcall(gs.call, pid, "state", 5000)
  pcall(gs.stop, pid)
  if not ok then return { err = tostring(st) } end
  return st
end

local probes = {}

function probes.state() return state() end

-- a function body: refused at the sender (no function leaves a sandbox)
function probes.spawn_fn(marker)
  return try(process.spawn, function()
    local h = io.open(marker, "w")
    h:write("escaped")
    h:close()
  end)
end

-- a module body by name: runs, but sandboxed (sb_child reports its state)
function probes.spawn_name(_, me)
  local r = try(process.spawn, "sb_child", me)
  return r
end

-- spawn options cannot turn the sandbox off
function probes.spawn_unsandboxed(_, me)
  return try(core.spawn, "sb_child", { sandbox = false }, me)
end

function probes.start_table(marker)
  return try(gs.start, {
    init = function()
      local h = io.open(marker, "w")
      h:write("escaped")
      h:close()
      return "ok", 0
    end,
  })
end

function probes.start_name()
  local pid, reason = gs.start("sb_probe", nil, { sandbox = false })
  if not pid then return { err = gs.describe(reason) } end
  return inspect(pid)
end

function probes.start_link_name()
  local pid, reason = gs.start_link("sb_probe")
  if not pid then return { err = gs.describe(reason) } end
  process.unlink(pid)
  return inspect(pid)
end

function probes.supervisor()
  local supervisor = require "genserver.supervisor"
  local sup, reason = supervisor.start({
    children = { { id = "c", start = { "sb_probe", nil, { name = "sb_sup_child" } } } },
  })
  if not sup then return { err = gs.describe(reason) } end
  local ok, st = pcall(gs.call, "sb_sup_child", "state", 5000)
  gs.stop(sup)
  return ok and st or { err = tostring(st) }
end

function probes.configure()
  return try(core.configure, { max_message_size = 16 })
end

function probes.configure_workers()
  return try(core.configure, { workers = 1 })
end

function probes.shutdown()
  return try(core.shutdown, 0)
end

-- exit signals and system requests (stop) reach sandboxed processes only
function probes.kill_outside(_, victim)
  return try(process.exit, victim, "kill")
end

function probes.stop_outside(_, victim)
  return try(gs.stop, victim)
end

function probes.unregister(name)
  return try(process.unregister, name)
end

function probes.kill_inside()
  local pid = assert(gs.start("sb_probe"))
  local ref = process.monitor(pid)
  local r = try(process.exit, pid, "kill")
  local down = process.receive(function(m)
    return type(m) == "table" and m[1] == "DOWN" and m.ref == ref
  end, 5000)
  r.down = down and down.reason
  return r
end

function probes.send_fn(_, to)
  return try(gs.cast, to, { cb = function() return 1 end })
end

function probes.reply_fn()
  return function() return 1 end
end

-- package.path pointed at any file: a sandbox's require keeps to its paths
function probes.path(file)
  package.path = file
  return try(require, "sb_anything")
end

function probes.path_pattern(dir)
  package.path = dir .. "/?.lua;" .. package.path
  return try(require, "sb_evil")
end

function probes.searchpath(file)
  package.searchpath = function() return file end
  return try(require, "sb_evil2")
end

function probes.searchers(file)
  -- a searcher of its own runs its own code, as any code of the sandbox
  -- does; it is the file loading that must not leave the paths
  table.insert(package.searchers, 1, function(name)
    local f = loadfile and loadfile(file)
    return f or ("\n\tno loadfile for " .. name)
  end)
  return try(require, "sb_evil3")
end

-- the paths a sandboxed child is given are the ones this state was given
function probes.child_path(dir)
  package.path = dir .. "/?.lua;" .. package.path
  local _, ref = core.spawn("sb_evil", { monitor = true })
  local down = process.receive(function(m)
    return type(m) == "table" and m[1] == "DOWN" and m.ref == ref
  end, 5000)
  return { reason = down and gs.describe(down.reason) or "no DOWN" }
end

function probes.binary()
  local chunk = string.dump(function() return "ran" end)
  local a = try(load, chunk)
  local b = try(load, chunk, "x", "b")
  local c = try(load, chunk, "x", "bt")
  return { a = a, b = b, c = c }
end

function probes.require_libs()
  return { io = try(require, "io"), os = try(require, "os"), debug = try(require, "debug"),
           string = try(require, "string") }
end

function probes.loaded_override()
  package.loaded["genserver.supervisor"] = { start = function() return "poisoned" end }
  return try(function() return require("genserver.supervisor").start() end)
end

function M.init(a) return "ok", a end

function M.handle_call(req, _from, s)
  if req == "state" then return "reply", state(), s end
  if type(req) == "table" and probes[req[1]] then
    return "reply", probes[req[1]](req[2], req[3]), s
  end
  return "reply", { err = "unknown probe" }, s
end

return M
