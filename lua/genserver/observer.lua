--- genserver.observer: what is running, as data and as text (DESIGN.md §2.12).
--
-- The views of Erlang's `observer` and the shell's `i()`, for a terminal:
--
--     local observer = require "genserver.observer"
--     observer.print_processes()          -- one line per process
--     observer.print_tree()               -- the supervision trees
--     observer.top { sort = "memory" }    -- a live table, refreshed in place
--
-- `processes()` and `tree()` return plain tables, so a program can also
-- log them, send them in a message or check them in a test. Fields that
-- `process.info` does not give on this version (`reductions`, `current`,
-- `vsn`, ...) are simply absent and print as `-`.
--
-- `observer.serve{ port = … }` serves the same views as a live web page on
-- loopback (built on genserver.tcp, loaded only when `serve` is called; see
-- `genserver.observer_web`).
-- @module genserver.observer

local process = require "genserver.process"
local supervisor = require "genserver.supervisor"

local M = {}

local type, tostring, pairs, ipairs, pcall = type, tostring, pairs, ipairs, pcall
local concat, sort = table.concat, table.sort

-- One process, as processes() gives it (a LuaLS class, for editors).
---@class genserver.observer.ProcessInfo
---@field pid userdata the process's pid
---@field status string "running" | "runnable" | "waiting" | ...
---@field name string? its registered name
---@field module string? its callback module ("(table)" for a copied table, "(foreign thread)" for the main script or a host thread)
---@field mailbox integer messages waiting
---@field memory integer bytes used by its Lua state
---@field messages_in integer? messages received so far
---@field messages_out integer? messages sent so far
---@field reductions integer? callbacks run (when the runtime reports it)
---@field foreign boolean a thread outside the workers (the main script, a host thread)

--- Every live process, with what `process.info` says about it.
-- A process that ends while the list is made is left out.
---@return genserver.observer.ProcessInfo[] list a list, in pid order
function M.processes()
  local out = {}
  for _, pid in ipairs(process.list()) do
    local info = process.info(pid)
    if info then
      local rec = { pid = pid }
      for k, v in pairs(info) do rec[k] = v end
      out[#out + 1] = rec
    end
  end
  return out
end

-- A node of a supervision tree, as tree() gives it (a LuaLS class).
---@class genserver.observer.Node
---@field pid userdata|string the child's pid, or "restarting", or "not running"
---@field id any the child's id in its supervisor's spec (nil for a root or a simple_one_for_one child)
---@field name string? the registered name
---@field module string? the callback module
---@field type string "supervisor" | "worker"
---@field children genserver.observer.Node[]? a supervisor's children, in start order

local function is_supervisor(info)
  return info ~= nil and info.module == "genserver.supervisor"
end

local function node_of(pid, id, ctype, module, seen, depth)
  local info = process.is_pid(pid) and process.info(pid) or nil
  local node = { pid = pid, id = id, type = ctype, module = module,
                 name = info and info.name or nil }
  if process.is_pid(pid) and ctype == "supervisor" and not seen[pid] and depth < 32 then
    seen[pid] = true
    local ok, kids = pcall(supervisor.which_children, pid)
    node.children = {}
    if ok and type(kids) == "table" then
      for _, c in ipairs(kids) do
        local cpid = c.pid
        if cpid == nil then cpid = "not running" end
        node.children[#node.children + 1] =
          node_of(cpid, c.id, c.type, c.module, seen, depth + 1)
      end
    end
  end
  return node
end

--- The supervision trees: one node per supervisor that is not the child
-- of another (a root), each with its children (asked with
-- `supervisor.which_children`), recursively.
---@param root (userdata|string)? a supervisor (pid or name) to start from instead
---@return genserver.observer.Node[] roots the roots, in pid order
function M.tree(root)
  local seen = {}
  if root ~= nil then
    local pid = process.is_pid(root) and root or process.whereis(root)
    if pid == nil or not is_supervisor(process.info(pid)) then
      error(("genserver.observer.tree: %s is not a running supervisor"):format(tostring(root)), 2)
    end
    return { node_of(pid, nil, "supervisor", "genserver.supervisor", seen, 0) }
  end
  -- children of a supervisor are linked to it: a root is a supervisor not
  -- found among the children of another
  local sups, child = {}, {}
  for _, p in ipairs(M.processes()) do
    if is_supervisor(p) then sups[#sups + 1] = p.pid end
  end
  local nodes = {}
  for _, pid in ipairs(sups) do
    nodes[pid] = node_of(pid, nil, "supervisor", "genserver.supervisor", {}, 0)
    for _, c in ipairs(nodes[pid].children or {}) do
      if process.is_pid(c.pid) then child[c.pid] = true end
    end
  end
  local roots = {}
  for _, pid in ipairs(sups) do
    if not child[pid] then roots[#roots + 1] = nodes[pid] end
  end
  return roots
end

-- ------------------------------------------------------------- printing

local function dash(v)
  if v == nil then return "-" end
  return tostring(v)
end

local function human(bytes)
  if type(bytes) ~= "number" then return "-" end
  if bytes < 10 * 1024 then return ("%d"):format(bytes) end
  if bytes < 10 * 1024 * 1024 then return ("%.0fK"):format(bytes / 1024) end
  return ("%.1fM"):format(bytes / (1024 * 1024))
end

local function label(p)
  local s = p.name or p.module or ""
  if p.name and p.module and p.module ~= p.name then
    s = s .. (p.module:sub(1, 1) == "(" and " " .. p.module or " (" .. p.module .. ")")
  end
  return s
end

local COLUMNS = {
  { "PID", 12, function(p) return tostring(p.pid) end },
  { "STATUS", 9, function(p) return dash(p.status) end },
  { "MEMORY", 8, function(p) return human(p.memory) end },
  { "MBOX", 6, function(p) return dash(p.mailbox) end },
  { "REDS", 8, function(p) return dash(p.reductions) end },
  { "IN", 8, function(p) return dash(p.messages_in) end },
  { "OUT", 8, function(p) return dash(p.messages_out) end },
}

local function row(cells)
  local parts = {}
  for i, col in ipairs(COLUMNS) do
    local s = cells[i]
    parts[i] = i == 1 and ("%-" .. col[2] .. "s"):format(s) or ("%" .. col[2] .. "s"):format(s)
  end
  return concat(parts, " ")
end

--- The process list as text: a header and one line per process (pid,
-- status, memory, mailbox, reductions, messages in and out, name/module).
---@param list genserver.observer.ProcessInfo[]? a list from `processes()` (default: a fresh one)
---@return string text
function M.format_processes(list)
  list = list or M.processes()
  local heads = {}
  for i, col in ipairs(COLUMNS) do heads[i] = col[1] end
  local lines = { row(heads) .. " NAME / MODULE" }
  for _, p in ipairs(list) do
    local cells = {}
    for i, col in ipairs(COLUMNS) do cells[i] = col[3](p) end
    lines[#lines + 1] = row(cells) .. " " .. label(p)
  end
  lines[#lines + 1] = ("%d processes"):format(#list)
  return concat(lines, "\n") .. "\n"
end

--- Prints `format_processes(list)` to `out`.
---@param list genserver.observer.ProcessInfo[]? a list from `processes()` (default: a fresh one)
---@param out file*? where to write (default io.stdout)
function M.print_processes(list, out)
  (out or io.stdout):write(M.format_processes(list))
end

local function tree_lines(node, prefix, last, lines, top)
  local what
  if node.type == "supervisor" then what = "supervisor" else what = node.module or "worker" end
  local title = tostring(node.pid)
  if node.name then title = title .. " " .. node.name end
  if node.id ~= nil then title = title .. " [" .. tostring(node.id) .. "]" end
  if what ~= node.name then title = title .. " " .. what end
  if top then
    lines[#lines + 1] = title
  else
    lines[#lines + 1] = prefix .. (last and "└── " or "├── ") .. title
  end
  local kids = node.children or {}
  local next_prefix = top and "" or prefix .. (last and "    " or "│   ")
  for i, c in ipairs(kids) do
    tree_lines(c, next_prefix, i == #kids, lines, false)
  end
end

--- The supervision trees as text, one line per process, children indented
-- under their supervisor: `pid [name] [id] module`.
---@param roots genserver.observer.Node[]? a list from `tree()` (default: a fresh one)
---@return string text
function M.format_tree(roots)
  roots = roots or M.tree()
  if #roots == 0 then return "(no supervisors)\n" end
  local lines = {}
  for _, r in ipairs(roots) do tree_lines(r, "", true, lines, true) end
  return concat(lines, "\n") .. "\n"
end

--- Prints `format_tree(roots)` to `out`.
---@param roots genserver.observer.Node[]? a list from `tree()` (default: a fresh one)
---@param out file*? where to write (default io.stdout)
function M.print_tree(roots, out)
  (out or io.stdout):write(M.format_tree(roots))
end

-- ------------------------------------------------------------------ top

local SORTS = {
  memory = function(p) return p.memory or 0 end,
  mailbox = function(p) return p.mailbox or 0 end,
  reductions = function(p) return p.reductions or 0 end,
  rate = function(p) return p.rate or 0 end,
}
local KEYS = { m = "memory", b = "mailbox", r = "reductions", t = "rate" }

local function now_ms()
  if process.now then return process.now() end
  return nil
end

--- One sample for `top`: `processes()` with a `rate` field (messages in
-- per second since `prev`, a sample taken earlier), sorted by `sort`
-- (largest first).
---@param prev table? the previous sample (rates are 0 without it)
---@param sort_by ("memory"|"mailbox"|"reductions"|"rate")? the column (default "memory")
---@param elapsed_ms number? time since `prev`, when process.now cannot measure it (default 1000)
---@return table sample `{ list = (processes() records with `rate`), at = ms, sort = }`
function M.sample(prev, sort_by, elapsed_ms)
  sort_by = sort_by or "memory"
  local key = SORTS[sort_by]
  if not key then
    error(("genserver.observer: sort must be memory, mailbox, reductions or rate, got %s")
      :format(tostring(sort_by)), 2)
  end
  local at = now_ms()
  local list = M.processes()
  local before = {}
  if prev then for _, p in ipairs(prev.list) do before[p.pid] = p.messages_in end end
  local secs = elapsed_ms
  if prev and prev.at and at then secs = at - prev.at end
  secs = (secs or 1000) / 1000
  for _, p in ipairs(list) do
    local b = before[p.pid]
    if b and p.messages_in and secs > 0 then
      p.rate = math.floor((p.messages_in - b) / secs + 0.5)
    else
      p.rate = 0
    end
  end
  sort(list, function(a, b)
    local ka, kb = key(a), key(b)
    if ka ~= kb then return ka > kb end
    return tostring(a.pid) < tostring(b.pid)
  end)
  return { list = list, at = at, sort = sort_by }
end

--- A sample as text: a title line, the columns of `format_processes` plus
-- the message rate, at most `limit` rows.
---@param s table a sample from `sample`
---@param limit integer? rows (default 20)
---@return string text
function M.format_top(s, limit)
  limit = limit or 20
  local heads = {}
  for i, col in ipairs(COLUMNS) do heads[i] = col[1] end
  local lines = {
    ("genserver top: %d processes, sorted by %s   (keys: m memory, b mailbox, r reductions, t rate, q quit)")
      :format(#s.list, s.sort),
    row(heads) .. ("%8s"):format("MSG/S") .. " NAME / MODULE",
  }
  for i = 1, math.min(limit, #s.list) do
    local p = s.list[i]
    local cells = {}
    for j, col in ipairs(COLUMNS) do cells[j] = col[3](p) end
    lines[#lines + 1] = row(cells) .. ("%8s"):format(tostring(p.rate)) .. " " .. label(p)
  end
  return concat(lines, "\n") .. "\n"
end

local function sh_ok(cmd)
  local ok = os.execute(cmd)
  return ok == true
end

-- The options of top() (a LuaLS class).
---@class genserver.observer.TopOptions
---@field sort? "memory"|"mailbox"|"reductions"|"rate" the column to sort by (default "memory")
---@field interval? integer ms between refreshes (default 1000)
---@field count? integer refreshes before returning (default: until `q`; 1 when not on a terminal)
---@field limit? integer rows shown (default 20)
---@field out? file* where to write (default io.stdout)
---@field tty? boolean redraw in place and read keys (default: whether stdin and stdout are terminals)

--- A live table of the processes, like Unix `top`: redrawn in place every
-- `interval` ms (ANSI escapes), largest first by the sort column. On a
-- terminal, keys change the sort (`m` memory, `b` mailbox, `r` reductions,
-- `t` message rate) and `q` quits. Not on a terminal (a pipe, a log), it
-- takes two samples `interval` apart (for the rates) and prints the table
-- once (or `count` times).
---@param opts genserver.observer.TopOptions? `{ sort =, interval =, count =, limit =, out =, tty = }`: the column to sort by (default "memory"), ms between refreshes (default 1000), refreshes before returning (default: until `q`; 1 when not on a terminal), rows (default 20), where to write (default io.stdout), whether to redraw in place and read keys (default: whether stdin and stdout are terminals)
---@return table sample the last sample (see `sample`)
function M.top(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("genserver.observer.top: opts must be a table", 2) end
  local out = opts.out or io.stdout
  local interval = opts.interval or 1000
  if type(interval) ~= "number" or interval <= 0 then
    error("genserver.observer.top: interval must be ms > 0", 2)
  end
  local sort_by = opts.sort or "memory"
  if not SORTS[sort_by] then
    error(("genserver.observer.top: sort must be memory, mailbox, reductions or rate, got %s")
      :format(tostring(sort_by)), 2)
  end
  local tty = opts.tty
  if tty == nil then tty = sh_ok("test -t 0 && test -t 1") end
  local count = opts.count or (tty and math.huge or 1)
  local prev = M.sample(nil, sort_by)
  if not tty then
    local s = prev
    for _ = 1, count do
      process.sleep(interval)
      s = M.sample(s, sort_by, interval)
      out:write(M.format_top(s, opts.limit))
    end
    return s
  end
  -- on a terminal: no line buffering, no echo; a read waits at most
  -- `interval` (stty's time is in tenths of a second) and so paces the loop
  local saved = io.popen("stty -g 2>/dev/null"):read("l")
  local tenths = math.max(1, math.floor(interval / 100 + 0.5))
  os.execute(("stty -icanon -echo min 0 time %d 2>/dev/null"):format(tenths))
  local ok, err = pcall(function()
    local s = prev
    local n = 0
    while n < count do
      n = n + 1
      out:write("\27[H\27[2J", M.format_top(s, opts.limit))
      out:flush()
      local key = io.stdin:read(1)
      if key == "q" then break end
      if key and KEYS[key] then sort_by = KEYS[key] end
      s = M.sample(s, sort_by, interval)
    end
    prev = s
  end)
  if saved and saved ~= "" then os.execute("stty " .. saved .. " 2>/dev/null") end
  if not ok then error(err, 0) end
  return prev
end

-- ------------------------------------------------------------------ web

--- Serves the views as a live web page: `/` (a page that refreshes itself
-- every second; click a column to sort), `/api/processes`, `/api/tree`,
-- `/api/top?sort=memory|mailbox|reductions|rate` (JSON). Loopback unless
-- `ip` says otherwise; port 0 picks a free port. See `genserver.observer_web`.
---@param opts genserver.observer.ServeOptions? `{ port =, ip =, acceptors =, max_request =, timeout =, name = }`: the port (default 0: any free one), the address (default "127.0.0.1"), processes waiting in accept (default 2), bytes of a request head (default 8192), ms a client has to send it (default 5000), a name for the web process
---@return userdata|nil pid the web process (the handle for `stop`), or nil
---@return integer|string port the bound port, or why it could not listen ("eaddrinuse", ...)
function M.serve(opts)
  return require("genserver.observer_web").serve(opts)
end

--- Stops a web page started by `serve`: closes its port and ends its
-- processes. Stopping (or killing) the pid closes the port as well.
---@param pid userdata|string the pid `serve` returned, or its name
---@return boolean stopped false if it was not running
function M.stop(pid)
  return require("genserver.observer_web").stop(pid)
end

return M
