-- spec/embed_spec.lua: the C embedding API as a C programmer gets it (issue 4,
-- DESIGN.md §3): `make install` into a temporary prefix, build examples/c_host
-- against that installed tree with pkg-config (shared and static), run it, and
-- check what it printed; then `make uninstall`, and DESTDIR staging.
--
-- The API itself is tested in depth by spec/c/api_test.c; this is about the
-- installed artefacts. Every command runs under `timeout`, with the parent
-- make's MAKEFLAGS and the in-tree LUA_PATH removed, so the program can only
-- find what was installed.
--
-- Run: make test SPECS=spec/embed_spec.lua

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)[/\\]spec[/\\][^/\\]*$") or "."

local function shquote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- a clean environment: no in-tree Lua paths, no flags of an enclosing make
local CLEAN_ENV = "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u CFLAGS -u LDFLAGS "
  .. "-u LUA_PATH -u LUA_PATH_5_4 -u LUA_CPATH -u LUA_CPATH_5_4 -u GENSERVER_WORKERS"

--- Runs a shell command; returns ok, output (stdout and stderr).
local function run(cmd, seconds)
  local p = assert(io.popen(("cd %s && %s timeout %d sh -c %s 2>&1"):format(
    shquote(ROOT), CLEAN_ENV, seconds or 300, shquote(cmd)), "r"))
  local out = p:read("a")
  local ok = p:close()
  return ok, out
end

local function must(cmd, seconds)
  local ok, out = run(cmd, seconds)
  assert(ok, ("command failed: %s\n%s"):format(cmd, out))
  return out
end

local function exists(path)
  return run("test -e " .. shquote(path) .. " || test -L " .. shquote(path)) == true
end

local function header_version()
  local f = assert(io.open(ROOT .. "/csrc/genserver.h"))
  local h = f:read("a")
  f:close()
  return ("%s.%s.%s"):format(h:match("#define GS_VERSION_MAJOR (%d+)"),
    h:match("#define GS_VERSION_MINOR (%d+)"), h:match("#define GS_VERSION_PATCH (%d+)"))
end

describe("the C embedding API, installed", function()
  local tmp, prefix, build, version

  setup(function()
    tmp = assert(io.popen("mktemp -d")):read("l")
    prefix = tmp .. "/usr"
    build = tmp .. "/build"
    version = header_version()
  end)

  teardown(function()
    if tmp and tmp:match("^/tmp/") then os.execute("rm -rf " .. shquote(tmp)) end
  end)

  it("make install puts the header, both libraries and genserver.pc in PREFIX", function()
    must(("make -j4 install PREFIX=%s BUILD=%s"):format(shquote(prefix), shquote(build)), 600)
    local lib = prefix .. "/lib/"
    for _, f in ipairs { prefix .. "/include/genserver.h", lib .. "libgenserver.a",
                         lib .. "libgenserver.so", lib .. "libgenserver.so.0",
                         lib .. "libgenserver.so." .. version, lib .. "pkgconfig/genserver.pc",
                         lib .. "lua/5.4/genserver/core.so",
                         prefix .. "/share/lua/5.4/genserver/init.lua" } do
      assert.is_true(exists(f), f .. " is missing")
    end
    -- libgenserver.so -> libgenserver.so.0 (the soname) -> libgenserver.so.X.Y.Z
    assert.equal("libgenserver.so.0\n", must("readlink " .. shquote(lib .. "libgenserver.so")))
    assert.equal("libgenserver.so." .. version .. "\n",
                 must("readlink " .. shquote(lib .. "libgenserver.so.0")))
    assert.matches("SONAME[^\n]*%[libgenserver%.so%.0%]",
                   must("readelf -d " .. shquote(lib .. "libgenserver.so." .. version)))
  end)

  it("exports only the gs_ API and luaopen_genserver_core", function()
    local syms = must("nm -D --defined-only " .. shquote(prefix .. "/lib/libgenserver.so"))
    local n = 0
    for name in syms:gmatch("%x+ %a ([%w_]+)") do
      n = n + 1
      assert.is_truthy(name:match("^gs_") or name == "luaopen_genserver_core",
                       "unexpected exported symbol " .. name)
    end
    assert.is_true(n > 30, "too few exported symbols")
  end)

  it("genserver.pc describes the installed tree", function()
    local pc = "PKG_CONFIG_PATH=" .. shquote(prefix .. "/lib/pkgconfig") .. " pkg-config "
    assert.equal(version .. "\n", must(pc .. "--modversion genserver"))
    local flags = must(pc .. "--cflags --libs genserver")
    assert.is_truthy(flags:find("-I" .. prefix .. "/include", 1, true), flags)
    assert.is_truthy(flags:find("-L" .. prefix .. "/lib", 1, true), flags)
    assert.matches("%-lgenserver", flags)
    assert.matches("%-lpthread", flags)
    assert.matches("%-llua5%.4", flags) -- Requires: lua5.4
    assert.equal(prefix .. "/share/lua/5.4\n", must(pc .. "--variable=luadir genserver"))
  end)

  local function check_output(out)
    -- 4 threads x 3 calls, each answered by the Lua server through the hook's world
    local got, seen = 0, {}
    for thread, k, i, t in out:gmatch("thread (%d) got: Hello #(%d+): HELLO (%d) FROM THREAD (%d)") do
      assert.equal(thread, t)
      got = got + 1
      seen[tonumber(k)] = true
      assert.is_true(tonumber(i) >= 1 and tonumber(i) <= 3)
    end
    assert.equal(12, got, out)
    for k = 1, 12 do assert.is_true(seen[k], "reply #" .. k .. " missing\n" .. out) end
    assert.matches("%[lua%] greeter starting, prefix Hello", out) -- host.log from init
    assert.matches("%[lua%] cast: all threads done", out)
    assert.matches("stats: calls = 12", out)                       -- read with gs_read
    assert.matches("Lua sees 12 calls, through pid <0%.%d+%.%d+>", out) -- bound host state
    assert.matches("%[lua%] greeter stopping %(normal%) after 12 calls", out)
    assert.matches("done\n$", out)
  end

  it("examples/c_host builds against it with pkg-config and runs", function()
    local ex = tmp .. "/example"
    must(("PKG_CONFIG_PATH=%s make -C examples/c_host O=%s"):format(
      shquote(prefix .. "/lib/pkgconfig"), shquote(ex)))
    -- linked with the installed shared library (found through its rpath)
    assert.matches("NEEDED[^\n]*libgenserver%.so%.0", must("readelf -d " .. shquote(ex .. "/c_host")))
    check_output(must(shquote(ex .. "/c_host"), 60))
  end)

  it("and statically linked too", function()
    local ex = tmp .. "/example-static"
    must(("PKG_CONFIG_PATH=%s make -C examples/c_host O=%s static"):format(
      shquote(prefix .. "/lib/pkgconfig"), shquote(ex)))
    assert.is_falsy(must("readelf -d " .. shquote(ex .. "/c_host")):find("libgenserver", 1, true))
    check_output(must(shquote(ex .. "/c_host"), 60))
  end)

  it("make uninstall removes what make install put there", function()
    must(("make uninstall PREFIX=%s BUILD=%s"):format(shquote(prefix), shquote(build)))
    for _, f in ipairs { "include/genserver.h", "lib/libgenserver.a", "lib/libgenserver.so",
                         "lib/libgenserver.so.0", "lib/libgenserver.so." .. version,
                         "lib/pkgconfig/genserver.pc", "lib/lua/5.4/genserver/core.so",
                         "share/lua/5.4/genserver/init.lua" } do
      assert.is_false(exists(prefix .. "/" .. f), f .. " is still there")
    end
  end)

  it("DESTDIR stages the install under it, for the final PREFIX", function()
    local stage = tmp .. "/stage"
    must(("make install DESTDIR=%s PREFIX=/opt/gs BUILD=%s"):format(shquote(stage), shquote(build)), 600)
    assert.is_true(exists(stage .. "/opt/gs/include/genserver.h"))
    assert.is_true(exists(stage .. "/opt/gs/lib/libgenserver.so." .. version))
    assert.is_false(exists("/opt/gs/include/genserver.h"))
    local f = assert(io.open(stage .. "/opt/gs/lib/pkgconfig/genserver.pc"))
    local pc = f:read("a")
    f:close()
    assert.matches("prefix=/opt/gs\n", pc)   -- the final prefix, not the stage
    must(("make uninstall DESTDIR=%s PREFIX=/opt/gs BUILD=%s"):format(shquote(stage), shquote(build)))
    assert.is_false(exists(stage .. "/opt/gs/include/genserver.h"))
    assert.is_false(exists(stage .. "/opt/gs/lib/libgenserver.so"))
    assert.is_false(exists(stage .. "/opt/gs/lib/pkgconfig/genserver.pc"))
  end)
end)
