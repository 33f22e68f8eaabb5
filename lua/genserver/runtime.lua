--- genserver.runtime: the runtime itself (DESIGN.md §2.6).
-- @module genserver.runtime

local core = require "genserver.core"

local M = {}

--- Sets runtime options: `workers` (default: the environment variable
-- GENSERVER_WORKERS, else the number of online CPUs) and `max_processes`
-- (alive at once, threads of the host included) before the first process
-- starts; `max_depth` and `max_message_size` (codec limits) and `budget`
-- (messages per turn) at any time. All or nothing: on an error nothing
-- changes. (The C API's gs_runtime_configure, on the default runtime.)
-- @function configure
---@param settings { workers: integer?, max_processes: integer?, max_depth: integer?, max_message_size: integer?, budget: integer? } the settings to change
---@return boolean true
M.configure = core.configure --[[@as fun(settings: table): boolean]]

--- The runtime's counters: `{ workers, processes, foreign, run_queue,
-- messages, spawned, started, abandoned_states }`. `abandoned_states`
-- counts the processes the runtime gave up on: killed but still running a
-- second later (a finalizer that loops: Lua runs finalizers with hooks off,
-- so nothing stops one), or whose state took longer than that to close
-- (finalizers, pending `<close>` handlers). Each one had already ended for
-- everyone else (DOWN, EXIT, name released); its thread was replaced as a
-- worker.
-- @function stats
---@return table stats
M.stats = core.stats --[[@as fun(): table]]

--- Stops every process the way its parent would (DESIGN.md §1.7): the
-- exit signal "shutdown" goes to processes whose parent is gone or is the
-- main script, supervisors first (newest first, each waited for), then the
-- others, the logger last; a server that traps exits runs
-- terminate("shutdown"). What is left after half of `timeout` ms (default
-- 5000) is killed; then the workers are joined. Also runs by itself when
-- the program exits.
-- @function shutdown
---@param timeout number? ms (default 5000)
M.shutdown = core.shutdown --[[@as fun(timeout?: number)]]

return M
