-- Specs for genserver.observer (DESIGN.md §2.12): processes() reports
-- every live process with what process.info gives; tree() builds the
-- supervision trees from which_children; the printers render them; top's
-- samples sort by each column and compute message rates; top prints once
-- when not on a terminal. Waits are bounded polls.
local gs = require "genserver"
local process = require "genserver.process"
local supervisor = require "genserver.supervisor"
local observer = require "genserver.observer"

local function find(list, pid)
  for _, p in ipairs(list) do if p.pid == pid then return p end end
end

-- a process that keeps `n` messages queued until told "go"
local function hoarder(n)
  local pid = process.spawn(function()
    local pr = require "genserver.process"
    pr.receive(function(m) return m == "go" end)
  end)
  for i = 1, n do process.send(pid, { "x", i }) end
  local ok = false
  for _ = 1, 500 do
    local info = process.info(pid)
    if info and info.mailbox == n then ok = true break end
    process.sleep(2)
  end
  assert(ok, "the hoarder's mailbox never reached " .. n)
  return pid
end

local function buffer()
  local b = { parts = {} }
  function b:write(...)
    for i = 1, select("#", ...) do self.parts[#self.parts + 1] = tostring((select(i, ...))) end
    return self
  end
  function b:flush() return self end
  function b:text() return table.concat(self.parts) end
  return b
end

local Named = { handle_call = function(_, _, s) return "reply", s, s end }

describe("genserver.observer", function()
  local cleanup = {}
  after_each(function()
    for _, pid in ipairs(cleanup) do
      if process.alive(pid) then process.exit(pid, "kill") end
    end
    cleanup = {}
  end)

  describe("processes()", function()
    it("lists every live process with pid, status, memory, mailbox, name and module", function()
      local server = assert(gs.start(Named, 1, { name = "obs_named" }))
      cleanup[#cleanup + 1] = server
      local h = hoarder(3)
      cleanup[#cleanup + 1] = h
      local list = observer.processes()
      local me = find(list, process.self())
      assert.is_table(me)
      assert.is_true(me.foreign)
      local s = find(list, server)
      assert.are.equal("obs_named", s.name)
      assert.are.equal("(table)", s.module)
      assert.is_number(s.memory)
      assert.is_true(s.memory > 0)
      local hp = find(list, h)
      assert.are.equal(3, hp.mailbox)
      assert.are.equal(#process.list() >= #list, true)
    end)

    it("leaves out a process that is gone", function()
      local pid = process.spawn(function() end)
      for _ = 1, 500 do if not process.alive(pid) then break end process.sleep(2) end
      assert.is_nil(find(observer.processes(), pid))
    end)

    it("format_processes prints a header, one line per process and a count", function()
      local server = assert(gs.start(Named, 1, { name = "obs_fmt" }))
      cleanup[#cleanup + 1] = server
      local list = observer.processes()
      local text = observer.format_processes(list)
      assert.is_truthy(text:find("^PID%s+STATUS%s+MEMORY%s+MBOX"))
      assert.is_truthy(text:find(tostring(server), 1, true))
      assert.is_truthy(text:find("obs_fmt (table)", 1, true))
      assert.is_truthy(text:find(("\n%d processes\n$"):format(#list)))
      local b = buffer()
      observer.print_processes(list, b)
      assert.are.equal(text, b:text())
    end)
  end)

  describe("tree()", function()
    it("builds the supervision tree, nested supervisors and dynamic children included", function()
      local sup = assert(supervisor.start({
        strategy = "one_for_one",
        children = {
          { id = "w", start = { Named, 0, { name = "obs_w" } } },
          { id = "dyn", type = "supervisor", start = { "genserver.supervisor", {
              strategy = "simple_one_for_one",
              children = { { start = { Named, 0 } } } }, { name = "obs_dyn" } } },
        },
      }, { name = "obs_root" }))
      cleanup[#cleanup + 1] = sup
      local c1 = assert(supervisor.start_child("obs_dyn"))
      local c2 = assert(supervisor.start_child("obs_dyn"))
      local roots = observer.tree()
      local root
      for _, r in ipairs(roots) do if r.pid == sup then root = r end end
      assert.is_table(root, "obs_root is a root")
      for _, r in ipairs(roots) do
        assert.are_not.equal(process.whereis("obs_dyn"), r.pid, "a child supervisor is not a root")
      end
      assert.are.equal("obs_root", root.name)
      assert.are.equal(2, #root.children)
      assert.are.equal("w", root.children[1].id)
      assert.are.equal("obs_w", root.children[1].name)
      local dyn = root.children[2]
      assert.are.equal("supervisor", dyn.type)
      assert.are.equal("obs_dyn", dyn.name)
      local kids = {}
      for _, k in ipairs(dyn.children) do kids[k.pid] = true end
      assert.is_true(kids[c1] and kids[c2])
      -- from a given root
      local sub = observer.tree("obs_dyn")
      assert.are.equal(1, #sub)
      assert.are.equal(2, #sub[1].children)
      local text = observer.format_tree({ root })
      assert.is_truthy(text:find("^" .. tostring(sup):gsub("%p", "%%%0") .. " obs_root supervisor\n"), text)
      assert.is_truthy(text:find("├── " .. tostring(root.children[1].pid) .. " obs_w [w] (table)", 1, true), text)
      assert.is_truthy(text:find("└── " .. tostring(dyn.pid) .. " obs_dyn [dyn] supervisor", 1, true), text)
      assert.is_truthy(text:find("    ├── ", 1, true), text)
      assert.is_truthy(text:find("    └── ", 1, true), text)
      gs.stop(sup)
    end)

    it("tree(x) raises a clear error when x is not a supervisor", function()
      local server = assert(gs.start(Named, 1, { name = "obs_notsup" }))
      cleanup[#cleanup + 1] = server
      assert.has_error(function() observer.tree("obs_notsup") end,
        "genserver.observer.tree: obs_notsup is not a running supervisor")
      assert.has_error(function() observer.tree("obs_nobody") end,
        "genserver.observer.tree: obs_nobody is not a running supervisor")
    end)

    it("format_tree says when there is no supervisor", function()
      assert.are.equal("(no supervisors)\n", observer.format_tree({}))
    end)
  end)

  describe("top", function()
    it("samples sort by mailbox, memory and message rate, largest first", function()
      local h = hoarder(40)
      cleanup[#cleanup + 1] = h
      local s = observer.sample(nil, "mailbox")
      assert.are.equal(h, s.list[1].pid)
      for i = 2, #s.list do
        assert.is_true((s.list[i - 1].mailbox or 0) >= (s.list[i].mailbox or 0))
      end
      local m = observer.sample(nil, "memory")
      for i = 2, #m.list do
        assert.is_true((m.list[i - 1].memory or 0) >= (m.list[i].memory or 0))
      end
      -- rate: messages in since the previous sample, per second
      local prev = observer.sample(nil, "rate")
      for i = 1, 25 do process.send(h, { "y", i }) end
      local r = observer.sample(prev, "rate", 1000)
      assert.are.equal(h, r.list[1].pid)
      assert.is_true(r.list[1].rate > 0)
      assert.is_true(#r.list >= 2)
      local text = observer.format_top(r, 1)
      assert.is_truthy(text:find("sorted by rate", 1, true))
      local rows = 0
      for _ in text:gmatch("\n<") do rows = rows + 1 end
      assert.are.equal(1, rows, "limit 1 shows one row")
    end)

    it("samples refuse an unknown sort column", function()
      assert.has_error(function() observer.sample(nil, "colour") end,
        "genserver.observer: sort must be memory, mailbox, reductions or rate, got colour")
      assert.has_error(function() observer.top({ sort = "colour", tty = false }) end)
      assert.has_error(function() observer.top({ interval = 0, tty = false }) end)
    end)

    it("not on a terminal, top prints the table once (no escape codes)", function()
      local h = hoarder(5)
      cleanup[#cleanup + 1] = h
      local b = buffer()
      local s = observer.top({ tty = false, interval = 10, sort = "mailbox", out = b })
      local text = b:text()
      assert.is_falsy(text:find("\27", 1, true))
      local n = 0
      for _ in text:gmatch("genserver top:") do n = n + 1 end
      assert.are.equal(1, n)
      assert.are.equal(h, s.list[1].pid)
      assert.is_truthy(text:find("\n" .. tostring(h):gsub("%p", "%%%0")), text)
    end)

    it("on a terminal (a pseudo-terminal through script), top redraws in place and quits on q", function()
      local C = require "cmd_util"
      if os.execute("command -v script >/dev/null 2>&1") ~= true then
        pending("script (util-linux) is not installed")
        return
      end
      local prog = os.tmpname()
      local f = assert(io.open(prog, "w"))
      f:write([[
local observer = require "genserver.observer"
local gs = require "genserver"
local pid = gs.start({ handle_call = function(_, _, s) return "reply", s, s end }, 0, { name = "tty_srv" })
observer.top({ interval = 100, count = 50 })
print("top returned")
]])
      f:close()
      -- script gives the program a pseudo-terminal; the keys arrive after a pause
      local r = C.run(("(sleep 1; printf b; sleep 0.5; printf q) | script -qfec %s /dev/null")
        :format(C.shquote(C.LUA .. " " .. prog)), { timeout = 60 })
      os.remove(prog)
      assert(r.ok, C.show(r))
      assert.is_truthy(r.out:find("\27[H\27[2J", 1, true), C.show(r))
      assert.is_truthy(r.out:find("sorted by memory", 1, true), C.show(r))
      assert.is_truthy(r.out:find("sorted by mailbox", 1, true), C.show(r))
      assert.is_truthy(r.out:find("top returned", 1, true), C.show(r))
      local n = 0
      for _ in r.out:gmatch("genserver top:") do n = n + 1 end
      assert.is_true(n < 50, "q ended top before its count")
    end)
  end)
end)
