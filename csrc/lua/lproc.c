/*
** lproc.c - genserver.core's links, monitors, exit signals, names, timers.
**
** The primitives one process uses on another, as Erlang's BIFs of the
** same names: each checks its arguments, makes the message it sends (if
** any) in Lua, then does the step with one function of gen/bif.h, and
** raises only afterwards.
*/
#include <math.h>
#include <string.h>

#include "lauxlib.h"

#include "lbind.h"

/* ----------------------------------------------- links, monitors, exit */

/* monitor(server) -> ref; a dead server's DOWN "noproc" comes at once */
static int l_monitor(lua_State *L) {
  GSI_ENTER(L, p);
  uint64_t ref = gsi_bif_monitor(p, gsi_lua_resolve(L, 1));
  if (ref == 0) return luaL_error(L, "genserver: out of memory");
  gsi_pushref(L, ref);
  return 1;
}

/* demonitor(ref [, "flush"]) -> true */
static int l_demonitor(lua_State *L) {
  gsi_proc *p = gsi_lua_self(L);
  uint64_t ref = gsi_lua_check_ref(L, 1);
  int flush = lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "flush") == 0;
  if (gsi_bif_demonitor(p, ref, flush) != 0)
    return luaL_error(L, "genserver: cannot receive or wait inside a receive match function");
  lua_pushboolean(L, 1);
  return 1;
}

/* link(pid) -> true. A dead pid: as Erlang's link/1, a process that traps
** exits gets {"EXIT", pid, "noproc"}; one that does not gets a catchable
** error (it lives on). */
static int l_link(lua_State *L) {
  GSI_ENTER(L, p);
  uint64_t pid = gsi_lua_check_pid(L, 1);
  switch (gsi_bif_link(p, pid)) {
  case GSI_OK: break;
  case GSI_ENOPROC:
    gsi_lua_push_exit_error(L, pid);
    lua_pushliteral(L, "link");
    lua_setfield(L, -2, "op");
    lua_pushliteral(L, "noproc");
    lua_setfield(L, -2, "reason");
    return lua_error(L);
  default: return luaL_error(L, "genserver: out of memory");
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_unlink(lua_State *L) {
  GSI_ENTER(L, p);
  gsi_bif_unlink(p, gsi_lua_check_pid(L, 1));
  lua_pushboolean(L, 1);
  return 1;
}

/* trap_exit([on]) -> the old setting */
static int l_trap_exit(lua_State *L) {
  gsi_proc *p = gsi_lua_self(L);
  int on = lua_isnoneornil(L, 1) ? -1 : lua_toboolean(L, 1);
  lua_pushboolean(L, gsi_bif_trap_exit(p, on));
  return 1;
}

static int reason_flags(lua_State *L, int idx) {
  const char *s;
  if (lua_type(L, idx) != LUA_TSTRING) return 0;
  s = lua_tostring(L, idx);
  if (strcmp(s, "kill") == 0) return GSI_XF_KILL;
  if (strcmp(s, "normal") == 0) return GSI_XF_NORMAL;
  return 0;
}

/* exit(pid, reason): send an exit signal. exit(reason): end this process. */
static int l_exit(lua_State *L) {
  gsi_proc *p = gsi_lua_self(L);
  uint64_t me = gsi_bif_pid(p);
  gsi_msg *m;
  if (lua_gettop(L) >= 2) {
    uint64_t pid = gsi_lua_check_pid(L, 1);
    luaL_checkany(L, 2);
    if (gsi_bif_outside_sandbox(p, pid))
      return luaL_error(L, "genserver.exit: a sandboxed process may not send exit "
                           "signals to a process outside its sandbox");
    m = gsi_lua_encode(L, 2, "reason", GSI_M_EXIT, me, 0, pid);
    if (gsi_bif_signal(p, pid, m, reason_flags(L, 2))) return gsi_lua_die(L, p);
    lua_pushboolean(L, 1);
    return 1;
  }
  luaL_checkany(L, 1);
  if (!gsi_bif_foreign(p) && gsi_lua_serving(L)) return gsi_lua_raise_exit_error(L, 1);
  lua_settop(L, 1);
  m = gsi_lua_encode(L, 1, "reason", GSI_M_EXIT, me, 0, 0);
  gsi_bif_exit_self(p, m, reason_flags(L, 1) & GSI_XF_NORMAL);
  return gsi_lua_die(L, p);
}

/* -------------------------------------------------------------- names */

/* register(name [, pid]) -> true | nil, { already_started = pid } */
static int l_register(lua_State *L) {
  GSI_ENTER(L, p);
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len);
  uint64_t pid = lua_isnoneornil(L, 2) ? gsi_bif_pid(p) : gsi_lua_check_pid(L, 2), holder;
  int rc;
  if (len == 0 || len > GSI_NAME_MAX || strlen(name) != len)
    return luaL_error(L, "genserver.register: a name is 1 to %d bytes, no zero bytes",
                      GSI_NAME_MAX);
  switch (rc = gsi_bif_register(gsi_bif_rt(p), name, pid, &holder)) {
  case GSI_OK: break;
  case GSI_EALREADY:
    lua_pushnil(L);
    lua_createtable(L, 0, 1);
    gsi_pushpid(L, holder);
    lua_setfield(L, -2, "already_started");
    return 2;
  case GSI_ENOPROC: return luaL_error(L, "genserver.register: process is not alive");
  case GSI_EINVAL: return luaL_error(L, "genserver.register: process already has a name");
  default: return gsi_lua_raise_error(L, "genserver.register", rc, NULL);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_unregister(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  gsi_proc *self = gsi_lua_state_proc(L);
  /* a sandbox cannot free a name held outside it (and so take it over) */
  if (self != NULL && gsi_bif_sandboxed(self) &&
      gsi_bif_outside_sandbox(self, gsi_lua_lookup(L, name)))
    return luaL_error(L, "genserver.unregister: a sandboxed process may not unregister "
                         "a name held outside its sandbox");
  lua_pushboolean(L, gsi_bif_unregister(gsi_lua_rt(L), name));
  return 1;
}

static int l_whereis(lua_State *L) {
  uint64_t pid = gsi_lua_lookup(L, luaL_checkstring(L, 1));
  if (pid == 0) lua_pushnil(L);
  else gsi_pushpid(L, pid);
  return 1;
}

/* The names are copied out under the registry lock, then pushed. */
static int l_registered(lua_State *L) {
  size_t n;
  char **v = gsi_bif_names(gsi_lua_rt(L), &n);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, v[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  gsi_bif_names_free(v, n);
  return 1;
}

/* -------------------------------------------------------------- timers */

/* send_after(ms, dest, msg) / send_interval(ms, dest, msg) -> tref */
static int arm_timer(lua_State *L, int every) {
  GSI_ENTER(L, p);
  uint64_t ms = gsi_lua_opt_ms(L, 1, 0);
  const char *name = NULL;
  uint64_t pid = 0, id;
  gsi_msg *m;
  luaL_checknumber(L, 1);
  if (lua_type(L, 2) == LUA_TSTRING) name = lua_tostring(L, 2);
  else pid = gsi_lua_check_pid(L, 2);
  luaL_checkany(L, 3);
  if (gsi_bif_ensure_started(gsi_bif_rt(p)) != 0)
    return luaL_error(L, "genserver: runtime stopped");
  if (every && (lua_tonumber(L, 1) < 1 || lua_tonumber(L, 1) == HUGE_VAL))
    return luaL_argerror(L, 1, "send_interval: the interval must be at least 1 ms");
  m = gsi_lua_encode(L, 3, "message", GSI_M_USER, gsi_bif_pid(p), 0, pid);
  if ((id = gsi_bif_send_after(gsi_bif_rt(p), ms, pid, name, m, every)) == 0)
    return luaL_error(L, "genserver: out of memory");
  gsi_pushref(L, id);
  return 1;
}

static int l_send_after(lua_State *L) { return arm_timer(L, 0); }
static int l_send_interval(lua_State *L) { return arm_timer(L, 1); }

static int l_cancel_timer(lua_State *L) {
  int64_t left = gsi_bif_cancel_timer(gsi_lua_rt(L), gsi_lua_check_ref(L, 1));
  if (left < 0) lua_pushboolean(L, 0);
  else lua_pushinteger(L, (lua_Integer)left);
  return 1;
}

/* the gen_server loop pushes these as light C functions (lserver.c) */
const lua_CFunction gsi_core_exit = l_exit, gsi_core_trap_exit = l_trap_exit,
                    gsi_core_reg = l_register, gsi_core_unregister = l_unregister;

const luaL_Reg gsi_lua_proc_funcs[] = {
    {"monitor", l_monitor},       {"demonitor", l_demonitor},
    {"link", l_link},             {"unlink", l_unlink},
    {"trap_exit", l_trap_exit},   {"exit", l_exit},
    {"register", l_register},     {"unregister", l_unregister},
    {"whereis", l_whereis},       {"registered", l_registered},
    {"send_after", l_send_after}, {"send_interval", l_send_interval},
    {"cancel_timer", l_cancel_timer}, {NULL, NULL}};
