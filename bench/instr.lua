--[[
bench/instr.lua — instructions per operation, counted by callgrind.

  lua5.4 bench/instr.lua [--workers N] [--reps R] [workload ...]

Runs `bench/run.lua WORKLOAD N` under `valgrind --tool=callgrind` at two
sizes and prints (instructions(N2) - instructions(N1)) / (N2 - N1): the
fixed cost of starting the runtime and the workload cancels out. Each size
is run R times (default 1) and the lowest count is kept (a spinning worker
adds a little noise). Counts every thread of the OS process. The default
workloads are cast, call and start; the default worker count is 1
(GENSERVER_WORKERS), which keeps the spin-wait of idle workers out of the
count as far as possible.

Prints one line per workload:

  INSTR workload=cast per_op=10412 n1=20000 n2=40000

and exits with 1 when valgrind is missing or a run fails.
]]

local SIZES = {
  cast = { 20000, 40000 },
  call = { 10000, 20000 },
  main_call = { 10000, 20000 },
  start = { 1000, 2000 },
  start_table = { 1000, 2000 },
  clients = { 10, 20 },  -- C clients x 100 calls each (see below)
}
local EXTRA = { clients = " 100" }

local function script_dir()
  return (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
end

local HERE = script_dir()
local LUA = os.getenv("BENCH_LUA") or "lua5.4"

local workers, reps = "1", 1
local names = {}
local i = 1
while i <= #arg do
  local a = arg[i]
  if a == "--workers" then workers = arg[i + 1]; i = i + 1
  elseif a == "--reps" then reps = tonumber(arg[i + 1]); i = i + 1
  else names[#names + 1] = a end
  i = i + 1
end
if #names == 0 then names = { "cast", "call", "start" } end

if not os.execute("command -v valgrind >/dev/null 2>&1") then
  io.stderr:write("instr: valgrind not found (apt-get install valgrind)\n")
  os.exit(1)
end

--- Instructions of one run of `workload n` under callgrind, or nil, reason.
local function count(workload, n)
  local out = os.tmpname()
  local cmd = ("GENSERVER_WORKERS=%s valgrind --tool=callgrind --callgrind-out-file=%s " ..
               "%s %s/run.lua %s %d%s 2>&1"):format(workers, out, LUA, HERE, workload, n,
                                                     EXTRA[workload] or "")
  local p = io.popen(cmd)
  local text = p:read("a")
  p:close()
  local f = io.open(out, "r")
  local total
  if f then
    total = tonumber(f:read("a"):match("\ntotals:%s*(%d+)"))
    f:close()
  end
  os.remove(out)
  if not total or not text:find("RESULT workload=") then
    return nil, text:match("ERROR[^\n]*") or "no result"
  end
  return total
end

local function best(workload, n)
  local lo
  for _ = 1, reps do
    local c, err = count(workload, n)
    if not c then return nil, err end
    if not lo or c < lo then lo = c end
  end
  return lo
end

local failed = false
for _, w in ipairs(names) do
  local sz = SIZES[w]
  if not sz then
    io.stderr:write("instr: no sizes for workload " .. w .. "\n")
    failed = true
  else
    local c1, e1 = best(w, sz[1])
    local c2, e2 = c1 and best(w, sz[2])
    if not c1 or not c2 then
      print(("INSTR workload=%s error=%q"):format(w, tostring(e1 or e2)))
      failed = true
    else
      local ops = sz[2] - sz[1]
      if w == "clients" then ops = ops * 100 end
      print(("INSTR workload=%s per_op=%d n1=%d n2=%d workers=%s")
        :format(w, math.floor((c2 - c1) / ops + 0.5), sz[1], sz[2], workers))
    end
  end
  io.stdout:flush()
end
os.exit(failed and 1 or 0)
