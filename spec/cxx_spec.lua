-- csrc/genserver.h from C++: a C++ host (spec/c/cxx_host.cpp) compiles with
-- g++ against it and Debian's Lua headers, and the object file refers to
-- every lua_*, luaL_* and gs_* function by its C name (not a C++ mangled
-- one), so it links against liblua5.4 and libgenserver. Debian's lua.h has
-- no extern "C" guards: genserver.h includes it inside its own.
local C = require "cmd_util"

local function sh_ok(cmd) return os.execute(cmd) == true end

local function lua_incdir()
  local p = io.popen("pkg-config --variable=includedir lua5.4 2>/dev/null")
  local dir = p:read("l")
  p:close()
  if dir and dir ~= "" and sh_ok("test -f " .. C.shquote(dir .. "/lua.h")) then return dir end
  return "/usr/include/lua5.4"
end

-- compiles cxx_host.cpp with the Lua headers in `incdir`; returns the names
-- its object file leaves undefined
local function undefined_names(incdir)
  local obj = os.tmpname()
  local r = C.run(("g++ -std=c++17 -Wall -Wextra -Werror -Icsrc -I%s -c spec/c/cxx_host.cpp -o %s && nm -u %s")
    :format(C.shquote(incdir), C.shquote(obj), C.shquote(obj)), { timeout = 120 })
  os.remove(obj)
  assert(r.ok, C.show(r))
  local names = {}
  for name in r.out:gmatch("U%s+(%S+)") do names[name] = true end
  return names, r
end

local function check_names(names, r)
  for _, want in ipairs({ "lua_pushinteger", "lua_setglobal", "lua_pushstring", "lua_close",
                          "luaL_newstate", "gs_config_init", "gs_runtime_open", "gs_self",
                          "gs_pid_format", "gs_runtime_close" }) do
    assert.is_true(names[want], want .. " is not referred to by its C name\n" .. r.out)
  end
  for name in pairs(names) do
    assert.is_falsy(name:match("^_Z.*lua") or name:match("^_Z.*gs_"), "a C++ mangled name: " .. name)
  end
end

describe("genserver.h in a C++ host", function()
  local have_gxx = sh_ok("command -v g++ >/dev/null 2>&1")

  it("compiles with g++ and Debian's Lua headers, keeping the C names", function()
    if not have_gxx then pending("g++ is not installed") return end
    check_names(undefined_names(lua_incdir()))
  end)

  it("and with upstream's Lua headers (no extern \"C\" in luaconf.h)", function()
    if not have_gxx then pending("g++ is not installed") return end
    local dir = os.tmpname()
    os.remove(dir)
    assert(sh_ok("mkdir " .. C.shquote(dir)))
    assert(sh_ok(("cp %s/lua.h %s/lauxlib.h %s/luaconf.h %s/"):format(
      C.shquote(lua_incdir()), C.shquote(lua_incdir()), C.shquote(lua_incdir()), C.shquote(dir))))
    local f = assert(io.open(dir .. "/luaconf.h"))
    local conf = f:read("a")
    f:close()
    -- upstream: #define LUA_API extern (Debian: extern "C" under __cplusplus)
    local upstream, n = conf:gsub('#ifdef __cplusplus\n#define LUA_API%s+extern "C"\n#else\n(#define LUA_API%s+extern)\n#endif',
      "%1")
    f = assert(io.open(dir .. "/luaconf.h", "w"))
    f:write(upstream)
    f:close()
    local ok, err = pcall(function()
      if n == 1 then
        check_names(undefined_names(dir))
      end
    end)
    os.execute("rm -rf " .. C.shquote(dir))
    if not ok then error(err, 0) end
    if n ~= 1 then pending("this luaconf.h does not have Debian's extern \"C\" block to take out") end
  end)
end)
