-- Specs for the documentation: every sample of the guide (docs/guide.md) and
-- of the README is a file in docs/samples/ shown verbatim, runs, and prints
-- the output the guide shows; the commands the guide gives work as
-- written (the busted run of the sample spec, the shell one-liner); links
-- between the docs point to files that exist; genserver._VERSION agrees
-- with GS_VERSION_* in csrc/genserver.h; make install-tools installs the
-- genserver command and the docs, and the installed command runs; and
-- `make docs` builds the reference without a warning when ldoc is present.
-- Programs run as children with a time limit (spec/support/cmd_util.lua).
local C = require "cmd_util"

local function read(path)
  local f = assert(io.open(path, "r"))
  local s = f:read("a")
  f:close()
  return s
end

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

local function has(text, s) return text:find(s, 1, true) ~= nil end

-- The samples of a markdown file: { file =, code =, output =, pids_vary = }
-- for each `<!-- sample: FILE -->` followed by a fenced block, and an
-- optional `<!-- output -->` (or `<!-- output (pids vary) -->`) block after it.
local function samples_of(md)
  local out = {}
  for file, code, rest in md:gmatch("<!%-%- sample: (%S+) %-%->\n```lua\n(.-)```\n()") do
    local s = { file = file, code = code }
    local tail = md:sub(rest)
    local mode, output = tail:match("^\n<!%-%- output(.-) %-%->\n```\n(.-)```\n")
    if output then
      s.output, s.pids_vary = output, mode == " (pids vary)"
    end
    out[#out + 1] = s
  end
  return out
end

local function nopids(s) return (s:gsub("<0%.%d+%.%d+>", "<pid>")) end

describe("the guide (docs/guide.md)", function()
  local guide = read("docs/guide.md")
  local samples = samples_of(guide)

  it("shows its samples verbatim from docs/samples/", function()
    assert.is_true(#samples >= 8, "samples found: " .. #samples)
    for _, s in ipairs(samples) do
      assert.is_true(exists(s.file), s.file .. " is missing")
      assert.are.equal(read(s.file), s.code, s.file .. " differs from the guide's copy")
    end
  end)

  it("every file in docs/samples is shown in the guide or named by another doc", function()
    local shown = {}
    for _, s in ipairs(samples) do shown[s.file] = true end
    local others = ""
    local mds = io.popen("ls docs/*.md")
    for md in mds:lines() do if md ~= "docs/guide.md" then others = others .. read(md) end end
    mds:close()
    local p = io.popen("ls docs/samples/*.lua")
    for f in p:lines() do
      assert.is_true(shown[f] or has(others, f), f .. " is neither shown in the guide nor named in docs/")
    end
    p:close()
  end)

  for _, s in ipairs(samples) do
    if s.output then
      it(("runs %s and prints what the guide shows"):format(s.file), function()
        local r = C.lua(s.file)
        assert(r.ok, C.show(r))
        if s.pids_vary then
          assert.are.equal(nopids(s.output), nopids(r.out), C.show(r))
        else
          assert.are.equal(s.output, r.out, C.show(r))
        end
      end)
    end
  end

  it("its busted command runs the sample spec green", function()
    local cmd = guide:match("\n(cd docs/samples && busted [^\n]+)\n")
    assert.is_string(cmd, "the guide gives the busted command")
    -- Debian's busted runs under `lua`: where that is not 5.4, the guide's
    -- other form, run from the same directory
    local v = io.popen("lua -v 2>&1"):read("a")
    if not v:find("Lua 5.4", 1, true) then
      local alt = guide:match("run\n`(lua5%.4 \"%$%(command %-v busted%)\" stack_spec%.lua)` instead")
      assert.is_string(alt, "the guide gives the lua5.4 form")
      cmd = "cd docs/samples && " .. alt
    end
    local r = C.run(cmd .. " -o TAP", { timeout = 120 })
    assert(r.ok, C.show(r))
    assert.is_truthy(r.out:find("\nok 4 "), C.show(r))
    assert.is_falsy(r.out:find("not ok"), C.show(r))
  end)

  it("its shell one-liner works through a pipe", function()
    local line = guide:match("\n%$ (echo [^\n]+| genserver)\n")
    assert.is_string(line, "the guide gives the shell one-liner")
    local r = C.run((line:gsub("| genserver$", "| " .. C.shquote(C.LUA) .. " bin/genserver")))
    assert(r.ok, C.show(r))
    assert.is_truthy(r.out:find("PID%s+STATUS"), C.show(r))
    assert.is_truthy(r.out:find(" x %(table%)\n"), C.show(r))
  end)
end)

describe("the README", function()
  local readme = read("README.md")

  it("its hello sample is docs/samples/hello.lua, shown verbatim (the guide runs it)", function()
    local s = samples_of(readme)
    assert.are.equal(1, #s)
    assert.are.equal("docs/samples/hello.lua", s[1].file)
    assert.are.equal(read(s[1].file), s[1].code)
  end)

  it("points to the guide and to no file that is not in the repository", function()
    assert.is_true(has(readme, "(docs/guide.md)"))
    assert.is_false(has(readme, "DESIGN.md"), "DESIGN.md is not in the repository")
  end)
end)

describe("links between the docs", function()
  it("every relative link in README.md and docs/*.md names a file that exists", function()
    local p = io.popen("ls README.md docs/*.md")
    for md in p:lines() do
      local dir = md:match("^(.*)/") or "."
      for target in read(md):gmatch("%]%(([^)#%s]+)[^)]*%)") do
        if not target:match("^%a+:") then
          local path = dir .. "/" .. target
          assert.is_true(exists(path) or os.execute("test -d " .. C.shquote(path)) == true,
            ("%s links to %s, which does not exist"):format(md, target))
        end
      end
    end
    p:close()
  end)
end)

describe("the version", function()
  it("genserver._VERSION is GS_VERSION_MAJOR.MINOR.PATCH of csrc/genserver.h", function()
    local h = read("csrc/genserver.h")
    local want = ("%s.%s.%s"):format(h:match("#define GS_VERSION_MAJOR (%d+)"),
      h:match("#define GS_VERSION_MINOR (%d+)"), h:match("#define GS_VERSION_PATCH (%d+)"))
    assert.are.equal(want, require("genserver")._VERSION)
  end)
end)

describe("make install-tools", function()
  it("installs the genserver command and the docs; the installed command runs a sample", function()
    local dir = os.tmpname()
    os.remove(dir)
    local r = C.run(("env -u MAKEFLAGS -u MAKELEVEL make -s install-tools DESTDIR=%s PREFIX=/usr")
      :format(C.shquote(dir)), { timeout = 120 })
    local ok, err = pcall(function()
      assert(r.ok, C.show(r))
      for _, f in ipairs({ "/usr/bin/genserver", "/usr/share/doc/genserver/README.md",
                           "/usr/share/doc/genserver/guide.md",
                           "/usr/share/doc/genserver/callbacks.md",
                           "/usr/share/doc/genserver/samples/hello.lua" }) do
        assert.is_true(exists(dir .. f), f .. " is not installed")
      end
      local run = C.run(C.shquote(dir .. "/usr/bin/genserver") .. " "
        .. C.shquote(dir .. "/usr/share/doc/genserver/samples/hello.lua"))
      assert(run.ok, C.show(run))
      assert.are.equal("15\n", run.out)
    end)
    os.execute("rm -rf " .. C.shquote(dir))
    if not ok then error(err, 0) end
  end)
end)

describe("LuaLS annotations", function()
  local MODULES = { "lua/genserver/init.lua", "lua/genserver/process.lua",
                    "lua/genserver/supervisor.lua", "lua/genserver/runtime.lua",
                    "lua/genserver/logger.lua", "lua/genserver/observer.lua",
                    "lua/genserver/observer_web.lua",
                    "lua/genserver/sys.lua", "lua/genserver/code.lua",
                    "lua/genserver/agent.lua", "lua/genserver/task.lua" }

  -- the comment block right above line i of `lines`
  local function block_above(lines, i)
    local b = {}
    local j = i - 1
    while j >= 1 and lines[j]:match("^%-%-") do
      table.insert(b, 1, lines[j])
      j = j - 1
    end
    return b
  end

  it("every public function has a doc comment with ---@param for each parameter", function()
    local count = 0
    for _, file in ipairs(MODULES) do
      local lines = {}
      for l in read(file):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
      for i, l in ipairs(lines) do
        local name, params = l:match("^function M%.([%w_]+)%((.-)%)")
        local alias = l:match("^M%.([%w_]+) = core%.[%w_]+")
        if name or alias then
          count = count + 1
          local b = block_above(lines, i)
          local where = ("%s:%d: %s"):format(file, i, name or alias)
          assert.is_true(#b > 0 and b[1]:match("^%-%-%-") ~= nil, where .. ": no doc comment")
          local doc = table.concat(b, "\n") .. "\n"
          if name then
            for p in params:gmatch("[^,%s]+") do
              assert.is_truthy(doc:find("---@param " .. p:gsub("%p", "%%%0") .. " ", 1),
                where .. ": no ---@param " .. p)
            end
          else
            assert.is_truthy(l:find("--[[@as fun(", 1, true), where .. ": no --[[@as fun(...)]] type")
            assert.is_truthy(doc:find("\n%-%- @function " .. alias .. "\n"), where .. ": no @function tag")
          end
        end
      end
    end
    assert.is_true(count > 60, "public functions found: " .. count)
  end)

  it("the callback module and the option tables are LuaLS classes", function()
    local init = read("lua/genserver/init.lua")
    for _, c in ipairs({ "genserver.Callbacks", "genserver.StartOptions", "genserver.Error",
                         "genserver.From" }) do
      assert.is_true(has(init, "---@class " .. c .. "\n"), c)
    end
    assert.is_true(has(read("lua/genserver/supervisor.lua"), "---@class genserver.supervisor.ChildSpec\n"))
    assert.is_true(has(read("lua/genserver/observer.lua"), "---@class genserver.observer.TopOptions\n"))
    assert.is_true(has(read("lua/genserver/observer_web.lua"), "---@class genserver.observer.ServeOptions\n"))
  end)
end)

describe("make docs", function()
  it("builds the HTML reference with ldoc, without a warning", function()
    if os.execute("command -v ldoc >/dev/null 2>&1") ~= true then
      pending("ldoc is not installed (apt-get install lua-ldoc)")
      return
    end
    local out = os.tmpname()
    os.remove(out)
    local r = C.run(("env -u MAKEFLAGS -u MAKELEVEL make -s docs DOCS_DIR=%s"):format(C.shquote(out)),
      { timeout = 120 })
    local index = exists(out .. "/index.html") and read(out .. "/index.html") or ""
    local proc = exists(out .. "/modules/genserver.process.html")
      and read(out .. "/modules/genserver.process.html") or ""
    os.execute("rm -rf " .. C.shquote(out))
    assert(r.ok, C.show(r))
    assert.are.equal("", r.err, "warnings:\n" .. r.err)
    assert.is_falsy(r.out:lower():find("warning"), r.out)
    for _, m in ipairs({ "genserver", "genserver.process", "genserver.supervisor",
                         "genserver.runtime", "genserver.logger", "genserver.observer", "genserver.observer_web",
                         "genserver.sys", "genserver.code", "genserver.agent",
                         "genserver.task" }) do
      assert.is_true(has(index, m), m .. " is not in the reference")
    end
    -- functions are listed as functions, not as fields
    assert.is_true(has(proc, '<h2 class="section-header "><a name="Functions"></a>Functions</h2>'), proc:sub(1, 500))
    assert.is_false(has(proc, '<a name="Fields"></a>Fields'), "genserver.process lists fields")
    assert.is_true(has(proc, 'name = "send"'), "send is a function of genserver.process")
  end)
end)
