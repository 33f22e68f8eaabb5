--[[
examples/worker_pool.lua — a pool of workers with checkout and checkin
(in the manner of Erlang's poolboy).

What it shows:
  * a pool server that starts N worker servers with genserver.start_link;
    the pool traps exits (the `trap_exit` start option), so a worker that
    crashes sends it {"EXIT", pid =, reason =} instead of killing it, and
    the pool replaces that worker with a fresh one;
  * `checkout` is a call that may have to wait: when every worker is out,
    the pool keeps the caller's `from` in a queue and returns "noreply";
    a later checkin answers it with genserver.reply(from, worker) — the
    caller simply blocks in its call until then (or until its call
    time-out);
  * the pool *monitors* each borrower: when a borrower ends without
    checking its worker in (it crashed), the DOWN message gives the worker
    back to the pool, and the next waiting caller gets it;
  * `transaction(pool, fn)`: check out, run fn(worker), check in, even when
    fn raises (pcall).

Run it from the repository root (after `make`):
  eval "$(make -s env)"; lua5.4 examples/worker_pool.lua
]]

local gs = require "genserver"
local process = require "genserver.process"

-- ---------------------------------------------------------------- worker

-- A worker squares numbers, slowly; "boom" makes it crash.
local Worker = { name = "pool_worker" }

function Worker.init(id)
  return "ok", { id = id, jobs = 0 }
end

function Worker.handle_call(req, _from, st)
  if req == "boom" then error("worker " .. st.id .. " was asked to explode") end
  st.jobs = st.jobs + 1
  return "reply", { worker = st.id, result = req * req }, st
end

-- ------------------------------------------------------------------ pool

local Pool = { name = "pool" }

function Pool.init(size)
  local st = {
    free = {},       -- list of idle worker pids
    out = {},        -- worker pid -> { borrower =, ref = } (monitor on the borrower)
    waiting = {},    -- queue of `from`s of callers waiting for a worker
    next_id = 0,
    replaced = 0,    -- workers replaced after a crash
  }
  for _ = 1, size do Pool.add_worker(st) end
  return "ok", st
end

function Pool.add_worker(st)
  st.next_id = st.next_id + 1
  local pid = assert(gs.start_link(Worker, st.next_id))
  st.free[#st.free + 1] = pid
end

-- hands `worker` to the first waiting caller, or puts it back on the shelf
local function give_back(st, worker)
  local from = table.remove(st.waiting, 1)
  if from then
    st.out[worker] = { borrower = from[1], ref = process.monitor(from[1]) }
    gs.reply(from, worker)
  else
    st.free[#st.free + 1] = worker
  end
end

function Pool.handle_call(req, from, st)
  if req == "checkout" then
    local worker = table.remove(st.free)
    if worker == nil then
      st.waiting[#st.waiting + 1] = from -- answered by a later checkin
      return "noreply", st
    end
    st.out[worker] = { borrower = from[1], ref = process.monitor(from[1]) }
    return "reply", worker, st
  elseif req == "status" then
    local out = 0
    for _ in pairs(st.out) do out = out + 1 end
    return "reply", { free = #st.free, out = out, waiting = #st.waiting,
                      replaced = st.replaced }, st
  end
  return "reply", nil, st
end

function Pool.handle_cast(msg, st)
  if msg[1] == "checkin" then
    local loan = st.out[msg[2]]
    if loan then
      process.demonitor(loan.ref, "flush")
      st.out[msg[2]] = nil
      give_back(st, msg[2])
    end
  end
  return "noreply", st
end

function Pool.handle_info(msg, st)
  if msg[1] == "DOWN" then -- a borrower ended with a worker checked out
    for worker, loan in pairs(st.out) do
      if loan.ref == msg.ref then
        st.out[worker] = nil
        give_back(st, worker)
        break
      end
    end
  elseif msg[1] == "EXIT" then -- a worker crashed: replace it
    local loan = st.out[msg.pid]
    if loan then process.demonitor(loan.ref, "flush") end
    st.out[msg.pid] = nil
    for i, w in ipairs(st.free) do
      if w == msg.pid then table.remove(st.free, i) break end
    end
    Pool.add_worker(st)
    st.replaced = st.replaced + 1
    give_back(st, table.remove(st.free))
  end
  return "noreply", st
end

-- ------------------------------------------------------------ client API

local function checkout(pool, timeout) return gs.call(pool, "checkout", timeout) end
local function checkin(pool, worker) gs.cast(pool, { "checkin", worker }) end

local function transaction(pool, fn)
  local worker = checkout(pool)
  local ok, res = pcall(fn, worker)
  checkin(pool, worker)
  if not ok then error(res, 0) end
  return res
end

-- ---------------------------------------------------------------- script

local pool = assert(gs.start(Pool, 2, { name = "pool", trap_exit = true }))
local function status()
  local s = gs.call(pool, "status")
  return ("free %d, out %d, waiting %d"):format(s.free, s.out, s.waiting)
end
print("pool of 2 workers: " .. status())

local r = transaction(pool, function(w) return gs.call(w, 7) end)
print(("7 squared is %d"):format(r.result))

-- A borrower that crashes while holding a worker gives it back.
local main = process.self()
local borrower = process.spawn(function()
  local w = checkout("pool")
  process.send(main, { "holding", w })
  process.receive()           -- wait to be told to crash
  error("the borrower crashed while holding a worker")
end)
local held = process.receive(function(m) return m[1] == "holding" end, 5000)
assert(held, "the borrower did not check out")
print("a borrower holds a worker: " .. status())

-- Both workers out: this checkout waits until the crash returns one.
local mine = checkout(pool)
print("the main script holds the other: " .. status())
local waiter = process.spawn(function()
  local w = checkout("pool", 5000)  -- blocks: nothing free
  process.send(main, { "got", same = (w == held[2]) })
  checkin("pool", w)
end)
for _ = 1, 200 do -- wait (bounded) until the waiter is queued
  if gs.call(pool, "status").waiting == 1 then break end
  process.sleep(5)
end
print("a third caller waits: " .. status())
process.send(borrower, "crash")
local got = process.receive(function(m) return m[1] == "got" end, 5000)
assert(got, "the waiter never got a worker")
print("the borrower crashed; the waiter got its worker: " .. tostring(got.same))
checkin(pool, mine)
for _ = 1, 200 do
  if gs.call(pool, "status").free == 2 then break end
  process.sleep(5)
end
print("all back: " .. status())

-- A worker that crashes is replaced (the pool traps exits).
local ok, err = pcall(transaction, pool, function(w) return gs.call(w, "boom") end)
print("a job that crashes its worker fails: " .. tostring(not ok and gs.is_error(err)))
for _ = 1, 200 do
  local s = gs.call(pool, "status")
  if s.replaced == 1 and s.free == 2 then break end
  process.sleep(5)
end
print(("the pool replaced it (%d replaced): %s"):format(gs.call(pool, "status").replaced, status()))
r = transaction(pool, function(w) return gs.call(w, 12) end)
print(("12 squared is %d"):format(r.result))
gs.stop(pool)
print("done")
