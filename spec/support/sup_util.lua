-- spec/support/sup_util.lua: helpers shared by supervisor_spec, links_spec
-- and logger_spec (used in the main script's state).
local gs = require "genserver"
local process = require "genserver.process"
local runtime = require "genserver.runtime"
local logger = require "genserver.logger"

local S = {}

S.WAIT = 5000 -- upper bound for anything that should happen "soon"
S.REC = "sup_rec"  -- the main script's name: children report to it
S.SINK = "sup_log_sink"

--- Registers the main script as S.REC (again, if it got a new pid).
function S.recorder()
  local me = process.self()
  if process.whereis(S.REC) ~= me then
    process.unregister(S.REC)
    process.register(S.REC)
  end
  return S.REC
end

--- Drops everything in the main script's mailbox.
function S.flush()
  while process.receive(0) ~= nil do end
end

--- Starts the logger and the report sink, and routes reports to the sink.
function S.capture_reports()
  assert(logger.start())
  if not process.whereis(S.SINK) then
    assert(gs.start("sup_sink", nil, { name = S.SINK }))
  end
  assert(logger.set_handler("sup_log_handler"))
  logger.sync()
  gs.call(S.SINK, "take")
end

--- Reports received by the sink since the last take, after the logger
-- has handled everything sent to it so far.
function S.reports()
  logger.sync()
  return gs.call(S.SINK, "take")
end

--- Waits (bounded) until `pred(reports_so_far)` is true; returns the
-- reports. Fails the test if it never is.
function S.wait_reports(pred, what)
  local all = {}
  for _ = 1, 500 do
    for _, r in ipairs(S.reports()) do all[#all + 1] = r end
    if pred(all) then return all end
    process.sleep(10)
  end
  error("timed out waiting for reports: " .. (what or "?"), 2)
end

--- Reports of `kind` (and, for supervisor reports, `context`) in a list.
function S.filter(reports, kind, context)
  local out = {}
  for _, r in ipairs(reports) do
    if r.kind == kind and (context == nil or r.context == context) then out[#out + 1] = r end
  end
  return out
end

--- Waits for a message for which match(m) is true; fails the test otherwise.
function S.await(match, what, timeout)
  local m = process.receive(match, timeout or S.WAIT)
  if m == nil then error("timed out waiting for " .. (what or "a message"), 2) end
  return m
end

--- Waits for the DOWN of monitor `ref`.
function S.await_down(ref)
  return S.await(function(m)
    return type(m) == "table" and m[1] == "DOWN" and m.ref == ref
  end, "DOWN")
end

--- Waits for a { tag, id, ... } message from a sup_child.
function S.await_tag(tag, id)
  return S.await(function(m)
    return type(m) == "table" and m[1] == tag and (id == nil or m[2] == id)
  end, tag .. " " .. tostring(id))
end

--- Polls `f()` (bounded) until it returns a true value, which it returns.
function S.eventually(f, what, tries)
  for _ = 1, tries or 500 do
    local v = f()
    if v then return v end
    process.sleep(10)
  end
  error("timed out waiting until " .. (what or "?"), 2)
end

--- The child of `sup` with id `id` from which_children.
function S.child(sup, id)
  for _, c in ipairs(require("genserver.supervisor").which_children(sup)) do
    if c.id == id then return c end
  end
  return nil
end

--- The pid of child `id` (nil unless it is running).
function S.pid_of(sup, id)
  local c = S.child(sup, id)
  if c and process.is_pid(c.pid) then return c.pid end
  return nil
end

--- Waits until child `id` of `sup` runs with a pid other than `old`.
function S.restarted(sup, id, old)
  return S.eventually(function()
    local p = S.pid_of(sup, id)
    if p and p ~= old then return p end
    return nil
  end, ("child %s restarted"):format(tostring(id)))
end

--- Stops `pid` if it is alive (test clean-up) and waits until it is gone.
function S.stop(pid)
  if pid == nil or not process.alive(pid) then return end
  local ref = process.monitor(pid)
  pcall(gs.stop, pid, "shutdown")
  S.await_down(ref)
end

--- Kills `pid` and waits until it is gone.
function S.kill(pid, reason)
  local ref = process.monitor(pid)
  process.exit(pid, reason or "kill")
  return S.await_down(ref).reason
end

--- The number of (non-foreign) processes, once it stops changing toward
-- `target` (bounded wait).
function S.settle(target)
  local now
  for _ = 1, 500 do
    now = runtime.stats().processes
    if now == target then return now end
    process.sleep(10)
  end
  return now
end

--- A child spec for sup_child.
function S.spec(id, arg, fields)
  local a = { id = id, rec = S.REC }
  for k, v in pairs(arg or {}) do a[k] = v end
  local c = { id = id, start = { "sup_child", a } }
  for k, v in pairs(fields or {}) do c[k] = v end
  return c
end

return S
