--- genserver.process: the process primitives (DESIGN.md §2.3).
--
-- Every function works from a server's callbacks, from a plain spawned
-- process and from the main script (a "foreign" process: its waits block
-- the OS thread). Times are milliseconds; "infinity" or math.huge means no
-- time-out.
-- @module genserver.process

local core = require "genserver.core"

local M = {}

--- The pid of the calling process.
-- @function self
---@return genserver.Pid pid
M.self = core.self --[[@as fun(): genserver.Pid]]

--- Starts a process running `fn(...)`. `fn` is a function (copied into the
-- new state with its upvalues) or a module name (`require`d there; the
-- module returns a function, or a table with `main`). The arguments are
-- copied. A value that cannot be sent raises an error naming its path.
---@param fn function|string the body, or a module name
---@param ... any the body's arguments
---@return genserver.Pid pid the new process
function M.spawn(fn, ...)
  return core.spawn(fn, nil, ...)
end

--- As `spawn`, linked to the caller.
---@param fn function|string the body, or a module name
---@param ... any the body's arguments
---@return genserver.Pid pid the new process
function M.spawn_link(fn, ...)
  return core.spawn(fn, { link = true }, ...)
end

--- As `spawn`, monitored by the caller.
---@param fn function|string the body, or a module name
---@param ... any the body's arguments
---@return genserver.Pid pid the new process
---@return userdata ref the monitor's reference
function M.spawn_monitor(fn, ...)
  return core.spawn(fn, { monitor = true }, ...)
end

--- Sends `msg` (copied) to a pid or registered name. A dead pid drops the
-- message silently; an unknown name raises an error.
-- @function send
---@param dest genserver.Server a pid or a registered name
---@param msg any the message
---@return boolean sent true, or false when a bounded mailbox (overflow "reject") refused it
M.send = core.send --[[@as fun(dest: genserver.Server, msg: any): boolean]]

--- `receive([timeout])` → the next message, or nil on time-out.
-- `receive(match_fn [, timeout])` → the first message for which
-- `match_fn(msg)` is true; the others stay queued in order.
-- @function receive
---@param match_or_timeout (fun(msg: any): boolean)|genserver.Timeout|nil a match function, or the time-out
---@param timeout genserver.Timeout? ms (default "infinity") when the first argument is a match function
---@return any msg the message, or nil on time-out
M.receive = core.receive --[[@as fun(match_or_timeout?: (fun(msg: any): boolean)|genserver.Timeout, timeout?: genserver.Timeout): any]]

--- Suspends the caller for `ms` milliseconds; messages stay queued.
-- @function sleep
---@param ms number milliseconds
M.sleep = core.sleep --[[@as fun(ms: number)]]

--- Monitors a pid or name: a `{"DOWN", ref=, pid=, reason=}` message comes
-- when it ends ("noproc" at once if it is not alive).
-- @function monitor
---@param server genserver.Server a pid or a registered name
---@return userdata ref the monitor's reference
M.monitor = core.monitor --[[@as fun(server: genserver.Server): userdata]]

--- Removes a monitor; with "flush", also drops its DOWN if already queued.
-- @function demonitor
---@param ref userdata from `monitor`
---@param flush "flush"? also drop a DOWN already in the mailbox
---@return boolean
M.demonitor = core.demonitor --[[@as fun(ref: userdata, flush?: "flush"): boolean]]

--- Links the caller and `pid` (both ways). A dead pid raises a `noproc`
-- error, or sends an EXIT message when the caller traps exits.
-- @function link
---@param pid genserver.Pid the process to link to
---@return boolean
M.link = core.link --[[@as fun(pid: genserver.Pid): boolean]]

--- Removes a link.
-- @function unlink
---@param pid genserver.Pid the linked process
---@return boolean
M.unlink = core.unlink --[[@as fun(pid: genserver.Pid): boolean]]

--- Sets whether exit signals become `{"EXIT", pid=, reason=}` messages.
-- @function trap_exit
---@param on boolean trap exits or not
---@return boolean old the previous setting
M.trap_exit = core.trap_exit --[[@as fun(on: boolean): boolean]]

--- `exit(pid, reason)` sends an exit signal (reason "kill" cannot be
-- trapped); `exit(reason)` ends the caller.
-- @function exit
---@param pid_or_reason genserver.Pid|any the target, or the caller's own exit reason
---@param reason any? the exit reason, when a pid is given
---@return boolean? sent true after sending a signal (`exit(reason)` does not return)
M.exit = core.exit --[[@as fun(pid_or_reason: any, reason?: any): boolean?]]

--- Registers `name` for `pid` (default: the caller). Raises if taken.
---@param name string the name
---@param pid genserver.Pid? the process (default: the caller)
---@return boolean true
function M.register(name, pid)
  local ok, taken = core.register(name, pid)
  if not ok then
    error(("genserver.process.register: name %q is already registered to %s")
      :format(name, tostring(taken.already_started)), 2)
  end
  return true
end

--- Removes a name.
-- @function unregister
---@param name string the name
---@return boolean was true if it was registered
M.unregister = core.unregister --[[@as fun(name: string): boolean]]

--- The pid registered as `name`, or nil.
-- @function whereis
---@param name string the name
---@return genserver.Pid? pid
M.whereis = core.whereis --[[@as fun(name: string): genserver.Pid?]]

--- The registered names.
-- @function registered
---@return string[] names
M.registered = core.registered --[[@as fun(): string[] ]]

--- Sends `msg` to `dest` (pid or name, resolved when it fires) after `ms`.
-- @function send_after
---@param ms number milliseconds
---@param dest genserver.Server a pid or a registered name
---@param msg any the message (copied now)
---@return userdata tref a timer reference for `cancel_timer`
M.send_after = core.send_after --[[@as fun(ms: number, dest: genserver.Server, msg: any): userdata]]

--- Sends `msg` to `dest` (pid or name, resolved at each tick) every `ms`
-- (at least 1), until the timer is cancelled or `dest` is gone (a dead
-- pid, a name nobody holds). Ticks that come late are not made up.
-- @function send_interval
---@param ms number the interval
---@param dest genserver.Server pid or registered name
---@param msg any the message (encoded once, copied at each tick)
---@return userdata tref a timer reference for `cancel_timer`
M.send_interval = core.send_interval --[[@as fun(ms: number, dest: genserver.Server, msg: any): userdata]]

--- Cancels a timer.
-- @function cancel_timer
---@param tref userdata from `send_after` or `send_interval`
---@return number|false left the ms that were left (to the next tick for `send_interval`), or false if it already fired or was cancelled
M.cancel_timer = core.cancel_timer --[[@as fun(tref: userdata): number|false]]

--- A monotonic clock: milliseconds (a float) since an arbitrary point.
-- @function now
---@return number ms
M.now = core.now --[[@as fun(): number]]

--- A new unique reference.
-- @function make_ref
---@return userdata ref
M.make_ref = core.make_ref --[[@as fun(): userdata]]

--- Whether `pid` is alive.
-- @function alive
---@param pid genserver.Pid the process
---@return boolean
M.alive = core.alive --[[@as fun(pid: genserver.Pid): boolean]]

--- The pids of every live process.
-- @function list
---@return genserver.Pid[] pids
M.list = core.list --[[@as fun(): genserver.Pid[] ]]

--- What a process is doing, or nil when it is not alive:
-- `{ status = "waiting"|"runnable"|"running", mailbox (messages queued),
-- memory (bytes of its state), name, module, vsn (a gen_server's module
-- version), links = { pid… }, monitors = { pid… } (processes it
-- monitors), monitored_by = { pid… }, trap_exit, messages_in,
-- messages_out, reductions (gen_server callbacks run), current (the
-- callback running, if any), server (true for a gen_server), foreign,
-- overflowed, mailbox_limit, max_heap }`.
-- @function info
---@param pid genserver.Pid the process
---@return table? info
M.info = core.info --[[@as fun(pid: genserver.Pid): table?]]

--- True if `v` is a pid.
-- @function is_pid
---@param v any
---@return boolean
M.is_pid = core.is_pid --[[@as fun(v: any): boolean]]

--- True if `v` is a reference.
-- @function is_ref
---@param v any
---@return boolean
M.is_ref = core.is_ref --[[@as fun(v: any): boolean]]

return M
