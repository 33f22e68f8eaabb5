--- genserver.task: run a function in a process of its own and collect its
-- results (Elixir's Task; DESIGN.md §2.9).
--
--     local task = require "genserver.task"
--     local t = task.async(function(a, b) return a + b end, 1, 2)
--     print(task.await(t))                       --> 3
--
--     for i, ok, v in task.async_stream({ 1, 2, 3 }, function(x) return x * x end,
--                                       { max_concurrency = 2 }) do
--       print(i, ok, v)                          --> 1 true 1, 2 true 4, 3 true 9
--     end
--
-- `fn` crosses into the task's process by value, with its upvalues (as
-- every function does, DESIGN §1.4). A task made by `async` is linked to
-- and monitored by the caller (its owner): if it crashes, the owner gets
-- its exit signal, as in Elixir (and dies of it unless it traps exits);
-- `async_nolink` only monitors, so a crash is a result. Only the owner may
-- await a task, and only once.
--
-- `start`/`start_link` are fire-and-forget tasks; under a supervisor, use
-- the module itself as the child's callback module:
-- `{ id = "job", start = { "genserver.task", { fn, arg1, ... } }, restart = "temporary" }`.
-- @module genserver.task

local core = require "genserver.core"

local M = {}

local type, error, select, setmetatable, pcall = type, error, select, setmetatable, pcall
local tpack, tunpack = table.pack, table.unpack
local spawn, receive, send = core.spawn, core.receive, core.send
local monitor, demonitor, unlink, exit = core.monitor, core.demonitor, core.unlink, core.exit

local task_mt = { __name = "genserver.task" }
task_mt.__index = task_mt
task_mt.__tostring = function(t) return "task " .. tostring(t.pid) end

-- The process body of a task: run fn(...), send the results to the owner
-- tagged with the task's ref. A crash ends the process with the crash
-- reason (the owner sees it through its monitor).
local function body(owner, tag, fn, ...)
  local res = tpack(fn(...))
  send(owner, { "$task", tag, res })
end

local function new_task(fn, link, ...)
  if type(fn) ~= "function" then error("genserver.task: fn must be a function", 3) end
  local tag = core.make_ref()
  local pid, mref = spawn(body, { link = link, monitor = true }, core.self(), tag, fn, ...)
  return setmetatable({ pid = pid, ref = mref, tag = tag, owner = core.self(),
                        linked = link }, task_mt)
end

--- Runs `fn(...)` in a new process linked to and monitored by the caller.
---@param fn function function (copied into the task's process with its upvalues)
---@param ... any its arguments (copied)
---@return table # the task: `{ pid = , ref = }` (pass it to await, yield, shutdown)
function M.async(fn, ...)
  return new_task(fn, true, ...)
end

--- As `async`, but only monitored: a crash of the task is a result (`yield`
-- gives `false, reason`, `await` raises), never an exit signal.
---@param fn function function
---@param ... any its arguments
---@return table # the task
function M.async_nolink(fn, ...)
  return new_task(fn, false, ...)
end

local function check_task(t, fname)
  if getmetatable(t) ~= task_mt then
    error(("genserver.task.%s: not a task"):format(fname), 3)
  end
  if t.owner ~= core.self() then
    error(("genserver.task.%s: the task belongs to another process (%s)")
      :format(fname, tostring(t.owner)), 3)
  end
  if t.done then
    error(("genserver.task.%s: the task was already awaited"):format(fname), 3)
  end
end

local function check_timeout(t, fname, allow_brutal)
  if t == nil then return 5000 end
  if t == "infinity" or (type(t) == "number" and t >= 0) then return t end
  if allow_brutal and t == "brutal_kill" then return t end
  error(("genserver.task.%s: timeout must be ms or \"infinity\"%s")
    :format(fname, allow_brutal and ' or "brutal_kill"' or ""), 3)
end

-- Matches the answer of task t: its results or its DOWN.
local function matcher(t)
  local tag, ref = t.tag, t.ref
  return function(m)
    return type(m) == "table" and ((m[1] == "$task" and m[2] == tag)
      or (m[1] == "DOWN" and m.ref == ref))
  end
end

-- What an answer message means: true, results (table) | false, reason.
local function outcome(t, m)
  t.done = true
  if m[1] == "$task" then
    demonitor(t.ref, "flush")
    return true, m[3]
  end
  return false, m.reason
end

local function await_error(t, reason, timeout)
  return setmetatable({ op = "await", server = t.pid, reason = reason,
                        timeout = reason == "timeout" and timeout or nil },
                      core.error_mt())
end

-- Kill t and wait for its end (its DOWN), dropping an answer that came
-- meanwhile. Returns its answer message if it had finished, else nil.
local function kill(t, how)
  if t.linked then unlink(t.pid) end
  exit(t.pid, how or "kill")
  local finished
  local m = receive(matcher(t))
  if m[1] == "$task" then -- it had finished: its DOWN follows
    finished = m
    receive(function(x) return type(x) == "table" and x[1] == "DOWN" and x.ref == t.ref end)
  elseif m.reason == "normal" then
    finished = nil
  end
  -- an "EXIT" of a linked task, for an owner that traps exits, is dropped
  if t.linked then
    receive(function(x) return type(x) == "table" and x[1] == "EXIT" and x.pid == t.pid end, 0)
  end
  t.done = true
  return finished, m
end

--- Waits for the task's results. Raises a genserver error (`err.op =
-- "await"`) with the task's crash reason, or with `"timeout"`, in which
-- case the task is killed first (it is dead when await raises). A task
-- can be awaited once.
---@param t table the task
---@param timeout number|string? ms (default 5000) or "infinity"
---@return any ... # the results of fn
function M.await(t, timeout)
  check_task(t, "await")
  timeout = check_timeout(timeout, "await")
  local m = receive(matcher(t), timeout)
  if m == nil then
    kill(t)
    error(await_error(t, "timeout", timeout), 2)
  end
  local ok, v = outcome(t, m)
  if not ok then error(await_error(t, v), 2) end
  return tunpack(v, 1, v.n)
end

--- Waits at most `timeout` for the task.
---@param t table the task
---@param timeout number|string? ms (default 5000) or "infinity"
---@return boolean|nil # `true, results...` · `nil` (time-out: the task keeps running and
--   can be yielded or awaited again) · `false, reason` (it died)
---@return any ...
function M.yield(t, timeout)
  check_task(t, "yield")
  timeout = check_timeout(timeout, "yield")
  local m = receive(matcher(t), timeout)
  if m == nil then return nil end
  local ok, v = outcome(t, m)
  if ok then return true, tunpack(v, 1, v.n) end
  return false, v
end

--- Waits at most `timeout` for all the tasks (one shared deadline).
---@param tasks table[] a list of tasks
---@param timeout number|string? ms (default 5000) or "infinity"
---@return table[] # a list in the tasks' order of `{ task, true, results... }`,
--   `{ task, false, reason }` or `{ task }` (still running)
function M.yield_many(tasks, timeout)
  if type(tasks) ~= "table" then error("genserver.task.yield_many: tasks must be a list", 2) end
  timeout = check_timeout(timeout, "yield_many")
  local by_tag, by_ref, out, left = {}, {}, {}, 0
  for i, t in ipairs(tasks) do
    check_task(t, "yield_many")
    by_tag[t.tag], by_ref[t.ref] = i, i
    out[i] = { t }
    left = left + 1
  end
  local deadline = timeout ~= "infinity" and core.clock() * 1000 + timeout or nil
  local function match(m)
    return type(m) == "table" and ((m[1] == "$task" and by_tag[m[2]] ~= nil)
      or (m[1] == "DOWN" and by_ref[m.ref] ~= nil))
  end
  while left > 0 do
    local wait = "infinity"
    if deadline then wait = math.max(0, deadline - core.clock() * 1000) end
    local m = receive(match, wait)
    if m == nil then break end
    local i = m[1] == "$task" and by_tag[m[2]] or by_ref[m.ref]
    local t = tasks[i]
    by_tag[t.tag], by_ref[t.ref] = nil, nil
    local ok, v = outcome(t, m)
    if ok then out[i] = { t, true, tunpack(v, 1, v.n) }
    else out[i] = { t, false, v } end
    left = left - 1
  end
  return out
end

--- Stops a task: an exit signal `"shutdown"`, and `"kill"` if it has not
-- ended within `timeout` (`"brutal_kill"`: at once).
---@param t table the task
---@param timeout number|string? ms (default 5000), "infinity" or "brutal_kill"
---@return boolean|nil # `true, results...` if it had finished, `false, reason` if it had
--   crashed before, else nil
---@return any ...
function M.shutdown(t, timeout)
  check_task(t, "shutdown")
  timeout = check_timeout(timeout, "shutdown", true)
  if t.linked then unlink(t.pid) end
  local m
  if timeout == "brutal_kill" then
    exit(t.pid, "kill")
    m = receive(matcher(t))
  else
    exit(t.pid, "shutdown")
    m = receive(matcher(t), timeout)
    if m == nil then
      exit(t.pid, "kill")
      m = receive(matcher(t))
    end
  end
  t.done = true
  if m[1] == "$task" then
    receive(function(x) return type(x) == "table" and x[1] == "DOWN" and x.ref == t.ref end)
    return true, tunpack(m[3], 1, m[3].n)
  end
  if m.reason == "shutdown" or m.reason == "killed" then return nil end
  return false, m.reason
end

-- ------------------------------------------------------------- streams

local function workers()
  local ok, st = pcall(core.stats)
  return ok and st.workers or 1
end

--- Runs `fn(item)` for every item of the list `items`, at most
-- `opts.max_concurrency` at once (default: the runtime's workers), each
-- in a task linked to the caller (as `async`: a crash is an exit signal
-- to the caller; with trap_exit it is `i, false, reason`).
---@param items any[] a list
---@param fn function function(item) -> results (copied into each task)
---@param opts table? `{ max_concurrency = n, ordered = true, timeout = 5000 (per
--   item, ms or "infinity"), on_timeout = "exit" | "kill_task" }`
---@return function # an iterator for a generic `for`: `i, true, results...` or
--   `i, false, reason`, in the items' order when ordered (default), else
--   as they finish. A time-out gives `i, false, "timeout"` with
--   `on_timeout = "kill_task"`, else the iterator kills every task of
--   the stream and raises a genserver error with reason "timeout".
--   Leaving the loop early (break, error) kills the tasks still running.
---@return nil
---@return nil
---@return table
function M.async_stream(items, fn, opts)
  if type(items) ~= "table" then error("genserver.task.async_stream: items must be a list", 2) end
  if type(fn) ~= "function" then error("genserver.task.async_stream: fn must be a function", 2) end
  opts = opts or {}
  if type(opts) ~= "table" then error("genserver.task.async_stream: opts must be a table", 2) end
  local maxc = opts.max_concurrency or workers()
  if math.type(maxc) ~= "integer" or maxc < 1 then
    error("genserver.task.async_stream: max_concurrency must be a positive integer", 2)
  end
  local ordered = opts.ordered ~= false
  local timeout = opts.timeout or 5000
  if timeout ~= "infinity" and (type(timeout) ~= "number" or timeout < 0) then
    error('genserver.task.async_stream: timeout must be ms or "infinity"', 2)
  end
  local on_timeout = opts.on_timeout or "exit"
  if on_timeout ~= "exit" and on_timeout ~= "kill_task" then
    error('genserver.task.async_stream: on_timeout must be "exit" or "kill_task"', 2)
  end

  local n = #items
  local next_start, next_out = 1, 1
  local running = {}  -- i -> { task, deadline }
  local nrunning = 0
  local by_tag, by_ref = {}, {}
  local done = {}     -- i -> { ok, ... } (ordered: waiting for their turn)
  local ready = {}    -- unordered: finished, not yet given out (a queue)

  local function launch()
    while nrunning < maxc and next_start <= n do
      local i = next_start
      next_start = i + 1
      local t = new_task(fn, true, items[i])
      running[i] = { t, timeout ~= "infinity" and core.clock() * 1000 + timeout or math.huge }
      by_tag[t.tag], by_ref[t.ref] = i, i
      nrunning = nrunning + 1
    end
  end

  local function finish(i, res)
    local r = running[i]
    running[i] = nil
    by_tag[r[1].tag], by_ref[r[1].ref] = nil, nil
    nrunning = nrunning - 1
    if ordered then done[i] = res else ready[#ready + 1] = { i, res } end
  end

  local function kill_all()
    for i, r in pairs(running) do
      kill(r[1])
      running[i] = nil
    end
    nrunning = 0
  end

  local function match(m)
    return type(m) == "table" and ((m[1] == "$task" and by_tag[m[2]] ~= nil)
      or (m[1] == "DOWN" and by_ref[m.ref] ~= nil))
  end

  local function give(i, res)
    if res[1] then return i, true, tunpack(res[2], 1, res[2].n) end
    return i, false, res[2]
  end

  local function step()
    while true do
      if ordered then
        local res = done[next_out]
        if res then
          done[next_out] = nil
          local i = next_out
          next_out = i + 1
          launch()
          return give(i, res)
        end
      elseif #ready > 0 then
        local r = table.remove(ready, 1)
        next_out = next_out + 1
        launch()
        return give(r[1], r[2])
      end
      if next_out > n then return nil end
      launch()
      -- wait for the next answer, or the earliest deadline
      local first, first_i = math.huge, nil
      for i, r in pairs(running) do
        if r[2] < first then first, first_i = r[2], i end
      end
      local wait = first == math.huge and "infinity" or math.max(0, first - core.clock() * 1000)
      local m = receive(match, wait)
      if m then
        local i = m[1] == "$task" and by_tag[m[2]] or by_ref[m.ref]
        local t = running[i][1]
        local ok, v = outcome(t, m)
        finish(i, { ok, v })
      elseif first_i then -- a task timed out
        local t = running[first_i][1]
        local fin, m2 = kill(t)
        if fin then -- it finished just now after all
          finish(first_i, { true, fin[3] })
        elseif m2 and m2[1] == "DOWN" and m2.reason ~= "killed" then
          finish(first_i, { false, m2.reason })
        elseif on_timeout == "kill_task" then
          finish(first_i, { false, "timeout" })
        else
          running[first_i] = nil
          nrunning = nrunning - 1
          kill_all()
          error(setmetatable({ op = "async_stream", server = t.pid, reason = "timeout",
                               timeout = timeout }, core.error_mt()), 2)
        end
      end
    end
  end

  -- the generic for's closing value: tasks still running when the loop
  -- ends early are killed
  local closer = setmetatable({}, { __close = function() kill_all() end })
  return step, nil, nil, closer
end

-- --------------------------------------------- fire-and-forget tasks

--- Callback module side: a supervised or started task is a gen_server
-- that runs `fn(...)` in `handle_continue` and stops normally.
-- @local
---@param arg table { fn, args..., n = }
---@return string, table, table
function M.init(arg)
  return "ok", arg, { continue = "run" }
end

--- @local
---@param _ any the continue value
---@param arg table { fn, args..., n = }
---@return string, string, table
function M.handle_continue(_, arg)
  arg[1](tunpack(arg, 2, arg.n or #arg))
  return "stop", "normal", arg
end

local function start_args(fname, fn, ...)
  if type(fn) ~= "function" then error(("genserver.task.%s: fn must be a function"):format(fname), 3) end
  local arg = tpack(fn, ...)
  return arg
end

--- Starts `fn(...)` in a process of its own, not linked; its crash is
-- reported (a crash report) and reaches nobody.
---@param fn function function
---@param ... any its arguments
---@return userdata # pid
function M.start(fn, ...)
  local gs = require "genserver"
  return assert(gs.start("genserver.task", start_args("start", fn, ...)))
end

--- As `start`, linked to the caller (a supervisor, typically).
---@param fn function function
---@param ... any its arguments
---@return userdata # pid
function M.start_link(fn, ...)
  local gs = require "genserver"
  return assert(gs.start_link("genserver.task", start_args("start_link", fn, ...)))
end

return M
