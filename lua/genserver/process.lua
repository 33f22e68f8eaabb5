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
M.self = core.self

--- Starts a process running `fn(...)`. `fn` is a function (copied into the
-- new state with its upvalues) or a module name (`require`d there; the
-- module returns a function, or a table with `main`).
-- @return pid
function M.spawn(fn, ...)
  return core.spawn(fn, nil, ...)
end

--- As `spawn`, linked to the caller.
function M.spawn_link(fn, ...)
  return core.spawn(fn, { link = true }, ...)
end

--- As `spawn`, monitored by the caller. @return pid, ref
function M.spawn_monitor(fn, ...)
  return core.spawn(fn, { monitor = true }, ...)
end

--- Sends `msg` to a pid or registered name. Returns true; a dead pid drops
-- the message silently; an unknown name raises an error.
M.send = core.send

--- `receive([timeout])` → the next message, or nil on time-out.
-- `receive(match_fn [, timeout])` → the first message for which
-- `match_fn(msg)` is true; the others stay queued in order.
M.receive = core.receive

--- Suspends the caller for `ms` milliseconds; messages stay queued.
M.sleep = core.sleep

--- Monitors a pid or name: a `{"DOWN", ref=, pid=, reason=}` message comes
-- when it ends ("noproc" at once if it is not alive). @return ref
M.monitor = core.monitor

--- Removes a monitor; with "flush", also drops its DOWN if already queued.
M.demonitor = core.demonitor

--- Links the caller and `pid` (both ways).
M.link = core.link

--- Removes a link.
M.unlink = core.unlink

--- Sets whether exit signals become `{"EXIT", pid=, reason=}` messages.
-- @return the previous setting
M.trap_exit = core.trap_exit

--- `exit(pid, reason)` sends an exit signal; `exit(reason)` ends the caller.
M.exit = core.exit

--- Registers `name` for `pid` (default: the caller). Raises if taken.
function M.register(name, pid)
  local ok, taken = core.register(name, pid)
  if not ok then
    error(("genserver.process.register: name %q is already registered to %s")
      :format(name, tostring(taken.already_started)), 2)
  end
  return true
end

--- Removes a name. @return true if it was registered
M.unregister = core.unregister

--- The pid registered as `name`, or nil.
M.whereis = core.whereis

--- The registered names.
M.registered = core.registered

--- Sends `msg` to `dest` (pid or name, resolved when it fires) after `ms`.
-- @return a timer reference for `cancel_timer`
M.send_after = core.send_after

--- Sends `msg` to `dest` (pid or name, resolved at each tick) every `ms`
-- (at least 1), until the timer is cancelled or `dest` is gone (a dead
-- pid, a name nobody holds). Ticks that come late are not made up.
---@param ms number the interval
---@param dest userdata|string pid or registered name
---@param msg any the message (encoded once, copied at each tick)
---@return userdata # a timer reference for `cancel_timer`
M.send_interval = core.send_interval

--- Cancels a timer. @return the ms that were left (to the next tick for
-- `send_interval`), or false if it already fired or was cancelled
M.cancel_timer = core.cancel_timer

--- A monotonic clock: milliseconds (a float) since an arbitrary point.
---@return number # ms
M.now = core.now

--- A new unique reference.
M.make_ref = core.make_ref

--- Whether `pid` is alive.
M.alive = core.alive

--- The pids of every live process.
M.list = core.list

--- What a process is doing, or nil when it is not alive:
-- `{ status = "waiting"|"runnable"|"running", mailbox (messages queued),
-- memory (bytes of its state), name, module, vsn (a gen_server's module
-- version), links = { pid… }, monitors = { pid… } (processes it
-- monitors), monitored_by = { pid… }, trap_exit, messages_in,
-- messages_out, reductions (gen_server callbacks run), current (the
-- callback running, if any), server (true for a gen_server), foreign,
-- overflowed, mailbox_limit, max_heap }`.
---@param pid userdata
---@return table|nil
M.info = core.info

--- True if `v` is a pid.
M.is_pid = core.is_pid

--- True if `v` is a reference.
M.is_ref = core.is_ref

return M
