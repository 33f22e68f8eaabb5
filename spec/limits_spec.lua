-- Limits a process can be given (DESIGN §1.3, §2.2, §5): bounded mailboxes
-- with an overflow policy, a per-process memory cap, and the sandbox.
package.path = "spec/support/?.lua;" .. package.path

local gs = require "genserver"
local process = require "genserver.process"

local function down_of(ref, timeout)
  return process.receive(function(m)
    return type(m) == "table" and m[1] == "DOWN" and m.ref == ref
  end, timeout or 5000)
end

local function busy_server(opts)
  return gs.start_monitor("lim_busy", 0, opts)
end

-- fill a server's mailbox while it is blocked in a call
local function blocked(opts)
  local pid, ref = busy_server(opts)
  local req = gs.send_request(pid, "block")
  -- wait until it is inside the blocking call (its mailbox is empty again)
  for _ = 1, 500 do
    local info = process.info(pid)
    if info and info.mailbox == 0 then break end
    process.sleep(2)
  end
  return pid, ref, req
end

-- after the block: wait for the request's answer, then for the backlog to drain
local function unblocked(pid, req)
  assert(gs.wait_response(req, 5000))
  for _ = 1, 1000 do
    local info = process.info(pid)
    if not info or info.mailbox == 0 then return end
    process.sleep(2)
  end
end

describe("bounded mailboxes", function()
  it("'drop' drops the newest messages beyond the limit and counts them", function()
    local pid, _, req = blocked({ mailbox_limit = 5, overflow = "drop" })
    for i = 1, 20 do assert.is_true(gs.cast(pid, i)) end
    local info = process.info(pid)
    assert.are.equal(5, info.mailbox_limit)
    assert.are.equal(15, info.overflowed)
    unblocked(pid, req)
    assert.are.equal(5, gs.call(pid, "count")) -- only the first five casts ran
    gs.stop(pid)
  end)

  it("defaults to 'drop' when only mailbox_limit is given", function()
    local pid, _, req = blocked({ mailbox_limit = 3 })
    for i = 1, 10 do gs.cast(pid, i) end
    assert.are.equal(7, process.info(pid).overflowed)
    unblocked(pid, req)
    gs.stop(pid)
  end)

  it("'reject' makes cast return false and call fail with mailbox_full", function()
    local pid, _, req = blocked({ mailbox_limit = 4, overflow = "reject" })
    local results = {}
    for i = 1, 6 do results[i] = gs.cast(pid, i) end
    assert.are.same({ true, true, true, true, false, false }, results)
    local ok, err = pcall(gs.call, pid, "count", 1000)
    assert.is_false(ok)
    assert.is_true(gs.is_error(err))
    assert.are.equal("mailbox_full", err.reason)
    assert.are.equal(3, process.info(pid).overflowed) -- the call counts too
    assert.is_false(process.send(pid, "plain")) -- plain messages are limited as well
    unblocked(pid, req)
    assert.are.equal(4, gs.call(pid, "count"))
    gs.stop(pid)
  end)

  it("'kill' ends the receiver with mailbox_full, even if it traps exits", function()
    local pid, ref, req = blocked({ mailbox_limit = 2, overflow = "kill", trap_exit = true })
    for i = 1, 3 do gs.cast(pid, i) end
    local down = down_of(ref)
    assert.is_not_nil(down)
    assert.are.equal("mailbox_full", down.reason)
    assert.is_false(process.alive(pid))
    local ok, r = gs.wait_response(req, 1000)
    assert.is_false(ok)
    assert.are.equal("mailbox_full", r) -- it died before answering
  end)

  it("never refuses replies or signals: a full server still answers and can be stopped", function()
    local pid, ref, req = blocked({ mailbox_limit = 1, overflow = "reject" })
    assert.is_true(gs.cast(pid, 1))
    assert.is_false(gs.cast(pid, 2))
    assert.is_true((gs.wait_response(req, 5000))) -- its reply to us got through
    assert.is_true(gs.stop(pid, "normal", 5000))
    assert.are.equal("normal", down_of(ref).reason)
  end)

  it("rejects bad options with a clear error", function()
    for _, opts in ipairs({
      { mailbox_limit = 0 }, { mailbox_limit = 2.5 }, { mailbox_limit = "x" },
      { mailbox_limit = 3, overflow = "explode" }, { overflow = "drop" },
    }) do
      local ok, err = pcall(gs.start, "lim_sandboxed", 1, opts)
      assert.is_false(ok)
      assert.matches("mailbox_limit", tostring(err) .. "mailbox_limit") -- names an option
      assert.matches('option "', tostring(err))
    end
  end)
end)

describe("max_heap", function()
  it("ends the server that outgrows it with { max_heap = bytes }, others unaffected", function()
    local cap = 2 * 1024 * 1024
    local pid, ref = gs.start_monitor("lim_sandboxed", 1, { max_heap = cap })
    local other = assert(gs.start("lim_sandboxed", 2))
    assert.are.equal(cap, process.info(pid).max_heap)
    local ok, err = pcall(gs.call, pid, "grow", 20000)
    assert.is_false(ok)
    assert.are.same({ max_heap = cap }, err.reason)
    assert.are.same({ max_heap = cap }, down_of(ref).reason)
    assert.are.equal(42, gs.call(other, "text"))
    gs.stop(other)
  end)

  it("applies to plain processes too (core.spawn opts)", function()
    local core = require "genserver.core"
    local pid, ref = core.spawn(function()
      local t = {}
      while true do t[#t + 1] = ("y"):rep(64) .. #t end
    end, { monitor = true, max_heap = 1024 * 1024 })
    local down = down_of(ref)
    assert.are.same({ max_heap = 1024 * 1024 }, down.reason)
  end)

  it("a cap too small for the state itself fails the start cleanly", function()
    local pid, reason = gs.start("lim_sandboxed", 1, { max_heap = 1000 })
    assert.is_nil(pid)
    assert.are.same({ max_heap = 1000 }, reason)
  end)

  it("rejects a bad value", function()
    assert.has_error(function() gs.start("lim_sandboxed", 1, { max_heap = -1 }) end)
  end)
end)

describe("sandbox", function()
  local pid
  before_each(function() pid = assert(gs.start("lim_sandboxed", 1, { sandbox = true })) end)
  after_each(function() gs.stop(pid) end)

  it("has no io, os or debug", function()
    assert.are.equal("nil", gs.call(pid, "io"))
    assert.are.equal("nil", gs.call(pid, "os"))
    assert.are.equal("nil", gs.call(pid, "debug"))
  end)

  it("has no package.loadlib", function()
    assert.are.equal("nil", gs.call(pid, "loadlib"))
  end)

  it("loads text chunks but refuses binary ones", function()
    assert.are.equal(42, gs.call(pid, "text"))
    assert.matches("binary chunk", gs.call(pid, "bin"))
  end)

  it("still opens the harmless libraries on first use", function()
    assert.are.equal("ab", gs.call(pid, "table"))
  end)

  it("takes callback modules by name only, not copied functions", function()
    local p2, reason = gs.start({ init = function() return "ok", 1 end }, 1, { sandbox = true })
    assert.is_nil(p2)
    assert.matches("function", gs.describe(reason))
  end)

  it("refuses functions in messages but takes data, and lives on", function()
    assert.are.same({ 1, { 2 } }, gs.call(pid, { 1, { 2 } }))
    -- refused at the sender now (spec/sandbox_spec.lua has the rest)
    local ok, err = pcall(gs.call, pid, { f = function() end }, 1000)
    assert.is_false(ok)
    assert.matches("request.f: cannot send a function to a sandboxed process", err, 1, true)
    assert.has_error(function() gs.cast(pid, { g = function() end }) end)
    assert.are.equal(42, gs.call(pid, "text"))
  end)
end)
