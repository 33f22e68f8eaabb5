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
M.configure = core.configure

--- `{ workers, processes, foreign, run_queue, messages, spawned, started }`.
M.stats = core.stats

--- Stops every process (exit signal "shutdown", then "kill" after half of
-- `timeout` ms, default 5000) and joins the workers. Also runs by itself
-- when the program exits.
M.shutdown = core.shutdown

return M
