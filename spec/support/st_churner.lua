-- spec/support/st_churner.lua: concurrent start/stop of one registered
-- name (spec/stress_spec.lua). Runs `n` rounds of
--   gs.start("gs_counter", i, { name = name })
-- and, when it wins the name, checks that the name is its own (whereis and
-- a call by name), then stops its server. Losing must give
-- { already_started = pid }. With `stopper` true it instead stops whatever
-- holds the name, `n` times (noproc when nobody does is fine).
-- Reports { "churn_done", id, won, lost, problem_or_nil } to `main`.
local gs = require "genserver"
local process = require "genserver.process"

-- the server was stopped by someone else meanwhile: the call or stop finds
-- nobody (noproc) or sees it end with the stop reason ("normal")
local function gone(err)
  return gs.is_error(err) and (err.reason == "noproc" or err.reason == "normal")
end

local function churn(name, n)
  local won, lost = 0, 0
  for i = 1, n do
    local pid, reason = gs.start("gs_counter", i, { name = name })
    if pid then
      won = won + 1
      local holder = process.whereis(name)
      -- a stopper may have ended it already; nobody else may hold the name
      if holder ~= pid and holder ~= nil and process.alive(pid) then
        return nil, ("round %d: won the name but whereis gives %s"):format(i, tostring(holder))
      end
      local ok, v = pcall(gs.call, name, "get")
      if ok and v ~= i and process.alive(pid) then
        return nil, ("round %d: a call by name reached another server (%s)"):format(i, tostring(v))
      elseif not ok and not gone(v) then
        return nil, ("round %d: call by name failed: %s"):format(i, gs.describe(v))
      end
      local sok, err = pcall(gs.stop, pid)
      if not sok and not gone(err) then
        return nil, ("round %d: stop failed: %s"):format(i, gs.describe(err))
      end
      if process.whereis(name) == pid then
        return nil, ("round %d: the name still points to the stopped server"):format(i)
      end
    else
      if type(reason) ~= "table" or not process.is_pid(reason.already_started) then
        return nil, ("round %d: start failed with %s"):format(i, gs.describe(reason))
      end
      lost = lost + 1
    end
  end
  return won, lost
end

local function stop_holders(name, n)
  local stopped = 0
  for _ = 1, n do
    local ok, err = pcall(gs.stop, name)
    if ok then stopped = stopped + 1
    elseif not gone(err) then
      return nil, "stop by name failed: " .. gs.describe(err)
    end
  end
  return stopped, 0
end

return function(main, id, name, n, stopper)
  local ok, won, lost = pcall(stopper and stop_holders or churn, name, n)
  if not ok then
    process.send(main, { "churn_done", id, 0, 0, "raised: " .. tostring(won) })
  elseif won == nil then
    process.send(main, { "churn_done", id, 0, 0, lost })
  else
    process.send(main, { "churn_done", id, won, lost })
  end
end
