-- The samples of docs/toolbox.md run, each in a child lua5.4 (killed
-- after 30 s), and say what the documentation says they say.
local U = require "pr_util"

local function run(file)
  local f = assert(io.open(file))
  local src = f:read("a")
  f:close()
  local ok, status, out = U.run_child(src, { timeout = 30 })
  assert.is_true(ok, out)
  assert.are.equal(0, status)
  return out
end

describe("docs/toolbox.md samples", function()
  it("docs/samples/sys_tour.lua", function()
    local out = run("docs/samples/sys_tour.lua")
    assert.matches("status:%s+running%s+account%s+%*%*%*", out)
    assert.matches("failed replace:%s+false%s+[^\n]*not allowed", out)
    assert.matches("while suspended:%s+false%s+timeout", out)
    assert.matches("after resume:%s+true%s+50", out)
    assert.matches("sys_tour: ok", out)
  end)

  it("docs/samples/agent_tour.lua", function()
    local out = run("docs/samples/agent_tour.lua")
    assert.matches("home:%s+2", out)
    assert.matches("about before the reset:%s+1", out)
    assert.matches("error:%s+false%s+true%s+call", out)
    assert.matches("agent_tour: ok", out)
  end)

  it("docs/samples/task_tour.lua", function()
    local out = run("docs/samples/task_tour.lua")
    assert.matches("await:%s+13%s+42", out)
    assert.matches("timeout:%s+false%s+timeout%s+alive:%s+false", out)
    assert.matches("1%s+done%s+fast", out)
    assert.matches("2%s+crashed", out)
    assert.matches("3%s+still running", out)
    assert.matches("stream:%s+1%s+true%s+1\nstream:%s+2%s+true%s+4\nstream:%s+3%s+true%s+9\nstream:%s+4%s+true%s+16", out)
    assert.matches("task_tour: ok", out)
  end)

  it("examples/hot_reload.lua", function()
    local out = run("examples/hot_reload.lua")
    assert.matches("hot_reload: ok", out)
  end)
end)
