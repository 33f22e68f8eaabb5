-- Out-of-memory injection (DESIGN §5): the n-th allocation in a process's
-- state fails (opts.fail_alloc), swept over start, init, a call, a cast and
-- terminate of a gen_server, and over spawn, send and receive of a plain
-- process. Whatever n is, the caller gets a result or a clear error, the
-- process ends with a reason, its name is released, and nothing is left
-- behind (run under make test-asan / test-valgrind for the leak side).
package.path = "spec/support/?.lua;" .. package.path

local gs = require "genserver"
local process = require "genserver.process"
local core = require "genserver.core"
local runtime = require "genserver.runtime"
local U = require "pr_util"

local SWEEP = 700 -- beyond the allocations of one whole run

local function down_of(ref)
  return process.receive(function(m)
    return type(m) == "table" and m[1] == "DOWN" and m.ref == ref
  end, 10000)
end

local function settle(baseline)
  for _ = 1, 500 do
    if runtime.stats().processes <= baseline then return true end
    process.sleep(2)
  end
  return false
end

describe("out-of-memory injection", function()
  -- crashes start the crash-report logger, which stays: start it first so
  -- that it is part of the baseline
  setup(function() require("genserver.logger").start() end)

  it("a gen_server failing at any allocation leaves the runtime consistent", function()
    local baseline = runtime.stats().processes
    local outcomes = { started = 0, failed_start = 0, call_ok = 0, call_err = 0 }
    for n = 1, SWEEP do
      local pid, ref = gs.start_monitor("oom_server", 20, { name = "oom_srv", fail_alloc = n })
      if pid then
        outcomes.started = outcomes.started + 1
        local ok, err = pcall(gs.call, pid, "x", 5000)
        if ok then
          assert.are.equal(20, err)
          outcomes.call_ok = outcomes.call_ok + 1
        else
          assert.is_true(gs.is_error(err), tostring(err))
          assert.is_not_nil(err.reason)
          outcomes.call_err = outcomes.call_err + 1
        end
        gs.cast(pid, "y")
        local sok, serr = pcall(gs.stop, pid, "normal", 5000)
        assert.is_true(sok or gs.is_error(serr), tostring(serr))
        local down = down_of(ref)
        assert.is_not_nil(down, "DOWN for n = " .. n)
        assert.is_not_nil(down.reason)
      else
        outcomes.failed_start = outcomes.failed_start + 1
        assert.is_not_nil(ref, "a reason for a failed start (n = " .. n .. ")")
      end
      -- the name is free again whatever happened
      assert.is_nil(process.whereis("oom_srv"), "name still held at n = " .. n)
    end
    assert.is_true(settle(baseline))
    -- the sweep reached every stage: failed starts, failed calls, clean runs
    assert.is_true(outcomes.failed_start > 0)
    assert.is_true(outcomes.call_err > 0)
    assert.is_true(outcomes.call_ok > 0)
  end)

  it("a plain process failing at any allocation ends with a reason", function()
    local baseline = runtime.stats().processes
    local me = process.self()
    local replies = 0
    for n = 1, SWEEP // 2 do
      local pid, ref = core.spawn(function(parent)
        local P = require "genserver.process"
        local m = P.receive(5000)
        local t = {}
        for i = 1, 10 do t[i] = { m, i } end
        P.send(parent, { "done", #t })
      end, { monitor = true, fail_alloc = n }, me)
      process.send(pid, "hello")
      local down = down_of(ref)
      assert.is_not_nil(down, "DOWN for n = " .. n)
      if down.reason == "normal" then replies = replies + 1 end
    end
    -- collect the replies of the runs that got through
    local got = 0
    while process.receive(function(m) return type(m) == "table" and m[1] == "done" end, 0) do
      got = got + 1
    end
    assert.are.equal(replies, got)
    assert.is_true(replies > 0)
    assert.is_true(settle(baseline))
  end)

  it("rejects a bad value", function()
    assert.has_error(function() gs.start("oom_server", 1, { fail_alloc = 0 }) end)
  end)
end)
