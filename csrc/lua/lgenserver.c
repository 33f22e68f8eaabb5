/*
** lgenserver.c - genserver.core: the module (registration; the functions
** a process state finds without the table), a state's runtime and
** process, the default runtime of plain Lua scripts, spawn, calls and
** replies. Like the rest of the binding (lbind.h) it reaches the core
** through gen/ (bif.h: the primitives; gen.h: the protocols) and the
** public API, and the API layer's lookups through the wiring (lface.h).
** A process's wait yields its coroutine, where gs_call blocks (l_call).
*/
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lualib.h"

#include "genserver.h"
#include "core/ids.h"
#include "gen/bif.h"
#include "gen/gen.h"
#include "lbind.h"
#include "lface.h"
#include "lgenserver.h"
#include "lio.h"


static const char SENTINEL_KEY = 's';  /* registry: lets go of the default runtime */

enum { K_CALL = GSI_K_CALL, K_CAST = GSI_K_CAST, K_INFO = GSI_K_INFO,
       K_SYSTEM = GSI_K_SYSTEM };

/* ------------------------------------------------------------- context */

/* What a host state's functions know of their runtime (their upvalue 1).
** A C host's runtime (gs_openlibs) gets a record that is a userdata of the
** state, so it lives as long as the functions: the host promises not to
** run genserver code in the state after gs_runtime_close. The default
** runtime's record outlives the runtime, since the script may call again
** after runtime.shutdown() and must get an error, not freed memory: those
** records stay on a list until the library unloads. */
typedef struct rtrec {
  gsi_rt *core;           /* valid while `closed` is 0 */
  gs_runtime *api;        /* the same runtime's public face */
  _Atomic int closed;     /* default runtime: set before it is closed */
  int dflt;               /* the default runtime (else a C host's) */
  /* default records only, guarded by default_mu */
  int users;              /* host states holding it (their sentinels) */
  int closing;            /* a thread is closing it */
  struct rtrec *next;     /* every default record ever made */
} rtrec;

/* The process whose own state L is, or NULL in a host's state: the core's
** one test (gsi_state_proc). In a process state the functions are light C
** functions (no upvalues, so a state pays nothing for them); in a host
** state they are closures over the runtime's record (upvalue 1).
** Continuations see their function's upvalues too. */
static gsi_proc *state_proc(lua_State *L) { return gsi_bif_state_proc(L); }

static int raise_closed(lua_State *L) {
  return luaL_error(L, "genserver: the runtime has been shut down");
}

/* The one mapper from an error code to a Lua error: a GS_E* code, or a
** core gsi_err, which equals the public code of the same name (core.h).
** Raises "<what>: <text>", where the text is msg (gs_errmsg() after a
** failed gs_ call: it says which setting, which limit) or else the code's
** gs_strerror; a stopped runtime and out of memory read as everywhere
** else in the binding. Never returns. */
static int raise_error(lua_State *L, const char *what, int rc, const char *msg) {
  if (rc == GS_ECLOSED) return raise_closed(L);
  if (rc == GS_ENOMEM) return luaL_error(L, "genserver: out of memory");
  return luaL_error(L, "%s: %s", what, msg != NULL ? msg : gs_strerror(rc));
}

/* The core of L's runtime; raises once it is shut down. A record's
** `closed` is read before its core: the core may be freed once it is set
** (acquire pairs with default_close's release store). */
static gsi_rt *rt_of(lua_State *L) {
  rtrec *r = lua_touserdata(L, lua_upvalueindex(1));
  gsi_rt *rt = NULL; /* a process state's: gsi_bif_live_rt finds it */
  if (r != NULL) {
    if (atomic_load_explicit(&r->closed, memory_order_acquire)) raise_closed(L);
    rt = r->core;
  }
  if ((rt = gsi_bif_live_rt(L, rt)) == NULL) raise_closed(L);
  return rt;
}

/* The public face of L's runtime (raises once it is shut down): a host
** state's record has it; a process state's core knows it, as the API
** layer's lookup, handed over by the wiring (lface.h), finds it. */
static gs_runtime *api_of(lua_State *L) {
  rtrec *r = lua_touserdata(L, lua_upvalueindex(1));
  gsi_rt *rt = rt_of(L);
  return r != NULL ? r->api : gsi_lua_api_of(rt);
}

static void raise_exit(lua_State *L, gsi_proc *p);
static int raise_killed(lua_State *L, uint64_t pid);

/* The calling process (gsi_lua_enter, lgenserver.h) of a host state: a
** foreign thread gets its process on first use; an exit signal that
** killed it is raised here, at its next call (§1.2). A process state's is
** gsi_bif_self's, which notices a pending exit signal, so a process that
** only sends still dies (GSI_ENTER yields it to its worker). */
gsi_proc *gsi_lua_foreign_self(lua_State *L, int *dying) {
  /* the thread's process as the public API knows it: one pid per thread
  ** for gs_* calls and Lua calls alike, ended when the thread exits */
  gsi_proc *p = gsi_lua_foreign(api_of(L));
  if (p == NULL) luaL_error(L, "genserver: too many processes");
  if (gsi_bif_notice(p)) raise_exit(L, p);
  *dying = gsi_bif_dying(p);
  return p;
}

static uint64_t pid_of(gsi_proc *p) { return gsi_bif_pid(p); }

/* For the binding's other files (lbind.h). */
gsi_proc *gsi_lua_state_proc(lua_State *L) { return state_proc(L); }
gsi_rt *gsi_lua_rt(lua_State *L) { return rt_of(L); }
gs_runtime *gsi_lua_api(lua_State *L) { return api_of(L); }
int gsi_lua_raise_closed(lua_State *L) { return raise_closed(L); }
int gsi_lua_raise_error(lua_State *L, const char *what, int rc, const char *msg) {
  return raise_error(L, what, rc, msg);
}
uint64_t gsi_lua_foreign_pid(lua_State *L) {
  gsi_proc *p = gsi_lua_foreign(api_of(L));
  return p != NULL ? pid_of(p) : 0;
}

static int die(lua_State *L, gsi_proc *p);

static int decode_payload(lua_State *L, gsi_msg *m) {
  gsi_msgv v;
  gsi_bif_msgv(m, &v);
  return gsi_lua_decode(L, &v);
}
/* As decode_payload, for an answer to p: plain data skips the protected
** call (gsi_bif_decode_answer; a memory error raising from there leaves m
** held by p, freed later, not lost). */
static int decode_next(lua_State *L, gsi_proc *p, gsi_msg *m) {
  int rc = gsi_bif_decode_answer(L, p, m);
  return rc != GSI_AGAIN ? rc : decode_payload(L, m);
}
static void begin_wait(lua_State *L, gsi_proc *p, uint64_t deadline) {
  if (gsi_bif_begin_wait(p, deadline) != GSI_OK)
    luaL_error(L, "genserver: cannot receive or wait inside a receive match function");
}

/* The process has to stop: a signal killed it or it called exit(). In a
** worker process, yield to the worker, which ends it; on a foreign thread,
** end the foreign process and raise the reason as a genserver error. */
static int die(lua_State *L, gsi_proc *p) {
  switch (gsi_bif_die(p, L)) {
  case GSI_DIE_FOREIGN: raise_exit(L, p); return 0;
  case GSI_DIE_YIELD: return lua_yield(L, 0);
  default: return 0; /* unwound: not reached */
  }
}

/* ---------------------------------------------------- requests, calls */

/* Send the value at idx to pid as a request of `kind` (GSI_GEN_CALL /
** _SYSTEM) under a new pending ref. Its answer always comes through the
** mailbox: a dead server's as DOWN "noproc", a full mailbox's as a
** refusal (gsi_gen_request). A stop request (stop set) is { "stop",
** value }, made by the protocol layer around the encoded value. */
static uint64_t start_request(lua_State *L, gsi_proc *p, uint64_t pid,
                              int idx, int kind, int handoff, int stop) {
  uint64_t ref;
  int rc;
  if (!stop) { /* a call: the whole step in one (gen/bif.c) */
    rc = gsi_bif_request(L, p, idx, "request", pid, kind, handoff, &ref);
  } else {
    gsi_buf *b = gsi_bif_encode_buf(L, idx, "request[2]", rt_of(L), pid), sb;
    if (b == NULL) gsi_lua_raise_encode_error(L);
    gsi_buf_init(&sb);
    rc = gsi_gen_stop_encode(&sb, b->data, b->len);
    if (rc == GSI_OK)
      rc = gsi_gen_request(p, pid, kind, sb.data, sb.len, handoff, NULL, &ref);
    gsi_buf_free(&sb);
  }
  if (rc == GSI_EENCODE) gsi_lua_raise_encode_error(L);
  if (rc != GSI_OK) raise_error(L, "genserver", rc, NULL);
  return ref;
}

/* One look for the answer to pending ref: pushes true, value | false,
** kind [, reason] where kind is "timeout", "down" (reason = exit reason)
** or a refusal's reason, and returns their number; or LOOK_WAIT (yield
** with a continuation that looks again), LOOK_DIE (return die). */
enum { LOOK_WAIT = -1, LOOK_DIE = -2 };
static int look_answer(lua_State *L, gsi_proc *p, uint64_t ref, int abandon) {
  for (;;) {
    gsi_msg *m;
    int st = gsi_gen_answer(p, ref, &m);
    if (st == GSI_GEN_DYING) return LOOK_DIE;
    if (st == GSI_GEN_UNKNOWN) {
      gsi_bif_end_wait(p);
      return luaL_error(L, "genserver: unknown request (already answered?)");
    }
    if (st != GSI_GEN_WAIT) {
      int rc, n;
      gsi_bif_end_wait(p);
      if (st == GSI_GEN_REPLY) {
        lua_pushboolean(L, 1);
        rc = decode_next(L, p, m);
        n = 2;
      } else if (st == GSI_GEN_REFUSED) { /* the server refused it */
        lua_pushboolean(L, 0);
        rc = decode_payload(L, m); /* the reason is the kind */
        n = 2;
      } else {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "down");
        rc = decode_payload(L, m);
        if (rc == 0) gsi_lua_mark_reason(L, -1);
        n = 3;
      }
      gsi_bif_msg_free(m);
      if (rc != 0) return lua_error(L);
      return n;
    }
    if (gsi_bif_timed_out(p)) {
      gsi_bif_end_wait(p);
      if (abandon) gsi_gen_abandon(p, ref);
      lua_pushboolean(L, 0);
      lua_pushliteral(L, "timeout");
      return 2;
    }
    if (gsi_lua_wait_more(L, p)) return LOOK_WAIT;
  }
}

/* Wait for the answer to pending ref (abandon flag at 1): as look_answer. */
static int answer_k(lua_State *L, int status, lua_KContext ctx) {
  gsi_proc *p = gsi_lua_self(L);
  int n = look_answer(L, p, (uint64_t)ctx, lua_toboolean(L, 1));
  (void)status;
  if (n == LOOK_DIE) return die(L, p);
  if (n == LOOK_WAIT) return lua_yieldk(L, 0, ctx, answer_k);
  return n;
}

/* call's error handler (core.on_call_error), registered by genserver's
** Lua module: called only when a call fails, so that genserver.call can
** be core.call itself, with no Lua wrapper on the way of every call. */
static const char CALL_ERROR_KEY = 'c';

/* A failed call: stack server, request, [timeout,] ..., false, kind
** [, reason] (n values from `false`): the handler raises
** handler(server, kind, reason, request, timeout). */
static int call_failed(lua_State *L, int n) {
  int base = lua_gettop(L) - n; /* false at base + 1 */
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &CALL_ERROR_KEY) != LUA_TFUNCTION)
    return luaL_error(L, "genserver.call: %s", lua_tostring(L, base + 2));
  lua_pushvalue(L, 1);                               /* server */
  lua_pushvalue(L, base + 2);                        /* kind */
  if (n > 2) lua_pushvalue(L, base + 3); else lua_pushnil(L); /* reason */
  lua_pushvalue(L, 2);                               /* request */
  lua_pushvalue(L, 3);                               /* timeout or nil */
  lua_call(L, 5, 0);
  return luaL_error(L, "genserver.call: the error handler returned");
}

/* on_call_error(fn): core.call raises by fn(server, kind, reason,
** request, timeout) when a call fails (genserver's Lua module sets it). */
static int l_on_call_error(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &CALL_ERROR_KEY);
  return 0;
}

/* call's wait: server, request, timeout at 1..3 (kept for the error). */
static int call_k(lua_State *L, int status, lua_KContext ctx) {
  gsi_proc *p = gsi_lua_self(L);
  int n = look_answer(L, p, (uint64_t)ctx, 1); /* the late reply is dropped */
  (void)status;
  if (n == LOOK_DIE) return die(L, p);
  if (n == LOOK_WAIT) return lua_yieldk(L, 0, ctx, call_k);
  if (lua_toboolean(L, -n)) return 1; /* the reply, on top */
  return call_failed(L, n);
}

/* call(server, request [, timeout]) -> reply; a failure raises through
** the error handler (on_call_error) with its kind: "noproc" |
** "calling_self" | "timeout" | "down" (reason: the exit reason) | a
** refusal's reason ("mailbox_full", an undecodable request's).
**
** Not gs_call, not even on a foreign thread, where blocking is what
** happens anyway: its results do not carry what the Lua API returns -- a
** request the server refused (undecodable, mailbox_full) comes back as
** false, reason, where gs_call gives GS_EEXIT with that reason as if the
** server had died; a reply that cannot be decoded raises the codec's
** error here; time-outs go past INT_MAX ms. stop (request + wait) and
** start (spawn + wait on a request id) are the same: wait() waits on ids
** that gs_* never expose. So both faces make and wait for their requests
** through the protocol layer (gen.c: gsi_gen_request, gsi_gen_answer):
** late replies are dropped, answers classified and exit signals noticed
** the same way in both; only the waiting differs (yield / block). */
static int l_call(lua_State *L) {
  GSI_ENTER(L, p);
  uint64_t pid, ref;
  if (!gsi_topid(L, 1, &pid) && lua_type(L, 1) != LUA_TSTRING) {
    /* blame the line that called genserver.call (this function) */
    luaL_where(L, 1);
    lua_pushfstring(L, "bad argument #1 to 'genserver.call' (pid or registered "
                    "name expected, got %s)", luaL_typename(L, 1));
    lua_concat(L, 2);
    return lua_error(L);
  }
  pid = gsi_lua_resolve(L, 1);
  luaL_checkany(L, 2);
  lua_settop(L, 3); /* server, request, timeout: for the error */
  if (pid == 0 || pid == pid_of(p)) {
    lua_pushboolean(L, 0);
    lua_pushstring(L, pid == 0 ? "noproc" : "calling_self");
    return call_failed(L, 2);
  }
  begin_wait(L, p, gsi_lua_opt_deadline(L, 3, 5000));
  ref = start_request(L, p, pid, 2, GSI_GEN_CALL, 1, 0);
  return call_k(L, LUA_OK, (lua_KContext)ref);
}

/* request(server, request [, "system" | "stop"]) -> ref
** "stop": request is the reason of a stop request { "stop", reason }. */
static int l_request(lua_State *L) {
  GSI_ENTER(L, p);
  uint64_t pid = gsi_lua_resolve(L, 1);
  int kind = GSI_GEN_CALL, stop = 0;
  const char *k = lua_type(L, 3) == LUA_TSTRING ? lua_tostring(L, 3) : "";
  luaL_checkany(L, 2);
  if (strcmp(k, "system") == 0 || (stop = strcmp(k, "stop") == 0))
    kind = GSI_GEN_SYSTEM;
  if (kind == GSI_GEN_SYSTEM && gsi_bif_outside_sandbox(p, pid))
    return luaL_error(L, "genserver: a sandboxed process may not send system requests "
                         "(stop, sys) to a process outside its sandbox");
  gsi_pushref(L, start_request(L, p, pid, 2, kind, 0, stop));
  return 1;
}

/* wait(ref [, timeout [, abandon]]) -> as call */
static int l_wait(lua_State *L) {
  gsi_proc *p = gsi_lua_self(L);
  uint64_t ref = gsi_lua_check_ref(L, 1);
  int abandon = lua_toboolean(L, 3);
  begin_wait(L, p, gsi_lua_opt_deadline(L, 2, HUGE_VAL));
  lua_settop(L, 0);
  lua_pushboolean(L, abandon);
  return answer_k(L, LUA_OK, (lua_KContext)ref);
}

/* A gen_server's ack to its starter (lserver.c): the table { tag [,
** reason] } at idx, or { "ok" } when idx is 0, as the answer to its start
** request. The bytes are the protocol layer's (gsi_gen_ack): only the
** reason is encoded here (so { "ok" } builds no reverse index of loaded
** modules in a server that never sends a table). Raises as reply() does
** when the reason cannot be sent. */
void gsi_ack(lua_State *L, int idx) {
  gsi_proc *p = state_proc(L);
  gsi_buf *b = NULL;
  uint64_t starter;
  int tag = GSI_ACK_OK, rc;
  if (p == NULL || !gsi_gen_starter(p, &starter)) return; /* not started by start() */
  if (idx != 0) {
    const char *s;
    idx = lua_absindex(L, idx);
    lua_rawgeti(L, idx, 1);
    s = lua_tostring(L, -1);
    tag = s == NULL ? GSI_ACK_ERROR : strcmp(s, "ok") == 0 ? GSI_ACK_OK
          : strcmp(s, "ignore") == 0 ? GSI_ACK_IGNORE : GSI_ACK_ERROR;
    lua_pop(L, 1);
  }
  if (tag == GSI_ACK_ERROR) {
    lua_rawgeti(L, idx, 2);
    if ((b = gsi_bif_encode_buf(L, -1, "reply[2]", rt_of(L), starter)) == NULL)
      gsi_lua_raise_encode_error(L);
    lua_pop(L, 1);
  }
  rc = gsi_gen_ack(p, tag, b != NULL ? b->data : NULL, b != NULL ? b->len : 0);
  if (b != NULL) gsi_bif_scratch_trim(b); /* no huge scratch kept */
  if (rc < 0) raise_error(L, "genserver", rc, NULL);
}

/* reply(from, value) -> true; from = { pid, ref } */
static int l_reply(lua_State *L) {
  GSI_ENTER(L, p);
  uint64_t pid = 0, ref = 0;
  gsi_buf *b;
  int rc;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_rawgeti(L, 1, 1);
  lua_rawgeti(L, 1, 2);
  if (!gsi_topid(L, -2, &pid) || !gsi_lua_from_tag(L, -1, &ref))
    luaL_argerror(L, 1, "not a 'from' given to handle_call");
  lua_pop(L, 2);
  if ((b = gsi_bif_encode_buf(L, 2, "reply", rt_of(L), pid)) == NULL)
    gsi_lua_raise_encode_error(L);
  rc = gsi_gen_reply(p, pid, ref, b->data, b->len);
  gsi_bif_scratch_trim(b); /* do not keep a huge scratch */
  if (rc != GSI_OK) luaL_error(L, "genserver: out of memory");
  lua_pushboolean(L, 1);
  return 1;
}

/* ------------------------------------------------------ send and spawn */

/* Rename the codec's root "spawn[k]" to what the caller calls argument k:
** "body", a name from opts.names, or "argument N". */
static void rename_spawn_path(lua_State *L, int opts) {
  int top = lua_gettop(L);
  const char *msg = lua_tostring(L, top), *rest, *name = NULL;
  char *end;
  long k;
  if (msg == NULL || strncmp(msg, "spawn[", 6) != 0) return;
  k = strtol(msg + 6, &end, 10);
  if (*end != ']' || k < 1) return;
  rest = end + 1; /* stays valid: the message is on the stack until replaced */
  if (k > 1 && lua_type(L, opts) == LUA_TTABLE &&
      lua_getfield(L, opts, "names") == LUA_TTABLE &&
      lua_rawgeti(L, -1, k - 1) == LUA_TSTRING)
    name = lua_tostring(L, -1);
  if (k == 1) lua_pushfstring(L, "body%s", rest);
  else if (name != NULL) lua_pushfstring(L, "%s%s", name, rest);
  else lua_pushfstring(L, "argument %d%s", (int)(k - 1), rest);
  lua_replace(L, top);
  lua_settop(L, top);
}

/* The spawn message (gsi_gen_spawn_paths) into the thread's scratch buffer:
** the spawner's paths, then { n, body, args... }. */
static gsi_buf *spawn_msg(lua_State *L, int body, int nargs) {
  gsi_buf *b = gsi_bif_scratch();
  size_t n, cn;
  const char *s, *c, *fs, *fc;
  int top = lua_gettop(L);
  if (gsi_gen_fixed_paths(state_proc(L), &fs, &fc)) {
    /* a sandbox passes on the paths it was given, not what it made of its
    ** package.path (DESIGN §5: its lookups stay inside them) */
    lua_pushstring(L, fs);
    lua_pushstring(L, fc);
  } else {
    lua_getglobal(L, LUA_LOADLIBNAME);
    if (lua_type(L, -1) != LUA_TTABLE) lua_pop(L, 1), lua_newtable(L);
    lua_getfield(L, -1, "path");
    lua_getfield(L, -2, "cpath");
  }
  s = lua_tolstring(L, -2, &n);
  c = lua_tolstring(L, -1, &cn);
  if (gsi_gen_spawn_paths(b, s, s ? n : 0, c, c ? cn : 0) != GSI_OK)
    luaL_error(L, "genserver: out of memory");
  lua_settop(L, top);
  lua_createtable(L, nargs + 1, 1);
  lua_pushinteger(L, nargs);
  lua_setfield(L, -2, "n");
  lua_pushvalue(L, body);
  lua_rawseti(L, -2, 1);
  for (int i = 0; i < nargs; i++) {
    lua_pushvalue(L, body + 2 + i);
    lua_rawseti(L, -2, i + 2);
  }
  if (gsi_encode(L, -1, "spawn", gsi_bif_rt_limits(rt_of(L)), b) != 0) {
    rename_spawn_path(L, body + 1);
    gsi_lua_raise_encode_error(L);
  }
  lua_settop(L, top);
  return b;
}

/* The limits from the spawn options at t (a table or nil) into the spec;
** raises for bad values, before any slot is taken. */
static void spawn_limits(lua_State *L, int t, gsi_spawn_spec *p) {
  static const char *const policies[] = {"drop", "reject", "kill", NULL};
  if (lua_type(L, t) != LUA_TTABLE) return;
  if (lua_getfield(L, t, "fail_alloc") != LUA_TNIL) {
    lua_Integer n = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
    if (n < 1)
      luaL_error(L, "genserver.spawn: opts.fail_alloc must be a positive integer");
    p->fail_at = (uint64_t)n;
  }
  lua_pop(L, 1);
  if (lua_getfield(L, t, "max_heap") != LUA_TNIL) {
    lua_Integer n = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
    if (n < 1)
      luaL_error(L, "genserver.spawn: opts.max_heap must be a positive integer (bytes)");
    p->max_heap = (size_t)n;
  }
  lua_pop(L, 1);
  lua_getfield(L, t, "sandbox");
  p->sandbox = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (lua_getfield(L, t, "mailbox_limit") != LUA_TNIL) {
    lua_Integer n = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
    if (n < 1 || n > UINT32_MAX)
      luaL_error(L, "genserver.spawn: opts.mailbox_limit must be a positive integer");
    p->mailbox_limit = (uint32_t)n;
    p->overflow = GSI_GEN_OVF_DROP;
  }
  lua_pop(L, 1);
  if (lua_getfield(L, t, "overflow") != LUA_TNIL) {
    const char *s = lua_tostring(L, -1);
    int i;
    for (i = 0; s != NULL && policies[i] && strcmp(s, policies[i]) != 0; i++) {}
    if (s == NULL || lua_type(L, -1) != LUA_TSTRING || policies[i] == NULL)
      luaL_error(L, "genserver.spawn: opts.overflow must be \"drop\", \"reject\" or \"kill\"");
    if (p->mailbox_limit == 0)
      luaL_error(L, "genserver.spawn: opts.overflow needs opts.mailbox_limit");
    p->overflow = GSI_GEN_OVF_DROP + i;
  }
  lua_pop(L, 1);
}

static int opt_flag(lua_State *L, int t, const char *k) {
  int v;
  if (lua_type(L, t) != LUA_TTABLE) return 0;
  lua_getfield(L, t, k);
  v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* spawn(body, opts, ...) -> pid [, ref]
** body: a function (copied) or a module name (required in the new state).
** opts: { link = bool, monitor = bool, module = name, request = ref,
**         trap_exit = bool, stop_last = bool }
** `request`: a ref of ours that becomes a pending request on the new
** process (monitored), so its answer or its DOWN can be waited for. */
static int l_spawn(lua_State *L) {
  int nargs = lua_gettop(L) - 2;
  GSI_ENTER(L, self);
  gsi_spawn_spec spec = {0};
  uint64_t pid, ref = 0;
  gsi_buf *sm;
  spec.link = opt_flag(L, 2, "link");
  spec.monitor = opt_flag(L, 2, "monitor");
  /* internal options (genserver.logger's forwarder): it traps exits from
  ** the start, and is stopped last at program end (runtime.c) */
  spec.trap_exit = opt_flag(L, 2, "trap_exit");
  spec.stop_last = opt_flag(L, 2, "stop_last");
  if (lua_type(L, 2) == LUA_TTABLE) {
    lua_getfield(L, 2, "request");
    if (!lua_isnil(L, -1) && !gsi_toref(L, -1, &spec.start_ref))
      luaL_argerror(L, 2, "opts.request must be a reference");
    lua_pop(L, 1);
  }
  if (lua_type(L, 1) != LUA_TFUNCTION && lua_type(L, 1) != LUA_TSTRING)
    luaL_typeerror(L, 1, "function or module name");
  if (nargs < 0) nargs = 0;
  spawn_limits(L, 2, &spec);
  /* the label, a string on the stack until gsi_gen_spawn copied it */
  spec.module = "";
  if (lua_type(L, 2) == LUA_TTABLE) {
    lua_pushliteral(L, "module");
    if (lua_rawget(L, 2) == LUA_TSTRING) spec.module = lua_tostring(L, -1);
  }
  if (spec.module[0] == '\0' && lua_type(L, 1) == LUA_TSTRING) spec.module = lua_tostring(L, 1);
  sm = spawn_msg(L, 1, nargs);
  spec.msg = sm->data;
  spec.len = sm->len;
  switch (gsi_gen_spawn(self, &spec, &pid, &ref)) {
  case GSI_OK: break;
  case GSI_ENOMEM: return luaL_error(L, "genserver: out of memory");
  default:
    return luaL_error(L, "genserver.spawn: cannot create a process "
                         "(process limit reached or runtime stopped)");
  }
  gsi_bif_scratch_trim(sm); /* do not keep a huge scratch */
  gsi_pushpid(L, pid);
  if (!spec.monitor) return 1;
  gsi_pushref(L, ref);
  return 2;
}

/* ------------------------------------------- a killed foreign process */

/* Push the error a killed foreign process raises: { server = pid, op =
** "exit" } with the genserver.error metatable; its reason comes next. */
static void push_exit_error(lua_State *L, uint64_t pid) {
  lua_createtable(L, 0, 3);
  luaL_setmetatable(L, ERROR_MT);
  gsi_pushpid(L, pid);
  lua_setfield(L, -2, "server");
  lua_pushliteral(L, "exit");
  lua_setfield(L, -2, "op");
}

/* A gs_* call found the thread's foreign process (pid) killed and ended it
** (links and monitors have fired): raise its reason, kept by the C API
** (gs_killed_reason), as raise_exit does. The reason stays in the thread's
** scratch until taken, so an error while the table is made leaks nothing. */
static int raise_killed(lua_State *L, uint64_t pid) {
  gs_runtime *api = api_of(L);
  gs_msg *m;
  int rc;
  push_exit_error(L, pid);
  m = gs_killed_reason();
  rc = m != NULL ? gs_msg_push(api, L, m) : GS_EINVAL; /* protected */
  gs_msg_free(m);
  if (rc != GS_OK) lua_pushliteral(L, "killed");
  lua_setfield(L, -2, "reason");
  return lua_error(L);
}

/* A foreign process was killed: end it (links and monitors fire), then
** raise its reason as a genserver error. The thread carries on with a new
** pid at its next call. */
static void raise_exit(lua_State *L, gsi_proc *p) {
  const unsigned char *data = NULL;
  size_t len = 0;
  int killed = gsi_gen_killed_reason(p, &data, &len), normal;
  /* Lua allocations first, while nothing is torn down: a memory error here
  ** leaves the process dying and its reason owned by it, to try again at
  ** the next call */
  push_exit_error(L, pid_of(p)); /* the error: T */
  if (killed) {
    lua_pushliteral(L, "killed"); /* T, reason */
  } else { /* T, U: the reason's bytes, Lua-owned */
    memcpy(lua_newuserdatauv(L, len, 0), data, len);
  }
  /* now end the foreign process: links and monitors fire, nothing fails */
  gsi_bif_msg_free(gsi_gen_end_killed(p, &normal));
  if (!killed) { /* decode from the copy: nothing leaks if this fails */
    if (gsi_decode(L, lua_touserdata(L, -1), lua_rawlen(L, -1),
                   gsi_bif_rt_limits(rt_of(L))) != 0) {
      lua_pop(L, 1);
      lua_pushliteral(L, "killed");
    }
    lua_remove(L, -2); /* T, reason */
  }
  lua_setfield(L, -2, "reason");
  lua_error(L);
}

/* For the binding's other files (lbind.h). */
int gsi_lua_die(lua_State *L, gsi_proc *p) { return die(L, p); }
int gsi_lua_raise_killed(lua_State *L, uint64_t pid) { return raise_killed(L, pid); }
void gsi_lua_push_exit_error(lua_State *L, uint64_t pid) { push_exit_error(L, pid); }

/* ------------------------------------------------- default runtime life */

/* The default runtime: a gs_runtime opened on first use by a plain Lua
** state (as `lua5.4 script.lua` has), shared by every such state of the
** program, configured by runtime.configure (gs_runtime_configure) and
** closed (gs_runtime_close) by runtime.shutdown, when the last state
** holding it closes (its sentinel's __gc), or when the library unloads. */
static pthread_mutex_t default_mu = PTHREAD_MUTEX_INITIALIZER;
static rtrec *cur_default; /* what a new state gets; guarded by default_mu */
static rtrec *all_defaults; /* every record, freed at unload; default_mu */

/* Close d's runtime: stop every process, join the threads, free it. 0 when
** closed here, 1 when it was closed (or is being closed) already, -1 when
** a process would not stop in time: the runtime is then half-stopped
** (gs_runtime_stop's GS_ETIMEDOUT) and may be shut down again. Not on a
** worker. `closed` goes up before the core may go: a host state's call
** reads it first (rt_of), so none touches freed memory; threads inside a
** call of the public API are waited for by gs_runtime_stop. */
static int default_close(rtrec *d, int ms) {
  int rc;
  pthread_mutex_lock(&default_mu);
  if (d->closing || atomic_load(&d->closed)) {
    pthread_mutex_unlock(&default_mu);
    return 1;
  }
  d->closing = 1;
  atomic_store_explicit(&d->closed, 1, memory_order_release);
  if (cur_default == d) cur_default = NULL; /* new states open a new one */
  pthread_mutex_unlock(&default_mu);
  rc = gs_runtime_close(d->api, ms);
  pthread_mutex_lock(&default_mu);
  d->closing = 0;
  if (rc != GS_OK) { /* still there: usable, and closable again */
    atomic_store_explicit(&d->closed, 0, memory_order_release);
    if (cur_default == NULL) cur_default = d;
  }
  pthread_mutex_unlock(&default_mu);
  if (rc == GS_OK) gsi_bif_scratch_release();
  return rc == GS_OK ? 0 : -1;
}

/* Runs when the library is unloaded or the program exits, whichever comes
** first: a script that ended with os.exit() (no lua_close) still stops its
** processes and joins its workers. (atexit would be wrong here: it may call
** into this library after the interpreter unloaded it.) No Lua state can
** use a record any more, so the closed ones are freed; one whose runtime
** would not stop is left with it (its threads still run). */
__attribute__((destructor)) static void at_unload(void) {
  rtrec *d, *next, *keep = NULL;
  for (d = all_defaults; d != NULL; d = d->next)
    if (!atomic_load(&d->closed)) default_close(d, 2000);
  pthread_mutex_lock(&default_mu);
  for (d = all_defaults; d != NULL; d = next) {
    next = d->next;
    if (atomic_load(&d->closed)) {
      free(d);
    } else {
      d->next = keep;
      keep = d;
    }
  }
  all_defaults = keep;
  cur_default = NULL;
  pthread_mutex_unlock(&default_mu);
}

/* The last state holding a default runtime closes: close the runtime. */
static int sentinel_gc(lua_State *L) {
  rtrec *d = *(rtrec **)lua_touserdata(L, 1);
  int last;
  if (d == NULL) return 0;
  pthread_mutex_lock(&default_mu);
  last = --d->users <= 0;
  if (last && cur_default == d) cur_default = NULL; /* nobody gets it now */
  pthread_mutex_unlock(&default_mu);
  if (last) default_close(d, 5000);
  return 0;
}

static int l_shutdown(lua_State *L) {
  rtrec *r = lua_touserdata(L, lua_upvalueindex(1));
  uint64_t ms = gsi_lua_opt_ms(L, 1, 5000);
  int rc;
  gsi_proc *self = state_proc(L);
  if (self != NULL) { /* a process state, sandboxed or not */
    return luaL_error(L, "genserver.runtime.shutdown: only the main script or host "
                         "may shut down%s",
                      gsi_bif_sandboxed(self) ? " (not a sandboxed process)" : "");
  }
  rt_of(L); /* raises if it was shut down already */
  if (!r->dflt)
    return luaL_error(L, "genserver.runtime.shutdown: this runtime belongs to "
                         "the C host (gs_runtime_stop / gs_runtime_close)");
  rc = default_close(r, ms == NO_TIMEOUT || ms > INT32_MAX ? GS_INFINITY : (int)ms);
  if (rc > 0) return luaL_error(L, "genserver.runtime.shutdown: runtime already stopped");
  if (rc < 0) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "a process would not stop (a busy loop the watchdog "
                       "cannot preempt?): the runtime is half-stopped (shutdown "
                       "may be called again)");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* The default runtime's record for L, opening the runtime if there is
** none. The sentinel (a userdata in L's registry, made first: nothing may
** raise once the record is counted) lets go of it when L closes. */
static rtrec *acquire_default(lua_State *L) {
  rtrec **sent, *d;
  sent = lua_newuserdatauv(L, sizeof *sent, 0);
  *sent = NULL;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, sentinel_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &SENTINEL_KEY);
  pthread_mutex_lock(&default_mu);
  if ((d = cur_default) == NULL && (d = calloc(1, sizeof *d)) != NULL) {
    /* every setting at its default ($GENSERVER_WORKERS...) until configure */
    if (gs_runtime_open(&d->api, NULL) != GS_OK) {
      free(d);
      d = NULL;
    } else {
      d->core = gsi_lua_core_of(d->api);
      d->dflt = 1;
      d->next = all_defaults;
      all_defaults = cur_default = d;
    }
  }
  if (d != NULL) d->users++;
  *sent = d;
  pthread_mutex_unlock(&default_mu);
  if (d == NULL) luaL_error(L, "genserver: cannot create the runtime");
  return d;
}

/* ------------------------------------------------------------- module */

/* genserver.core's functions: this file's, then each other file's (lbind.h) */
static const luaL_Reg funcs[] = {
    {"spawn", l_spawn},     {"call", l_call},         {"request", l_request},
    {"wait", l_wait},       {"reply", l_reply},       {"shutdown", l_shutdown},
    {"serve", gsi_serve},   {"on_call_error", l_on_call_error}, {NULL, NULL}};

static const luaL_Reg *const libs[] = {
    funcs, gsi_lua_msg_funcs, gsi_lua_receive_funcs, gsi_lua_proc_funcs,
    gsi_lua_info_funcs, gsi_io_funcs, NULL};

/* Put every function in the table on top: as light functions, or (rec)
** as closures over the value below the table (a host state's record). */
static void set_funcs(lua_State *L, int rec) {
  for (int i = 0; libs[i] != NULL; i++) {
    if (rec) lua_pushvalue(L, -2); /* upvalue 1 */
    luaL_setfuncs(L, libs[i], rec);
  }
}

/* the gen_server loop pushes reply as a light C function (lserver.c) */
const lua_CFunction gsi_core_reply = l_reply;

/* genserver.core's function `field` as a light C function, for a process
** state only (the core's codec hook checks that first: a host state's
** functions are closures over their runtime); NULL otherwise. */
static lua_CFunction core_builtin(lua_State *L, const char *module, size_t lm,
                                  const char *field, size_t lf) {
  static const char core[] = "genserver.core";
  (void)L; /* a process state: its caller, gsi_state_builtin, checked */
  if (lm != sizeof core - 1 || memcmp(module, core, lm) != 0) return NULL;
  for (int i = 0; libs[i] != NULL; i++)
    for (const luaL_Reg *r = libs[i]; r->name != NULL; r++)
      if (strlen(r->name) == lf && memcmp(r->name, field, lf) == 0) return r->func;
  return NULL;
}

/* `require` that also tells the codec a module may have been loaded (so
** loaded modules keep crossing by name). */
static int require_wrap(lua_State *L) {
  int n;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  n = lua_gettop(L);
  gsi_codec_invalidate(L);
  return n;
}

static void wrap_require(lua_State *L) {
  lua_getglobal(L, "require");
  if (lua_tocfunction(L, -1) == require_wrap || lua_type(L, -1) != LUA_TFUNCTION) {
    lua_pop(L, 1);
    return;
  }
  lua_pushcclosure(L, require_wrap, 1);
  lua_setglobal(L, "require");
}

int luaopen_genserver_core(lua_State *L) {
  gsi_proc *p = state_proc(L);
  gs_runtime *host;
  /* a process's state: light functions. Else the functions' record: a
  ** host's state bound to its runtime (gs_openlibs); else the default
  ** runtime, as for a plain lua5.4 script (again if this state holds it
  ** already and it still runs) */
  if (p == NULL && (host = gsi_lua_host_api(L)) != NULL) {
    rtrec *r = lua_newuserdatauv(L, sizeof *r, 0);
    memset(r, 0, sizeof *r);
    r->core = gsi_lua_core_of(host);
    r->api = host;
  } else if (p == NULL) {
    rtrec *d = NULL;
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &SENTINEL_KEY) == LUA_TUSERDATA)
      d = *(rtrec **)lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (d == NULL || atomic_load(&d->closed)) d = acquire_default(L);
    lua_pushlightuserdata(L, d);
  }
  luaL_newmetatable(L, ERROR_MT);
  lua_pop(L, 1);
  lua_createtable(L, 0, 64);
  if (p != NULL) {
    set_funcs(L, 0); /* light functions: see state_proc */
  } else {
    set_funcs(L, 1); /* the record: upvalue 1 */
    lua_remove(L, -2);
  }
  lua_pushinteger(L, K_CALL);
  lua_setfield(L, -2, "K_CALL");
  lua_pushinteger(L, K_CAST);
  lua_setfield(L, -2, "K_CAST");
  lua_pushinteger(L, K_INFO);
  lua_setfield(L, -2, "K_INFO");
  lua_pushinteger(L, K_SYSTEM);
  lua_setfield(L, -2, "K_SYSTEM");
  wrap_require(L);
  return 1;
}

/* The binding's hooks for the core (core.h), wired by linit.c. */
const gsi_face gsi_lua_face = {
    .open_core = luaopen_genserver_core,
    .builtin = core_builtin,
    .report_crash = gsi_report_crash,
};
