--- genserver.supervisor: OTP's supervisor, as a gen_server written in Lua.
--
-- A supervisor starts child servers, watches them (it links to them and
-- traps exits) and restarts them by its strategy when they end; when
-- restarts come too often it gives up: it stops its children and exits
-- with `"shutdown"`, so that its own supervisor can act (escalation).
-- See DESIGN.md §2.4 and docs/supervision.md.
--
--     local supervisor = require "genserver.supervisor"
--     local sup = supervisor.start_link({
--       strategy = "one_for_one", intensity = 3, period = 5,
--       children = {
--         { id = "cache", start = { "myapp.cache", { size = 100 }, { name = "cache" } } },
--         { id = "worker", start = { "myapp.worker" }, restart = "transient" },
--       },
--     }, { name = "app_sup" })
--
-- **Flags** (the spec table): `strategy` (`"one_for_one"` default,
-- `"one_for_all"`, `"rest_for_one"`, `"simple_one_for_one"`), `intensity`
-- (default 1) and `period` (seconds, default 5): more than `intensity`
-- restarts within `period` seconds and the supervisor gives up; `backoff`
-- (beyond OTP, optional): `{ initial = ms, max = ms, reset = ms }` delays
-- each restart of a child, doubling from `initial` up to `max` while the
-- child keeps failing; the doubling starts again once the child has run
-- for `reset` ms (default: the larger of `max` and `period`). Meanwhile
-- the supervisor keeps answering calls, and `which_children` shows the
-- child as `"restarting"`. Restarts still count toward `intensity` when
-- they are decided.
--
-- **Child specs**: `id` (a string or a number, unique), `start = { module,
-- arg [, opts] }` (started with `genserver.start_link(module, arg, opts)`
-- from the supervisor's process), `restart` (`"permanent"` default: always
-- restarted; `"transient"`: restarted unless it ended with `"normal"`,
-- `"shutdown"` or `{ shutdown = ... }`; `"temporary"`: never restarted),
-- `shutdown` (ms to wait after the exit signal `"shutdown"` before killing
-- it, default 5000; `"brutal_kill"`: killed at once; `"infinity"`: wait
-- for ever, the default for supervisors), `type` (`"worker"` or
-- `"supervisor"`; the default is `"supervisor"` when the module is
-- `"genserver.supervisor"`, else `"worker"`). A child that should run its
-- `terminate` on shutdown traps exits (`opts.trap_exit = true`).
--
-- Return conventions: where OTP returns `{ok, Pid}` these functions
-- return `pid`; where it returns `{error, R}` they return `nil, R`; OTP's
-- `ok` is `true`. A child whose `init` returned `"ignore"` makes
-- `start_child`/`restart_child` return `nil, "ignore"` (OTP's
-- `{ok, undefined}`); the spec is kept, not running. Bad specs and flags
-- give `nil, { bad_child_spec = id_or_index | bad_flags = field, field =,
-- message = }`.
-- @module genserver.supervisor

-- A supervisor's spec (a LuaLS class, for editors).
---@class genserver.supervisor.Spec
---@field strategy ("one_for_one"|"one_for_all"|"rest_for_one"|"simple_one_for_one")? default "one_for_one"
---@field intensity integer? restarts allowed within `period` (default 1)
---@field period number? seconds (default 5)
---@field backoff { initial: number, max: number, reset: number? }? delays between restarts of a failing child (ms)
---@field children genserver.supervisor.ChildSpec[] the children, in start order (the template, for simple_one_for_one)

-- A child spec (a LuaLS class).
---@class genserver.supervisor.ChildSpec
---@field id (string|number)? unique; none for simple_one_for_one's template
---@field start { [1]: string|genserver.Callbacks, [2]: any, [3]: genserver.StartOptions? } module, arg [, opts]
---@field restart ("permanent"|"transient"|"temporary")? default "permanent"
---@field shutdown (number|"brutal_kill"|"infinity")? ms (default 5000; "infinity" for supervisors)
---@field type ("worker"|"supervisor")? default: "supervisor" for genserver.supervisor, else "worker"

local core = require "genserver.core"
local gs = require "genserver"

local M = {}

local type, pairs, ipairs, tostring, pcall, select = type, pairs, ipairs, tostring, pcall, select
local mtype, floor, huge, min = math.type, math.floor, math.huge, math.min
local clock, is_pid = core.clock, core.is_pid
local monitor, exit, unlink, receive = core.monitor, core.exit, core.unlink, core.receive

-- ====================================================== specifications

local STRATEGIES = { one_for_one = true, one_for_all = true, rest_for_one = true,
                     simple_one_for_one = true }
local RESTARTS = { permanent = true, transient = true, temporary = true }
local TYPES = { worker = true, supervisor = true }
local FLAG_FIELDS = { strategy = true, intensity = true, period = true, backoff = true,
                      children = true }
local CHILD_FIELDS = { id = true, start = true, restart = true, shutdown = true, type = true }
local BACKOFF_FIELDS = { initial = true, max = true, reset = true }

local function show(v)
  if type(v) == "string" then return ("%q"):format(v) end
  return gs.describe(v)
end

local function bad_flags(field, fmt, ...)
  return { bad_flags = field, field = field,
           message = ("supervisor flags: %s"):format(fmt:format(...)) }
end

local function label_of(c, index)
  if type(c) == "table" and (type(c.id) == "string" or type(c.id) == "number") then
    return c.id
  end
  return index
end

local function bad_child(label, field, fmt, ...)
  local what = type(label) == "string" and ("%q"):format(label) or tostring(label)
  return { bad_child_spec = label, field = field,
           message = ("child spec %s: %s"):format(what, fmt:format(...)) }
end

local function is_count(v)
  return type(v) == "number" and v >= 0 and v == floor(v) and v < huge
end

local function is_ms(v)
  return type(v) == "number" and v >= 0 and v == v and v < huge
end

local function module_label(mod)
  if type(mod) == "string" then return mod end
  if type(mod) == "table" and type(mod.name) == "string" then return mod.name end
  return "(table)"
end

--- Checks one child spec and returns its record (a fresh table), or nil
-- and a `{ bad_child_spec = ..., field = ..., message = ... }` reason.
-- `index` is its position, to name a spec without a usable id.
local function check_child(c, index, dynamic)
  local label = label_of(c, index or "?")
  if type(c) ~= "table" then
    return nil, bad_child(label, "spec", "must be a table, got %s", type(c))
  end
  for k in pairs(c) do
    if not CHILD_FIELDS[k] then
      return nil, bad_child(label, tostring(k), "unknown field %s", show(k))
    end
  end
  local id = c.id
  if id == nil then
    if not dynamic then return nil, bad_child(label, "id", "id is missing") end
  elseif type(id) ~= "string" and type(id) ~= "number" or id ~= id then
    return nil, bad_child(label, "id", "id must be a string or a number, got %s", show(id))
  end
  local s = c.start
  if type(s) ~= "table" then
    return nil, bad_child(label, "start",
      "start must be { module, arg [, opts] }, got %s", show(s))
  end
  local mod = s[1]
  if type(mod) ~= "string" and type(mod) ~= "table" then
    return nil, bad_child(label, "start",
      "start[1] must be a module name or a callback table, got %s", show(mod))
  end
  local opts = s[3]
  if opts ~= nil and type(opts) ~= "table" then
    return nil, bad_child(label, "start", "start[3] (opts) must be a table, got %s", show(opts))
  end
  local bad = gs.check_options(opts) -- the options go to start_link unchanged
  if bad then return nil, bad_child(label, "start", "start[3] (opts): %s", bad) end
  local restart = c.restart
  if restart == nil then restart = "permanent" end
  if not RESTARTS[restart] then
    return nil, bad_child(label, "restart",
      "restart must be \"permanent\", \"transient\" or \"temporary\", got %s", show(restart))
  end
  local ctype = c.type
  if ctype == nil then ctype = mod == "genserver.supervisor" and "supervisor" or "worker" end
  if not TYPES[ctype] then
    return nil, bad_child(label, "type", "type must be \"worker\" or \"supervisor\", got %s",
      show(ctype))
  end
  local shutdown = c.shutdown
  if shutdown == nil then shutdown = ctype == "supervisor" and "infinity" or 5000 end
  if shutdown == huge then shutdown = "infinity" end
  if not (is_ms(shutdown) or shutdown == "brutal_kill" or shutdown == "infinity") then
    return nil, bad_child(label, "shutdown",
      "shutdown must be ms (>= 0), \"brutal_kill\" or \"infinity\", got %s", show(shutdown))
  end
  return { id = id, start = { mod, s[2], opts }, restart = restart, shutdown = shutdown,
           type = ctype, module = module_label(mod) }
end

--- Checks the flags and the child specs. Returns the supervisor's initial
-- state (children not started), or nil and a reason.
local function check_spec(spec)
  if type(spec) ~= "table" then
    return nil, bad_flags("spec", "the spec must be a table, got %s", type(spec))
  end
  for k in pairs(spec) do
    if not FLAG_FIELDS[k] then return nil, bad_flags(tostring(k), "unknown field %s", show(k)) end
  end
  local strategy = spec.strategy
  if strategy == nil then strategy = "one_for_one" end
  if not STRATEGIES[strategy] then
    return nil, bad_flags("strategy", "strategy must be \"one_for_one\", \"one_for_all\", "
      .. "\"rest_for_one\" or \"simple_one_for_one\", got %s", show(strategy))
  end
  local intensity = spec.intensity
  if intensity == nil then intensity = 1 end
  if not is_count(intensity) then
    return nil, bad_flags("intensity", "intensity must be an integer >= 0, got %s", show(intensity))
  end
  local period = spec.period
  if period == nil then period = 5 end
  if type(period) ~= "number" or not (period > 0) or period == huge then
    return nil, bad_flags("period", "period must be a number of seconds > 0, got %s", show(period))
  end
  local backoff = spec.backoff
  if backoff ~= nil then
    if type(backoff) ~= "table" then
      return nil, bad_flags("backoff", "backoff must be { initial = ms, max = ms }, got %s",
        show(backoff))
    end
    for k in pairs(backoff) do
      if not BACKOFF_FIELDS[k] then
        return nil, bad_flags("backoff", "backoff: unknown field %s", show(k))
      end
    end
    local initial, max, reset = backoff.initial, backoff.max, backoff.reset
    if not (is_ms(initial) and initial > 0) then
      return nil, bad_flags("backoff", "backoff.initial must be ms > 0, got %s", show(initial))
    end
    if max == nil then max = initial * 32 end
    if not (is_ms(max) and max >= initial) then
      return nil, bad_flags("backoff", "backoff.max must be ms >= backoff.initial, got %s",
        show(max))
    end
    if reset == nil then reset = max > period * 1000 and max or period * 1000 end
    if not is_ms(reset) then
      return nil, bad_flags("backoff", "backoff.reset must be ms >= 0, got %s", show(reset))
    end
    backoff = { initial = initial, max = max, reset = reset }
  end
  local children = spec.children
  if children == nil then children = {} end
  if type(children) ~= "table" then
    return nil, bad_flags("children", "children must be a list of child specs, got %s",
      show(children))
  end
  local n = #children
  for k in pairs(children) do
    if mtype(k) ~= "integer" or k < 1 or k > n then
      return nil, bad_flags("children", "children must be a list (found the key %s)", show(k))
    end
  end
  local st = { strategy = strategy, intensity = intensity, period = period, backoff = backoff,
               restarts = {}, rhead = 1, seq = 0, pending = {},
               children = {}, by_id = {}, by_pid = {} }
  if strategy == "simple_one_for_one" then
    if n ~= 1 then
      return nil, bad_flags("children",
        "children: a simple_one_for_one supervisor has exactly one child spec (the template), "
        .. "got %d", n)
    end
    local rec, err = check_child(children[1], 1, true)
    if not rec then return nil, err end
    st.template = rec
    st.dyn, st.ndyn = {}, 0              -- pid -> { arg =, started =, fails = }
    st.dyn_restarting, st.nrestarting = {}, 0 -- old pid -> the same
    return st
  end
  for i = 1, n do
    local rec, err = check_child(children[i], i)
    if not rec then return nil, err end
    if st.by_id[rec.id] then
      return nil, bad_child(rec.id, "id", "duplicate id %s", show(rec.id))
    end
    st.by_id[rec.id] = rec
    st.children[i] = rec
  end
  return st
end

-- ============================================================ reports

local function quiet(reason)
  return reason == "normal" or reason == "shutdown"
      or (type(reason) == "table" and reason.shutdown ~= nil)
end

local function child_info(rec, pid)
  return { id = rec.id, pid = pid, module = rec.module, restart = rec.restart,
           shutdown = rec.shutdown, type = rec.type }
end

--- A supervisor report to genserver.logger (OTP's supervisor reports).
local function sup_report(st, context, reason, child, extra)
  local r = { kind = "supervisor", supervisor = st.self, supervisor_name = st.name,
              context = context, reason = reason, child = child }
  if extra then for k, v in pairs(extra) do r[k] = v end end
  pcall(function() require("genserver.logger").report(r) end)
end

-- ========================================================== bookkeeping

local function set_pid(st, rec, pid)
  local old = rec.pid
  if is_pid(old) then st.by_pid[old] = nil end
  rec.pid = pid
  if is_pid(pid) then st.by_pid[pid] = rec end
end

local function index_of(st, rec)
  local list = st.children
  for i = 1, #list do if list[i] == rec then return i end end
  return nil
end

local function remove_child(st, rec)
  set_pid(st, rec, nil)
  local i = index_of(st, rec)
  if i then table.remove(st.children, i) end
  st.by_id[rec.id] = nil
end

--- After a child ended (or was stopped): a temporary one is forgotten,
-- any other keeps its spec, not running (OTP's del_child).
local function child_gone(st, rec)
  if rec.restart == "temporary" then remove_child(st, rec)
  else set_pid(st, rec, nil) end
end

--- Records a restart; false when that makes more than `intensity`
-- restarts within `period` seconds.
local function add_restart(st)
  local now = clock()
  local r, head = st.restarts, st.rhead
  local n = #r
  while head <= n and r[head] < now - st.period do
    r[head] = nil -- keeps the live part at the end
    head = head + 1
  end
  if head > n then r, head, n = {}, 1, 0 end
  if head > 64 and head > n / 2 then -- compact
    local t = {}
    for i = head, n do t[#t + 1] = r[i] end
    r, head, n = t, 1, #t
  end
  n = n + 1
  r[n] = now
  st.restarts, st.rhead = r, head
  return n - head + 1 <= st.intensity
end

--- The restart delay for a child (nil without backoff).
local function backoff_delay(st, rec)
  local b = st.backoff
  if not b then return nil end
  if rec.started and (clock() - rec.started) * 1000 >= b.reset then rec.fails = 0 end
  local n = rec.fails or 0
  rec.fails = n + 1
  return floor(min(b.max, b.initial * 2 ^ n))
end

--- Asks ourselves (now or after `delay` ms) for a restart: `entry` is
-- `{ kind = "start", ids = {...} }` (start those children, in order, that
-- still wait for it), `{ kind = "retry", ids = {...} }` (a start failed:
-- count a new restart of ids[1] first, as OTP's try_again_restart), or
-- for simple_one_for_one `{ kind =, key = old pid, drec = }`. Pending
-- entries live in st.pending under a token the message carries, so that
-- nothing else (a child stopped or deleted meanwhile) can strand them.
local function schedule(st, entry, delay)
  st.seq = st.seq + 1
  st.pending[st.seq] = entry
  local msg = { "$sup_restart", st.seq }
  if delay and delay > 0 then core.send_after(delay, st.self, msg)
  else core.send(st.self, msg) end
end

-- ============================================================ starting

--- Starts one child process with genserver.start_link.
-- @return pid | nil, "ignore" | nil, reason
local function start_proc(rec, arg)
  local s = rec.start
  local opts = s[3]
  if rec.type == "supervisor" and (opts == nil or opts.timeout == nil) then
    local o = {}
    if opts then for k, v in pairs(opts) do o[k] = v end end
    o.timeout = "infinity" -- a supervisor's init starts its own children
    opts = o
  end
  local ok, pid, reason = pcall(gs.start_link, s[1], arg, opts)
  if not ok then return nil, { error = pid } end
  if pid then return pid end
  return nil, reason
end

--- The extra argument of simple_one_for_one's start_child, added to the
-- template's arg (OTP appends it to the argument list).
local function merge_args(arg, extra)
  if extra == nil then return arg end
  if arg == nil then return extra end
  if type(arg) == "table" and type(extra) == "table" then
    local t, n, m = {}, #arg, #extra
    for k, v in pairs(arg) do t[k] = v end
    for i = 1, m do t[n + i] = extra[i] end
    for k, v in pairs(extra) do
      if not (mtype(k) == "integer" and k >= 1 and k <= m) then t[k] = v end
    end
    return t
  end
  return { arg, extra }
end

-- ============================================================ stopping

local function is_down(ref)
  return function(m) return type(m) == "table" and m[1] == "DOWN" and m.ref == ref end
end

--- Unlinks pid and takes its EXIT if it already came (after unlink, no
-- later one can come). Returns that EXIT's reason, or `default`.
local function unlink_flush(pid, default)
  unlink(pid)
  local m = receive(function(x)
    return type(x) == "table" and x[1] == "EXIT" and x.pid == pid
  end, 0)
  if m then return m.reason end
  return default
end

--- Whether `reason` is what a child stopped with `how` should end with.
local function stopped_well(rec, how, reason)
  if reason == "noproc" then return true end -- it was already gone
  if how == "brutal_kill" and reason == "killed" then return true end
  if reason == "shutdown" then return how ~= "brutal_kill" or rec.restart ~= "permanent" end
  if rec.restart ~= "permanent" then return quiet(reason) end
  return false
end

--- Stops one child (OTP's shutdown/2): monitor it, send the exit signal
-- "shutdown" (or "kill" for brutal_kill), wait for its DOWN at most its
-- shutdown time, then kill it. The monitor, not the link, tells us it is
-- gone, so a child that unlinked itself cannot hang the supervisor.
local function shutdown_child(st, rec)
  local pid = rec.pid
  if not is_pid(pid) then return end
  local how = rec.shutdown
  local ref = monitor(pid)
  local d
  if how == "brutal_kill" then
    exit(pid, "kill")
    d = receive(is_down(ref))
  else
    exit(pid, "shutdown")
    d = receive(is_down(ref), how == "infinity" and "infinity" or how)
    if d == nil then
      exit(pid, "kill")
      d = receive(is_down(ref))
    end
  end
  local reason = unlink_flush(pid, d.reason)
  if not stopped_well(rec, how, reason) then
    sup_report(st, "shutdown_error", reason, child_info(rec, pid))
  end
end

--- Stops every dynamic child at once (OTP's terminate_dynamic_children):
-- signal them all, then collect their DOWNs; after the shutdown time,
-- kill the ones left.
local function shutdown_dynamic(st)
  local tpl = st.template
  local how = tpl.shutdown
  local sig = how == "brutal_kill" and "kill" or "shutdown"
  local refs, n, former = {}, 0, {}
  for pid in pairs(st.dyn) do
    refs[pid] = monitor(pid)
    exit(pid, sig)
    former[pid] = true
    n = n + 1
  end
  local token, tref = core.make_ref(), nil
  if type(how) == "number" then tref = core.send_after(how, st.self, { "$sup_kill", token }) end
  local exits, errors = {}, {}
  local function match(m)
    if type(m) ~= "table" then return false end
    local tag = m[1]
    if tag == "DOWN" then return m.pid ~= nil and refs[m.pid] == m.ref end
    if tag == "EXIT" then return m.pid ~= nil and former[m.pid] == true end
    return tag == "$sup_kill" and m[2] == token
  end
  while n > 0 do
    local m = receive(match)
    local tag = m[1]
    if tag == "DOWN" then
      local pid = m.pid
      refs[pid] = nil
      n = n - 1
      unlink(pid) -- an EXIT not yet taken is now void
      local reason = m.reason
      if reason == "noproc" and exits[pid] ~= nil then reason = exits[pid] end
      if not stopped_well(tpl, how, reason) then
        local key = gs.describe(reason)
        local e = errors[key]
        if not e then e = { reason = reason, pids = {} }; errors[key] = e end
        e.pids[#e.pids + 1] = pid
      end
    elseif tag == "EXIT" then
      exits[m.pid] = m.reason
    else
      for pid in pairs(refs) do exit(pid, "kill") end
    end
  end
  if tref then core.cancel_timer(tref) end
  -- what is left: EXITs taken before their unlink, a timer that fired
  while receive(match, 0) do end
  st.dyn, st.ndyn = {}, 0
  for _, e in pairs(errors) do
    local c = child_info(tpl, nil)
    c.count, c.pids = #e.pids, e.pids
    sup_report(st, "shutdown_error", e.reason, c)
  end
end

--- Stops the static children, in reverse start order.
local function shutdown_all(st)
  local list = st.children
  for i = #list, 1, -1 do
    local rec = list[i]
    if is_pid(rec.pid) then
      shutdown_child(st, rec)
      set_pid(st, rec, nil)
    end
  end
end

-- ============================================================ restarting

--- The children a restart of `rec` concerns, in start order.
local function group_of(st, rec)
  if st.strategy == "one_for_one" then return { rec } end
  local list, i = st.children, 1
  if st.strategy == "rest_for_one" then i = index_of(st, rec) or 1 end
  local g = {}
  for k = i, #list do g[#g + 1] = list[k] end
  return g
end

--- Starts, in order, the children of `ids` that wait for a restart
-- ("restarting"). A failure leaves that child "restarting" and asks for
-- a new restart of it (counted, as OTP's try_again_restart).
local function start_ids(st, ids)
  for i, id in ipairs(ids) do
    local c = st.by_id[id]
    if c and c.pid == "restarting" then
      local pid, reason = start_proc(c, c.start[2])
      if pid then
        set_pid(st, c, pid)
        c.started = clock()
      elseif reason == "ignore" then
        child_gone(st, c)
      else
        sup_report(st, "start_error", reason, child_info(c, nil))
        schedule(st, { kind = "retry", ids = table.move(ids, i, #ids, 1, {}) })
        return "noreply", st
      end
    end
  end
  return "noreply", st
end

local function restart_static(st, rec, delay)
  local g = group_of(st, rec)
  for i = #g, 1, -1 do -- stop the rest of the group, in reverse order
    local c = g[i]
    if c ~= rec then
      shutdown_child(st, c)
      if c.restart == "temporary" then
        remove_child(st, c)
        table.remove(g, i)
      else
        set_pid(st, c, "restarting")
      end
    end
  end
  set_pid(st, rec, "restarting")
  local ids = {}
  for i, c in ipairs(g) do ids[i] = c.id end
  if delay then
    schedule(st, { kind = "start", ids = ids }, delay)
    return "noreply", st
  end
  return start_ids(st, ids)
end

local function dyn_forget(st, key, drec)
  if st.dyn[key] == drec then
    st.dyn[key] = nil
    st.ndyn = st.ndyn - 1
  elseif st.dyn_restarting[key] == drec then
    st.dyn_restarting[key] = nil
    st.nrestarting = st.nrestarting - 1
  end
end

local function start_dynamic_again(st, key, drec)
  local pid, reason = start_proc(st.template, drec.arg)
  if pid then
    dyn_forget(st, key, drec)
    drec.started = clock()
    st.dyn[pid] = drec
    st.ndyn = st.ndyn + 1
  elseif reason == "ignore" then
    dyn_forget(st, key, drec)
  else
    sup_report(st, "start_error", reason, child_info(st.template, nil))
    schedule(st, { kind = "retry", key = key, drec = drec })
  end
  return "noreply", st
end

local function restart_dynamic(st, key, drec, delay)
  if st.dyn[key] == drec then -- it was running: now it waits under its old pid
    st.dyn[key] = nil
    st.ndyn = st.ndyn - 1
    st.dyn_restarting[key] = drec
    st.nrestarting = st.nrestarting + 1
  end
  if delay then
    schedule(st, { kind = "start", key = key, drec = drec }, delay)
    return "noreply", st
  end
  return start_dynamic_again(st, key, drec)
end

--- A restart (OTP's restart/2): count it, give up if too many, else
-- restart by the strategy (now, or after the backoff delay).
-- `exit_reason` is the child's exit reason (nil for a retry).
local function restart(st, rec, key, drec, exit_reason)
  local ok = add_restart(st)
  local delay = ok and backoff_delay(st, drec or rec) or nil
  local pid = drec and key or (rec and is_pid(rec.pid) and rec.pid) or nil
  local info = child_info(st.template or rec, pid)
  if exit_reason ~= nil then
    sup_report(st, "child_terminated", exit_reason, info, { restart_delay = delay })
  end
  if not ok then
    sup_report(st, "shutdown", "reached_max_restart_intensity", info)
    if drec then dyn_forget(st, key, drec) else child_gone(st, rec) end
    return "stop", "shutdown", st
  end
  if drec then return restart_dynamic(st, key, drec, delay) end
  return restart_static(st, rec, delay)
end

--- A child's EXIT (OTP's restart_child/3 and do_restart/3).
local function child_exited(st, pid, reason)
  local rec, drec
  if st.template then
    drec = st.dyn[pid]
    if not drec then return "noreply", st end
    rec = st.template
  else
    rec = st.by_pid[pid]
    if not rec then return "noreply", st end
  end
  if rec.restart == "permanent" or (rec.restart == "transient" and not quiet(reason)) then
    return restart(st, rec, pid, drec, reason)
  end
  if not quiet(reason) then
    sup_report(st, "child_terminated", reason, child_info(rec, pid))
  end
  if drec then dyn_forget(st, pid, drec) else child_gone(st, rec) end
  return "noreply", st
end

--- A scheduled restart came due.
local function restart_due(st, token)
  local e = st.pending[token]
  if not e then return "noreply", st end
  st.pending[token] = nil
  if st.template then
    local key, drec = e.key, e.drec
    if st.dyn_restarting[key] ~= drec then return "noreply", st end -- stopped meanwhile
    if e.kind == "retry" then return restart(st, nil, key, drec, nil) end
    return start_dynamic_again(st, key, drec)
  end
  if e.kind == "retry" then
    local rec = st.by_id[e.ids[1]]
    if rec and rec.pid == "restarting" then return restart(st, rec, nil, nil, nil) end
  end
  return start_ids(st, e.ids)
end

-- ================================================== gen_server callbacks

--- @local
---@param spec genserver.supervisor.Spec
---@return string, any
function M.init(spec)
  core.trap_exit(true)
  core.stop_order("first") -- at program end, supervisors stop first (DESIGN 1.7)
  local st, err = check_spec(spec)
  -- "error" (not "stop"): the starter gets nil, reason and is not killed
  -- through its link
  if not st then return "error", err end
  st.self = core.self()
  local info = core.info(st.self)
  st.name = info and info.name
  local list = st.children
  local i = 1
  while i <= #list do
    local rec = list[i]
    local pid, reason = start_proc(rec, rec.start[2])
    if pid then
      set_pid(st, rec, pid)
      rec.started = clock()
      i = i + 1
    elseif reason == "ignore" then
      if rec.restart == "temporary" then remove_child(st, rec) else i = i + 1 end
    else
      sup_report(st, "start_error", reason, child_info(rec, nil))
      shutdown_all(st)
      return "error", { shutdown = { failed_to_start_child = rec.id, reason = reason } }
    end
  end
  return "ok", st
end

local calls = {}

function calls.start_child(st, arg)
  if st.template then
    local tpl = st.template
    local full = merge_args(tpl.start[2], arg)
    local pid, reason = start_proc(tpl, full)
    if not pid then return false, reason end
    -- a temporary child is never restarted: no need to keep its arg
    st.dyn[pid] = { arg = tpl.restart ~= "temporary" and full or nil, started = clock() }
    st.ndyn = st.ndyn + 1
    return true, pid
  end
  local rec, err = check_child(arg, #st.children + 1)
  if not rec then return false, err end
  local old = st.by_id[rec.id]
  if old then
    if is_pid(old.pid) then return false, { already_started = old.pid } end
    return false, "already_present"
  end
  local pid, reason = start_proc(rec, rec.start[2])
  if not pid and reason ~= "ignore" then return false, reason end
  if pid or rec.restart ~= "temporary" then
    st.children[#st.children + 1] = rec
    st.by_id[rec.id] = rec
    if pid then
      set_pid(st, rec, pid)
      rec.started = clock()
    end
  end
  if not pid then return false, "ignore" end
  return true, pid
end

function calls.terminate_child(st, key)
  if st.template then
    if not is_pid(key) then return false, "simple_one_for_one" end
    local drec = st.dyn[key]
    if drec then
      shutdown_child(st, { pid = key, shutdown = st.template.shutdown,
                           restart = st.template.restart, id = nil,
                           module = st.template.module, type = st.template.type })
      dyn_forget(st, key, drec)
      return true, true
    end
    drec = st.dyn_restarting[key]
    if drec then
      dyn_forget(st, key, drec)
      return true, true
    end
    if not core.alive(key) then return true, true end -- as OTP: already gone
    return false, "not_found"
  end
  local rec = st.by_id[key]
  if not rec then return false, "not_found" end
  shutdown_child(st, rec)
  child_gone(st, rec)
  return true, true
end

function calls.restart_child(st, id)
  if st.template then return false, "simple_one_for_one" end
  local rec = st.by_id[id]
  if not rec then return false, "not_found" end
  if rec.pid == "restarting" then return false, "restarting" end
  if is_pid(rec.pid) then return false, "running" end
  local pid, reason = start_proc(rec, rec.start[2])
  if not pid then return false, reason end
  set_pid(st, rec, pid)
  rec.started = clock()
  return true, pid
end

function calls.delete_child(st, id)
  if st.template then return false, "simple_one_for_one" end
  local rec = st.by_id[id]
  if not rec then return false, "not_found" end
  if rec.pid == "restarting" then return false, "restarting" end
  if is_pid(rec.pid) then return false, "running" end
  remove_child(st, rec)
  return true, true
end

function calls.which_children(st)
  local out = {}
  if st.template then
    local t = st.template
    for pid in pairs(st.dyn) do
      out[#out + 1] = { pid = pid, type = t.type, module = t.module }
    end
    for _ in pairs(st.dyn_restarting) do
      out[#out + 1] = { pid = "restarting", type = t.type, module = t.module }
    end
    return true, out
  end
  for i, rec in ipairs(st.children) do
    out[i] = { id = rec.id, pid = rec.pid, type = rec.type, module = rec.module }
  end
  return true, out
end

function calls.count_children(st)
  if st.template then
    local total = st.ndyn + st.nrestarting
    local sups = st.template.type == "supervisor" and total or 0
    return true, { specs = 1, active = st.ndyn, supervisors = sups, workers = total - sups }
  end
  local c = { specs = 0, active = 0, supervisors = 0, workers = 0 }
  for _, rec in ipairs(st.children) do
    c.specs = c.specs + 1
    if is_pid(rec.pid) and core.alive(rec.pid) then c.active = c.active + 1 end
    if rec.type == "supervisor" then c.supervisors = c.supervisors + 1
    else c.workers = c.workers + 1 end
  end
  return true, c
end

--- @local
---@param req any
---@param _from genserver.From
---@param st table
---@return string, any, table
function M.handle_call(req, _from, st)
  local f = type(req) == "table" and calls[req[1]]
  if not f then return "reply", { false, "unknown request" }, st end
  local ok, v = f(st, req[2])
  return "reply", { ok, v }, st
end

--- @local
---@param _msg any
---@param st table
---@return string, table
function M.handle_cast(_msg, st)
  return "noreply", st
end

--- @local
---@param msg any
---@param st table
---@return string, any, table?
function M.handle_info(msg, st)
  if type(msg) == "table" then
    local tag = msg[1]
    if tag == "EXIT" then
      -- (the runtime's own EXIT at shutdown never comes here: the server
      -- loop runs terminate, which stops the children in order)
      return child_exited(st, msg.pid, msg.reason)
    end
    if tag == "$sup_restart" then return restart_due(st, msg[2]) end
  end
  return "noreply", st
end

--- @local
---@param _reason any
---@param st table
function M.terminate(_reason, st)
  if type(st) ~= "table" then return end
  if st.template then shutdown_dynamic(st) else shutdown_all(st) end
end

-- ========================================================== client API

local function sup_call(sup, op, arg)
  local r = gs.call(sup, { op, arg }, "infinity")
  if r[1] then return r[2] end
  return nil, r[2]
end

local function start_opts(opts, fname)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    error(("genserver.supervisor.%s: opts must be a table"):format(fname), 3)
  end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  if o.timeout == nil then o.timeout = "infinity" end -- its init starts the children
  return o
end

--- Starts a supervisor linked to the caller. Returns after every child
-- has started (in order); if one fails to start, the ones started are
-- stopped and the result is `nil, { shutdown = { failed_to_start_child
-- = id, reason = r } }`. The caller is not killed by that failure.
---@param spec genserver.supervisor.Spec `{ strategy =, intensity =, period =, backoff =, children = { child_spec... } }`
---@param opts { name: string?, timeout: genserver.Timeout? }? `{ name = registered name, timeout = ms (default "infinity") }`
---@return genserver.Pid? pid the supervisor, or nil
---@return any reason why it did not start (`{ bad_flags = field, ... }`, `{ bad_child_spec = id, ... }`, `{ already_started = pid }`, ...)
function M.start_link(spec, opts)
  local _, err = check_spec(spec)
  if err then return nil, err end
  return gs.start_link("genserver.supervisor", spec, start_opts(opts, "start_link"))
end

--- As `start_link`, without the link (for a supervisor at the top of a
-- program that should not take the caller down when it gives up).
---@param spec genserver.supervisor.Spec as for `start_link`
---@param opts { name: string?, timeout: genserver.Timeout? }? as for `start_link`
---@return genserver.Pid? pid the supervisor, or nil
---@return any reason why it did not start
function M.start(spec, opts)
  local _, err = check_spec(spec)
  if err then return nil, err end
  return gs.start("genserver.supervisor", spec, start_opts(opts, "start"))
end

--- Checks a supervisor spec without starting anything.
---@param spec genserver.supervisor.Spec as for `start_link`
---@return true? ok true, or nil
---@return any reason what is wrong (`{ bad_flags = ... }` / `{ bad_child_spec = ... }`)
function M.check_spec(spec)
  local _, err = check_spec(spec)
  if err then return nil, err end
  return true
end

--- Adds a child and starts it. For a `simple_one_for_one` supervisor the
-- second argument is the extra argument instead: the child starts with
-- the template's arg and it combined (nil template arg: `extra`; two
-- tables: the template's copied, with `extra`'s list items appended and
-- its other fields added; otherwise `{ arg, extra }`).
---@param sup genserver.Server the supervisor (pid or name)
---@param spec_or_extra genserver.supervisor.ChildSpec|any a child spec, or the extra argument
---@return genserver.Pid? pid the new child, or nil
---@return any reason `{ already_started = pid }` | `"already_present"` | `"ignore"` | `{ bad_child_spec = ... }` | the child's start error
function M.start_child(sup, spec_or_extra)
  return sup_call(sup, "start_child", spec_or_extra)
end

--- Stops a child. Its spec stays (not running), unless it is temporary.
-- For `simple_one_for_one`, the child is given by pid and forgotten.
---@param sup genserver.Server the supervisor (pid or name)
---@param id_or_pid string|number|genserver.Pid the child's id (its pid for simple_one_for_one)
---@return true? ok true, or nil
---@return string? reason `"not_found"` | `"simple_one_for_one"`
function M.terminate_child(sup, id_or_pid)
  return sup_call(sup, "terminate_child", id_or_pid)
end

--- Starts again a child that is not running (after `terminate_child`).
---@param sup genserver.Server the supervisor (pid or name)
---@param id string|number the child's id
---@return genserver.Pid? pid the child, or nil
---@return any reason `"running"` | `"restarting"` | `"not_found"` | `"ignore"` | `"simple_one_for_one"` | the child's start error
function M.restart_child(sup, id)
  return sup_call(sup, "restart_child", id)
end

--- Removes the spec of a child that is not running.
---@param sup genserver.Server the supervisor (pid or name)
---@param id string|number the child's id
---@return true? ok true, or nil
---@return string? reason `"running"` | `"restarting"` | `"not_found"` | `"simple_one_for_one"`
function M.delete_child(sup, id)
  return sup_call(sup, "delete_child", id)
end

--- The children, in start order: a list of `{ id =, pid =, type =,
-- module = }` where pid is a pid, `"restarting"` or nil (not running).
-- For `simple_one_for_one`, id is nil and the order is unspecified.
---@param sup genserver.Server the supervisor (pid or name)
---@return { id: any, pid: genserver.Pid|string|nil, type: string, module: string }[] children
function M.which_children(sup)
  return (sup_call(sup, "which_children"))
end

--- Counts: `{ specs =, active =, supervisors =, workers = }` (active:
-- children running; supervisors/workers: specs (or dynamic children) by
-- type, running or not).
---@param sup genserver.Server the supervisor (pid or name)
---@return { specs: integer, active: integer, supervisors: integer, workers: integer } counts
function M.count_children(sup)
  return (sup_call(sup, "count_children"))
end

return M
