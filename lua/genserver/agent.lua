--- genserver.agent: a gen_server that holds one value (Elixir's Agent;
-- DESIGN.md §2.8).
--
--     local agent = require "genserver.agent"
--     local a = assert(agent.start(function() return { hits = 0 } end))
--     agent.update(a, function(v) v.hits = v.hits + 1 return v end)
--     print(agent.get(a, function(v) return v.hits end))   --> 1
--
-- Every `fn` crosses into the agent's process by value, with its upvalues
-- (DESIGN §1.4), and runs there: it gets the value only, and closes over
-- anything else it needs. An error in `fn` crashes the agent (as in
-- Elixir), and the caller's `get`/`update`/`get_and_update` raises the
-- genserver error `call` raises. The module is also the agent's callback
-- module (its `init`, `handle_call`, `handle_cast`), so an agent can be a
-- supervisor's child: `start = { "genserver.agent", fn }`.
-- @module genserver.agent

local gs = require "genserver"

local M = {}

local type, error = type, error

-- ------------------------------------------------------ callback module

--- @local
---@param fn function returns the initial value
---@return string, any
function M.init(fn)
  if type(fn) ~= "function" then return "stop", "genserver.agent: fn must be a function" end
  return "ok", fn()
end

--- @local
---@param req table { op, fn }
---@param _from genserver.From
---@param value any the agent's value
---@return string, any, any
function M.handle_call(req, _from, value)
  local op, fn = req[1], req[2]
  if op == "get" then return "reply", fn(value), value end
  if op == "update" then return "reply", true, fn(value) end
  if op == "get_and_update" then
    local reply, new = fn(value)
    return "reply", reply, new
  end
  return "reply", nil, value
end

--- @local
---@param req table { "cast", fn }
---@param value any the agent's value
---@return string, any
function M.handle_cast(req, value)
  if req[1] == "cast" then return "noreply", req[2](value) end
  return "noreply", value
end

-- ---------------------------------------------------------------- API

local function check_fn(fn, fname)
  if type(fn) ~= "function" then
    error(("genserver.agent.%s: fn must be a function"):format(fname), 3)
  end
end

--- Starts an agent whose value is `fn()` (run in the agent's process).
---@param fn function function() -> initial value
---@param opts table? as for `genserver.start` (name, timeout, ...)
---@return userdata|nil # pid, or nil and a reason
---@return any
function M.start(fn, opts)
  check_fn(fn, "start")
  return gs.start("genserver.agent", fn, opts)
end

--- As `start`, linked to the caller.
---@param fn function function() -> initial value
---@param opts table? as for `genserver.start`
---@return userdata|nil # pid, or nil and a reason
---@return any
function M.start_link(fn, opts)
  check_fn(fn, "start_link")
  return gs.start_link("genserver.agent", fn, opts)
end

--- `fn(value)`, computed in the agent.
---@param agent userdata|string pid or registered name
---@param fn function function(value) -> result
---@param timeout number|string? ms (default 5000) or "infinity"
---@return any # fn's result
function M.get(agent, fn, timeout)
  check_fn(fn, "get")
  return gs.call(agent, { "get", fn }, timeout)
end

--- Replaces the value with `fn(value)`.
---@param agent userdata|string pid or registered name
---@param fn function function(value) -> new value
---@param timeout number|string? ms (default 5000) or "infinity"
---@return boolean # true
function M.update(agent, fn, timeout)
  check_fn(fn, "update")
  return gs.call(agent, { "update", fn }, timeout)
end

--- Runs `fn(value)`, which returns `reply, new_value`: the value becomes
-- new_value and reply is returned.
---@param agent userdata|string pid or registered name
---@param fn function function(value) -> reply, new value
---@param timeout number|string? ms (default 5000) or "infinity"
---@return any # reply
function M.get_and_update(agent, fn, timeout)
  check_fn(fn, "get_and_update")
  return gs.call(agent, { "get_and_update", fn }, timeout)
end

--- Replaces the value with `fn(value)` without waiting.
---@param agent userdata|string pid or registered name
---@param fn function function(value) -> new value
---@return boolean # true (false when a bounded mailbox refused it)
function M.cast(agent, fn)
  check_fn(fn, "cast")
  return gs.cast(agent, { "cast", fn })
end

--- Stops the agent (as `genserver.stop`).
---@param agent userdata|string pid or registered name
---@param reason any? default "normal"
---@param timeout number|string? default "infinity"
---@return boolean # true
function M.stop(agent, reason, timeout)
  return gs.stop(agent, reason, timeout)
end

return M
