// spec/c/cxx_host.cpp: a C++ host of genserver, compiled by spec/cxx_spec.lua
// with g++ against csrc/genserver.h, with Debian's Lua headers and with
// upstream's (lua.org's luaconf.h declares LUA_API as plain `extern`, with
// no extern "C" for C++; Debian's adds it). Every Lua and genserver function
// it uses must keep its C name in the object file, or the host would not
// link against liblua5.4 and libgenserver.
#include "genserver.h" // includes lua.h: genserver.h must give it C linkage
extern "C" {           // what a C++ host does for the Lua headers it includes itself
#include "lauxlib.h"
}

static void hook(lua_State *L, void *) {
  lua_pushinteger(L, 42);
  lua_setglobal(L, "answer");
}

int main() {
  gs_config cfg;
  gs_config_init(&cfg);
  cfg.state_hook = hook;
  gs_runtime *rt = nullptr;
  if (gs_runtime_open(&rt, &cfg) != GS_OK) return 1;
  gs_pid self = 0;
  gs_self(rt, &self);
  char text[GS_PID_STRLEN];
  gs_pid_format(self, text, sizeof text);
  lua_State *L = luaL_newstate();
  lua_pushstring(L, text);
  lua_close(L);
  return gs_runtime_close(rt, 1000) == GS_OK ? 0 : 1;
}
