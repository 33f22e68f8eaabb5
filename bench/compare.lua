--[[
bench/compare.lua — runs every workload on genserver (bench/run.lua) and on
Erlang/OTP (bench/bench.erl), several times each, interleaved, in fresh OS
processes; prints a table of medians and ratios; writes bench/results.json.

  lua5.4 bench/compare.lua [options]

  --runs N        runs per workload and side (default: each workload's own
                  count, 5, or 3 for the slow ones)
  --only a,b,...  only these workloads (names as in `lua5.4 bench/run.lua list`)
  --big           the opt-in 1,000,000 live idle servers workload only (make bench-big)
  --json FILE     where to write the results (default bench/results.json,
                  bench/results-big.json with --big)
  --erl-out DIR   where to compile bench.erl (default build/bench)
  --budget SECS   stop starting new runs after this much time (default 360)
  --no-erlang     genserver side only
  --limit SECS    kill a run after this long (default: per workload, 90-600)
  --no-scaling    leave out the scaling rows (clients and cast at 1, 2 and 4
                  workers, Erlang with the same +S)
  --instr         also count instructions per cast, call and start under
                  callgrind (bench/instr.lua; about 1 min more; needs valgrind)

Environment: GENSERVER_WORKERS (worker threads; Erlang gets as many
schedulers when it is set), BENCH_LUA (default lua5.4), BENCH_ERL (default erl).
Needs no module: it only starts processes and reads their output.
]]

local HERE = (arg[0]:match("^(.*)/[^/]*$") or ".")
local ROOT = HERE .. "/.."

-- ---------------------------------------------------------------- options

local opts = { json = nil, erl_out = ROOT .. "/build/bench", budget = 360, erlang = true }
do
  local i = 1
  while i <= #arg do
    local a = arg[i]
    local function val()
      i = i + 1
      if arg[i] == nil then io.stderr:write(a .. " needs a value\n") os.exit(2) end
      return arg[i]
    end
    if a == "--runs" then opts.runs = math.tointeger(tonumber(val()))
    elseif a == "--only" then
      opts.only = {}
      for w in val():gmatch("[^,%s]+") do opts.only[w] = true end
    elseif a == "--big" then opts.big = true
    elseif a == "--json" then opts.json = val()
    elseif a == "--erl-out" then opts.erl_out = val()
    elseif a == "--budget" then opts.budget = tonumber(val())
    elseif a == "--no-erlang" then opts.erlang = false
    elseif a == "--limit" then opts.limit = tonumber(val())
    elseif a == "--no-scaling" then opts.no_scaling = true
    elseif a == "--instr" then opts.instr = true
    elseif a == "-h" or a == "--help" then
      io.write((io.open(arg[0]):read("a"):match("%-%-%[%[(.-)%]%]"))) os.exit(0)
    else io.stderr:write("unknown option " .. a .. "\n") os.exit(2) end
    i = i + 1
  end
end
opts.json = opts.json or (HERE .. (opts.big and "/results-big.json" or "/results.json"))

local LUA = os.getenv("BENCH_LUA") or "lua5.4"
local ERL = os.getenv("BENCH_ERL") or "erl"
local WORKERS = os.getenv("GENSERVER_WORKERS")
if WORKERS and not tonumber(WORKERS) then WORKERS = nil end

-- --------------------------------------------------------------- workloads
--
-- Each workload: `name` (the argument of run.lua and bench.erl), `runs`,
-- `limit` (s, per run, then the OS process is killed), `erlang` (false:
-- genserver only), and its metrics: `key` in the RESULT line, `label`,
-- `better` ("higher"/"lower"), `target` (nil: reported only).
--   target.kind: "ratio_ge" / "ratio_le" (genserver ÷ Erlang), "abs_le" / "abs_lt"
--   (genserver's own figure, in the metric's unit)

local GB = 2 ^ 30
local WORKLOADS = {
  { name = "cast", runs = 5, limit = 90, metrics = {
    { key = "value", label = "cast throughput, 1M casts", better = "higher",
      target = { kind = "ratio_ge", x = 0.5 } } } },
  { name = "call", runs = 5, limit = 90, metrics = {
    { key = "value", label = "call round trip, process→server", better = "lower",
      target = { kind = "ratio_le", x = 0.8 } } } },
  { name = "main_call", runs = 5, limit = 90, erlang = false, metrics = {
    { key = "value", label = "call round trip, main→server, median", better = "lower",
      target = { kind = "abs_le", x = 1.5 } },
    { key = "p99", label = "call round trip, main→server, p99", better = "lower" },
    { key = "rtt", unit = "ns", label = "  core-to-core round trip, same runs", better = "lower" } } },
  { name = "flood", runs = 3, limit = 90, erlang = false, metrics = {
    { key = "value", label = "call with 500k queued ÷ empty mailbox", better = "lower",
      target = { kind = "abs_le", x = 10 } } } },
  { name = "clients", runs = 5, limit = 90, metrics = {
    { key = "value", label = "100 clients × 2000 calls", better = "higher",
      target = { kind = "ratio_ge", x = 1.0 } } } },
  { name = "start", runs = 3, limit = 150, metrics = {
    { key = "value", label = "start rate (start+init), 100k", better = "higher",
      target = { kind = "ratio_ge", x = 0.3 } },
    { key = "mem", unit_key = "mem_unit", label = "memory per idle server (RSS)",
      better = "lower", target = { kind = "ratio_le", x = 3 } } } },
  { name = "tcp_echo", runs = 5, limit = 120, metrics = {
    { key = "value", label = "TCP echo round trip, 1 connection", better = "lower",
      target = { kind = "ratio_le", x = 1 } },
    { key = "c_value", unit = "us", label = "  the same, plain blocking C echo", better = "lower" },
    { key = "c_ratio", unit = "×", label = "  genserver ÷ plain C echo", better = "lower",
      target = { kind = "abs_le", x = 1.5 } } } },
  { name = "tcp_rps", runs = 3, limit = 150, metrics = {
    { key = "value", label = "TCP echo, 100 connections × 2000", better = "higher",
      target = { kind = "ratio_ge", x = 1 } },
    { key = "c_value", unit = "req/s", label = "  the same, plain blocking C echo", better = "higher" } } },
  { name = "start_table", runs = 3, limit = 90, erlang = false, metrics = {
    { key = "value", label = "start rate, callback table, 20k", better = "higher" } } },
  { name = "pingpong", runs = 5, limit = 90, metrics = {
    { key = "value", label = "Savina ping-pong, 200k", better = "higher" } } },
  { name = "counting", runs = 5, limit = 90, metrics = {
    { key = "value", label = "Savina counting, 1M", better = "higher" } } },
  { name = "threadring", runs = 5, limit = 90, metrics = {
    { key = "value", label = "Savina thread ring, 100 × 1M hops", better = "higher" } } },
  { name = "forkjoin", runs = 5, limit = 90, metrics = {
    { key = "value", label = "Savina fork-join create, 100k", better = "higher" } } },
  { name = "chameneos", runs = 5, limit = 90, metrics = {
    { key = "value", label = "Savina chameneos, 100 × 200k", better = "higher" } } },
  { name = "big", runs = 1, limit = 600, big = true, metrics = {
    { key = "value", label = "1M live idle servers, RSS", better = "lower",
      target = { kind = "abs_lt", x = 10 * GB } },
    { key = "rate", unit_key = "rate_unit", label = "1M live idle servers, start rate",
      better = "higher" },
    { key = "mem", unit_key = "mem_unit", label = "1M live idle servers, RSS per server",
      better = "lower" } } },
}

-- The scaling rows: the same workload at a fixed worker count, Erlang with
-- as many schedulers (+S N:N). `run` is the workload's name in run.lua and
-- bench.erl.
for _, base in ipairs({ "clients", "cast" }) do
  for _, n in ipairs({ 1, 2, 4 }) do
    WORKLOADS[#WORKLOADS + 1] = { name = ("%s_w%d"):format(base, n), run = base, workers = n,
      runs = 3, limit = 90, scaling = true, metrics = {
        { key = "value", better = "higher",
          label = ("%s, %d worker%s (Erlang +S %d)"):format(
            base == "cast" and "cast throughput" or "100 clients × 2000 calls", n,
            n > 1 and "s" or "", n) } } }
  end
end

local selected = {}
for _, w in ipairs(WORKLOADS) do
  local want
  if opts.only then want = opts.only[w.name]
  elseif opts.big then want = w.big
  else want = not w.big and not (w.scaling and opts.no_scaling) end
  if want then
    if opts.runs then w.runs = opts.runs end
    if opts.limit then w.limit = opts.limit end
    selected[#selected + 1] = w
  end
end
if #selected == 0 then io.stderr:write("no workload selected\n") os.exit(2) end

-- ---------------------------------------------------------------- helpers

local function now()
  local f = io.open("/proc/uptime")
  if f then
    local t = tonumber(f:read("a"):match("^(%S+)"))
    f:close()
    if t then return t end
  end
  return os.time()
end

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function read_file(p)
  local f = io.open(p, "r")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

local function shell(cmd)
  local p = io.popen(cmd .. " 2>/dev/null")
  local out = p:read("a")
  p:close()
  return (out:gsub("%s+$", ""))
end

local function have(cmd) return shell("command -v " .. cmd) ~= "" end

local T0 = now()
local ERRFILE = os.tmpname()

--- Runs one workload in a fresh OS process. Returns a table of fields, or
-- nil, "timeout"|"error", message.
local function run_cmd(cmd, limit)
  local full = ("timeout -k 5 %d %s 2>%s"):format(limit, cmd, ERRFILE)
  local p = io.popen(full, "r")
  local out = p:read("a")
  local _, _, code = p:close()
  local err = read_file(ERRFILE)
  local line = out:match("RESULT ([^\n]*)")
  if line then
    local r = {}
    for k, v in line:gmatch("(%S+)=(%S+)") do r[k] = tonumber(v) or v end
    if code ~= 0 then -- the figures are good; the exit was not
      r["$warning"] = (code == 124 or code == 137) and ("killed after %d s, after printing its result"):format(limit)
        or ("exit status %s after printing its result"):format(tostring(code))
    end
    return r
  end
  if code == 124 or code == 137 then
    return nil, "timeout", ("killed after %d s"):format(limit)
  end
  local msg = out:match("ERROR [^\n]*") or err:match("([^\n]+)\n?$") or ("exit status " .. tostring(code))
  msg = msg:gsub("^ERROR workload=%S+%s*", "")
  if #msg > 300 then msg = msg:sub(1, 300) .. "…" end
  return nil, "error", msg
end

local function median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

-- ------------------------------------------------------------ environment

local env = {
  cpus = tonumber(shell("nproc")) or 0,
  loadavg_start = read_file("/proc/loadavg"):match("^(%S+ %S+ %S+)"),
  workers = WORKERS and tonumber(WORKERS) or nil,
  lua = shell(LUA .. " -v"),
  commit = shell("git -C " .. sh_quote(ROOT) .. " rev-parse --short HEAD"),
  dirty = shell("git -C " .. sh_quote(ROOT) .. " status --porcelain --untracked-files=no") ~= "",
}

local erl_ok, erl_why = false, nil
if not opts.erlang then
  erl_why = "--no-erlang"
elseif not (have(ERL) and have("erlc")) then
  erl_why = "Erlang/OTP not installed (apt-get install erlang-nox)"
else
  os.execute("mkdir -p " .. sh_quote(opts.erl_out))
  local out = shell(("erlc -o %s %s 2>&1; echo rc=$?"):format(sh_quote(opts.erl_out),
    sh_quote(HERE .. "/bench.erl")))
  if out:match("rc=0$") then
    erl_ok = true
    env.otp = shell(ERL .. [[ -noshell -eval 'io:format("~s", [erlang:system_info(otp_release)]), halt().']])
  else
    erl_why = "erlc failed: " .. out:gsub("\n", " ")
  end
end

local function gs_cmd(w)
  return ("%s%s %s %s"):format(w.workers and ("env GENSERVER_WORKERS=%d "):format(w.workers) or "",
    LUA, sh_quote(HERE .. "/run.lua"), w.run or w.name)
end

local function erl_cmd(w)
  local flags = "-noshell"
  local n = w.workers or WORKERS
  if n then flags = flags .. (" +S %d:%d"):format(n, n) end
  if w.big then flags = flags .. " +P 4000000" end
  return ("%s %s -pa %s -run bench main %s"):format(ERL, flags, sh_quote(opts.erl_out),
    w.run or w.name)
end

-- -------------------------------------------------------------------- runs
--
-- Rounds: every workload once on each side (the order of the sides
-- alternating), then again, up to each workload's run count. A side that
-- timed out is not run again. A run that would not fit in the time budget
-- (judged by that side's slowest run so far) is skipped.

local sides = { "genserver", "erlang" }
local state = {}
for _, w in ipairs(selected) do
  state[w.name] = {}
  for _, s in ipairs(sides) do
    state[w.name][s] = { results = {}, errors = {}, warnings = {}, loads = {}, attempted = 0,
                         skipped = 0, dead = false, slowest = 0 }
  end
  if w.erlang == false then state[w.name].erlang.na = true end
  if not erl_ok then state[w.name].erlang.missing = true end
end

local maxruns = 0
for _, w in ipairs(selected) do if w.runs > maxruns then maxruns = w.runs end end

io.write(("genserver bench: %d workload(s), up to %d run(s) each, time budget %d s%s\n")
  :format(#selected, maxruns, opts.budget,
    erl_ok and (", Erlang/OTP " .. (env.otp or "?")) or (" — Erlang figures missing: " .. erl_why)))
io.flush()

for round = 1, maxruns do
  for _, w in ipairs(selected) do
    if round <= w.runs then
      local order = round % 2 == 1 and { "genserver", "erlang" } or { "erlang", "genserver" }
      for _, side in ipairs(order) do
        local st = state[w.name][side]
        if not st.na and not st.missing and not st.dead then
          local elapsed = now() - T0
          local guess = st.slowest > 0 and st.slowest or 5
          if elapsed + guess > opts.budget then
            st.skipped = st.skipped + 1
          else
            st.attempted = st.attempted + 1
            io.write(("  [%3ds] %-10s %-9s run %d/%d … "):format(math.floor(elapsed), w.name, side,
              round, w.runs))
            io.flush()
            st.loads[#st.loads + 1] = tonumber(read_file("/proc/loadavg"):match("^(%S+)"))
            local t = now()
            local r, kind, msg = run_cmd(side == "genserver" and gs_cmd(w) or erl_cmd(w), w.limit)
            local dt = now() - t
            if dt > st.slowest then st.slowest = dt end
            if r then
              st.results[#st.results + 1] = r
              io.write(("%.1f s\n"):format(dt))
              if r["$warning"] then
                st.warnings[#st.warnings + 1] = r["$warning"]
                io.write("      warning: ", r["$warning"], "\n")
              end
            else
              st.errors[#st.errors + 1] = kind .. ": " .. msg
              if kind == "timeout" then st.dead = true end
              io.write(("%s after %.1f s: %s\n"):format(kind:upper(), dt, msg))
            end
            io.flush()
          end
        end
      end
    end
  end
end
os.remove(ERRFILE)

-- ----------------------------------------------------------------- figures

local UNIT_LABEL = {
  ["casts/s"] = "casts/s", ["calls/s"] = "calls/s", us = "µs", ["starts/s"] = "starts/s",
  ["bytes/server"] = "B/server", bytes = "B", ["roundtrips/s"] = "rt/s", ["msgs/s"] = "msg/s",
  ["hops/s"] = "hops/s", ["spawns/s"] = "spawns/s", ["meetings/s"] = "meet/s",
}

local function human(v, unit)
  if v == nil then return "—" end
  if unit == "bytes/server" or unit == "bytes" then
    local u = unit == "bytes" and "" or "/server"
    if v >= GB then return ("%.2f GB%s"):format(v / GB, u) end
    if v >= 2 ^ 20 then return ("%.1f MB%s"):format(v / 2 ^ 20, u) end
    if v >= 1024 then return ("%.1f KB%s"):format(v / 1024, u) end
    return ("%.0f B%s"):format(v, u)
  end
  local ul = UNIT_LABEL[unit] or unit or ""
  if unit == "us" then
    if v >= 100 then return ("%.0f µs"):format(v) end
    return ("%.2f µs"):format(v)
  end
  if v >= 1e6 then return ("%.2f M %s"):format(v / 1e6, ul) end
  if v >= 1e3 then return ("%.1f k %s"):format(v / 1e3, ul) end
  return ("%.1f %s"):format(v, ul)
end

local function target_text(t, unit)
  if not t then return "—" end
  if t.kind == "ratio_ge" then return ("≥ %g×"):format(t.x) end
  if t.kind == "ratio_le" then return ("≤ %g×"):format(t.x) end
  if t.kind == "abs_le" then return "≤ " .. human(t.x, unit) end
  if t.kind == "abs_lt" then return "< " .. human(t.x, unit) end
  return "?"
end

local rows = {}
for _, w in ipairs(selected) do
  local gst, ert = state[w.name].genserver, state[w.name].erlang
  for _, m in ipairs(w.metrics) do
    local row = { workload = w.name, metric = m.key, label = m.label, better = m.better,
                  target = m.target }
    local function collect(st)
      local vals, unit, extra = {}, nil, nil
      for _, r in ipairs(st.results) do
        local v = tonumber(r[m.key])
        if w.name == "big" and r.complete == "false" then
          extra = r
          -- stopped at the memory limit: the total is projected to n servers
          if m.key == "value" and v then v = r.rss / r.started * r.n end
        end
        if v then vals[#vals + 1] = v end
        unit = unit or r[m.unit_key or "unit"]
      end
      return { runs = vals, median = median(vals), unit = unit, errors = st.errors,
               warnings = st.warnings, loads = st.loads, attempted = st.attempted,
               skipped = st.skipped, incomplete = extra }
    end
    row.genserver = collect(gst)
    row.erlang = collect(ert)
    if ert.na then row.erlang.status = "n/a" elseif ert.missing then row.erlang.status = "missing" end
    row.unit = m.unit or row.genserver.unit or row.erlang.unit
    if w.name == "main_call" and not m.unit then row.unit = "us" end
    local g, e = row.genserver.median, row.erlang.median
    if g and e and e ~= 0 then row.ratio = g / e end
    -- pass / fail
    local t = m.target
    if not t then
      row.pass = nil
      row.result = "—"
    elseif not g then
      row.pass = false
      row.result = (#gst.errors > 0) and (gst.dead and "FAIL (timeout)" or "FAIL (error)")
        or "FAIL (no run)"
    elseif t.kind == "abs_le" or t.kind == "abs_lt" then
      if row.genserver.incomplete then
        row.pass = false
      elseif t.kind == "abs_le" then row.pass = g <= t.x
      else row.pass = g < t.x end
      row.result = row.pass and "pass" or "FAIL"
    elseif not row.ratio then
      row.pass = nil
      row.result = "n/a (no Erlang)"
    elseif t.kind == "ratio_ge" then
      row.pass = row.ratio >= t.x
      row.result = row.pass and "pass" or "FAIL"
    else
      row.pass = row.ratio <= t.x
      row.result = row.pass and "pass" or "FAIL"
    end
    rows[#rows + 1] = row
  end
end

-- ------------------------------------------------------------------- table

local function width(s) return utf8.len(s) or #s end
local function pad(s, n, right)
  local fill = (" "):rep(math.max(0, n - width(s)))
  return right and (fill .. s) or (s .. fill)
end

local function cell(side, row)
  if side.status == "n/a" then return "n/a" end
  if side.status == "missing" then return "missing" end
  if side.median then
    local s = human(side.median, row.unit)
    if side.incomplete then
      s = row.metric == "value" and ("≈ " .. s .. " (projected)") or (s .. " (partial)")
    end
    return s
  end
  if #side.errors > 0 then return side.errors[#side.errors]:match("^(%a+)"):upper() end
  if side.skipped > 0 then return "skipped" end
  return "—"
end

local function runs_cell(row)
  local function one(side)
    if side.status then return "-" end
    local n, a = #side.runs, side.attempted
    if n == a then return tostring(n) end
    return ("%d of %d"):format(n, a)
  end
  return one(row.genserver) .. ", " .. one(row.erlang)
end

local header = { "workload", "genserver", "Erlang", "gs÷Erlang", "target", "result", "runs gs, erl" }
local lines = {}
for _, row in ipairs(rows) do
  lines[#lines + 1] = {
    row.label, cell(row.genserver, row), cell(row.erlang, row),
    row.ratio and ("%.2f×"):format(row.ratio) or "—",
    target_text(row.target, row.unit), row.result, runs_cell(row),
  }
end
local widths = {}
for i, h in ipairs(header) do widths[i] = width(h) end
for _, l in ipairs(lines) do
  for i, c in ipairs(l) do if width(c) > widths[i] then widths[i] = width(c) end end
end
local function fmt_line(l)
  local out = {}
  for i, c in ipairs(l) do out[i] = pad(c, widths[i], i >= 2 and i <= 4) end
  return "| " .. table.concat(out, " | ") .. " |"
end
local sep = {}
for i, n in ipairs(widths) do sep[i] = ((i >= 2 and i <= 4) and ("-"):rep(n + 1) .. ":" or ("-"):rep(n + 2)) end

env.loadavg_end = read_file("/proc/loadavg"):match("^(%S+ %S+ %S+)")
local elapsed = now() - T0

io.write("\n")
io.write(fmt_line(header), "\n", "|" .. table.concat(sep, "|") .. "|", "\n")
for _, l in ipairs(lines) do io.write(fmt_line(l), "\n") end
io.write(("\nFigures are medians of the runs shown (genserver/Erlang), each run a fresh OS process;\n"
  .. "gs÷Erlang = genserver figure ÷ Erlang figure (higher is better for rates, lower for µs and memory).\n"))
io.write(("genserver workers: %s; Erlang/OTP %s%s; %d CPUs; load average %s → %s; commit %s%s\n")
  :format(env.workers or ("default (" .. env.cpus .. ")"), env.otp or "missing",
    WORKERS and (", +S " .. WORKERS) or "", env.cpus, env.loadavg_start or "?", env.loadavg_end or "?",
    env.commit ~= "" and env.commit or "?", env.dirty and " (+ uncommitted changes)" or ""))
if not erl_ok then io.write("Erlang figures missing: ", erl_why, "\n") end

-- problems, one line each
local problems = {}
for _, w in ipairs(selected) do
  for _, s in ipairs(sides) do
    local st = state[w.name][s]
    for _, e in ipairs(st.errors) do problems[#problems + 1] = ("%s (%s): %s"):format(w.name, s, e) end
    for _, e in ipairs(st.warnings) do problems[#problems + 1] = ("%s (%s): %s"):format(w.name, s, e) end
    if st.skipped > 0 then
      problems[#problems + 1] = ("%s (%s): %d run(s) skipped (time budget %d s)")
        :format(w.name, s, st.skipped, opts.budget)
    end
  end
end
for _, row in ipairs(rows) do
  local inc = row.genserver.incomplete
  if inc and row.metric == "value" then
    problems[#problems + 1] = ("big (genserver): stopped at %d of %d servers, RSS %s (limit reached); "
      .. "≈ %s for %d"):format(inc.started, inc.n, human(inc.rss, "bytes"),
      human(inc.rss / inc.started * inc.n, "bytes"), inc.n)
  end
end
if #problems > 0 then
  io.write("\nProblems:\n")
  for _, p in ipairs(problems) do io.write("  - ", p, "\n") end
end

-- instructions per operation (--instr): bench/instr.lua under callgrind
local instr
if opts.instr then
  instr = {}
  io.write("\nInstructions per operation (callgrind, 1 worker, bench/instr.lua):\n")
  local p = io.popen(("%s %s cast call start 2>&1"):format(LUA, sh_quote(HERE .. "/instr.lua")))
  for line in p:lines() do
    local w, n = line:match("^INSTR workload=(%S+) per_op=(%d+)")
    if w then
      instr[w] = tonumber(n)
      io.write(("  %-6s %8d instructions\n"):format(w, tonumber(n)))
    else
      io.write("  ", line, "\n")
    end
  end
  p:close()
end

local fails = 0
for _, row in ipairs(rows) do if row.pass == false then fails = fails + 1 end end
io.write(("\n%d target(s) met, %d not met; took %.0f s\n"):format(
  (function() local n = 0 for _, r in ipairs(rows) do if r.pass then n = n + 1 end end return n end)(),
  fails, elapsed))

-- -------------------------------------------------------------------- JSON

local function json(v, ind)
  ind = ind or ""
  local t = type(v)
  if v == nil then return "null" end
  if t == "boolean" then return tostring(v) end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    if math.type(v) == "integer" then return tostring(v) end
    return ("%.6g"):format(v)
  end
  if t == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c)
      local map = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\t"] = "\\t" }
      return map[c] or ("\\u%04x"):format(c:byte())
    end) .. '"'
  end
  local inner = ind .. "  "
  if #v > 0 or next(v) == nil then
    if next(v) == nil then return "[]" end
    local parts = {}
    for i, x in ipairs(v) do parts[i] = inner .. json(x, inner) end
    return "[\n" .. table.concat(parts, ",\n") .. "\n" .. ind .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = inner .. json(k) .. ": " .. json(v[k], inner) end
  return "{\n" .. table.concat(parts, ",\n") .. "\n" .. ind .. "}"
end

local out = {
  generated = os.date("!%Y-%m-%dT%H:%M:%SZ"),
  elapsed_s = elapsed,
  environment = env,
  erlang = { available = erl_ok, reason_missing = erl_why },
  ratio = "genserver median / Erlang median",
  instructions_per_op = instr,
  results = {},
}
for _, row in ipairs(rows) do
  local function side(s)
    return { median = s.median, runs = s.runs, errors = s.errors, warnings = s.warnings,
             loadavg_before_each_attempt = s.loads, attempted = s.attempted,
             skipped = s.skipped, status = s.status,
             incomplete = s.incomplete and { started = s.incomplete.started, n = s.incomplete.n,
                                             rss = s.incomplete.rss } or nil }
  end
  out.results[#out.results + 1] = {
    workload = row.workload, metric = row.metric, label = row.label, unit = row.unit,
    better = row.better, genserver = side(row.genserver), erlang = side(row.erlang),
    ratio = row.ratio,
    target = row.target and { kind = row.target.kind, value = row.target.x,
                              text = target_text(row.target, row.unit) } or nil,
    pass = row.pass, result = row.result,
  }
end
local f = io.open(opts.json, "w")
if f then
  f:write(json(out), "\n")
  f:close()
  io.write("wrote ", opts.json, "\n")
else
  io.stderr:write("cannot write ", opts.json, "\n")
end
-- the exit status says whether the bench ran, not whether targets were met
os.exit(0)
