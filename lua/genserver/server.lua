--- The cold path of a gen_server: crash reports.
--
-- The server loop itself is C (csrc/lserver.c, `core.serve`), so that it
-- costs a server's state nothing. This module is loaded only by a server
-- that is about to exit with a reason that is not quiet.
-- @module genserver.server

local core = require "genserver.core"

local M = {}

local kind_names = { [core.K_CALL] = "call", [core.K_CAST] = "cast",
                     [core.K_INFO] = "info", [core.K_SYSTEM] = "system", [0] = "continue" }

--- When the logger process cannot be used: print the report here with the
-- logger's own formatter, or, if even its module cannot load, one line.
local function print_report(r)
  local ok = pcall(function() require("genserver.logger").print(r) end)
  if not ok then
    io.stderr:write(("=CRASH REPORT==== server %s (module %s): %s\n"):format(
      tostring(r.pid), tostring(r.module), tostring(r.error ~= nil and r.error or r.reason)))
  end
end

--- Sends a crash report to the logger process (genserver.logger, started
-- on demand; DESIGN §2.2: every crash is reported), or prints it here if
-- the logger cannot be used. Called by the C loop with what it knows about
-- the crash; runs where it cannot wait (genserver.logger.report copes).
-- @param mod the callback module
-- @param reason the exit reason
-- @param state the server state (shown through mod.format_status if defined)
-- @param kind the kind of the last message (core.K_*), 0 or nil
-- @param msg the last message
-- @param from the caller ({ pid, tag }) if the last message was a call
-- @param modname the module's name
function M.report(mod, reason, state, kind, msg, from, modname)
  local status = { state = state, reason = reason, message = msg }
  if type(mod) == "table" and mod.format_status then
    local ok, st = pcall(mod.format_status, status)
    if ok and type(st) == "table" then status = st end
  end
  local me = core.self()
  local info = core.info(me) or {}
  local r = { kind = "crash", pid = me, name = info.name, module = modname,
              reason = status.reason, state = status.state }
  if type(reason) == "table" then
    r.error, r.traceback = reason.error, reason.traceback
  end
  if kind then
    r.message_kind = kind_names[kind] or "info"
    r.message = status.message
    if type(from) == "table" and from[1] then r.caller = from[1] end
  end
  local ok, sent = pcall(function() return require("genserver.logger").report(r) end)
  if not ok or sent == nil then print_report(r) end
end

return M
