/*
** linfo.c - genserver.core's inspection and runtime settings: self,
** make_ref, alive, list, info, stats, configure, a server's module and
** version, code versions (genserver.code), stop order, parent, clocks.
**
** What is read of another process is a snapshot gen/bif.h takes under its
** lock into plain C memory (gsi_pinfo); the tables are built afterwards,
** with no lock held. Settings of the whole runtime go through the public
** API (gs_runtime_configure, gs_runtime_stats).
*/
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"

#include "lbind.h"

/* In a process: its pid. On a foreign thread: gs_self, which also ends a
** process an exit signal killed (raised here with its reason). */
static int l_self(lua_State *L) {
  gs_runtime *api;
  gs_pid pid;
  uint64_t me;
  if (gsi_lua_state_proc(L) != NULL) {
    gsi_pushpid(L, gsi_bif_pid(gsi_lua_self(L)));
    return 1;
  }
  api = gsi_lua_api(L);
  /* the pid as it is now, for the error if a signal killed it */
  if ((me = gsi_lua_foreign_pid(L)) == 0)
    return luaL_error(L, "genserver: too many processes");
  switch (gs_self(api, &pid)) {
  case GS_OK: break;
  case GS_EKILLED: return gsi_lua_raise_killed(L, me);
  case GS_ECLOSED: return gsi_lua_raise_closed(L);
  default: return luaL_error(L, "genserver: too many processes");
  }
  gsi_pushpid(L, pid);
  return 1;
}

static int l_make_ref(lua_State *L) {
  gsi_pushref(L, gsi_bif_make_ref(gsi_lua_rt(L)));
  return 1;
}

static int l_is_pid(lua_State *L) {
  uint64_t v;
  lua_pushboolean(L, gsi_topid(L, 1, &v));
  return 1;
}

static int l_is_ref(lua_State *L) {
  uint64_t v;
  lua_pushboolean(L, gsi_toref(L, 1, &v));
  return 1;
}

static int l_alive(lua_State *L) {
  lua_pushboolean(L, gsi_bif_alive(gsi_lua_rt(L), gsi_lua_check_pid(L, 1)));
  return 1;
}

/* list() -> the pids of the live processes (copied out, then pushed) */
static int l_list(lua_State *L) {
  size_t n;
  uint64_t *v = gsi_bif_list(gsi_lua_rt(L), &n);
  if (v == NULL && n != 0) return luaL_error(L, "genserver: out of memory");
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    gsi_pushpid(L, v[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  free(v);
  return 1;
}

static const char *const callback_names[] = {
    NULL, "init", "handle_call", "handle_cast", "handle_info",
    "handle_continue", "terminate", "system"};

static const char *const status_names[] = {"waiting", "runnable", "running"};

static void set_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

static void push_ids(lua_State *L, const uint64_t *v, size_t n) {
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    gsi_pushpid(L, v[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

/* The table of info(pid) from its snapshot (may raise: the caller frees
** the snapshot's lists once this returns). */
static int push_info(lua_State *L) {
  const gsi_pinfo *i = lua_touserdata(L, 1);
  lua_createtable(L, 0, 12);
  lua_pushstring(L, status_names[i->status]);
  lua_setfield(L, -2, "status");
  set_int(L, "mailbox", (lua_Integer)i->mailbox);
  set_int(L, "messages_in", (lua_Integer)i->messages_in);
  set_int(L, "memory", (lua_Integer)i->memory);
  set_int(L, "overflowed", (lua_Integer)i->overflowed);
  if (i->mailbox_limit) set_int(L, "mailbox_limit", (lua_Integer)i->mailbox_limit);
  if (i->max_heap) set_int(L, "max_heap", (lua_Integer)i->max_heap);
  if (i->module[0]) lua_pushstring(L, i->module), lua_setfield(L, -2, "module");
  if (i->name[0]) lua_pushstring(L, i->name), lua_setfield(L, -2, "name");
  lua_pushboolean(L, i->foreign);
  lua_setfield(L, -2, "foreign");
  push_ids(L, i->links, i->nlinks);
  lua_setfield(L, -2, "links");
  push_ids(L, i->monitored_by, i->nmonitored_by);
  lua_setfield(L, -2, "monitored_by");
  push_ids(L, i->monitors, i->nmonitors);
  lua_setfield(L, -2, "monitors");
  set_int(L, "messages_out", (lua_Integer)i->messages_out);
  set_int(L, "reductions", (lua_Integer)i->reductions);
  lua_pushboolean(L, i->trap_exit);
  lua_setfield(L, -2, "trap_exit");
  if (i->server) lua_pushboolean(L, 1), lua_setfield(L, -2, "server");
  if (i->vsn[0]) lua_pushstring(L, i->vsn), lua_setfield(L, -2, "vsn");
  else if (i->vsn_n) set_int(L, "vsn", (lua_Integer)i->vsn_n);
  if (i->current > GSI_CB_NONE && i->current <= GSI_CB_SYSTEM)
    lua_pushstring(L, callback_names[i->current]), lua_setfield(L, -2, "current");
  return 1;
}

/* info(pid) -> table | nil. The table is built in a protected call, so
** that a memory error cannot leak the snapshot's lists. */
static int l_info(lua_State *L) {
  gsi_pinfo i;
  int st;
  if (!gsi_bif_info(gsi_lua_rt(L), gsi_lua_check_pid(L, 1), &i)) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushcfunction(L, push_info);
  lua_pushlightuserdata(L, &i);
  st = lua_pcall(L, 1, 1, 0);
  gsi_bif_info_free(&i);
  if (st != LUA_OK) return lua_error(L);
  return 1;
}

/* ------------------------------------------------------------ runtime */

/* configure{...}: the fields are checked here (the messages name the Lua
** function), then applied at once with gs_runtime_configure on a zeroed
** gs_config, whose 0 fields leave a setting as it is. */
static int l_configure(lua_State *L) {
  gs_runtime *api = gsi_lua_api(L);
  gsi_proc *self = gsi_lua_state_proc(L);
  gs_config cfg;
  int rc;
  if (self != NULL && gsi_bif_sandboxed(self)) /* settings of every process (§5) */
    return luaL_error(L, "genserver.runtime.configure: not allowed in a "
                         "sandboxed process (it changes the whole runtime)");
  memset(&cfg, 0, sizeof cfg);
  luaL_checktype(L, 1, LUA_TTABLE);
  if (lua_getfield(L, 1, "workers") != LUA_TNIL) {
    lua_Integer n = luaL_checkinteger(L, -1);
    if (n < 1 || n > 1024)
      return luaL_error(L, "genserver.runtime.configure: workers must be 1..1024");
    cfg.workers = (int)n;
  }
  if (lua_getfield(L, 1, "max_depth") != LUA_TNIL) {
    lua_Integer n = luaL_checkinteger(L, -1);
    if (n < 1 || n > GSI_CODEC_MAXDEPTH)
      return luaL_error(L, "genserver.runtime.configure: max_depth must be 1..%d",
                        GSI_CODEC_MAXDEPTH);
    cfg.max_depth = (int)n;
  }
  if (lua_getfield(L, 1, "max_message_size") != LUA_TNIL) {
    lua_Integer n = luaL_checkinteger(L, -1);
    if (n < 16) return luaL_error(L, "genserver.runtime.configure: "
                                     "max_message_size too small");
    cfg.max_message_size = (size_t)n;
  }
  if (lua_getfield(L, 1, "budget") != LUA_TNIL) {
    lua_Integer n = luaL_checkinteger(L, -1);
    if (n < 1 || n > INT32_MAX)
      return luaL_error(L, "genserver.runtime.configure: budget must be >= 1");
    cfg.budget = (int)n;
  }
  if (lua_getfield(L, 1, "max_processes") != LUA_TNIL) {
    lua_Integer n = luaL_checkinteger(L, -1);
    if (n < 2 || n > (1 << 30))
      return luaL_error(L, "genserver.runtime.configure: max_processes out of range");
    cfg.max_processes = (uint32_t)n;
  }
  switch (rc = gs_runtime_configure(api, &cfg)) {
  case GS_OK: break;
  case GS_EBUSY:
    if (cfg.workers > 0)
      return luaL_error(L, "genserver.runtime.configure: workers must be set "
                           "before the first process starts");
    return luaL_error(L, "genserver.runtime.configure: max_processes must be "
                         "set before the first process starts");
  default: return gsi_lua_raise_error(L, "genserver.runtime.configure", rc, gs_errmsg());
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_stats(lua_State *L) {
  gs_stats st;
  if (gs_runtime_stats(gsi_lua_api(L), &st) != GS_OK)
    return luaL_error(L, "genserver: %s", gs_errmsg());
  lua_createtable(L, 0, 8);
  set_int(L, "workers", st.workers);
  set_int(L, "processes", (lua_Integer)st.processes);
  set_int(L, "foreign", (lua_Integer)st.foreign);
  set_int(L, "run_queue", (lua_Integer)st.run_queue);
  set_int(L, "messages", (lua_Integer)st.messages);
  set_int(L, "spawned", (lua_Integer)st.spawned);
  set_int(L, "abandoned_states", (lua_Integer)st.abandoned_states);
  lua_pushboolean(L, st.started);
  lua_setfield(L, -2, "started");
  return 1;
}

/* set_module(name [, vsn]): a gen_server names its module and version, for
** info(). Without a vsn (a string or a number), the version is the module
** cache's counter for the name (genserver.code), if it has one. */
static int l_set_module(lua_State *L) {
  gsi_proc *p = gsi_lua_self(L);
  const char *name = luaL_checkstring(L, 1), *vsn = NULL;
  size_t len = 0;
  if (lua_type(L, 2) == LUA_TSTRING || lua_type(L, 2) == LUA_TNUMBER)
    vsn = lua_tolstring(L, 2, &len);
  gsi_bif_set_module(p, name, vsn, len);
  return 0;
}

/* code_reload(name, path, fn, file [, vsn]) -> version | nil: make fn
** (compiled from file) the current version of (name, path) in the
** runtime's module cache (genserver.code.reload). */
static int l_code_reload(lua_State *L) {
  gsi_rt *rt = gsi_lua_rt(L);
  const char *name = luaL_checkstring(L, 1);
  const char *path = luaL_checkstring(L, 2);
  const char *file = luaL_checkstring(L, 4);
  const char *vsn = NULL;
  uint64_t v;
  luaL_checktype(L, 3, LUA_TFUNCTION);
  if (lua_type(L, 5) == LUA_TSTRING || lua_type(L, 5) == LUA_TNUMBER)
    vsn = lua_tostring(L, 5);
  lua_settop(L, 3);
  v = gsi_bif_code_reload(L, rt, name, path, file, vsn);
  if (v == 0) lua_pushnil(L);
  else lua_pushinteger(L, (lua_Integer)v);
  return 1;
}

/* code_version(name, path) -> version counter, vsn string | nil */
static int l_code_version(lua_State *L) {
  gsi_rt *rt = gsi_lua_rt(L);
  const char *name = luaL_checkstring(L, 1);
  const char *path = luaL_checkstring(L, 2);
  char vsn[48];
  uint64_t v = gsi_bif_code_version(rt, name, path, vsn, sizeof vsn);
  if (v == 0) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushinteger(L, (lua_Integer)v);
  if (vsn[0]) lua_pushstring(L, vsn);
  else lua_pushnil(L);
  return 2;
}

/* stop_order("first" | "last" | "normal"): when runtime shutdown stops
** this process if it is a root (runtime.c, gsi_rt_stop_all): supervisors
** say "first", the logger "last". */
static int l_stop_order(lua_State *L) {
  static const char *const orders[] = {"normal", "first", "last", NULL};
  gsi_proc *p = gsi_lua_self(L);
  int o = luaL_checkoption(L, 1, NULL, orders);
  gsi_bif_stop_order(p, o == 1 ? GSI_STOP_FIRST : o == 2 ? GSI_STOP_LAST : GSI_STOP_NORMAL);
  return 0;
}

static int l_parent(lua_State *L) {
  uint64_t parent = gsi_bif_parent(gsi_lua_self(L));
  if (parent == 0) lua_pushnil(L);
  else gsi_pushpid(L, parent);
  return 1;
}

/* Is the value at idx the pid of the process that spawned this one? */
int gsi_is_parent(lua_State *L, int idx) {
  gsi_proc *p = gsi_lua_state_proc(L);
  uint64_t pid, parent;
  return p != NULL && (parent = gsi_bif_parent(p)) != 0 && gsi_topid(L, idx, &pid) &&
         pid == parent;
}

/* clock() -> seconds, monotonic (for time-outs and benchmarks) */
static int l_clock(lua_State *L) {
  lua_pushnumber(L, (lua_Number)gsi_bif_now_ns() / 1e9);
  return 1;
}

/* now() -> ms, monotonic (a float) */
static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)gsi_bif_now_ns() / 1e6);
  return 1;
}

static int l_error_mt(lua_State *L) {
  luaL_getmetatable(L, ERROR_MT);
  return 1;
}

/* the gen_server loop pushes these as light C functions (lserver.c) */
const lua_CFunction gsi_core_self = l_self, gsi_core_set_module = l_set_module;

const luaL_Reg gsi_lua_info_funcs[] = {
    {"self", l_self},           {"make_ref", l_make_ref},
    {"is_pid", l_is_pid},       {"is_ref", l_is_ref},
    {"alive", l_alive},         {"list", l_list},
    {"info", l_info},           {"configure", l_configure},
    {"stats", l_stats},         {"set_module", l_set_module},
    {"code_reload", l_code_reload}, {"code_version", l_code_version},
    {"stop_order", l_stop_order}, {"parent", l_parent},
    {"clock", l_clock},         {"now", l_now},
    {"error_mt", l_error_mt},   {NULL, NULL}};
