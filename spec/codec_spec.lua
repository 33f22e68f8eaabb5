-- spec/codec_spec.lua: the value codec as seen from Lua (DESIGN.md §1.4).
--
-- Values go to an echo process (spec/support/pr_echo.lua) and back, so each
-- one is encoded and decoded twice, across two Lua states. Checks that need
-- the receiver's view run a function inside the echo process.
-- Malformed-input decoding is tested in C (spec/c/codec_test.c).
--
-- Run: make test SPECS=spec/codec_spec.lua   (under GENSERVER_WORKERS=1 and 4)

local U = require "pr_util"
local process = require "genserver.process"
local genserver = require "genserver"
local runtime = require "genserver.runtime"
local pr_mod = require "pr_mod"


local echo

local function rt(v) return U.roundtrip(echo, v) end

--- Runs fn(...) inside the echo process; returns its result (raises if it failed).
local function there(fn, ...)
  local ok, v = U.apply(echo, fn, ...)
  if not ok then error("in the echo process: " .. tostring(v), 2) end
  return v
end

--- The messages the echo recorded (any message without `op`), then cleared.
local function recorded()
  return U.ask(echo, "dump").value
end

--- pcall(process.send, dest, msg) and the error message.
local function refused(msg)
  local ok, err = pcall(process.send, echo, msg)
  assert.is_false(ok, "the send should have been refused")
  return tostring(err)
end

describe("codec", function()

  setup(function()
    echo = U.echo()
  end)

  teardown(function()
    if echo then process.send(echo, "stop") end
  end)

  before_each(function() U.flush() end)

  -- ------------------------------------------------------------ scalars

  describe("scalars", function()
    it("nil, booleans", function()
      assert.is_nil(rt(nil))
      assert.are.equal(true, rt(true))
      assert.are.equal(false, rt(false))
    end)

    it("keeps integers and floats distinct", function()
      for _, v in ipairs({ 0, 1, -1, 127, 128, -32, -33, 255, 256, 65535, 2 ^ 31 | 0,
                           1 << 40, math.maxinteger, math.mininteger,
                           math.mininteger + 1, -(1 << 53) }) do
        local r = rt(v)
        assert.are.equal("integer", math.type(r), tostring(v))
        assert.are.equal(v, r)
      end
      for _, v in ipairs({ 0.0, 1.0, -1.0, 0.5, 0.1, -2.75, 2.0 ^ 53, 2.0 ^ 63, 1e300,
                           -1e-300, 4.9e-324, math.pi }) do
        local r = rt(v)
        assert.are.equal("float", math.type(r), tostring(v))
        assert.is_true(r == v, tostring(v))
      end
    end)

    it("1 and 1.0 stay what they were, in the receiver too", function()
      local r = rt({ 1, 1.0 })
      assert.are.equal("integer", math.type(r[1]))
      assert.are.equal("float", math.type(r[2]))
      assert.are.same({ "integer", "float" }, there(function(a, b)
        return { math.type(a), math.type(b) }
      end, 1, 1.0))
    end)

    it("-0.0, inf, -inf and NaN", function()
      local nz = rt(-0.0)
      assert.are.equal("float", math.type(nz))
      assert.are.equal(-math.huge, 1 / nz)
      assert.are.equal(math.huge, rt(math.huge))
      assert.are.equal(-math.huge, rt(-math.huge))
      local nan = rt(0 / 0)
      assert.are.equal("float", math.type(nan))
      assert.is_true(nan ~= nan)
      assert.is_true(there(function(x) return x ~= x end, 0 / 0))
      assert.are.equal(-math.huge, there(function(x) return 1 / x end, -0.0))
    end)

    it("math.mininteger and math.maxinteger survive arithmetic checks there", function()
      assert.is_true(there(function(a, b)
        return a == math.mininteger and b == math.maxinteger and a - 1 == b
      end, math.mininteger, math.maxinteger))
    end)
  end)

  -- ------------------------------------------------------------ strings

  describe("strings", function()
    it("empty, short, 31/32 bytes, long", function()
      for _, n in ipairs({ 0, 1, 30, 31, 32, 33, 127, 128, 1000, 70000 }) do
        local s = ("x"):rep(n)
        assert.are.equal(s, rt(s))
      end
    end)

    it("binary safe: embedded zeros and all 256 bytes", function()
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      local s = table.concat(all)
      assert.are.equal(s, rt(s))
      assert.are.equal("\0", rt("\0"))
      assert.are.equal("a\0b\0\0c", rt("a\0b\0\0c"))
      assert.are.equal(256, there(function(x) return #x end, s))
      assert.are.equal(s:reverse(), rt(s:reverse()))
    end)

    it("a 1 MiB string", function()
      local s = ("0123456789abcdef"):rep(65536)
      local r = rt(s)
      assert.are.equal(#s, #r)
      assert.is_true(r == s)
    end)
  end)

  -- ------------------------------------------------------------- tables

  describe("tables", function()
    it("nested tables", function()
      local v = { a = { b = { c = { d = "deep" } } }, list = { 1, { 2, { 3 } } } }
      assert.are.same(v, rt(v))
    end)

    it("an empty table", function()
      local r = rt({})
      assert.are.equal("table", type(r))
      assert.is_nil(next(r))
    end)

    it("keys 1..n in the hash part, beside an array part and other keys", function()
      local rev = {}
      for i = 6, 1, -1 do rev[i] = i * 10 end
      rev.name = "rev"
      assert.are.same(rev, rt(rev))
      local mixed = { 1, 2, 3, x = "x", [10] = 10, [2.5] = "f" }
      mixed[4] = 4
      mixed[5] = { 5, [7] = 7 }
      assert.are.same(mixed, rt(mixed))
      local sparse = { [1] = "a", [3] = "c", [100] = "z" }
      assert.are.same(sparse, rt(sparse))
      local t = {}
      for i = 1, 40 do t[i] = i end
      for i = 1, 40, 3 do t[i] = nil end
      t[41] = "end"
      assert.are.same(t, rt(t))
    end)

    it("keeps every key when the border lives in the hash part (found by the roundtrip fuzzer)", function()
      -- an encoder that wrote 1..n by index and resumed lua_next from n
      -- lost the hash keys that came before n in traversal order
      local t = { [0.25] = 0, [0] = 20, [1] = -0.25, [2] = 4284547588 }
      assert.are.same(t, rt(t))
      -- small tables of integer and half keys near 1..n, one per seed
      local function small_table(seed)
        local u = {}
        math.randomseed(seed)
        for _ = 1, math.random(1, 12) do
          local k = math.random(0, 6)
          if math.random() < 0.3 then k = k + 0.5 end
          u[k] = math.random(1, 1000)
        end
        return u
      end
      -- a relay re-sends the table its decoder built (1..n in the hash part)
      local relay = process.spawn(function(parent)
        local P = require "genserver.process"
        while true do
          local m = P.receive()
          if m == "stop" then return end
          P.send(parent, { relayed = m })
        end
      end, process.self())
      local function via(v)
        process.send(relay, v)
        local r = process.receive(function(m) return type(m) == "table" and m.relayed ~= nil end, 5000)
        assert.is_not_nil(r, "the relay did not answer")
        return r.relayed
      end
      assert.are.same(t, via(t))
      for seed = 1, 200 do
        local u = small_table(seed)
        assert.are.same(u, via(u))
      end
      process.send(relay, "stop")
      for seed = 1, 200 do
        local u = small_table(seed)
        assert.are.same(u, rt(u))
      end
    end)

    it("nil inside tables (holes in the array part)", function()
      local r = rt({ 1, nil, 3, nil, 5 })
      assert.are.equal(1, r[1])
      assert.is_nil(r[2])
      assert.are.equal(3, r[3])
      assert.is_nil(r[4])
      assert.are.equal(5, r[5])
      local r2 = rt({ n = 3, nil, nil, "x" })
      assert.are.equal(3, r2.n)
      assert.is_nil(r2[1])
      assert.are.equal("x", r2[3])
    end)

    it("array and hash parts together", function()
      local v = { 10, 20, 30, x = "x", [100] = "far", [-1] = "neg", [0] = "zero" }
      local r = rt(v)
      assert.are.same(v, r)
      assert.are.equal(3, #r)
    end)

    it("a table with more than 127 hash entries inside another", function()
      local big = {}
      for i = 1, 300 do big["k" .. i] = i end
      local v = { before = "b", big = big, after = { 1, 2, 3 }, tail = "t" }
      assert.are.same(v, rt(v))
      local huge = {}
      for i = 1, 20000 do huge["key" .. i] = i end
      huge[1] = "one"
      assert.are.same(huge, rt(huge))
    end)

    it("a long array", function()
      local v = {}
      for i = 1, 10000 do v[i] = i * 1.5 end
      local r = rt(v)
      assert.are.equal(10000, #r)
      assert.are.same(v, r)
    end)

    it("false values in the array part", function()
      local r = rt({ false, false, true, false })
      assert.are.same({ false, false, true, false }, r)
      assert.are.equal(4, #r)
    end)

    it("keeps shared references (t.a == t.b)", function()
      local shared = { "s" }
      local r = rt({ a = shared, b = shared, list = { shared, shared } })
      assert.is_true(rawequal(r.a, r.b))
      assert.is_true(rawequal(r.a, r.list[1]))
      assert.is_true(rawequal(r.list[1], r.list[2]))
      assert.are.same({ "s" }, r.a)
      assert.is_true(there(function(t) return rawequal(t.a, t.b) end, { a = shared, b = shared }))
    end)

    it("keeps cycles (t.self == t)", function()
      local t = { name = "root" }
      t.self = t
      t.child = { parent = t }
      t.child.child_of_child = { up = t.child }
      local r = rt(t)
      assert.is_true(rawequal(r.self, r))
      assert.is_true(rawequal(r.child.parent, r))
      assert.is_true(rawequal(r.child.child_of_child.up, r.child))
      assert.are.equal("root", r.name)
    end)

    it("a cycle through the array part and a table used as its own key", function()
      local t = {}
      t[1] = t
      t[t] = t
      local r = rt(t)
      assert.is_true(rawequal(r[1], r))
      assert.is_true(rawequal(r[r], r))
    end)

    it("table keys of every sendable type", function()
      local ktab = { "key table" }
      local me = process.self()
      local ref = process.make_ref()
      local v = {
        [true] = "true", [false] = "false",
        [0] = "zero", [-7] = "neg", [1 << 50] = "big", [math.mininteger] = "min",
        [1.5] = "float", [-0.25] = "negfloat", [math.huge] = "inf",
        ["s"] = "str", [""] = "empty", ["a b\0c"] = "binary",
        [ktab] = "table", [me] = "pid", [ref] = "ref", [string] = "module",
        val = ktab,
      }
      local r = rt(v)
      for _, k in ipairs({ true, false, 0, -7, 1 << 50, math.mininteger, 1.5, -0.25,
                           math.huge, "s", "", "a b\0c", me, ref, string }) do
        assert.are.equal(v[k], r[k], "key " .. tostring(k))
      end
      -- the table key arrives as the same object as r.val
      assert.are.equal("table", r[r.val])
      local n = 0
      for _ in pairs(r) do n = n + 1 end
      assert.are.equal(17, n)
    end)

    it("a function as a table key", function()
      local f = function() return "f was called" end
      local r = rt({ [f] = "fn" })
      local k, v = next(r)
      assert.are.equal("function", type(k))
      assert.are.equal("fn", v)
      assert.are.equal("f was called", k())
    end)

    it("metatables are not sent and metamethods are not run", function()
      local mt = {
        __index = function() error("__index ran") end,
        __newindex = function() error("__newindex ran") end,
        __pairs = function() error("__pairs ran") end,
        __len = function() error("__len ran") end,
      }
      local v = setmetatable({ 1, 2, x = "x" }, mt)
      local r = rt(v)
      assert.is_nil(getmetatable(r))
      assert.are.same({ 1, 2, x = "x" }, r)
    end)

    it("spawn arguments share references as one message", function()
      local t = {}
      local me = process.self()
      process.spawn(function(a, b)
        require("genserver.process").send(me, { "shared_args", rawequal(a, b) })
      end, t, t)
      local m = U.await(function(x) return type(x) == "table" and x[1] == "shared_args" end)
      assert.is_true(m[2])
    end)
  end)

  -- ------------------------------------------------------- pids and refs

  describe("pids and refs", function()
    it("come back as the same (interned) objects", function()
      local me, ref = process.self(), process.make_ref()
      local r = rt({ me, ref, me, ref })
      assert.is_true(rawequal(r[1], me))
      assert.is_true(rawequal(r[2], ref))
      assert.is_true(rawequal(r[3], me))
      assert.is_true(rawequal(rt(echo), echo))
      assert.is_true(rawequal(rt(ref), ref))
    end)

    it("work as keys after the round trip", function()
      local me, ref = process.self(), process.make_ref()
      local r = rt({ [me] = 1, [ref] = 2, [echo] = 3 })
      assert.are.equal(1, r[me])
      assert.are.equal(2, r[ref])
      assert.are.equal(3, r[echo])
    end)

    it("are pids and refs in the receiver too", function()
      local ref = process.make_ref()
      local r = there(function(p, q, e)
        local pr = require "genserver.process"
        return { pr.is_pid(p), pr.is_ref(q), rawequal(e, pr.self()), tostring(p) }
      end, process.self(), ref, echo)
      assert.are.same({ true, true, true, tostring(process.self()) }, r)
    end)

    it("a dead pid still crosses and stays equal", function()
      local pid, mref = process.spawn_monitor(function() end)
      U.await_down(mref)
      assert.is_true(rawequal(rt(pid), pid))
    end)
  end)

  -- ---------------------------------------------------------- functions

  describe("functions", function()
    it("cross with their upvalues and run in the other process", function()
      local n, t = 10, { 1, 2, 3 }
      local fmt = string.format
      local insert = table.insert
      local gs = require "genserver"
      local f = function(x)
        insert(t, x)
        return fmt("%d:%d:%s:%s", n + x, #t, type(gs.call),
                   tostring(require("genserver.process").self()))
      end
      local r = there(function(g, arg) return g(arg) end, f, 5)
      assert.are.equal(("15:4:function:%s"):format(tostring(echo)), r)
      assert.are.equal(3, #t) -- copied, not shared
    end)

    it("a function comes back and still works", function()
      local base = 100
      local f = rt(function(x) return base + x end)
      assert.are.equal("function", type(f))
      assert.are.equal(142, f(42))
    end)

    it("a recursive local function", function()
      local function fact(k) if k <= 1 then return 1 end return k * fact(k - 1) end
      assert.are.equal(3628800, there(function(g) return g(10) end, fact))
      assert.are.equal(120, rt(fact)(5))
    end)

    it("closures sharing an upvalue still share it", function()
      local count = 0
      local function inc() count = count + 1 return count end
      local function get() return count end
      local r = there(function(pair)
        pair.inc()
        pair.inc()
        return { pair.get(), pair.inc(), pair.get() }
      end, { inc = inc, get = get })
      assert.are.same({ 2, 3, 3 }, r)
      assert.are.equal(0, count)
      local back = rt({ inc = inc, get = get })
      back.inc()
      assert.are.equal(1, back.get())
      assert.are.equal(0, count)
    end)

    it("an upvalue shared with a table sent alongside stays the same object", function()
      local t = { "shared" }
      local r = rt({ t = t, f = function() return t end })
      assert.is_true(rawequal(r.f(), r.t))
    end)

    it("the same function twice arrives as one function", function()
      local f = function() return 1 end
      local r = rt({ f, f, k = f })
      assert.is_true(rawequal(r[1], r[2]))
      assert.is_true(rawequal(r[1], r.k))
    end)

    it("a cycle through a function's upvalue", function()
      local t = {}
      t.f = function() return t end
      local r = rt(t)
      assert.is_true(rawequal(r.f(), r))
    end)

    it("a big function (more than 16 KiB of bytecode)", function()
      local src = { "local x = 0" }
      for i = 1, 3000 do src[#src + 1] = ("x = x + %d"):format(i) end
      src[#src + 1] = "return x"
      local f = assert(load(table.concat(src, "\n"), "=big"))
      local n = 3000 * 3001 // 2
      assert.are.equal(n, f())
      assert.are.equal(n, there(function(g) return g() end, f))
      assert.are.equal(n, rt({ f, "after" })[1]())
    end)

    it("C functions of loaded modules cross by name", function()
      assert.is_true(rawequal(rt(string.format), string.format))
      assert.is_true(rawequal(rt(print), print))
      assert.is_true(rawequal(rt(table.insert), table.insert))
      assert.are.equal("ababab", there(function(rep) return rep("ab", 3) end, string.rep))
      assert.is_true(there(function(f) return rawequal(f, math.floor) end, math.floor))
    end)

    it("a traceback from a copied function names its source", function()
      local ok, err = U.apply(echo, function() error("copied_fn_error") end)
      assert.is_false(ok)
      assert.matches("copied_fn_error", err)
    end)
  end)

  -- ------------------------------------------------------------ modules

  describe("loaded modules", function()
    it("string crosses by name and is the receiver's own string", function()
      assert.is_true(rawequal(rt(string), string))
      assert.is_true(U.ask(echo, "check_module", { value = string, name = "string" }).own)
      assert.is_true(rawequal(rt(_G), _G))
      assert.is_true(rawequal(rt(genserver), genserver))
    end)

    it("a user module crosses as the receiver's own copy", function()
      local r = U.ask(echo, "check_module", { value = pr_mod, name = "pr_mod" })
      assert.is_true(r.own)
      assert.is_string(r.state_tag)
      assert.are_not.equal(pr_mod.state_tag, r.state_tag) -- its own state's copy
      assert.is_true(rawequal(rt(pr_mod), pr_mod))
      assert.is_true(rawequal(rt({ m = pr_mod }).m, pr_mod))
    end)

    it("with hundreds of loaded modules, each nested one still crosses by name", function()
      -- the fast encoder skips the exact module lookup for a table whose
      -- address misses the cache's filter: every module must be in it
      for i = 1, 300 do package.loaded["pr_filler_" .. i] = { i } end
      local data = require "pr_datamod" -- a require: the module cache is rebuilt
      local ok, err = pcall(function()
        for _ = 1, 3 do
          local r = rt({ { 1, 2 }, inner = { d = data, m = pr_mod, s = string, t = table } })
          assert.is_true(rawequal(r.inner.d, data))
          -- plain data only around it: the fast path's own check
          local r2 = rt({ { 1, 2 }, inner = { d = data } })
          assert.is_true(rawequal(r2.inner.d, data))
          assert.is_true(rawequal(r.inner.m, pr_mod))
          assert.is_true(rawequal(r.inner.s, string))
          assert.is_true(rawequal(r.inner.t, table))
          assert.are.same({ 1, 2 }, r[1])
        end
      end)
      for i = 1, 300 do package.loaded["pr_filler_" .. i] = nil end
      require "pr_datamod"
      assert(ok, err)
    end)

    it("a function whose upvalue is a module uses the receiver's module", function()
      local m = pr_mod
      local tag = there(function() return m.state_tag .. "|" .. m.double(21) end)
      local their_tag, doubled = tag:match("^(.-)|(%d+)$")
      assert.are.equal("42", doubled)
      assert.are_not.equal(pr_mod.state_tag, their_tag)
    end)

    it("a module the receiver cannot load makes its receive fail cleanly", function()
      package.loaded["pr_virtual_only_here"] = { "not on disk" }
      local me = process.self()
      local pid = process.spawn(function()
        local p = require "genserver.process"
        local ok, err = pcall(p.receive, 5000)
        local after = p.receive(5000)
        p.send(me, { "virtual", ok, tostring(err), after })
      end)
      process.send(pid, { mod = package.loaded["pr_virtual_only_here"] })
      process.send(pid, "next one")
      package.loaded["pr_virtual_only_here"] = nil
      local m = U.await(function(x) return type(x) == "table" and x[1] == "virtual" end)
      assert.is_false(m[2])
      assert.matches("pr_virtual_only_here", m[3])
      assert.are.equal("next one", m[4])
    end)
  end)

  -- ------------------------------------------------- refused at the sender

  describe("unsendable values", function()
    before_each(function() recorded() end)

    it("a coroutine: error names the path, nothing is sent", function()
      local err = refused({ items = { 1, 2, { cb = coroutine.create(function() end) } } })
      assert.truthy(err:find("message.items[3].cb", 1, true), err)
      assert.matches("cannot send a thread", err)
      assert.are.same({}, recorded())
    end)

    it("the error points at the caller's line", function()
      local ok, err = pcall(function() process.send(echo, { co = coroutine.create(print) }) end)
      assert.is_false(ok)
      assert.matches("codec_spec%.lua:%d+:", tostring(err))
    end)

    it("a userdata (io.stdout)", function()
      local err = refused({ out = io.stdout })
      assert.truthy(err:find("message.out", 1, true), err)
      assert.matches("cannot send a userdata", err)
      err = refused(io.stdout)
      assert.matches("cannot send a userdata", err)
      assert.are.same({}, recorded())
    end)

    it("a C function not in any loaded module", function()
      local iter = string.gmatch("abc", ".")
      local err = refused({ list = { { fn = iter } } })
      assert.truthy(err:find("message.list[1].fn", 1, true), err)
      assert.matches("C function", err)
      local wrapped = coroutine.wrap(function() end)
      assert.matches("C function", refused({ wrapped }))
      assert.are.same({}, recorded())
    end)

    it("as an upvalue of a function", function()
      local co = coroutine.create(function() end)
      local f = function() return co end
      local err = refused({ handler = f })
      assert.truthy(err:find("message.handler", 1, true), err)
      assert.matches("upvalue", err)
      assert.matches("co", err)
      assert.matches("cannot send a thread", err)
      assert.are.same({}, recorded())
    end)

    it("as a table key", function()
      local err = refused({ inner = { [io.stdout] = true } })
      assert.truthy(err:find("message.inner", 1, true), err)
      assert.matches("table key", err)
      assert.matches("userdata", err)
      assert.are.same({}, recorded())
    end)

    it("after a refused send, the next send works", function()
      refused({ bad = io.stdout })
      assert.is_true(process.send(echo, { good = 1 }))
      assert.are.same({ { good = 1 } }, recorded())
    end)

    it("in spawn arguments: refused, no process started", function()
      local before = runtime.stats().spawned
      local ok, err = pcall(process.spawn, function() end, { io.stdout })
      assert.is_false(ok)
      assert.matches("userdata", tostring(err))
      assert.are.equal(before, runtime.stats().spawned)
    end)
  end)

  -- -------------------------------------------------------------- limits

  describe("limits", function()
    local function nest(levels)
      local t = {}
      local cur = t
      for _ = 1, levels - 1 do
        local nxt = {}
        cur.next = nxt
        cur = nxt
      end
      return t
    end

    it("a 1000-level table is refused with a clear error, nothing sent", function()
      recorded()
      local err = refused(nest(1000))
      assert.truthy(err:find("nested") or err:find("depth") or err:find("deep"), err)
      assert.are.same({}, recorded())
    end)

    it("a 100-level table crosses", function()
      local r = rt(nest(100))
      local depth = 0
      while r do depth = depth + 1 r = r.next end
      assert.are.equal(100, depth)
    end)

    it("the depth limit is configurable", function()
      runtime.configure({ max_depth = 20 })
      local ok, err = pcall(process.send, echo, nest(50))
      local ok2 = pcall(process.send, echo, nest(10))
      runtime.configure({ max_depth = 200 })
      assert.is_false(ok)
      assert.matches("20", tostring(err))
      assert.is_true(ok2)
      recorded()
    end)
  end)
end)
