--- genserver.runtime: the runtime itself (DESIGN.md §2.6).
-- @module genserver.runtime

local core = require "genserver.core"

local M = {}

--- Sets runtime options before the first process starts:
-- `workers` (default: the environment variable GENSERVER_WORKERS, else the
-- number of online CPUs), `max_processes`, `max_depth` and
-- `max_message_size` (codec limits), `budget` (messages per turn).
M.configure = core.configure

--- `{ workers, processes, foreign, run_queue, messages, spawned, started }`.
M.stats = core.stats

--- Stops every process (exit signal "shutdown", then "kill" after half of
-- `timeout` ms, default 5000) and joins the workers. Also runs by itself
-- when the program exits.
M.shutdown = core.shutdown

return M
