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
---@field debug string[]? genserver.sys options from the start: "trace", "statistics", "log"
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
local next, rawget = next, rawget
local ccall, cwait, crequest = core.call, core.wait, core.request

-- ------------------------------------------------------------- errors

local error_mt = core.error_mt()
local reason_mt = core.reason_mt() -- readable table reasons (lgenserver.c)

-- what an error message quotes of a string or a tostring() at most
local QUOTE_MAX = 200

-- and of an error message (a module's search list is worth reading)
local MESSAGE_MAX = 4096

local function bound(s, max)
  max = max or QUOTE_MAX
  if #s <= max then return s end
  return s:sub(1, max) .. ("...(%d bytes)"):format(#s)
end

-- A short, readable rendering of a value for error messages. Long
-- strings are cut (an error never quotes megabytes), big tables elided.
local function describe(v, depth)
  depth = depth or 0
  local t = type(v)
  if t == "string" then
    if #v <= QUOTE_MAX then return ("%q"):format(v) end
    return ("%q"):format(v:sub(1, QUOTE_MAX)) .. ("...(%d bytes)"):format(#v)
  end
  local mt = getmetatable(v)
  if t ~= "table" or (mt and mt ~= reason_mt) then return bound(tostring(v)) end
  if depth > 2 then return "{...}" end
  local parts, n = {}, 0
  for k, x in next, v do
    n = n + 1
    if n > 6 then parts[#parts + 1] = "..." break end
    local key = (type(k) == "string" and #k <= QUOTE_MAX and k:match("^[%a_][%w_]*$")) and k
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

-- A crash's error and traceback as text: the traceback's first line
-- repeats the error's (lserver.c heads it so), shown once.
local function crash_text(err, tb)
  local s = type(err) == "string" and bound(err, MESSAGE_MAX) or describe(err)
  if type(tb) == "string" then
    local first = type(err) == "string" and err:match("^[^\n]*") or nil
    if first and tb:sub(1, #first + 1) == first .. "\n" then tb = tb:sub(#first + 2) end
    s = s .. "\n" .. tb
  end
  return s
end

--- A reason (an exit reason, `start`'s `nil, reason`, a call error's
-- reason) as readable text: what `tostring` gives for the table reasons
-- genserver returns (they carry a metatable for it).
---@param r any the reason
---@return string
function M.format_reason(r)
  if type(r) == "string" then return bound(r, MESSAGE_MAX) end
  if type(r) ~= "table" then return describe(r) end
  local brv = rawget(r, "bad_return_value")
  if brv ~= nil then
    local vals = {}
    if type(brv) == "table" then
      local n = 0
      for k in next, brv do if math.type(k) == "integer" and k > n then n = k end end
      for i = 1, n do vals[i] = describe(brv[i]) end
    end
    return ("bad return value from %s: %s (expected %s)"):format(
      tostring(rawget(r, "callback") or "a callback"),
      #vals > 0 and table.concat(vals, ", ") or "nothing",
      tostring(rawget(r, "expected") or "a documented return shape"))
  end
  if rawget(r, "error") ~= nil or rawget(r, "traceback") ~= nil then
    return "error: " .. crash_text(rawget(r, "error"), rawget(r, "traceback"))
  end
  local started = rawget(r, "already_started")
  if started ~= nil then return "already started: " .. tostring(started) end
  local heap = rawget(r, "max_heap")
  if heap ~= nil then
    return ("max_heap: the process grew past %s bytes"):format(tostring(heap))
  end
  return describe(r)
end

-- Gives a table reason that has no metatable the readable one.
local function readable(r)
  if type(r) == "table" and getmetatable(r) == nil then setmetatable(r, reason_mt) end
  return r
end

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
    end
    return ("%s: server crashed: %s"):format(head, crash_text(inner, r.traceback))
  end
  if type(r) == "string" then return head .. ": " .. bound(r, MESSAGE_MAX) end
  return head .. ": " .. M.format_reason(r)
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

-- ms >= 0 (math.huge included) or "infinity"
local function is_timeout(v)
  return v == "infinity" or (type(v) == "number" and v >= 0)
end

local function is_posint(v)
  return math.type(v) == "integer" and v >= 1
end

local DEBUG_FLAGS = { trace = true, statistics = true, log = true }

-- Every option `start` takes: a check and what it expects.
local OPTIONS = {
  name = { function(v) return type(v) == "string" and v ~= "" end, "a non-empty string" },
  timeout = { is_timeout, 'ms (a number >= 0) or "infinity"' },
  hibernate_after = { is_timeout, 'ms (a number >= 0) or "infinity"' },
  trap_exit = { function(v) return type(v) == "boolean" end, "a boolean" },
  mailbox_limit = { is_posint, "a positive integer" },
  overflow = { function(v) return v == "drop" or v == "reject" or v == "kill" end,
               '"drop", "reject" or "kill"' },
  max_heap = { is_posint, "a positive integer (bytes)" },
  sandbox = { function(v) return type(v) == "boolean" end, "a boolean" },
  debug = { function(v)
    if type(v) ~= "table" or getmetatable(v) ~= nil then return false end
    local n = 0
    for _ in next, v do n = n + 1 end
    if n ~= #v then return false end
    for i = 1, n do if not DEBUG_FLAGS[v[i]] then return false end end
    return true
  end, 'a list of "trace", "statistics" and "log"' },
  fail_alloc = { is_posint, "a positive integer" }, -- tests: see spec/oom_spec.lua
}

-- The known option closest to a misspelt one (at most two edits away).
local function closest(key)
  local best, best_d
  for k in next, OPTIONS do
    local a, b = key, k
    local prev = {}
    for j = 0, #b do prev[j] = j end
    for i = 1, #a do
      local cur = { [0] = i }
      for j = 1, #b do
        local cost = a:byte(i) == b:byte(j) and 0 or 1
        cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
      end
      prev = cur
    end
    local d = prev[#b]
    if d <= 2 and (best_d == nil or d < best_d or (d == best_d and k < best)) then
      best, best_d = k, d
    end
  end
  return best
end

--- Checks `start`'s options: nil, or an error message that names the
-- first bad option (unknown key or wrong type). The supervisor checks
-- child specs with it too.
---@param opts genserver.StartOptions? the options
---@return string? bad what is wrong, or nil
function M.check_options(opts)
  if opts == nil then return nil end
  if type(opts) ~= "table" then return "opts must be a table, got " .. describe(opts) end
  for k, v in next, opts do
    local o = OPTIONS[k]
    if o == nil then
      local s = "unknown option " .. describe(k)
      local near = type(k) == "string" and #k <= 64 and closest(k)
      if near then s = s .. (' (did you mean "%s"?)'):format(near) end
      return s
    end
    if not o[1](v) then
      return ('option "%s" must be %s, got %s'):format(k, o[2], describe(v))
    end
  end
  if opts.overflow ~= nil and opts.mailbox_limit == nil then
    return 'option "overflow" needs option "mailbox_limit"'
  end
  return nil
end

-- Raises (blaming the caller of start) for bad options, before any
-- process is made.
local function check_opts(opts, fname)
  local bad = M.check_options(opts)
  if bad then error(("genserver.%s: %s"):format(fname, bad), 3) end
  return opts or {}
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
  if type(mod) == "string" and (#mod == 0 or #mod > 1024) then
    -- require's error would quote a huge name once per path tried
    error(("genserver.%s: a module name is 1 to 1024 bytes, got %d"):format(fname, #mod), 3)
  end
  opts = check_opts(opts, fname)
  local hib = opts.hibernate_after
  if hib == "infinity" or hib == math.huge then hib = nil end
  local send_opts -- nil when empty: an empty table would cost each server's state
  if opts.name ~= nil or hib ~= nil or opts.trap_exit ~= nil or opts.debug ~= nil then
    send_opts = { name = opts.name, hibernate_after = hib,
                  trap_exit = opts.trap_exit, debug = opts.debug }
  end
  local o, ml = opts.overflow, opts.mailbox_limit
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
    -- init failed: the server released its name before answering, and
    -- is ending; a monitor asked for leaves no DOWN behind (DESIGN 1.5)
    if mref then core.demonitor(mref, "flush") end
    if tag == "ignore" then return nil, "ignore" end
    return nil, readable(ack[2])
  end
  if mref then core.demonitor(mref, "flush") end
  if ack == "down" then return nil, readable(reason) end
  -- init took too long: kill the half-started server and wait for its end,
  -- so that its name is free when we return
  local down = core.monitor(pid)
  core.exit(pid, "kill")
  core.receive(function(m)
    return type(m) == "table" and m[1] == "DOWN" and m.ref == down
  end)
  cwait(ref, 0, true)
  if mref then core.demonitor(mref, "flush") end
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
-- @function call
---@param server genserver.Server pid or registered name
---@param request any the request (copied), handle_call's first argument
---@param timeout genserver.Timeout? ms (default 5000) or "infinity"
---@return any reply the server's reply
M.call = ccall --[[@as fun(server: genserver.Server, request: any, timeout: genserver.Timeout?): any]]

-- core.call returns the reply, and raises through this handler only when
-- the call fails: so genserver.call is core.call itself, no Lua wrapper
-- on the way of every call. kind: "noproc", "calling_self", "timeout",
-- "down" (reason: the server's exit reason) or a refusal's reason.
core.on_call_error(function(server, kind, reason, request, timeout)
  return fail("call", server, kind, reason, request, timeout or 5000)
end)

--- Sends an asynchronous request (handle_cast runs). Never raises
-- for a server that does not exist. It is `core.cast` itself (no Lua
-- wrapper: one call less per cast).
-- @function cast
---@param server genserver.Server pid or registered name
---@param msg any the message (copied)
---@return boolean sent true (even if the server does not exist), or false when a bounded mailbox (overflow "reject") refused it
M.cast = core.cast --[[@as fun(server: genserver.Server, msg: any): boolean]]

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
  if type(server) ~= "string" and not core.is_pid(server) then
    error(("bad argument #1 to 'genserver.stop' (pid or registered name expected, got %s)")
      :format(type(server)), 2)
  end
  local pid = server
  if type(server) == "string" then pid = core.whereis(server) end
  if pid == nil then return fail("stop", server, "noproc") end
  if pid == core.self() then return fail("stop", server, "calling_self") end
  local ref = crequest(pid, reason, "stop") -- { "stop", reason }, made in C (gen.c)
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
