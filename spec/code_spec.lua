-- Specs for genserver.code (DESIGN.md §2.7) and sys.change_code (§2.5):
-- reload makes a new current version (new servers run it, running ones
-- keep theirs), a file that does not compile or raises while loading
-- leaves the current version, which/info().vsn, change_code (only while
-- suspended; a failing or crashing code_change keeps the old code and
-- state, its mutations included), upgrade (only servers of that module;
-- a failure leaves that server running on its old code), and
-- examples/hot_reload.lua run in a child process.
--
-- Every test writes its own module (a fresh name) to a temporary
-- directory on package.path: the runtime keeps compiled modules by name.
local gs = require "genserver"
local process = require "genserver.process"
local sys = require "genserver.sys"
local code = require "genserver.code"
local U = require "pr_util"

local dir = assert(io.popen("mktemp -d")):read("l")
package.path = dir .. "/?.lua;" .. package.path
local seq = 0

local function fresh()
  seq = seq + 1
  return "code_spec_mod" .. seq
end

local function write(name, text)
  local f = assert(io.open(dir .. "/" .. name .. ".lua", "w"))
  f:write(text)
  f:close()
end

-- A module whose "get" answers tag .. ":" .. state.n.
local function version(tag, extra)
  return ([[
local M = { %s }
function M.init(n) return "ok", { n = n } end
function M.handle_call(req, _, s)
  if req == "state" then return "reply", s, s end
  return "reply", "%s:" .. tostring(s.n), s
end
function M.handle_cast(k, s) s.n = s.n + k return "noreply", s end
%s
return M
]]):format(extra and extra.fields or "", tag, extra and extra.body or "")
end

local started = {}
local function start(name, arg)
  local pid = assert(gs.start(name, arg))
  started[#started + 1] = pid
  return pid
end

after_each(function()
  for _, pid in ipairs(started) do
    if process.alive(pid) then pcall(gs.stop, pid) end
  end
  started = {}
end)

teardown(function()
  os.execute("rm -rf '" .. dir .. "'")
end)

describe("code.reload", function()
  it("makes a new current version: new servers run it, running ones keep theirs", function()
    local name = fresh()
    write(name, version("v1"))
    local old = start(name, 1)
    assert.are.equal(1, code.which(name))
    assert.are.equal(1, process.info(old).vsn)
    write(name, version("v2"))
    assert.are.equal(2, code.reload(name))
    assert.are.equal(2, code.which(name))
    local new = start(name, 5)
    assert.are.equal("v2:5", gs.call(new, "get"))
    assert.are.equal(2, process.info(new).vsn)
    assert.are.equal("v1:1", gs.call(old, "get"))
    assert.are.equal(1, process.info(old).vsn)
  end)

  it("gives the module's vsn field when it has one", function()
    local name = fresh()
    write(name, version("a", { fields = 'vsn = "1.0"' }))
    local pid = start(name, 0)
    assert.are.equal("1.0", process.info(pid).vsn)
    write(name, version("b", { fields = 'vsn = "1.1"' }))
    assert.are.equal("1.1", code.reload(name))
    assert.are.equal("1.1", code.which(name))
  end)

  it("loads a module never loaded before", function()
    local name = fresh()
    assert.is_nil(code.which(name))
    write(name, version("first"))
    assert.are.equal(1, code.reload(name))
    assert.are.equal("first:3", gs.call(start(name, 3), "get"))
  end)

  it("leaves the current version when the file does not compile", function()
    local name = fresh()
    write(name, version("good"))
    local pid = start(name, 1)
    write(name, "local M = { ")
    local v, why = code.reload(name)
    assert.is_nil(v)
    assert.matches("expected", why)
    assert.are.equal(1, code.which(name))
    assert.are.equal("good:2", gs.call(start(name, 2), "get"))
    assert.are.equal("good:1", gs.call(pid, "get"))
  end)

  it("leaves the current version when the module raises while loading", function()
    local name = fresh()
    write(name, version("good"))
    start(name, 1)
    write(name, "error('cannot load me')")
    local v, why = code.reload(name)
    assert.is_nil(v)
    assert.matches("cannot load me", why)
    assert.are.equal("good:2", gs.call(start(name, 2), "get"))
  end)

  it("returns nil, reason for a module that does not exist; refuses a bad name", function()
    local v, why = code.reload("code_spec_nowhere")
    assert.is_nil(v)
    assert.matches("no file", why)
    assert.has_error(function() code.reload(42) end)
    assert.has_error(function() code.which({}) end)
    assert.has_error(function() code.upgrade(nil) end)
  end)
end)

describe("sys.change_code", function()
  it("switches a suspended server to the current version with code_change", function()
    local name = fresh()
    write(name, version("v1"))
    local pid = start(name, 4)
    write(name, version("v2", { body = [[
function M.code_change(old, s, extra) s.n = s.n * 10 s.from = old s.extra = extra return "ok", s end
]] }))
    code.reload(name)
    sys.suspend(pid)
    assert.is_true(sys.change_code(pid, name, "old", { x = 1 }))
    sys.resume(pid)
    assert.are.equal("v2:40", gs.call(pid, "get"))
    local s = gs.call(pid, "state")
    assert.are.equal("old", s.from)
    assert.are.same({ x = 1 }, s.extra)
    assert.are.equal(2, process.info(pid).vsn)
  end)

  it("keeps old code and state when code_change returns an error", function()
    local name = fresh()
    write(name, version("v1"))
    local pid = start(name, 4)
    write(name, version("v2", { body = [[
function M.code_change(_, s) s.n = 999 s.junk = true return "error", "refused" end
]] }))
    code.reload(name)
    sys.suspend(pid)
    local ok, why = sys.change_code(pid, name, nil, nil)
    sys.resume(pid)
    assert.is_nil(ok)
    assert.are.equal("refused", why)
    assert.are.equal("v1:4", gs.call(pid, "get"))
    assert.is_nil(gs.call(pid, "state").junk)
    assert.are.equal(1, process.info(pid).vsn)
  end)

  it("keeps old code and state when code_change crashes", function()
    local name = fresh()
    write(name, version("v1"))
    local pid = start(name, 4)
    write(name, version("v2", { body = [[
function M.code_change(_, s) s.n = -1 error("code_change blew up") end
]] }))
    code.reload(name)
    sys.suspend(pid)
    local ok, why = sys.change_code(pid, name, nil, nil)
    sys.resume(pid)
    assert.is_nil(ok)
    assert.matches("code_change blew up", tostring(why.error))
    assert.are.equal("v1:4", gs.call(pid, "get"))
    gs.cast(pid, 1)
    assert.are.equal("v1:5", gs.call(pid, "get"))
  end)

  it("without code_change just switches the code, keeping the state", function()
    local name = fresh()
    write(name, version("v1"))
    local pid = start(name, 7)
    write(name, version("v2"))
    code.reload(name)
    sys.suspend(pid)
    assert.is_true(sys.change_code(pid, name, nil, nil))
    sys.resume(pid)
    assert.are.equal("v2:7", gs.call(pid, "get"))
  end)

  it("refuses a module name that is not a string", function()
    assert.has_error(function() sys.change_code(process.self(), 1) end)
  end)
end)

describe("code.upgrade", function()
  it("moves every live server of the module, and touches no other", function()
    local name, other = fresh(), fresh()
    write(name, version("v1"))
    write(other, version("o1"))
    local a, b = start(name, 1), start(name, 2)
    local o = start(other, 3)
    local o_in = process.info(o).messages_in
    write(name, version("v2", { body = [[
function M.code_change(old, s, extra) s.n = s.n + 100 s.old = old s.extra = extra return "ok", s end
]] }))
    local res = code.upgrade(name, "go")
    assert.are.same({ [a] = true, [b] = true }, res)
    assert.are.equal("v2:101", gs.call(a, "get"))
    assert.are.equal("v2:102", gs.call(b, "get"))
    local s = gs.call(a, "state")
    assert.are.equal(1, s.old) -- the server's own version
    assert.are.equal("go", s.extra)
    assert.are.equal("running", sys.get_status(a).status) -- resumed
    -- the other module's server got no message at all
    assert.are.equal(o_in, process.info(o).messages_in)
    assert.are.equal("o1:3", gs.call(o, "get"))
  end)

  it("a server whose change fails keeps its old code and state, and runs", function()
    local name = fresh()
    write(name, version("v1"))
    local good, bad = start(name, 1), start(name, -1)
    write(name, version("v2", { body = [[
function M.code_change(_, s) if s.n < 0 then error("negative") end return "ok", s end
]] }))
    local res = code.upgrade(name)
    assert.is_true(res[good])
    assert.matches("negative", tostring(res[bad].error))
    assert.are.equal("v2:1", gs.call(good, "get"))
    assert.are.equal("v1:-1", gs.call(bad, "get"))
    assert.are.equal("running", sys.get_status(bad).status)
  end)

  it("a module that does not compile touches no server", function()
    local name = fresh()
    write(name, version("v1"))
    local pid = start(name, 1)
    local before = process.info(pid).messages_in
    write(name, "return {")
    local res, why = code.upgrade(name)
    assert.is_nil(res)
    assert.is_string(why)
    assert.are.equal(before, process.info(pid).messages_in)
    assert.are.equal("v1:1", gs.call(pid, "get"))
    assert.are.equal(1, process.info(pid).vsn)
  end)
end)

describe("examples/hot_reload.lua", function()
  it("runs: upgrades counters with their state, refuses a broken version", function()
    local f = assert(io.open("examples/hot_reload.lua"))
    local src = f:read("a")
    f:close()
    local ok, status, out = U.run_child(src, { timeout = 30 })
    assert.is_true(ok, out)
    assert.are.equal(0, status)
    assert.matches("counter 1 now runs version 2: total=12", out)
    assert.matches("hot_reload: ok", out)
  end)
end)
