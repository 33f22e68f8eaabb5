--- genserver: OTP-style generic servers for Lua 5.4.
--
-- A server is a process with its own Lua state running a callback module
-- (a table with `init`, `handle_call`, `handle_cast`, `handle_info`,
-- `handle_continue`, `terminate`). See DESIGN.md §2.1–2.2.
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

local type, tostring, error, select = type, tostring, error, select
local setmetatable, getmetatable, pairs = setmetatable, getmetatable, pairs
local ccall, cwait, crequest = core.call, core.wait, core.request

-- ------------------------------------------------------------- errors

local error_mt = core.error_mt()

--- A short, readable rendering of a value for error messages.
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

--- Builds a genserver error (a table with a shared metatable).
-- @param op "call" | "stop" | "start" | ...
local function gs_error(op, server, reason, request, timeout)
  return setmetatable({ op = op, server = server, reason = reason,
                        request = request, timeout = timeout }, error_mt)
end

--- True when `v` is an error raised by genserver (`call`, `stop`, ...).
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
-- @param mod module name (required in the new state) or callback table (copied)
-- @param arg passed to `init`
-- @param opts `{ name =, timeout = 5000, hibernate_after = ms,
--   mailbox_limit = n, overflow = "drop" | "reject" | "kill", trap_exit = bool,
--   max_heap = bytes, sandbox = bool, debug = { "trace" | "log" |
--   "statistics" ... } (genserver.sys options from the start),
--   fail_alloc = n }` (fail_alloc is for
--   tests: the n-th allocation in the server's state fails, see
--   spec/oom_spec.lua)
-- @return pid, or nil and a reason
function M.start(mod, arg, opts)
  return do_start("start", mod, arg, opts, false, false)
end

--- As `start`, and links the new server to the caller.
function M.start_link(mod, arg, opts)
  return do_start("start_link", mod, arg, opts, true, false)
end

--- As `start`, and monitors the new server: returns pid, monitor ref.
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
-- server's exit reason.
-- @param server pid or registered name
-- @param timeout ms (default 5000) or "infinity"
function M.call(server, request, timeout)
  local ok, v, reason = ccall(server, request, timeout)
  if ok then return v end
  return fail("call", server, v, reason, request, timeout or 5000)
end

--- Sends an asynchronous request. Returns true (even if the server does
-- not exist), or false when a bounded mailbox (overflow "reject") refused it.
function M.cast(server, msg)
  return core.cast(server, msg)
end

--- Replies to a call from `handle_call` (after returning "noreply").
function M.reply(from, value)
  return core.reply(from, value)
end

--- Deep comparison of plain data (exit reasons come back as copies).
local function same(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

--- Stops a server: it runs `terminate(reason, state)` and exits.
-- Raises `noproc` if it does not exist, `timeout` if it takes too long.
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

--- Sends a request without waiting. Returns a request id for
-- `wait_response`, `receive_response` or `check_response`.
function M.send_request(server, request)
  return crequest(server, request)
end

local function response(ok, kind, reason)
  if ok then return true, kind end
  if kind == "down" then return false, reason end
  return false, kind
end

--- Waits for the reply to `req`: `true, reply` or `false, reason`.
-- On "timeout" the request stays pending.
function M.wait_response(req, timeout)
  return response(cwait(req, timeout or "infinity", false))
end

--- As `wait_response`, but a timeout abandons the request (its late reply is dropped).
function M.receive_response(req, timeout)
  return response(cwait(req, timeout or "infinity", true))
end

--- In `handle_info`: tells whether `msg` answers `req`.
-- @return "reply", value | "error", reason | "no_reply"
function M.check_response(msg, req)
  if type(msg) == "table" then
    if msg[1] == "$reply" and msg[2] == req then return "reply", msg[3] end
    if msg[1] == "DOWN" and msg.ref == req then return "error", msg.reason end
  end
  return "no_reply"
end

M.self = core.self
M.whereis = core.whereis

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
