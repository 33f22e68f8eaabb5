--- The gen_server process body: runs inside each server's own state.
--
-- `genserver.start` spawns a process whose body is this module. It loads
-- the callback module, registers the name, runs `init`, acknowledges the
-- starter, then loops: take the next message, run the matching callback,
-- check what it returned. Kept small on purpose: every server state loads it.
-- @module genserver.server

local core = require "genserver.core"

local next_msg, reply, cexit = core.next, core.reply, core.exit
local K_CALL, K_CAST, K_SYSTEM = core.K_CALL, core.K_CAST, core.K_SYSTEM
local select, type, xpcall, pcall, tostring = select, type, xpcall, pcall, tostring

--- Error handler for callbacks: the reason a crashed server exits with.
local function crash(e)
  local dbg = require "debug"
  return { error = e, traceback = dbg.traceback(type(e) == "string" and e or nil, 2) }
end

--- Marks a crash result so it is not mistaken for a callback's return.
local CRASH = {}

local function pack(ok, ...)
  if not ok then return CRASH, (...) end
  return select('#', ...), ...
end

--- The reason for a return shape the contract does not allow: every value
-- the callback returned, in order (nils included).
local function bad_return(n, ...)
  local t = { ... }
  for i = n + 1, #t do t[i] = nil end
  return { bad_return_value = t }
end

-- What the server was handling, for crash reports.
local cur_kind, cur_msg, cur_from
local module_name = "module"

--- "normal", "shutdown" and { shutdown = ... } end a server quietly.
local function quiet(reason)
  return reason == "normal" or reason == "shutdown"
      or (type(reason) == "table" and reason.shutdown ~= nil)
end

--- Prints a crash report to stderr (DESIGN §2.2: every crash is reported).
local function report(mod, reason, state)
  local gs = require "genserver"
  local describe = gs.describe
  local status = { state = state, reason = reason, message = cur_msg }
  if mod.format_status then
    local ok, st = pcall(mod.format_status, status)
    if ok and type(st) == "table" then status = st end
  end
  local me = core.self()
  local info = core.info(me) or {}
  local lines = {
    ("=CRASH REPORT==== server %s%s (module %s)"):format(tostring(me),
      info.name and (" named " .. ("%q"):format(info.name)) or "", module_name),
    "  reason: " .. describe(type(reason) == "table" and reason.error or reason),
  }
  if cur_kind then
    local what = ({ [K_CALL] = "call", [K_CAST] = "cast", [K_SYSTEM] = "system" })[cur_kind] or "info"
    local from = cur_from and (" from " .. tostring(cur_from[1])) or ""
    lines[#lines + 1] = ("  last message: %s %s%s"):format(what, describe(status.message), from)
  end
  lines[#lines + 1] = "  state: " .. describe(status.state)
  if type(reason) == "table" and type(reason.traceback) == "string" then
    lines[#lines + 1] = "  " .. reason.traceback:gsub("\n", "\n  ")
  end
  local io = require "io"
  io.stderr:write(table.concat(lines, "\n"), "\n")
end

-- The server's exit: terminate (if any), then leave with `reason`.
local function terminate(mod, reason, state, from, reply_value)
  local f = mod.terminate
  if f then
    local ok, err = xpcall(f, crash, reason, state)
    if not ok then reason = err end
  end
  if not quiet(reason) then pcall(report, mod, reason, state) end
  if from then
    local ok, err = pcall(reply, from, reply_value)
    if not ok then reason = { error = err } end
  end
  cexit(reason)
end

--- Checks an action: nil, a timeout in ms, "hibernate" or { continue = v }.
local function valid_action(a)
  local t = type(a)
  return a == nil or (t == "number" and a >= 0) or a == "hibernate" or a == "infinity"
      or (t == "table" and a.continue ~= nil)
end

local S = {}
local started, init_result -- defined below the loop

-- After handle_cast/handle_info/handle_continue: returns state, action, or
-- ends the server.
local function noreply_result(mod, state, n, tag, a, b, ...)
  if n == CRASH then return terminate(mod, tag, state) end
  if tag == "noreply" and (n == 2 or n == 3) and valid_action(b) then return a, b end
  if tag == "stop" and n == 3 then return terminate(mod, a, b) end
  return terminate(mod, bad_return(n, tag, a, b, ...), state)
end

local function call_result(mod, from, state, n, tag, a, b, c, ...)
  if n == CRASH then return terminate(mod, tag, state) end
  if tag == "reply" and (n == 3 or n == 4) and valid_action(c) then
    local ok, err = pcall(reply, from, a)
    if not ok then return terminate(mod, { error = err }, b) end
    return b, c
  end
  if tag == "noreply" and (n == 2 or n == 3) and valid_action(b) then return a, b end
  if tag == "stop" and n == 4 then return terminate(mod, a, c, from, b) end
  if tag == "stop" and n == 3 then return terminate(mod, a, b) end
  return terminate(mod, bad_return(n, tag, a, b, c, ...), state)
end

local function log(fmt, ...)
  local io = require "io"
  io.stderr:write(("genserver %s: " .. fmt .. "\n"):format(tostring(core.self()), ...))
end

--- Handles a system message: { "stop", reason } from genserver.stop.
function S.system(mod, req, from, state)
  if type(req) == "table" and req[1] == "stop" then
    return terminate(mod, req[2], state)
  end
  if type(req) == "table" and req[1] == "get_state" then
    reply(from, state)
    return state
  end
  reply(from, { error = "unknown system message" })
  return state
end

local function handle_info(mod, msg, state, parent)
  -- an EXIT from the parent ends a server that traps exits (OTP)
  if type(msg) == "table" and msg[1] == "EXIT" and msg.pid == parent then
    return terminate(mod, msg.reason, state)
  end
  local f = mod.handle_info
  if not f then
    log("no handle_info in %s; dropped a message", module_name)
    return state
  end
  return noreply_result(mod, state, pack(xpcall(f, crash, msg, state)))
end

local function continue_with(mod, value, state)
  local f = mod.handle_continue
  if not f then
    return terminate(mod, "no handle_continue callback in the module", state)
  end
  return noreply_result(mod, state, pack(xpcall(f, crash, value, state)))
end

--- The receive loop.
local function loop(mod, state, action, opts, parent)
  local hib_after = opts.hibernate_after
  local gc = collectgarbage
  while true do
    local timeout = nil
    while type(action) == "table" do
      state, action = continue_with(mod, action.continue, state)
    end
    if action == "hibernate" then
      gc("collect")
    elseif type(action) == "number" then
      timeout = action
    end
    local kind, a, b
    if timeout == nil and hib_after then
      kind, a, b = next_msg(hib_after)
      if kind == nil then
        gc("collect")
        kind, a, b = next_msg()
      end
    else
      kind, a, b = next_msg(timeout)
    end
    cur_kind, cur_msg, cur_from = kind, a, b
    if kind == K_CALL then
      local f = mod.handle_call
      if not f then
        return terminate(mod, "no handle_call callback in the module", state)
      end
      state, action = call_result(mod, b, state, pack(xpcall(f, crash, a, b, state)))
    elseif kind == K_CAST then
      local f = mod.handle_cast
      if not f then
        return terminate(mod, "no handle_cast callback in the module", state)
      end
      state, action = noreply_result(mod, state, pack(xpcall(f, crash, a, state)))
    elseif kind == K_SYSTEM then
      state, action = S.system(mod, a, b, state), nil
    elseif kind == nil then
      state, action = handle_info(mod, "timeout", state, parent)
    else
      state, action = handle_info(mod, a, state, parent)
    end
  end
end

-- The server is up: acknowledge the starter and enter the loop.
started = function(mod, state, action, opts, from, _)
  reply(from, { "ok" })
  if opts.trap_exit then core.trap_exit(true) end
  return loop(mod, state, action, opts, from[1])
end

init_result = function(mod, opts, from, fail, n, tag, state, action, ...)
  if n == CRASH then return fail({ "error", tag }, tag) end
  if tag == "ok" and (n == 2 or n == 3) and valid_action(action) then
    return started(mod, state, action, opts, from)
  elseif tag == "ignore" and n == 1 then
    return fail({ "ignore" }, "normal")
  elseif tag == "stop" and n == 2 then
    return fail({ "error", state }, state)
  elseif tag == "error" and n == 2 then
    return fail({ "error", state }, "normal")
  end
  local reason = bad_return(n, tag, state, action, ...)
  return fail({ "error", reason }, reason)
end

local function load_module(spec)
  if type(spec) == "table" then return true, spec end
  return xpcall(require, crash, spec)
end

--- Process body: (module, arg, opts, starter, ref).
return function(spec, arg, opts, starter, ref)
  opts = opts or {}
  local from = { starter, ref }
  local name = opts.name
  local function fail(ack, reason)
    if name then core.unregister(name) end
    reply(from, ack)
    cexit(reason)
  end
  if name then
    local ok, taken = core.register(name)
    if not ok then
      reply(from, { "error", taken })
      return
    end
  end
  local ok, mod = load_module(spec)
  if not ok then return fail({ "error", mod }, mod) end
  if type(mod) ~= "table" then
    local reason = "module " .. tostring(spec) .. " is not a table"
    return fail({ "error", reason }, reason)
  end
  if type(spec) == "string" then module_name = spec
  elseif type(mod.name) == "string" then module_name = mod.name
  else module_name = "(table)" end
  core.set_module(module_name)
  local init = mod.init
  if not init then return started(mod, arg, nil, opts, from, fail) end
  return init_result(mod, opts, from, fail, pack(xpcall(init, crash, arg)))
end
