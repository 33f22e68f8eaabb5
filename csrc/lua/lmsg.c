/*
** lmsg.c - genserver.core's arguments, messages and reasons as Lua values.
**
** What every primitive of the binding shares: reading a pid, a ref, a
** server (pid or name) or a time-out from the arguments; encoding a value
** into a message with the caller's line in the error; decoding a message
** into the values receive and next return; readable reasons; process.exit
** inside a gen_server; the crash report of a plain process. The messages
** themselves stay the core's: they are read through a gsi_msgv (gen/bif.h).
*/
#include <stdio.h>
#include <string.h>

#include "lauxlib.h"

#include "lbind.h"

/* ------------------------------------------------------------ arguments */

uint64_t gsi_lua_check_pid(lua_State *L, int idx) {
  uint64_t pid;
  if (!gsi_topid(L, idx, &pid)) luaL_typeerror(L, idx, "pid");
  return pid;
}

uint64_t gsi_lua_check_ref(lua_State *L, int idx) {
  uint64_t ref;
  if (!gsi_toref(L, idx, &ref)) luaL_typeerror(L, idx, "reference");
  return ref;
}

/* The pid registered as name, or 0 (no such name, or not a valid one). */
uint64_t gsi_lua_lookup(lua_State *L, const char *name) {
  gs_pid pid;
  int rc = gs_whereis(gsi_lua_api(L), name, &pid);
  if (rc == GS_ECLOSED) gsi_lua_raise_closed(L); /* stopped between the two looks */
  return rc == GS_OK ? pid : 0;
}

uint64_t gsi_lua_resolve(lua_State *L, int idx) {
  uint64_t pid;
  if (gsi_topid(L, idx, &pid)) return pid;
  if (lua_type(L, idx) == LUA_TSTRING) return gsi_lua_lookup(L, lua_tostring(L, idx));
  luaL_typeerror(L, idx, "pid or registered name");
  return 0;
}

/* A time in ms: nil -> def_ms; a number; "infinity" or math.huge -> none.
** Returns the ms, or NO_TIMEOUT. Anything past a thousand years is none
** too (so no conversion below can overflow). */
#define MAX_MS 1e13 /* ~317 years; ms * 1e6 + now stays far below 2^64 */

uint64_t gsi_lua_opt_ms(lua_State *L, int idx, double def_ms) {
  double ms = def_ms;
  if (lua_type(L, idx) == LUA_TSTRING) {
    if (strcmp(lua_tostring(L, idx), "infinity") != 0)
      luaL_argerror(L, idx, "time-out must be ms or \"infinity\"");
    return NO_TIMEOUT;
  }
  if (!lua_isnoneornil(L, idx)) ms = luaL_checknumber(L, idx);
  if (ms != ms) luaL_argerror(L, idx, "time-out is NaN");
  if (ms >= MAX_MS) return NO_TIMEOUT;
  return ms <= 0 ? 0 : (uint64_t)ms;
}

/* The same as an absolute deadline in ns, 0 meaning none. */
uint64_t gsi_lua_opt_deadline(lua_State *L, int idx, double def_ms) {
  uint64_t ms = gsi_lua_opt_ms(L, idx, def_ms);
  return ms == NO_TIMEOUT ? 0 : gsi_bif_now_ns() + ms * 1000000u;
}

/* --------------------------------------------------------------- codec */

/* genserver's own Lua files: an error about the caller's value names the
** caller's line, not one of these. */
static int own_source(const char *src) {
  static const char *const own[] = {"genserver/init.lua", "genserver/process.lua",
                                    "genserver/server.lua", "genserver/supervisor.lua",
                                    "genserver/sys.lua", "genserver/runtime.lua",
                                    "genserver/tcp.lua", "genserver/udp.lua", NULL};
  for (int i = 0; own[i]; i++) {
    size_t n = strlen(src), m = strlen(own[i]);
    if (n >= m && strcmp(src + n - m, own[i]) == 0) return 1;
  }
  return 0;
}

/* Push "file:line: " of the first caller outside genserver's own code. */
static void where_user(lua_State *L) {
  lua_Debug ar;
  for (int level = 1; lua_getstack(L, level, &ar); level++) {
    lua_getinfo(L, "Sl", &ar);
    if (ar.currentline > 0 && !own_source(ar.source)) {
      lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
      return;
    }
  }
  lua_pushliteral(L, "");
}

int gsi_lua_raise_encode_error(lua_State *L) {
  if (lua_type(L, -1) != LUA_TSTRING) lua_pushstring(L, "cannot encode value");
  where_user(L);
  lua_insert(L, -2);
  lua_concat(L, 2);
  return lua_error(L);
}

gsi_msg *gsi_lua_encode(lua_State *L, int idx, const char *what, int kind,
                        uint64_t from, uint64_t ref, uint64_t to) {
  int err = 0;
  gsi_msg *m = gsi_bif_encode(L, idx, what, gsi_lua_rt(L), kind, from, ref, to, &err);
  if (m == NULL) {
    if (err == GSI_EENCODE) gsi_lua_raise_encode_error(L);
    luaL_error(L, "genserver: out of memory");
  }
  return m;
}

int gsi_lua_decode(lua_State *L, const gsi_msgv *v) {
  gsi_proc *p;
  if (v->len == 0) {
    lua_pushnil(L);
    return 0;
  }
  p = gsi_lua_state_proc(L);
  return gsi_decode(L, v->data, v->len,
                    p != NULL ? gsi_bif_limits(p) : gsi_bif_rt_limits(gsi_lua_rt(L)));
}

/* As gsi_lua_decode, for next() in a process: plain data skips the
** protected call (gsi_decode_raw). A memory error then raises from here
** with the message still queued; the server dies of it either way. */
int gsi_lua_decode_next(lua_State *L, const gsi_msgv *v) {
  const gsi_codec_limits *lim = v->lim;
  if (v->len == 0) return gsi_lua_decode(L, v);
  if (lim == NULL) { /* not from gsi_bif_next: is L a process's state? */
    gsi_proc *p = gsi_lua_state_proc(L);
    if (p == NULL) return gsi_lua_decode(L, v);
    lim = gsi_bif_limits(p);
  }
  return gsi_decode_raw(L, v->data, v->len, lim);
}

/* A call's from: { caller pid, tag }. The tag is the call's ref as a
** plain integer: it is only ever handed back to reply(), and an integer
** costs the server's state nothing (a ref would be a new userdata and an
** interning entry per call). reply() also takes a ref there. */
void gsi_lua_push_from(lua_State *L, uint64_t from, uint64_t ref) {
  lua_createtable(L, 2, 0);
  gsi_pushpid(L, from);
  lua_rawseti(L, -2, 1);
  lua_pushinteger(L, (lua_Integer)ref);
  lua_rawseti(L, -2, 2);
}

/* The tag of a from (see gsi_lua_push_from): an integer, or a ref. */
int gsi_lua_from_tag(lua_State *L, int idx, uint64_t *ref) {
  if (lua_type(L, idx) == LUA_TNUMBER) {
    int isint;
    lua_Integer t = lua_tointegerx(L, idx, &isint);
    if (!isint || t <= 0) return 0;
    *ref = (uint64_t)t;
    return 1;
  }
  return gsi_toref(L, idx, ref);
}

/* ------------------------------------------------ readable reasons */

/* A table reason (an exit reason, start's `nil, reason`, a call error's
** reason) prints readably: it carries the metatable REASON_MT, whose
** __tostring is genserver.format_reason (init.lua), loaded only when a
** reason is printed. Metatables do not cross between states, so the
** receiving side attaches it again where the runtime decodes a reason
** (DOWN, EXIT, a call's failure). */
#define REASON_MT "genserver.reason"

static int reason_tostring(lua_State *L) {
  lua_settop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "genserver");
  if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TTABLE &&
      lua_getfield(L, -1, "format_reason") == LUA_TFUNCTION) {
    lua_pushvalue(L, 1);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING) return 1;
  }
  lua_pushfstring(L, REASON_MT ": %p", lua_topointer(L, 1));
  return 1;
}

/* Give the table at idx (if it has no metatable) the reason metatable. */
void gsi_lua_mark_reason(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TTABLE || lua_getmetatable(L, idx)) {
    if (lua_type(L, idx) == LUA_TTABLE) lua_pop(L, 1);
    return;
  }
  idx = lua_absindex(L, idx);
  if (luaL_newmetatable(L, REASON_MT)) {
    lua_pushcfunction(L, reason_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_setmetatable(L, idx);
}

/* reason_mt() -> the metatable of readable reasons (init.lua uses it) */
static int l_reason_mt(lua_State *L) {
  lua_newtable(L);
  gsi_lua_mark_reason(L, -1);
  lua_getmetatable(L, -1);
  return 1;
}

/* The reason of an exit signal or DOWN: "killed" for an untrappable kill. */
static int push_reason(lua_State *L, const gsi_msgv *v) {
  int rc;
  if (v->kind == GSI_M_EXIT && (v->flags & GSI_XF_KILL)) {
    lua_pushliteral(L, "kill");
    return 0;
  }
  rc = gsi_lua_decode(L, v);
  if (rc == 0) gsi_lua_mark_reason(L, -1);
  return rc;
}

/* Push message v as the value a plain receive returns. */
int gsi_lua_push_msg(lua_State *L, const gsi_msgv *v) {
  int rc = 0;
  lua_checkstack(L, 6);
  switch (v->kind) {
  case GSI_M_CALL:
  case GSI_M_SYSTEM:
    lua_createtable(L, 3, 0);
    lua_pushstring(L, v->kind == GSI_M_CALL ? "$gen_call" : "$system");
    lua_rawseti(L, -2, 1);
    gsi_lua_push_from(L, v->from, v->ref);
    lua_rawseti(L, -2, 2);
    if ((rc = gsi_lua_decode(L, v)) == 0) lua_rawseti(L, -2, 3);
    break;
  case GSI_M_CAST:
    lua_createtable(L, 2, 0);
    lua_pushliteral(L, "$gen_cast");
    lua_rawseti(L, -2, 1);
    if ((rc = gsi_lua_decode(L, v)) == 0) lua_rawseti(L, -2, 2);
    break;
  case GSI_M_REPLY:
    lua_createtable(L, 3, 0);
    lua_pushliteral(L, "$reply");
    lua_rawseti(L, -2, 1);
    gsi_pushref(L, v->ref);
    lua_rawseti(L, -2, 2);
    if ((rc = gsi_lua_decode(L, v)) == 0) lua_rawseti(L, -2, 3);
    break;
  case GSI_M_DOWN:
    lua_createtable(L, 1, 3);
    lua_pushliteral(L, "DOWN");
    lua_rawseti(L, -2, 1);
    gsi_pushref(L, v->ref);
    lua_setfield(L, -2, "ref");
    if (v->from) gsi_pushpid(L, v->from), lua_setfield(L, -2, "pid");
    if ((rc = push_reason(L, v)) == 0) lua_setfield(L, -2, "reason");
    break;
  case GSI_M_EXIT:
    lua_createtable(L, 1, 2);
    lua_pushliteral(L, "EXIT");
    lua_rawseti(L, -2, 1);
    if (v->from) gsi_pushpid(L, v->from), lua_setfield(L, -2, "pid");
    if ((rc = push_reason(L, v)) == 0) lua_setfield(L, -2, "reason");
    break;
  default:
    return gsi_lua_decode(L, v);
  }
  if (rc != 0) lua_replace(L, -2); /* keep only the error string */
  return rc;
}

/* -------------------------------------------- process.exit in a server */

/* process.exit(reason) in a gen_server (its state is marked serving by
** core.serve) raises an exit error carrying the reason instead of ending
** the process at once, so that the server loop runs terminate(reason,
** state) and reports an abnormal reason, as OTP's gen_server does for
** exit/1 (a pcall catches it, as Erlang's catch does). */
static const char SERVING_KEY = 'v', EXIT_MT_KEY = 'x';

void gsi_set_serving(lua_State *L, int on) {
  lua_pushboolean(L, on);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &SERVING_KEY);
}

int gsi_lua_serving(lua_State *L) {
  int on = lua_rawgetp(L, LUA_REGISTRYINDEX, &SERVING_KEY) == LUA_TBOOLEAN &&
           lua_toboolean(L, -1);
  lua_pop(L, 1);
  return on;
}

static int exit_error_tostring(lua_State *L) {
  lua_getfield(L, 1, "reason");
  lua_pushfstring(L, "process.exit(%s)", luaL_tolstring(L, -1, NULL));
  return 1;
}

int gsi_lua_raise_exit_error(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, idx);
  lua_setfield(L, -2, "reason");
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &EXIT_MT_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, exit_error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "genserver.exit");
    lua_setfield(L, -2, "__name");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &EXIT_MT_KEY);
  }
  lua_setmetatable(L, -2);
  return lua_error(L);
}

int gsi_exit_reason(lua_State *L, int idx) {
  int is;
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx)) return 0;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &EXIT_MT_KEY);
  is = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  if (!is) return 0;
  lua_getfield(L, idx, "reason");
  return 1;
}

/* -------------------------------------------------------- crash reports */

/* Protected part of gsi_report_crash (1 = the error). */
static int report_crash(lua_State *L) {
  gsi_proc *p = gsi_lua_state_proc(L);
  lua_settop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "genserver.logger");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "report"); /* 1 = e, 2 = logger, 3 = report */
  lua_createtable(L, 0, 5);
  lua_pushliteral(L, "process");
  lua_setfield(L, -2, "kind");
  gsi_pushpid(L, gsi_bif_pid(p));
  lua_setfield(L, -2, "pid");
  if (lua_isnil(L, 1)) lua_pushliteral(L, "(error object is a nil value)");
  else if (lua_type(L, 1) == LUA_TTABLE || lua_type(L, 1) == LUA_TSTRING) lua_pushvalue(L, 1);
  else luaL_tolstring(L, 1, NULL);
  lua_setfield(L, -2, "error");
  if (gsi_bif_crash_traceback(L, 1)) lua_setfield(L, -2, "traceback");
  lua_call(L, 1, 0);
  return 0;
}

/* A plain process's body raised the error at idx: an error report goes to
** genserver.logger (printed if it is not running), as Erlang prints
** "Error in process ... with exit value". A gen_server's loop reports its
** own crashes. Never raises, never waits. */
void gsi_report_crash(lua_State *L, int idx) {
  gsi_proc *p = gsi_lua_state_proc(L);
  int server;
  idx = lua_absindex(L, idx);
  if (!lua_checkstack(L, 4)) return;
  /* a state that ever served (its flag is there, on or off) is a server */
  server = lua_rawgetp(L, LUA_REGISTRYINDEX, &SERVING_KEY) != LUA_TNIL;
  lua_pop(L, 1);
  /* not once the runtime is shutting down: a process that meets the
  ** stopped runtime ("the runtime has been shut down") did not crash */
  if (server || p == NULL || gsi_bif_shutting(gsi_bif_rt(p))) return;
  lua_pushcfunction(L, report_crash);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    /* the logger could not be used (out of memory, a sandbox without it):
    ** one line here, a string error quoted up to a bound */
    uint64_t pid = gsi_bif_pid(p);
    const char *e = lua_type(L, idx) == LUA_TSTRING ? lua_tostring(L, idx) : NULL;
    fprintf(stderr, "=ERROR REPORT==== Error in process <0.%u.%u> with exit value: %.500s\n",
            GSI_PID_INDEX(pid), GSI_PID_GEN(pid), e != NULL ? e : luaL_typename(L, idx));
    lua_pop(L, 1);
  }
}

const luaL_Reg gsi_lua_msg_funcs[] = {{"reason_mt", l_reason_mt}, {NULL, NULL}};
