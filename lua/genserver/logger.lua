--- genserver.logger: where crash reports and supervisor reports go.
--
-- A gen_server registered as `"genserver.logger"`, started on demand by the
-- first report (or explicitly by `logger.start()`). Every server that
-- crashes (any exit reason but `"normal"`, `"shutdown"` and
-- `{ shutdown = ... }`) sends it a **crash report**; supervisors send it
-- **supervisor reports** (a child terminated, a child failed to start or to
-- stop, the restart intensity was exceeded). The default handler prints a
-- readable multi-line report to stderr; `logger.set_handler(module_name)`
-- replaces it with a module of your own that has `handle_report(report)`.
-- The handler is loaded by name in the logger's own state.
--
-- A crash report is a table:
--
--     { kind = "crash", pid =, name = (registered name or nil), module =,
--       reason = (the exit reason), error = (the error message, for a Lua
--       error), traceback = (taken at the crash site), message = (the last
--       message), message_kind = "call"|"cast"|"info"|"system",
--       caller = (pid, for a call), state = (through format_status), time = }
--
-- A trace event (genserver.sys.trace):
--
--     { kind = "trace", pid =, name =, module =, event = "in"|"reply"|"noreply",
--       event_kind = "call"|"cast"|"info"|"timeout"|"continue" (for "in"),
--       message =, from =, reply =, to =, state =, time = }
--
-- A process report (a plain process's body raised an error; Erlang's
-- "Error in process ... with exit value"):
--
--     { kind = "process", pid =, error = (the error), traceback =, time = }
--
-- A supervisor report:
--
--     { kind = "supervisor", supervisor = pid, supervisor_name =,
--       context = "child_terminated"|"start_error"|"shutdown_error"|"shutdown",
--       reason =, child = { id, pid, module, restart, shutdown, type [, count] },
--       restart_delay = ms (with a restart backoff), time = }
--
-- Values that cannot be sent between states (userdata in a server's state,
-- say) are replaced by their description.
-- @module genserver.logger

-- A report, as handlers get it (a LuaLS class; see above for each kind).
---@class genserver.logger.Report
---@field kind "crash"|"supervisor"
---@field pid genserver.Pid? the server that crashed (crash reports)
---@field reason any the exit reason
---@field time number when it was made

-- A handler module (a LuaLS class).
---@class genserver.logger.Handler
---@field handle_report fun(report: genserver.logger.Report)

local core = require "genserver.core"

local M = {}

--- The name the logger is registered under (also its module name).
M.NAME = "genserver.logger"

local type, tostring, pcall, pairs = type, tostring, pcall, pairs

local function describe(v)
  return require("genserver").describe(v)
end

-- ---------------------------------------------------------- formatting

local function text(v)
  if type(v) == "string" then return v end
  return require("genserver").format_reason(v)
end

local function who(pid, name)
  local s = tostring(pid)
  if name ~= nil then s = s .. " " .. ("%q"):format(tostring(name)) end
  return s
end

local function format_crash(r)
  local lines = {
    ("=CRASH REPORT==== server %s (module %s)"):format(who(r.pid, r.name),
      tostring(r.module)),
  }
  local why = r.reason
  if r.error ~= nil then why = r.error end
  lines[#lines + 1] = "  reason: " .. text(why)
  if r.message_kind ~= nil then
    local from = r.caller ~= nil and (" from " .. tostring(r.caller)) or ""
    lines[#lines + 1] = ("  last message: %s %s%s"):format(r.message_kind,
      describe(r.message), from)
  end
  lines[#lines + 1] = "  state: " .. describe(r.state)
  if type(r.traceback) == "string" then
    lines[#lines + 1] = "  " .. r.traceback:gsub("\n", "\n  ")
  end
  return table.concat(lines, "\n")
end

local function format_process(r)
  local lines = {
    ("=ERROR REPORT==== Error in process %s with exit value:"):format(tostring(r.pid)),
    "  " .. text(r.error),
  }
  if type(r.traceback) == "string" then
    local tb, first = r.traceback, type(r.error) == "string" and r.error:match("^[^\n]*")
    if first and tb:sub(1, #first + 1) == first .. "\n" then tb = tb:sub(#first + 2) end
    lines[#lines + 1] = "  " .. tb:gsub("\n", "\n  ")
  end
  return table.concat(lines, "\n")
end

local function format_child(c)
  if type(c) ~= "table" then return describe(c) end
  local parts = {}
  if c.id ~= nil then parts[#parts + 1] = "id " .. describe(c.id) end
  if c.count ~= nil then
    parts[#parts + 1] = ("%d children"):format(c.count)
  elseif c.pid ~= nil then
    parts[#parts + 1] = "pid " .. tostring(c.pid)
  end
  for _, k in ipairs({ "module", "restart", "shutdown", "type" }) do
    if c[k] ~= nil then parts[#parts + 1] = k .. " " .. tostring(c[k]) end
  end
  return table.concat(parts, ", ")
end

local function format_supervisor(r)
  local lines = {
    ("=SUPERVISOR REPORT==== supervisor %s"):format(who(r.supervisor, r.supervisor_name)),
    "  context: " .. tostring(r.context),
    "  reason: " .. text(type(r.reason) == "table" and r.reason.error ~= nil
      and r.reason.error or r.reason),
    "  offender: " .. format_child(r.child),
  }
  if r.restart_delay ~= nil then
    lines[#lines + 1] = ("  restart in: %s ms"):format(tostring(r.restart_delay))
  end
  return table.concat(lines, "\n")
end

-- A trace event of genserver.sys.trace: one line.
local function format_trace(r)
  local head = ("=TRACE==== %s (module %s)"):format(who(r.pid, r.name), tostring(r.module))
  local e = r.event
  if e == "in" then
    local from = r.from ~= nil and type(r.from) == "table" and (" from " .. tostring(r.from[1])) or ""
    if r.event_kind == "timeout" then return head .. " got time-out" end
    return ("%s got %s %s%s"):format(head, tostring(r.event_kind), describe(r.message), from)
  elseif e == "reply" then
    return ("%s replied %s to %s, state %s"):format(head, describe(r.reply),
      tostring(r.to), describe(r.state))
  end
  return ("%s new state %s"):format(head, describe(r.state))
end

--- A report as readable text (several lines, no final newline): what the
-- default handler prints. Handlers may use it too.
---@param r genserver.logger.Report a crash or supervisor report
---@return string text
function M.format(r)
  if type(r) ~= "table" then return "=REPORT==== " .. describe(r) end
  if r.kind == "crash" then return format_crash(r) end
  if r.kind == "supervisor" then return format_supervisor(r) end
  if r.kind == "trace" then return format_trace(r) end
  if r.kind == "process" then return format_process(r) end
  return "=REPORT==== " .. describe(r)
end

--- Prints a report to stderr, as the default handler does.
-- Never raises.
---@param r genserver.logger.Report a report
function M.print(r)
  local ok, s = pcall(M.format, r)
  if not ok then s = "=REPORT==== (could not format a report: " .. tostring(s) .. ")" end
  pcall(function()
    local io = require "io"
    io.stderr:write(s, "\n")
  end)
end

-- ------------------------------------------------------------ clients

local function is_basic(v)
  local t = type(v)
  return t == "nil" or t == "string" or t == "number" or t == "boolean"
    or core.is_pid(v) or core.is_ref(v)
end

-- A copy of r that can surely be sent: any field that is not a plain
-- value becomes its description.
local function sanitize(r)
  local t = {}
  for k, v in pairs(r) do
    if is_basic(v) then t[k] = v else t[k] = describe(v) end
  end
  return t
end

--- Starts the logger if it is not running.
---@return genserver.Pid? pid the logger's pid, or nil
---@return any reason why it did not start
function M.start()
  local pid = core.whereis(M.NAME)
  if pid then return pid end
  local gs = require "genserver"
  local p, reason = gs.start(M.NAME, nil, { name = M.NAME })
  if p then return p end
  if type(reason) == "table" and reason.already_started then
    return reason.already_started -- another process started it meanwhile
  end
  return nil, reason
end

--- Stops the logger (reports that arrive afterwards start a new one).
---@return boolean true
function M.stop()
  local pid = core.whereis(M.NAME)
  if pid == nil then return true end
  local gs = require "genserver"
  local ok, err = pcall(gs.stop, pid)
  if not ok and not (gs.is_error(err) and err.reason == "noproc") then error(err, 2) end
  return true
end

-- Whether the caller may wait here: a process in its body thread (not
-- inside a C call such as the gen_server loop's crash report), or a
-- foreign thread (the main script), whose waits block the thread.
local function can_wait()
  local co = require "coroutine"
  if co.isyieldable() then return true end
  local info = core.info(core.self())
  return info ~= nil and info.foreign == true
end

-- Sends msg to pid; a report that cannot be sent as it is goes as its
-- description. Returns true if sent.
local function send_report(send, dest, r)
  if pcall(send, dest, { "report", r }) then return true end
  return (pcall(send, dest, { "report", sanitize(r) }))
end

-- (stop_last, trap_exit: see M.main)
local spawn_opts = { stop_last = true, trap_exit = true }
local function spawn_report(body, r)
  return core.spawn(body, spawn_opts, r)
end

--- Sends a report to the logger, starting it if needed. When the logger
-- cannot be reached (or the caller *is* the logger), prints the report
-- itself instead. Never raises.
--
-- Where the caller cannot wait for the logger to start (a crash report
-- sent from inside the gen_server loop), a short-lived process starts it
-- and forwards the report (it outlives a program's end until it has:
-- nothing reported is lost); call `logger.start()` early in a program to
-- have every report go straight in.
---@param r genserver.logger.Report a report table (see the module description)
---@return boolean sent true if the report was sent, false if it was printed here
function M.report(r)
  if type(r) ~= "table" then r = { kind = "other", reason = r } end
  if r.time == nil then
    local ok, os = pcall(require, "os")
    if ok then r.time = os.time() end
  end
  local ok, pid = pcall(core.whereis, M.NAME)
  if not ok then M.print(r) return false end
  if pid ~= nil and pid == core.self() then
    M.print(r) -- the logger reporting on itself: no one to send to
    return false
  end
  if pid == nil then
    if not can_wait() then
      -- start it from a process of its own, which then forwards r
      if send_report(spawn_report, M.NAME, r) then return true end
      M.print(r)
      return false
    end
    local started
    ok, started = pcall(M.start)
    if ok then pid = started end
  end
  if pid == nil then M.print(r) return false end
  if send_report(core.cast, pid, r) then return true end
  M.print(r)
  return false
end

--- Body of the process that starts the logger for a report sent from
-- where the sender could not wait (see `report`). It is spawned to be
-- stopped with the logger at program end, after every other process, and
-- trapping exits, so that the report it carries is not lost.
-- @local
---@param msg genserver.logger.Report
function M.main(msg)
  local r = msg[2]
  local ok, pid = pcall(M.start)
  if not ok or pid == nil or not pcall(core.cast, pid, { "report", r }) then M.print(r) end
end

--- Replaces the report handler. `module_name` is `require`d **in the
-- logger's state**, so it must be a module name (a string), and the module
-- must have `handle_report(report)`. `nil` restores the default handler
-- (printing to stderr). A handler that raises an error gets the report
-- printed by the default handler instead, with the error.
-- Starts the logger if needed.
---@param module_name string? a module with `handle_report(report)`, or nil for the default handler
---@return true? ok true, or nil
---@return any reason why the handler could not be set
function M.set_handler(module_name)
  if module_name ~= nil and type(module_name) ~= "string" then
    error("genserver.logger.set_handler: the handler must be a module name (a string)", 2)
  end
  local pid, reason = M.start()
  if not pid then return nil, reason end
  local gs = require "genserver"
  local r = gs.call(pid, { "set_handler", module_name })
  if r[1] then return true end
  return nil, r[2]
end

--- The current handler's module name, or nil for the default one.
---@return string? module_name
function M.get_handler()
  local pid = core.whereis(M.NAME)
  if pid == nil then return nil end
  return require("genserver").call(pid, "get_handler")
end

--- Waits until the logger has handled every report it got before this
-- call (a round trip). Starts the logger if needed.
---@param timeout genserver.Timeout? ms (default 5000)
---@return boolean true
function M.sync(timeout)
  local pid, reason = M.start()
  if not pid then return nil, reason end
  return require("genserver").call(pid, "sync", timeout)
end

-- ------------------------------------------- gen_server callbacks (own state)

--- @local
---@param arg any
---@return string, table
function M.init(arg)
  -- trapping exits lets it hand over what is queued when the runtime shuts
  -- down (see terminate), and it is stopped after every other process, so
  -- that every report sent before the end reaches it (DESIGN 1.7)
  core.trap_exit(true)
  core.stop_order("last")
  return "ok", { handler = type(arg) == "table" and arg.handler or nil, count = 0 }
end

local function load_handler(name)
  local ok, mod = pcall(require, name)
  if not ok then return nil, ("cannot load handler %q: %s"):format(name, tostring(mod)) end
  if type(mod) ~= "table" or type(mod.handle_report) ~= "function" then
    return nil, ("handler %q has no handle_report function"):format(name)
  end
  return mod
end

local function deliver(st, r)
  st.count = st.count + 1
  if st.handler then
    local mod, err = load_handler(st.handler)
    if mod then
      local ok, e = pcall(mod.handle_report, r)
      if ok then return end
      err = ("handler %q failed: %s"):format(st.handler, tostring(e))
    end
    M.print(r)
    M.print({ kind = "logger", reason = err })
    return
  end
  M.print(r)
end

--- @local
---@param msg any
---@param st table
---@return string, table
function M.handle_cast(msg, st)
  if type(msg) == "table" and msg[1] == "report" then deliver(st, msg[2]) end
  return "noreply", st
end

--- @local
---@param req any
---@param _from genserver.From
---@param st table
---@return string, any, table
function M.handle_call(req, _from, st)
  if req == "sync" then return "reply", true, st end
  if req == "get_handler" then return "reply", st.handler, st end
  if req == "count" then return "reply", st.count, st end
  if type(req) == "table" and req[1] == "set_handler" then
    local name = req[2]
    if name == nil then
      st.handler = nil
      return "reply", { true }, st
    end
    local mod, err = load_handler(name)
    if not mod then return "reply", { false, err }, st end
    st.handler = name
    return "reply", { true }, st
  end
  return "reply", nil, st
end

--- @local
---@param _msg any
---@param st table
---@return string, table
function M.handle_info(_msg, st)
  return "noreply", st
end

--- Handles the reports still queued, then ends (the program ends, or the
-- logger is stopped): nothing reported before is lost.
-- @local
---@param _reason any
---@param st table
function M.terminate(_reason, st)
  if type(st) ~= "table" then return end
  while true do
    local m = core.receive(function(x)
      return type(x) == "table" and x[1] == "$gen_cast"
    end, 0)
    if m == nil then break end
    local c = m[2]
    if type(c) == "table" and c[1] == "report" then deliver(st, c[2]) end
  end
end

return M
