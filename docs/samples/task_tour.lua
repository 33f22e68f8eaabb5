-- docs/samples/task_tour.lua: genserver.task (docs/toolbox.md).
-- Run: eval "$(make -s env)"; lua5.4 docs/samples/task_tour.lua
local task = require "genserver.task"
local process = require "genserver.process"

-- async/await: run a function in its own process, get its results
local t = task.async(function(a, b) return a + b, a * b end, 6, 7)
print("await:", task.await(t))                                   --> 13  42

-- a task that takes too long is killed by await, which raises
local slow = task.async(function() process.sleep(10000) end)
local ok, err = pcall(task.await, slow, 50)
print("timeout:", ok, err.reason, "alive:", process.alive(slow.pid))  --> false timeout false

-- yield_many: wait for several, see which finished
local tasks = {
  task.async(function() return "fast" end),
  task.async_nolink(function() error("broken") end),
  task.async(function() process.sleep(10000) end),
}
for i, r in ipairs(task.yield_many(tasks, 200)) do
  if r[2] == true then print(i, "done", r[3])
  elseif r[2] == false then print(i, "crashed")
  else print(i, "still running"); task.shutdown(r[1], "brutal_kill") end
end

-- async_stream: at most 2 at once, results in the items' order
for i, ok2, square in task.async_stream({ 1, 2, 3, 4 }, function(x)
  process.sleep(5 * (5 - x))
  return x * x
end, { max_concurrency = 2 }) do
  print("stream:", i, ok2, square)
end
print("task_tour: ok")
