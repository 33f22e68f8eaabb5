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

--- Prints a crash report to stderr (DESIGN §2.2: every crash is reported).
-- Called by the C loop with what it knows about the crash.
-- @param mod the callback module
-- @param reason the exit reason
-- @param state the server state (shown through mod.format_status if defined)
-- @param kind the kind of the last message (core.K_*), 0 or nil
-- @param msg the last message
-- @param from the caller ({ pid, ref }) if the last message was a call
-- @param modname the module's name
function M.report(mod, reason, state, kind, msg, from, modname)
  local describe = require("genserver").describe
  local status = { state = state, reason = reason, message = msg }
  if type(mod) == "table" and mod.format_status then
    local ok, st = pcall(mod.format_status, status)
    if ok and type(st) == "table" then status = st end
  end
  local me = core.self()
  local info = core.info(me) or {}
  local lines = {
    ("=CRASH REPORT==== server %s%s (module %s)"):format(tostring(me),
      info.name and (" named " .. ("%q"):format(info.name)) or "", tostring(modname)),
    "  reason: " .. describe(type(reason) == "table" and reason.error or reason),
  }
  if kind then
    local caller = type(from) == "table" and from[1] and (" from " .. tostring(from[1])) or ""
    lines[#lines + 1] = ("  last message: %s %s%s"):format(kind_names[kind] or "info",
      describe(status.message), caller)
  end
  lines[#lines + 1] = "  state: " .. describe(status.state)
  if type(reason) == "table" and type(reason.traceback) == "string" then
    lines[#lines + 1] = "  " .. reason.traceback:gsub("\n", "\n  ")
  end
  io.stderr:write(table.concat(lines, "\n"), "\n")
end

return M
