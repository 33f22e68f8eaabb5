-- spec/containment_spec.lua: runaway code and dying (DESIGN §1.2, §5).
-- Every scenario could hang or crash the whole program before its fix, so
-- each one runs in a child lua5.4 under `timeout` (pr_util.run_child): a
-- regression is a failed test, not a stuck suite. The child scripts are
-- spec/support/ct_*.lua.
local U = require "pr_util"

local function script(name)
  return assert(package.searchpath(name, package.path), name)
end

-- Runs child script `name` with environment `env`; returns exit code and
-- output.
local function child(name, env, secs)
  local _, code, out = U.run_child(("dofile(%q)"):format(script(name)),
    { timeout = secs or 40, env = env })
  return code, out
end

local SITES = { "sort", "gsub", "tostring", "close", "xpcall", "load", "require",
                "coroutine" }
local WHERE = {
  sort = "a table.sort comparator", gsub = "a string.gsub function",
  tostring = "__tostring", close = "__close (run by coroutine.close)",
  xpcall = "an xpcall message handler", load = "a load reader",
  require = "a module's top level inside require",
  coroutine = "a coroutine resumed from a comparator",
}

describe("a process looping in Lua called back from C", function()
  for _, site in ipairs(SITES) do
    for _, workers in ipairs({ 1, 2 }) do
      for _, catch in ipairs(site == "require" and { false } or { false, true }) do
        local name = ("in %s%s is killed, with %d worker(s); the others run on"):format(
          WHERE[site], catch and ", catching every error in a loop," or "", workers)
        it(name, function()
          local code, out = child("ct_cloop", { CT_SITE = site, CT_CATCH = catch and "1" or "0",
                                                GENSERVER_WORKERS = workers })
          assert.are.equal(0, code, out)
          assert.matches("DOWN killed\n", out, 1, true)
          assert.matches("other ran after\n", out, 1, true)
          -- with two workers the other process does not wait for the kill
          if workers > 1 then assert.matches("other ran before\n", out, 1, true) end
        end)
      end
    end
  end
end)

describe("max_heap", function()
  for _, grow in ipairs({ "strings", "tables" }) do
    for _, how in ipairs({ "plain", "catch", "server" }) do
      local what = ({ plain = "", catch = " inside pcall calls that catch it, in a loop",
                      server = " in a gen_server callback" })[how]
      it(("ends a process that grows by %s%s with { max_heap = bytes }"):format(grow, what), function()
        for _, workers in ipairs({ 1, 2 }) do
          local code, out = child("ct_heap", { CT_GROW = grow, GENSERVER_WORKERS = workers,
                                               CT_CATCH = how == "catch" and "1" or "0",
                                               CT_SERVER = how == "server" and "1" or "0" })
          assert.are.equal(0, code, out)
          assert.matches("DOWN max_heap=1048576 cap=1048576\n", out, 1, true)
          assert.matches("other ran\n", out, 1, true)
          -- nothing was caught and reported as a crash on the way
          assert.is_nil(out:find("not enough memory", 1, true), out)
        end
      end)
    end
  end
end)

describe("a finalizer that never returns", function()
  for _, workers in ipairs({ 1, 2 }) do
    it(("when the state closes: DOWN, the name released, the others run, the state counted as abandoned (%d worker(s))"):format(workers), function()
      local code, out = child("ct_gcloop", { CT_END = "close", GENSERVER_WORKERS = workers })
      assert.are.equal(0, code, out)
      assert.matches("DOWN normal\nname nil\nother ran\nabandoned 1\nend\n", out, 1, true)
    end)

    it(("that returns after the process was abandoned: its code stops, its thread leaves (%d worker(s))"):format(workers), function()
      local code, out = child("ct_gcloop", { CT_END = "return", GENSERVER_WORKERS = workers }, 70)
      assert.are.equal(0, code, out)
      assert.matches("DOWN killed\nname nil\nother ran\nabandoned 1\nthreads back\nend\n", out, 1, true)
    end)

    it(("while it runs, killed: DOWN killed, the name released, the others run, counted (%d worker(s))"):format(workers), function()
      local code, out = child("ct_gcloop", { CT_END = "kill", GENSERVER_WORKERS = workers })
      assert.are.equal(0, code, out)
      assert.matches("DOWN killed\nname nil\nother ran\nabandoned 1\nend\n", out, 1, true)
    end)
  end
end)

describe("program end", function()
  -- the library stays loaded while a worker still runs its code: before,
  -- the interpreter unloaded it at lua_close under such a worker (SIGSEGV)
  for _, workers in ipairs({ 1, 2 }) do
    it(("while a process loops in a finalizer calling the library ends cleanly, every time (%d worker(s))"):format(workers), function()
      for _ = 1, 2 do
        local code, out = child("ct_gcloop", { CT_END = "exit", GENSERVER_WORKERS = workers })
        assert.are.equal(0, code, out)
        assert.matches("end\n", out, 1, true)
      end
    end)

    it(("while a process loops in a sort comparator ends cleanly, every time (%d worker(s))"):format(workers), function()
      for _ = 1, 3 do
        local code, out = child("ct_cloop", { CT_SITE = "sort", CT_END = "exit",
                                              GENSERVER_WORKERS = workers })
        assert.are.equal(0, code, out)
        assert.matches("end\n", out, 1, true)
      end
    end)
  end
end)
