--- genserver.sys: look into and steer running gen_servers (DESIGN.md §2.5).
--
-- As OTP's `sys` for gen_servers and supervisors (a supervisor is a
-- gen_server). The functions send *system messages*: a kind of request
-- of its own that the server loop (csrc/lserver.c) recognises, so they
-- never mix with the server's calls, casts and infos, and they do not
-- reset its idle time-out. A server loads this module (for its side,
-- `system`) when it gets its first system message; servers that never do
-- pay nothing.
--
--     local sys = require "genserver.sys"
--     sys.get_state(pid)                            --> the state
--     sys.replace_state(pid, function(s) s.n = 0 return s end)
--     sys.suspend(pid)  -- calls wait, casts queue
--     sys.resume(pid)   -- ... and are handled now, in order
--     sys.trace(pid, true)                          -- through the logger
--     sys.statistics(pid, true); sys.statistics(pid, "get")
--     sys.log(pid, 20); sys.log(pid, "get")         -- the last 20 events
--
-- Client functions raise a genserver error (`err.op` is `"sys.<name>"`)
-- when the server does not exist (`"noproc"`), dies, or does not answer in
-- time (`"timeout"`, default 5000 ms). `change_code` returns `nil, reason`
-- for a refused or failed change instead.
-- @module genserver.sys

local core = require "genserver.core"

local M = {}

local type, pairs, next, pcall, error = type, pairs, next, pcall, error
local setmetatable, getmetatable, tostring = setmetatable, getmetatable, tostring
local crequest, cwait = core.request, core.wait

-- ------------------------------------------------------------ clients

local function sys_error(op, server, reason, timeout)
  return setmetatable({ op = "sys." .. op, server = server, reason = reason,
                        timeout = reason == "timeout" and timeout or nil },
                      core.error_mt())
end

local function check_timeout(op, t)
  if t == nil then return 5000 end
  if t == "infinity" or (type(t) == "number" and t >= 0) then return t end
  error(("genserver.sys.%s: timeout must be ms or \"infinity\""):format(op), 3)
end

-- Sends system request `req` to `server` and waits for its answer:
-- { "ok", value } | { "error", reason }. Returns ok, value-or-reason.
-- Raises a genserver error when there is no answer.
local function request(op, server, req, timeout)
  if type(server) ~= "string" and not core.is_pid(server) then
    error(("genserver.sys.%s: server must be a pid or a registered name"):format(op), 3)
  end
  timeout = check_timeout(op, timeout)
  local pid = server
  if type(server) == "string" then pid = core.whereis(server) end
  if pid == nil then error(sys_error(op, server, "noproc"), 3) end
  if pid == core.self() then error(sys_error(op, server, "calling_self"), 3) end
  local ref = crequest(pid, req, "system")
  local ok, ans, reason = cwait(ref, timeout, true)
  if not ok then
    if ans == "down" then ans = reason end
    error(sys_error(op, server, ans, timeout), 3)
  end
  if type(ans) ~= "table" then error(sys_error(op, server, ans), 3) end
  return ans[1] == "ok", ans[2]
end

-- As request, raising the server's refusal as a genserver error too.
local function must(op, server, req, timeout)
  local ok, v = request(op, server, req, timeout)
  if not ok then error(sys_error(op, server, v), 3) end
  return v
end

--- The state of a server (a copy).
---@param server userdata|string pid or registered name
---@param timeout number|string? ms (default 5000) or "infinity"
---@return any # the state
function M.get_state(server, timeout)
  return must("get_state", server, { "get_state" }, timeout)
end

--- Replaces the state of a server with `fn(state)`. `fn` crosses by value
-- (with its upvalues) and runs in the server. If `fn` raises, the server
-- keeps the state it had before the call -- changes `fn` made to it before
-- raising are undone -- and the error is raised here (a genserver error
-- whose `reason` is `fn`'s error).
---@param server userdata|string pid or registered name
---@param fn function function(state) -> new_state
---@param timeout number|string? ms (default 5000) or "infinity"
---@return any # the new state (a copy)
function M.replace_state(server, fn, timeout)
  if type(fn) ~= "function" then
    error("genserver.sys.replace_state: fn must be a function", 2)
  end
  return must("replace_state", server, { "replace_state", fn }, timeout)
end

--- The status of a server: `{ pid, name, module, vsn, status = "running" |
-- "suspended", parent, state, messages_in, messages_out, mailbox,
-- reductions, debug = { trace, log, statistics } }`, passed through the
-- module's `format_status(status)` when it has one (to redact secrets).
---@param server userdata|string pid or registered name
---@param timeout number|string? ms (default 5000) or "infinity"
---@return table # table
function M.get_status(server, timeout)
  return must("get_status", server, { "get_status" }, timeout)
end

--- Suspends a server: it answers only system messages until `resume`;
-- calls wait (and may time out), casts and other messages stay queued in
-- order.
---@param server userdata|string pid or registered name
---@param timeout number|string? ms (default 5000) or "infinity"
---@return boolean # true
function M.suspend(server, timeout)
  return must("suspend", server, { "suspend" }, timeout)
end

--- Resumes a suspended server: the messages that queued meanwhile are
-- handled in order.
---@param server userdata|string pid or registered name
---@param timeout number|string? ms (default 5000) or "infinity"
---@return boolean # true
function M.resume(server, timeout)
  return must("resume", server, { "resume" }, timeout)
end

--- Switches a suspended server to the current version of its module
-- (see genserver.code) and runs the new version's
-- `code_change(old_vsn, state, extra)`, which returns `"ok", new_state`.
-- `"error", reason`, a crash, or a module that does not load leave the
-- server on its old code and state.
---@param server userdata|string pid or registered name
---@param module string the module name the server runs
---@param old_vsn any passed to code_change
---@param extra any? passed to code_change
---@param timeout number|string? ms (default 5000) or "infinity"
---@return boolean|nil # true, or nil and a reason (`"not_suspended"` when the server is
--   not suspended: nothing changes)
---@return any
function M.change_code(server, module, old_vsn, extra, timeout)
  if type(module) ~= "string" then
    error("genserver.sys.change_code: module must be a module name", 2)
  end
  local ok, v = request("change_code", server,
                        { "change_code", module, old_vsn, extra }, timeout)
  if ok then return true end
  return nil, v
end

--- change_code with the server's own version as old_vsn (for
-- genserver.code.upgrade).
-- @local
---@param server userdata|string pid or registered name
---@param module string the module name the server runs
---@param extra any? passed to code_change
---@param timeout number|string? ms (default 5000) or "infinity"
---@return boolean|nil # true, or nil and a reason
---@return any
function M.change_code_own(server, module, extra, timeout)
  local ok, v = request("change_code", server,
                        { "change_code", module, nil, extra, own_vsn = true }, timeout)
  if ok then return true end
  return nil, v
end

--- Turns tracing on or off: the server reports every message it handles
-- and every reply or new state through genserver.logger
-- (`{ kind = "trace", ... }`, printed as `=TRACE====` lines).
---@param server userdata|string pid or registered name
---@param flag boolean|integer|string boolean
---@param timeout number|string? ms (default 5000) or "infinity"
---@return boolean # true
function M.trace(server, flag, timeout)
  if type(flag) ~= "boolean" then error("genserver.sys.trace: flag must be a boolean", 2) end
  return must("trace", server, { "trace", flag }, timeout)
end

--- Statistics: `true` starts collecting, `false` stops, `"get"` returns
-- `{ start_time, current_time (monotonic ms), messages_in, messages_out,
-- reductions (callbacks run), mailbox }` counted since `true`, or false
-- when not collecting.
---@param server userdata|string pid or registered name
---@param flag boolean|integer|string true | false | "get"
---@param timeout number|string? ms (default 5000) or "infinity"
---@return boolean|table # true, or the statistics for "get"
function M.statistics(server, flag, timeout)
  if type(flag) ~= "boolean" and flag ~= "get" then
    error('genserver.sys.statistics: flag must be true, false or "get"', 2)
  end
  return must("statistics", server, { "statistics", flag }, timeout)
end

--- The event log: `true` keeps the last 10 events, `n` the last n,
-- `false` stops, `"get"` returns the events kept, oldest first
-- (`{ event = "in", kind = "call"|"cast"|"info"|"timeout"|"continue",
-- message, from }`, `{ event = "reply", reply, to, state }`,
-- `{ event = "noreply", state }`).
---@param server userdata|string pid or registered name
---@param flag boolean|integer|string true | false | n | "get"
---@param timeout number|string? ms (default 5000) or "infinity"
---@return boolean|table # true, or the list of events for "get"
function M.log(server, flag, timeout)
  if not (type(flag) == "boolean" or flag == "get"
          or (math.type(flag) == "integer" and flag > 0)) then
    error('genserver.sys.log: flag must be true, false, a count or "get"', 2)
  end
  return must("log", server, { "log", flag }, timeout)
end

-- --------------------------------------------------- the server's side

-- A snapshot of every table reachable from v (through keys and values,
-- not metatables): table -> { contents, metatable }. Undo puts them back
-- in place, so that the tables keep their identity.
local function snapshot(v, seen)
  if type(v) ~= "table" or seen[v] then return seen end
  local copy = {}
  seen[v] = { copy, getmetatable(v) }
  for k, x in next, v do
    copy[k] = x
    snapshot(k, seen)
    snapshot(x, seen)
  end
  return seen
end

local function undo(seen)
  for t, saved in pairs(seen) do
    for k in next, t do t[k] = nil end
    for k, x in next, saved[1] do t[k] = x end
    pcall(setmetatable, t, saved[2]) -- a protected metatable stays as it is
  end
end

-- Runs fn(...) so that a failure leaves ctx.state as it was: the tables
-- reachable from the state are snapshotted first (a cost paid by
-- replace_state and change_code only) and put back if fn raises.
-- Returns the snapshot (for undo), then true, results... or false, error.
local function guarded(ctx, fn, ...)
  local seen = snapshot(ctx.state, {})
  local res = table.pack(pcall(fn, ...))
  if not res[1] then undo(seen) end
  return seen, table.unpack(res, 1, res.n)
end

local kind_names = { [core.K_CALL] = "call", [core.K_CAST] = "cast",
                     [core.K_INFO] = "info", [0] = "continue" }

local function self_info()
  return core.info(core.self()) or {}
end

local function trace_report(ctx, ev)
  local info = self_info()
  ev.kind, ev.event_kind = "trace", ev.kind
  ev.pid, ev.name, ev.module = core.self(), info.name, ctx.modname
  pcall(function() require("genserver.logger").report(ev) end)
end

-- The debug hook (lserver.c's debug_event): one event of the server.
local function hook(ctx, event, a, b, c)
  local ev
  if event == "in" then
    ev = { event = "in", kind = a == nil and "timeout" or kind_names[a] or "info",
           message = b, from = c }
  elseif event == "reply" then
    ev = { event = "reply", reply = a, to = type(b) == "table" and b[1] or nil, state = c }
  else
    ev = { event = event, state = a }
  end
  local log = ctx.log
  if log then
    log.n = log.n + 1
    log[(log.n - 1) % log.max + 1] = ev
  end
  if ctx.trace then trace_report(ctx, ev) end
end

local function set_hook(ctx)
  ctx.hook = (ctx.trace or ctx.log) and hook or nil
end

local function log_events(log)
  local out, first = {}, log.n > log.max and log.n - log.max + 1 or 1
  for i = first, log.n do out[#out + 1] = log[(i - 1) % log.max + 1] end
  return out
end

local function stats_now()
  local info = self_info()
  return { time = core.clock() * 1000, messages_in = info.messages_in or 0,
           messages_out = info.messages_out or 0, reductions = info.reductions or 0,
           mailbox = info.mailbox or 0 }
end

local function statistics(ctx, flag)
  if flag == true then
    ctx.stats = stats_now()
    return true
  elseif flag == false then
    ctx.stats = nil
    return true
  end
  local base = ctx.stats
  if not base then return false end
  local now = stats_now()
  return { start_time = base.time, current_time = now.time,
           messages_in = now.messages_in - base.messages_in,
           messages_out = now.messages_out - base.messages_out,
           reductions = now.reductions - base.reductions,
           mailbox = now.mailbox }
end

local function log_option(ctx, flag)
  if flag == "get" then return ctx.log and log_events(ctx.log) or {} end
  if flag == false then ctx.log = nil
  else
    local max = flag == true and 10 or flag
    local old = ctx.log and log_events(ctx.log) or {}
    ctx.log = { n = 0, max = max }
    for i = math.max(1, #old - max + 1), #old do
      local log = ctx.log
      log.n = log.n + 1
      log[(log.n - 1) % max + 1] = old[i]
    end
  end
  set_hook(ctx)
  return true
end

-- The version this server runs: its module's vsn field, else the module
-- cache's counter it was started or changed with (info().vsn).
local function own_vsn(mod)
  local v = type(mod) == "table" and rawget(mod, "vsn") or nil
  if v ~= nil then return v end
  return self_info().vsn
end

local function get_status(ctx)
  local info = self_info()
  local mod = ctx.module
  local status = {
    pid = core.self(), name = info.name, module = ctx.modname,
    vsn = own_vsn(mod),
    status = ctx.suspended and "suspended" or "running",
    parent = core.parent(), state = ctx.state,
    messages_in = info.messages_in, messages_out = info.messages_out,
    mailbox = info.mailbox, reductions = info.reductions,
    debug = { trace = ctx.trace or false, log = ctx.log ~= nil,
              statistics = ctx.stats ~= nil },
  }
  if type(mod) == "table" and type(mod.format_status) == "function" then
    local ok, st = pcall(mod.format_status, status)
    if ok and type(st) == "table" then status = st end
  end
  return status
end

-- change_code(name, old_vsn, extra) in the server: load the current
-- version of `name`, run its code_change; on any failure the old module
-- (package.loaded too) and the old state stay.
local function change_code(ctx, name, old_vsn, extra, own)
  if not ctx.suspended then return false, "not_suspended" end
  if name ~= ctx.modname then return false, "not_running_module" end
  if own then old_vsn = own_vsn(ctx.module) end
  local loaded = package.loaded
  local old = loaded[name]
  loaded[name] = nil
  local ok, new = pcall(require, name)
  if not ok or type(new) ~= "table" then
    loaded[name] = old
    return false, ok and ("module " .. name .. " is not a table") or new
  end
  local cc = new.code_change
  local state = ctx.state
  if type(cc) == "function" then
    local seen, done, tag, st = guarded(ctx, cc, old_vsn, ctx.state, extra)
    if not done then
      loaded[name] = old
      return false, { error = tag }
    end
    if tag ~= "ok" then
      undo(seen) -- what code_change changed before refusing goes too
      loaded[name] = old
      if tag == "error" then return false, st end
      return false, { bad_return_value = { tag, st } }
    end
    state = st
  end
  ctx.module, ctx.state = new, state
  core.set_module(name, rawget(new, "vsn")) -- without one: the cache's counter
  return true
end

-- Each system request: returns ok, value (the answer { "ok"|"error", v }).
local handlers = {
  get_state = function(ctx) return true, ctx.state end,
  replace_state = function(ctx, req)
    local fn = req[2]
    if type(fn) ~= "function" then return false, "fn must be a function" end
    local _, ok, new = guarded(ctx, fn, ctx.state)
    if not ok then return false, new end
    ctx.state = new
    return true, new
  end,
  get_status = function(ctx) return true, get_status(ctx) end,
  suspend = function(ctx) ctx.suspended = true return true, true end,
  resume = function(ctx) ctx.suspended = nil return true, true end,
  change_code = function(ctx, req)
    return change_code(ctx, req[2], req[3], req[4], req.own_vsn)
  end,
  trace = function(ctx, req)
    ctx.trace = req[2] == true or nil
    set_hook(ctx)
    return true, true
  end,
  statistics = function(ctx, req) return true, statistics(ctx, req[2]) end,
  log = function(ctx, req) return true, log_option(ctx, req[2]) end,
  ["$debug"] = function(ctx, req) -- the debug start option
    for _, opt in pairs(req[2]) do
      if opt == "trace" then ctx.trace = true
      elseif opt == "log" then log_option(ctx, true)
      elseif opt == "statistics" then statistics(ctx, true) end
    end
    set_hook(ctx)
    return true, true
  end,
}

--- The server's side of a system request, run by the gen_server loop
-- (csrc/lserver.c) in the server's state. `ctx` carries the server's
-- `state`, `module` and `modname` in and out, and keeps the sys settings
-- (`suspended`, `trace`, `log`, `stats`, `hook`) from one request to the
-- next.
-- @local
---@param req table the request ({ name, args... })
---@param from table? the caller's from, or nil (the debug start option)
---@param ctx table the server's sys context
function M.system(req, from, ctx)
  local h = type(req) == "table" and handlers[req[1]] or nil
  local ok, v
  if h then ok, v = h(ctx, req)
  else ok, v = false, "unknown system message" end
  if from == nil then return end
  local sent, why = pcall(core.reply, from, { ok and "ok" or "error", v })
  if not sent then -- the value cannot cross (a userdata in the state, say)
    pcall(core.reply, from, { "error", "cannot send the answer: " .. tostring(why) })
  end
end

return M
