--[[
examples/job_queue.lua — a supervised job queue: workers pull jobs, a job
that crashes its worker is retried, then given up.

What it shows:
  * a supervision tree:
        jobs.sup (rest_for_one)
        ├── jobs.queue   the queue server: pending jobs, results
        └── jobs.workers (one_for_one) with 3 workers
    rest_for_one: if the queue dies, the workers (started after it) are
    restarted too, since they depend on it; a worker that dies is
    restarted alone by its own supervisor;
  * deferred replies: a worker asks for the next job with a call
    ("take"); when there is none, the queue keeps the caller's `from`
    and returns "noreply", and answers it with genserver.reply when a job
    is submitted. Likewise "wait_all" answers once every job has ended;
  * handle_continue: after init and after each job a worker returns a
    { continue = "next" } action, and handle_continue pulls the next job
    (while it waits in that call it handles nothing else: fine for a
    worker, whose only job is to work);
  * monitors for retries: the queue monitors the worker that took a job;
    if that worker dies before reporting the result (a Lua error in the
    job: the supervisor restarts the worker), the DOWN message puts the
    job back in the queue, up to `max_attempts` tries; then it is marked
    failed;
  * crash reports and supervisor reports on stderr as workers crash.

Run it from the repository root (after `make`):
  eval "$(make -s env)"; lua5.4 examples/job_queue.lua
]]

local gs = require "genserver"
local process = require "genserver.process"
local supervisor = require "genserver.supervisor"

-- ------------------------------------------------------------ the queue

local Queue = { name = "jobs.queue" }

function Queue.init(cfg)
  return "ok", {
    max_attempts = cfg.max_attempts,
    pending = {},        -- jobs not taken yet, in order
    idle = {},           -- `from`s of workers waiting for a job
    running = {},        -- worker pid -> { job =, ref = (monitor on the worker) }
    results = {},        -- id -> { ok =, value = | reason =, attempts = }
    open = 0,            -- jobs submitted and not ended
    waiters = {},        -- `from`s of wait_all callers
  }
end

-- gives `job` to the worker `from` (a caller blocked in "take")
local function hand_out(st, from, job)
  job.attempts = job.attempts + 1
  st.running[from[1]] = { job = job, ref = process.monitor(from[1]) }
  gs.reply(from, job)
end

local function ended(st, id, result)
  st.results[id] = result
  st.open = st.open - 1
  if st.open == 0 then
    for _, from in ipairs(st.waiters) do gs.reply(from, st.results) end
    st.waiters = {}
  end
end

local function dispatch(st)
  while #st.pending > 0 and #st.idle > 0 do
    hand_out(st, table.remove(st.idle, 1), table.remove(st.pending, 1))
  end
end

function Queue.handle_call(req, from, st)
  if req[1] == "submit" then
    st.pending[#st.pending + 1] = { id = req[2], input = req[3], attempts = 0 }
    st.open = st.open + 1
    dispatch(st)
    return "reply", true, st
  elseif req[1] == "take" then
    st.idle[#st.idle + 1] = from -- answered by dispatch, now or later
    dispatch(st)
    return "noreply", st
  elseif req[1] == "wait_all" then
    if st.open == 0 then return "reply", st.results, st end
    st.waiters[#st.waiters + 1] = from
    return "noreply", st
  end
  return "reply", nil, st
end

function Queue.handle_cast(msg, st)
  if msg[1] == "done" then -- { "done", worker, value }: the worker finished its job
    local run = st.running[msg[2]]
    if run then
      process.demonitor(run.ref, "flush")
      st.running[msg[2]] = nil
      ended(st, run.job.id, { ok = true, value = msg[3], attempts = run.job.attempts })
    end
  end
  return "noreply", st
end

function Queue.handle_info(msg, st)
  if msg[1] == "DOWN" then
    local run = st.running[msg.pid]
    if run and run.ref == msg.ref then -- the worker died with this job
      local job = run.job
      st.running[msg.pid] = nil
      if job.attempts < st.max_attempts then
        st.pending[#st.pending + 1] = job
        dispatch(st)
      else
        ended(st, job.id, { ok = false, attempts = job.attempts,
                            reason = type(msg.reason) == "table" and msg.reason.error
                                     or tostring(msg.reason) })
      end
    end
  end
  return "noreply", st
end

-- ----------------------------------------------------------- the workers

local Worker = { name = "jobs.worker" }

-- The work: the sum of 1..n. A job whose input is "poison" raises an error.
local function work(input)
  if input == "poison" then error("poison job") end
  local s = 0
  for i = 1, input do s = s + i end
  return s
end

function Worker.init(id)
  return "ok", { id = id }, { continue = "next" }
end

function Worker.handle_continue(_, st)
  local job = gs.call("jobs.queue", { "take" }, "infinity") -- waits for a job
  gs.cast("jobs.queue", { "done", process.self(), work(job.input) })
  return "noreply", st, { continue = "next" }
end

-- ---------------------------------------------------------------- script

local sup = assert(supervisor.start({
  strategy = "rest_for_one",
  children = {
    { id = "queue", start = { Queue, { max_attempts = 2 }, { name = "jobs.queue" } } },
    { id = "workers", type = "supervisor", start = { "genserver.supervisor", {
        strategy = "one_for_one", intensity = 10, period = 5,
        children = {
          { id = 1, start = { Worker, 1 } },
          { id = 2, start = { Worker, 2 } },
          { id = 3, start = { Worker, 3 } },
        } } } },
  },
}, { name = "jobs.sup" }))
print("job queue started with 3 workers")

local inputs = { 10, 100, "poison", 1000, 5, 50 }
for id, input in ipairs(inputs) do
  gs.call("jobs.queue", { "submit", id, input })
end
print(("submitted %d jobs (job 3 is poison: each try crashes its worker;"):format(#inputs))
print(" crash and supervisor reports follow on stderr)")

local results = gs.call("jobs.queue", { "wait_all" }, 10000)
for id = 1, #inputs do
  local r = results[id]
  if r.ok then
    print(("job %d: sum 1..%s = %d (attempts: %d)"):format(id, inputs[id], r.value, r.attempts))
  else
    print(("job %d: failed after %d attempts: %s"):format(id, r.attempts,
      tostring(r.reason):match("poison job") or tostring(r.reason)))
  end
end

-- The queue learnt of the last crash from its monitor; the workers'
-- supervisor learns of it from its link, maybe a moment later, and then
-- restarts the worker: give it that moment (bounded) before counting.
local workers_sup = supervisor.which_children(sup)[2].pid
local w
for _ = 1, 500 do
  w = supervisor.count_children(workers_sup)
  if w.active == 3 then break end
  process.sleep(10)
end
print(("workers still running: %d"):format(w.active))
gs.stop(sup)
print("done")
