--- genserver: OTP-style generic servers for Lua 5.4.
--
-- A server is a process with its own Lua state running a callback module
-- (a table with `init`, `handle_call`, `handle_cast`, `handle_info`,
-- `handle_continue`, `terminate`): what each callback may return is in
-- the callback contract (docs/callbacks.md in the source and the rock).
--
--     local gs = require "genserver"
--     local pid = gs.start("myapp.counter", 0)
--     gs.cast(pid, { "add", 5 })
--     print(gs.call(pid, "get"))   --> 5
--
-- @module genserver

local core = require "genserver.core"

local M = {}

--- The version of genserver, "MAJOR.MINOR.PATCH" (the C API's GS_VERSION_*).
M._VERSION = "0.1.0"

-- The callback module (a LuaLS class, for editors; the contract is
-- docs/callbacks.md). Every callback is optional.
---@class genserver.Callbacks
---@field name string? the module's label in crash reports and process.info
---@field init (fun(arg: any): ("ok"|"ignore"|"stop"|"error"), any?, any?)? returns "ok", state [, action] | "ignore" | "stop", reason | "error", reason
---@field handle_call (fun(request: any, from: genserver.From, state: any): string, any?, any?, any?)? returns "reply", reply, state [, action] | "noreply", state [, action] | "stop", reason, reply, state | "stop", reason, state
---@field handle_cast (fun(msg: any, state: any): string, any?, any?)? returns "noreply", state [, action] | "stop", reason, state
---@field handle_info (fun(msg: any, state: any): string, any?, any?)? returns "noreply", state [, action] | "stop", reason, state
---@field handle_continue (fun(value: any, state: any): string, any?, any?)? returns "noreply", state [, action] | "stop", reason, state
---@field terminate (fun(reason: any, state: any))? runs when the server stops; returns nothing
---@field code_change (fun(old_vsn: any, state: any, extra: any): string, any)? returns "ok", state | "error", reason
---@field format_status (fun(status: table): table)? the status to show in reports (redact secrets)

-- `from` in handle_call: { caller_pid, tag } (a LuaLS class).
---@class genserver.From
---@field [1] genserver.Pid the caller
---@field [2] integer the call's tag

-- A pid (a LuaLS alias): a userdata; tostring gives "<0.INDEX.GEN>".
---@alias genserver.Pid userdata
-- A server: a pid or a registered name (a LuaLS alias).
---@alias genserver.Server genserver.Pid|string
-- Milliseconds, or "infinity" / math.huge (a LuaLS alias).
---@alias genserver.Timeout number|"infinity"

-- The options of start, start_link and start_monitor (a LuaLS class).
---@class genserver.StartOptions
---@field name string? register the server under this name (before init runs)
---@field timeout genserver.Timeout? ms to wait for init (default 5000); the half-started server is killed
---@field hibernate_after integer? ms idle before a full GC of the server's state
---@field trap_exit boolean? the server traps exits (an EXIT from its parent ends it, terminate runs)
---@field mailbox_limit integer? bound the mailbox to this many messages
---@field overflow ("drop"|"reject"|"kill")? what a full bounded mailbox does (default "drop")
---@field max_heap integer? bytes the server's state may use; past it the server exits with { max_heap = bytes }
---@field sandbox boolean? no io, os, debug, package.loadlib or C modules; the module must be given by name
---@field fail_alloc integer? for tests: the n-th allocation in the server's state fails

-- The error call and stop raise (a LuaLS class); genserver.is_error tells it.
---@class genserver.Error
---@field reason any "timeout" | "noproc" | "calling_self" | "mailbox_full" | the server's exit reason
---@field op string "call" | "stop" | ...
---@field server genserver.Server what was called
---@field request any the request, for a call
---@field timeout genserver.Timeout? the time-out, for a "timeout"

local type, tostring, error, select = type, tostring, error, select
local setmetatable, getmetatable, pairs = setmetatable, getmetatable, pairs
local ccall, cwait, crequest = core.call, core.wait, core.request

-- ------------------------------------------------------------- errors

local error_mt = core.error_mt()

-- A short, readable rendering of a value for error messages.
local function describe(v, depth)
  depth = depth or 0
  local t = type(v)
  if t == "string" then return ("%q"):format(v) end
  if t ~= "table" or getmetatable(v) then return tostring(v) end
  if depth > 2 then return "{...}" end
  local parts, n = {}, 0
  for k, x in pairs(v) do
    n = n + 1
    if n > 6 then parts[#parts + 1] = "..." break end
    local key = (type(k) == "string" and k:match("^[%a_][%w_]*$")) and k
      or ("[" .. describe(k, depth + 1) .. "]")
    if type(k) == "number" and k == n then
      parts[#parts + 1] = describe(x, depth + 1)
    else
      parts[#parts + 1] = key .. " = " .. describe(x, depth + 1)
    end
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end
--- A short, readable rendering of a value (tables as constructors, cut
-- short when long or deep), as error messages and reports show values.
-- @function describe
---@param v any the value
---@return string text
M.describe = describe

error_mt.__name = "genserver.error"
error_mt.__tostring = function(e)
  local head = ("genserver.%s(%s"):format(e.op or "call", tostring(e.server))
  if e.request ~= nil then head = head .. ", " .. describe(e.request) end
  head = head .. ")"
  local r = e.reason
  if r == "timeout" and e.timeout then
    return ("%s: timeout after %s ms"):format(head, tostring(e.timeout))
  end
  if type(r) == "table" and r.error ~= nil then
    local inner = r.error
    if type(inner) == "table" and getmetatable(inner) == nil and inner.op and inner.reason ~= nil then
      inner = tostring(setmetatable(inner, error_mt)) -- a genserver error that crossed
    elseif type(inner) ~= "string" then
      inner = describe(inner)
    end
    local s = ("%s: server crashed: %s"):format(head, inner)
    if r.traceback then s = s .. "\n" .. r.traceback end
    return s
  end
  if type(r) == "string" then return head .. ": " .. r end
  return head .. ": " .. describe(r)
end

-- Builds a genserver error (a table with a shared metatable).
-- op: "call" | "stop" | "start" | ...
local function gs_error(op, server, reason, request, timeout)
  return setmetatable({ op = op, server = server, reason = reason,
                        request = request, timeout = timeout }, error_mt)
end

--- True when `v` is an error raised by genserver (`call`, `stop`, ...).
---@param v any an error value (from pcall)
---@return boolean
function M.is_error(v)
  return getmetatable(v) == error_mt
end

-- ------------------------------------------------------------ starting

local function check_opts(opts, fname)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("genserver.%s: opts must be a table"):format(fname), 3)
  end
  if opts.name ~= nil and type(opts.name) ~= "string" then
    error(("genserver.%s: opts.name must be a string"):format(fname), 3)
  end
  local t = opts.timeout
  if t ~= nil and t ~= "infinity" and (type(t) ~= "number" or t < 0) then
    error(("genserver.%s: opts.timeout must be ms or \"infinity\""):format(fname), 3)
  end
  return opts
end

local function module_label(mod)
  if type(mod) == "string" then return mod end
  return type(mod.name) == "string" and mod.name or "(table)"
end

-- how encoding errors name the values `start` sends to the new server
local start_arg_names = { "module", "arg", "opts" }

local function do_start(fname, mod, arg, opts, link, monitor)
  if type(mod) ~= "string" and type(mod) ~= "table" then
    error(("genserver.%s: module must be a module name or a table"):format(fname), 3)
  end
  opts = check_opts(opts, fname)
  local send_opts -- nil when empty: an empty table would cost each server's state
  if opts.name ~= nil or opts.hibernate_after ~= nil or opts.trap_exit ~= nil
     or opts.debug ~= nil then
    send_opts = { name = opts.name, hibernate_after = opts.hibernate_after,
                  trap_exit = opts.trap_exit, debug = opts.debug }
  end
  local o = opts.overflow
  if o ~= nil and o ~= "drop" and o ~= "reject" and o ~= "kill" then
    error(("genserver.%s: opts.overflow must be \"drop\", \"reject\" or \"kill\""):format(fname), 2)
  end
  local ml = opts.mailbox_limit
  if ml ~= nil and (math.type(ml) ~= "integer" or ml < 1) then
    error(("genserver.%s: opts.mailbox_limit must be a positive integer"):format(fname), 2)
  end
  local ref = core.make_ref()
  local pid, mref = core.spawn(core.serve,
    { link = link, monitor = monitor, request = ref, module = module_label(mod),
      names = start_arg_names, mailbox_limit = ml, overflow = o,
      max_heap = opts.max_heap, sandbox = opts.sandbox, fail_alloc = opts.fail_alloc },
    mod, arg, send_opts) -- init's outcome answers `ref` (core.serve, lserver.c)
  local ok, ack, reason = cwait(ref, opts.timeout or 5000, false)
  if ok then
    local tag = ack[1]
    if tag == "ok" then return pid, mref end
    if tag == "ignore" then return nil, "ignore" end
    return nil, ack[2] -- the server released its name before answering
  end
  if ack == "down" then return nil, reason end
  -- init took too long: kill the half-started server and wait for its end,
  -- so that its name is free when we return
  local down = core.monitor(pid)
  core.exit(pid, "kill")
  core.receive(function(m)
    return type(m) == "table" and m[1] == "DOWN" and m.ref == down
  end)
  cwait(ref, 0, true)
  return nil, "timeout"
end

--- Starts a server. Returns after `init` has returned.
-- `opts` is `{ name =, timeout = 5000, hibernate_after = ms,
-- mailbox_limit = n, overflow = "drop" | "reject" | "kill", trap_exit = bool,
-- max_heap = bytes, sandbox = bool, debug = { "trace" | "log" |
-- "statistics" ... } (genserver.sys options from the start), fail_alloc = n }`
-- (fail_alloc is for tests: the n-th allocation in the server's state
-- fails). An unknown option or a wrong type raises an error that names it.
---@param mod string|genserver.Callbacks module name (required in the new state) or callback table (copied)
---@param arg any passed to `init`
---@param opts genserver.StartOptions? the options
---@return genserver.Pid? pid the new server, or nil
---@return any reason when it did not start: "ignore", "timeout", { already_started = pid }, init's reason or crash
function M.start(mod, arg, opts)
  return do_start("start", mod, arg, opts, false, false)
end

--- As `start`, and links the new server to the caller.
---@param mod string|genserver.Callbacks module name or callback table
---@param arg any passed to `init`
---@param opts genserver.StartOptions? the options
---@return genserver.Pid? pid the new server, or nil
---@return any reason when it did not start
function M.start_link(mod, arg, opts)
  return do_start("start_link", mod, arg, opts, true, false)
end

--- As `start`, and monitors the new server. If `init` fails, no DOWN
-- message is left behind.
---@param mod string|genserver.Callbacks module name or callback table
---@param arg any passed to `init`
---@param opts genserver.StartOptions? the options
---@return genserver.Pid|nil pid the new server, or nil
---@return any ref the monitor's ref, or the reason it did not start
function M.start_monitor(mod, arg, opts)
  return do_start("start_monitor", mod, arg, opts, false, true)
end

-- ------------------------------------------------------------- clients

local function fail(op, server, kind, reason, request, timeout)
  if kind == "down" then kind = reason end
  if kind ~= "timeout" then timeout = nil end
  error(gs_error(op, server, kind, request, timeout), 3)
end

--- Calls a server and waits for its reply. Raises a genserver error on
-- failure: reason `"timeout"`, `"noproc"`, `"calling_self"`,
-- `"mailbox_full"` (a bounded mailbox with overflow "reject") or the
-- server's exit reason. A reply that comes after a time-out is dropped.
---@param server genserver.Server pid or registered name
---@param request any the request (copied), handle_call's first argument
---@param timeout genserver.Timeout? ms (default 5000) or "infinity"
---@return any reply the server's reply
function M.call(server, request, timeout)
  local ok, v, reason = ccall(server, request, timeout)
  if ok then return v end
  return fail("call", server, v, reason, request, timeout or 5000)
end

--- Sends an asynchronous request (handle_cast runs). Never raises.
---@param server genserver.Server pid or registered name
---@param msg any the message (copied)
---@return boolean sent true (even if the server does not exist), or false when a bounded mailbox (overflow "reject") refused it
function M.cast(server, msg)
  return core.cast(server, msg)
end

--- Replies to a call: from `handle_call` after returning "noreply", or
-- from any process that was given `from`.
---@param from genserver.From handle_call's `from`
---@param value any the reply (copied)
---@return boolean true
function M.reply(from, value)
  return core.reply(from, value)
end

-- Deep comparison of plain data (exit reasons come back as copies).
local function same(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

--- Stops a server: it runs `terminate(reason, state)` and exits.
-- Raises a genserver error: `noproc` if it does not exist, `timeout` if it
-- takes too long, `calling_self` from the server itself.
---@param server genserver.Server pid or registered name
---@param reason any the exit reason (default "normal")
---@param timeout genserver.Timeout? ms (default "infinity")
---@return boolean true
function M.stop(server, reason, timeout)
  reason = reason == nil and "normal" or reason
  local pid = server
  if type(server) == "string" then pid = core.whereis(server) end
  if pid == nil then return fail("stop", server, "noproc") end
  if pid == core.self() then return fail("stop", server, "calling_self") end
  local ref = crequest(pid, { "stop", reason }, "system")
  local ok, kind, r = cwait(ref, timeout or "infinity", true)
  if ok then return true end
  if kind == "down" and same(r, reason) then return true end
  return fail("stop", server, kind, r, nil, timeout)
end

--- Sends a request without waiting (handle_call runs).
---@param server genserver.Server pid or registered name
---@param request any the request (copied)
---@return any req a request id for `wait_response`, `receive_response` or `check_response`
function M.send_request(server, request)
  return crequest(server, request)
end

local function response(ok, kind, reason)
  if ok then return true, kind end
  if kind == "down" then return false, reason end
  return false, kind
end

--- Waits for the reply to `req`. On "timeout" the request stays pending
-- (wait again later).
---@param req any from `send_request`
---@param timeout genserver.Timeout? ms (default "infinity")
---@return boolean ok true with the reply, false with a reason
---@return any reply_or_reason the reply, or "timeout", "noproc" or the server's exit reason
function M.wait_response(req, timeout)
  return response(cwait(req, timeout or "infinity", false))
end

--- As `wait_response`, but a timeout abandons the request (its late reply is dropped).
---@param req any from `send_request`
---@param timeout genserver.Timeout? ms (default "infinity")
---@return boolean ok true with the reply, false with a reason
---@return any reply_or_reason the reply, or "timeout", "noproc" or the server's exit reason
function M.receive_response(req, timeout)
  return response(cwait(req, timeout or "infinity", true))
end

--- In `handle_info`: tells whether `msg` answers `req`.
---@param msg any the message handle_info got
---@param req any from `send_request`
---@return string kind "reply" | "error" | "no_reply" (msg is not about req)
---@return any value the reply (for "reply") or the reason (for "error")
function M.check_response(msg, req)
  if type(msg) == "table" then
    if msg[1] == "$reply" and msg[2] == req then return "reply", msg[3] end
    if msg[1] == "DOWN" and msg.ref == req then return "error", msg.reason end
  end
  return "no_reply"
end

--- The pid of the calling process (as `process.self`).
-- @function self
---@return genserver.Pid
M.self = core.self --[[@as fun(): genserver.Pid]]

--- The pid registered as `name`, or nil (as `process.whereis`).
-- @function whereis
---@param name string a registered name
---@return genserver.Pid?
M.whereis = core.whereis --[[@as fun(name: string): genserver.Pid?]]

-- genserver.process, genserver.runtime, ... are also reachable as fields,
-- loaded on first use (a server's state need not load them).
local submodules = { process = true, runtime = true, supervisor = true, sys = true,
                     agent = true, task = true, code = true }
return setmetatable(M, { __index = function(t, k)
  if not submodules[k] then return nil end
  local mod = require("genserver." .. k)
  rawset(t, k, mod)
  return mod
end })
