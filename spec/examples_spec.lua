-- Specs for the examples in examples/: each runs in a child lua5.4 with a
-- time limit (spec/support/cmd_util.lua), must exit 0, and must print the
-- lines that show what its header says it demonstrates, in order. The
-- examples assert their own invariants too, so a broken behaviour makes
-- the example fail (non-zero exit, message on stderr).
local C = require "cmd_util"

local function run_example(name, want)
  local r = C.lua("examples/" .. name)
  assert(r.ok, C.show(r))
  local ok, why = C.in_order(r.out, want)
  assert(ok, (why or "") .. "\n" .. C.show(r))
  return r
end

describe("examples", function()
  it("chat_room.lua: members join and talk; monitors remove members that leave, crash or are killed", function()
    run_example("chat_room.lua", {
      "members: ada, bob, cy",
      "bob hears: <ada> hello all",
      "cy hears: <ada> hello all",
      "cy hears: bob left (left)",
      "members: ada, cy",
      "ada hears: cy left (crashed)",
      "members: ada\n",
      "after ada was killed, members: 0",
      "done",
    })
  end)

  it("worker_pool.lua: a waiting checkout is answered later; a crashing borrower gives its worker back", function()
    run_example("worker_pool.lua", {
      "7 squared is 49",
      "a borrower holds a worker: free 1, out 1, waiting 0",
      "the main script holds the other: free 0, out 2, waiting 0",
      "a third caller waits: free 0, out 2, waiting 1",
      "the borrower crashed; the waiter got its worker: true",
      "all back: free 2, out 0, waiting 0",
      "a job that crashes its worker fails: true",
      "the pool replaced it (1 replaced): free 2, out 0, waiting 0",
      "12 squared is 144",
      "done",
    })
  end)

  it("todo.lua: one list server per name under simple_one_for_one, started on demand", function()
    run_example("todo.lua", {
      "bob's list server: true",
      "asking again gives the same server: true",
      "alice gets her own: true",
      "bob on 2026-12-19: Dentist, Movies",
      "bob on 2026-12-20: Shopping",
      "alice on 2026-12-19: Climbing",
      "list servers running: 2",
      "the caller gets a genserver error: true",
      "bob on 2026-12-19: -",
      "a new server for bob: true",
      "servers started on demand: 3",
      "done",
    })
  end)

  it("rate_limiter.lua: a token bucket refilled by send_after, hibernating after an idle time-out", function()
    run_example("rate_limiter.lua", {
      "a burst of 5 requests: true true true false false",
      "after a refill: 3 tokens",
      "one more request: true",
      "the limiter hibernates with a full bucket: true",
      "a request wakes it: true",
      "allowed 5, refused 2",
      "done",
    })
  end)

  it("job_queue.lua: workers pull jobs; a crashing job is retried, then failed; workers are restarted", function()
    run_example("job_queue.lua", {
      "job 1: sum 1..10 = 55 (attempts: 1)",
      "job 2: sum 1..100 = 5050 (attempts: 1)",
      "job 3: failed after 2 attempts: poison job",
      "job 4: sum 1..1000 = 500500 (attempts: 1)",
      "job 5: sum 1..5 = 15 (attempts: 1)",
      "job 6: sum 1..50 = 1275 (attempts: 1)",
      "workers still running: 3",
      "done",
    })
  end)

  it("the demos run by make demo still run", function()
    for _, name in ipairs({ "counter.lua", "kv_store.lua", "supervision_tree.lua" }) do
      local r = C.lua("examples/" .. name)
      assert(r.ok, C.show(r))
    end
  end)
end)
