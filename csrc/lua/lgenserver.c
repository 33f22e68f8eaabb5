/*
** lgenserver.c - genserver.core: the module (registration; the functions
** a process state finds without the table), a state's runtime and
** process, the default runtime of plain Lua scripts, and for now spawn,
** calls and replies: core/internal.h is included only for these, the rest
** of the binding (lbind.h) reaches the core through gen/bif.h and the
** public API. Waits stay on the core's request/answer layer (recv.c): a
** process's wait yields its coroutine, where gs_call blocks (see l_call).
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lualib.h"

#include "genserver.h"
#include "core/ids.h"
#include "core/internal.h"
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
static gsi_proc *state_proc(lua_State *L) { return gsi_state_proc(L); }

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
  gsi_rt *rt;
  if (r == NULL) {
    rt = gsi_state_proc(L)->rt;
  } else {
    if (atomic_load_explicit(&r->closed, memory_order_acquire)) raise_closed(L);
    rt = r->core;
  }
  if (atomic_load_explicit(&rt->closed, memory_order_relaxed)) raise_closed(L);
  return rt;
}

/* api.c (api/api.h, which the binding does not include): the public face
** of a core, the core of a public face, the runtime a host state was bound
** to by gs_openlibs (or NULL), and a thread's foreign process */
GSI_FUNC gs_runtime *gsi_api_of(gsi_rt *core);
GSI_FUNC gsi_rt *gsi_api_core(gs_runtime *rt);
GSI_FUNC gs_runtime *gsi_host_api(lua_State *L);
GSI_FUNC gsi_proc *gsi_api_foreign(gs_runtime *rt);

/* The public face of L's runtime (raises once it is shut down): a host
** state's record has it; a process state's core knows it (gsi_api_of). */
static gs_runtime *api_of(lua_State *L) {
  rtrec *r = lua_touserdata(L, lua_upvalueindex(1));
  gsi_rt *rt = rt_of(L);
  return r != NULL ? r->api : gsi_api_of(rt);
}

static void raise_exit(lua_State *L, gsi_proc *p);
static int raise_killed(lua_State *L, uint64_t pid);

/* The calling process. A foreign thread gets its process on first use; an
** exit signal that killed it is raised here, at its next call (§1.2). */
static gsi_proc *self_of(lua_State *L) {
  gsi_proc *p = state_proc(L);
  if (p != NULL) {
    /* a pending exit signal is noticed at every primitive, so a process
    ** that only sends still dies; ENTER yields it to its worker */
    if (atomic_load_explicit(&p->sigpend, memory_order_relaxed)) gsi_drain(p);
    return p;
  }
  /* the thread's process as the public API knows it: one pid per thread
  ** for gs_* calls and Lua calls alike, ended when the thread exits */
  p = gsi_api_foreign(api_of(L));
  if (p == NULL) luaL_error(L, "genserver: too many processes");
  if (atomic_load_explicit(&p->sigpend, memory_order_relaxed)) {
    gsi_drain(p);
    if (p->dying) raise_exit(L, p);
  }
  return p;
}

static uint64_t pid_of(gsi_proc *p) { return gsi_proc_pid(p); }

/* For the I/O binding (lio.c), whose functions share these upvalues. */
gsi_proc *gsi_lua_self(lua_State *L) { return self_of(L); }

/* For the binding's other files (lbind.h). */
gsi_proc *gsi_lua_state_proc(lua_State *L) { return state_proc(L); }
gsi_rt *gsi_lua_rt(lua_State *L) { return rt_of(L); }
gs_runtime *gsi_lua_api(lua_State *L) { return api_of(L); }
int gsi_lua_raise_closed(lua_State *L) { return raise_closed(L); }
int gsi_lua_raise_error(lua_State *L, const char *what, int rc, const char *msg) {
  return raise_error(L, what, rc, msg);
}
uint64_t gsi_lua_foreign_pid(lua_State *L) {
  gsi_proc *p = gsi_api_foreign(api_of(L));
  return p != NULL ? pid_of(p) : 0;
}

static int die(lua_State *L, gsi_proc *p);

/* Entry of a primitive that does not wait: a process killed by a signal
** stops here instead of carrying on. */
#define ENTER(L, p)                      \
  gsi_proc *p = self_of(L);              \
  if (p->dying) return die(L, p)

/* The helpers the code below calls, by its names for them (lbind.h). */
#define check_ref gsi_lua_check_ref
#define resolve gsi_lua_resolve
#define outside_sandbox gsi_bif_outside_sandbox
#define opt_ms gsi_lua_opt_ms
#define opt_deadline gsi_lua_opt_deadline
#define raise_encode_error gsi_lua_raise_encode_error
#define encode_msg_to gsi_lua_encode
#define from_tag gsi_lua_from_tag
#define mark_reason gsi_lua_mark_reason
#define end_wait gsi_bif_end_wait
#define wait_more gsi_lua_wait_more
/* Encode a string constant (reasons made up by the runtime). */
static gsi_msg *encode_str(lua_State *L, const char *s, int kind,
                           uint64_t from, uint64_t ref) {
  gsi_msg *m;
  lua_pushstring(L, s);
  m = gsi_lua_encode(L, -1, "reason", kind, from, ref, 0);
  lua_pop(L, 1);
  return m;
}
static int decode_payload(lua_State *L, gsi_msg *m) {
  gsi_msgv v;
  gsi_bif_msgv(m, &v);
  return gsi_lua_decode(L, &v);
}
/* As decode_payload, for an answer in a process: plain data skips the
** protected call (gsi_decode_raw; see gsi_lua_decode_next). */
static int decode_next(lua_State *L, gsi_msg *m) {
  gsi_proc *p = state_proc(L);
  gsi_msgv v;
  gsi_bif_msgv(m, &v);
  if (v.len == 0 || p == NULL) return gsi_lua_decode(L, &v);
  return gsi_decode_raw(L, v.data, v.len, gsi_bif_limits(p));
}
static void begin_wait(lua_State *L, gsi_proc *p, uint64_t deadline) {
  if (gsi_bif_begin_wait(p, deadline) != GSI_OK)
    luaL_error(L, "genserver: cannot receive or wait inside a receive match function");
}

/* Answer request ref of `caller` with a refusal (the server lives on):
** the caller's wait returns false, reason. A DOWN-kind answer flagged
** GSI_REFUSED, so that it takes the request's usual path. */
#define GSI_REFUSED 1
static void refuse_request(gsi_rt *rt, uint64_t server, uint64_t caller,
                           uint64_t ref, const char *reason) {
  gsi_buf b;
  gsi_msg *d;
  gsi_buf_init(&b);
  if (gsi_encode_cstring(&b, reason) == 0 &&
      (d = gsi_msg_new(GSI_M_DOWN, server, ref, b.data, b.len)) != NULL) {
    d->flags = GSI_REFUSED;
    gsi_deliver(rt, caller, d, 0);
  }
  gsi_buf_free(&b);
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

/* Push a DOWN ... "noproc" answer for ref into our own mailbox. */
static void self_down_noproc(lua_State *L, gsi_proc *p, uint64_t ref,
                             uint64_t pid) {
  gsi_msg *m = encode_str(L, "noproc", GSI_M_DOWN, pid, ref);
  gsi_deliver(p->rt, pid_of(p), m, 0);
}

/* Send the value at idx to pid as a request of `kind` (CALL/SYSTEM) under
** a new pending ref. Its answer always comes through the mailbox: a dead
** server's as DOWN "noproc", a full mailbox's as a refusal. */
static uint64_t start_request(lua_State *L, gsi_proc *p, uint64_t pid,
                              int idx, int kind, int handoff) {
  gsi_buf *b = &gsi_scratch_get()->buf;
  uint64_t ref;
  int rc;
  idx = lua_absindex(L, idx);
  b->len = 0;
  if (gsi_encode(L, idx, "request", gsi_rt_limits(rt_of(L)), b) != 0 ||
      gsi_check_code_to(L, idx, "request", p->rt, pid, b) != 0)
    raise_encode_error(L);
  rc = gsi_request(p, pid, kind, b->data, b->len, handoff, &ref);
  if (rc == GSI_ENOMEM) luaL_error(L, "genserver: out of memory");
  gsi_count(&p->msgs_out);
  if (rc != GSI_OK) {
    /* keep it pending, answered at once, so that every wait sees one path */
    if (gsi_pending_add(p, ref, pid) != 0) luaL_error(L, "genserver: out of memory");
    if (rc == GSI_ENOPROC) {
      gsi_idvec_push(&p->mon_out, ref); /* so the DOWN is accepted */
      gsi_idvec_push(&p->mon_out, pid);
      self_down_noproc(L, p, ref, pid);
    } else {
      refuse_request(p->rt, pid, pid_of(p), ref, "mailbox_full");
    }
  }
  return ref;
}

/* Wait for the answer to pending ref. Pushes true, value | false, kind,
** reason where kind is "timeout" or "down" (reason = exit reason). */
static int answer_k(lua_State *L, int status, lua_KContext ctx) {
  gsi_proc *p = self_of(L);
  uint64_t ref = (uint64_t)ctx;
  int abandon = lua_toboolean(L, 1);
  (void)status;
  for (;;) {
    gsi_msg *m;
    int st = gsi_answer(p, ref, &m);
    if (st == GSI_EKILLED) return die(L, p);
    if (st == GSI_EINVAL) {
      end_wait(p);
      return luaL_error(L, "genserver: unknown request (already answered?)");
    }
    if (st == GSI_OK) {
      int rc, n;
      end_wait(p);
      if (m->kind == GSI_M_REPLY) {
        lua_pushboolean(L, 1);
        /* plain data without a protected call; a memory error raising
        ** from there leaves m on p->held, freed later (not lost) */
        gsi_msg_free(p->held);
        p->held = m;
        rc = decode_next(L, m);
        p->held = NULL;
        n = 2;
      } else if (m->flags == GSI_REFUSED) { /* the server refused it */
        lua_pushboolean(L, 0);
        rc = decode_payload(L, m); /* the reason is the kind */
        n = 2;
      } else {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "down");
        rc = decode_payload(L, m);
        if (rc == 0) mark_reason(L, -1);
        n = 3;
      }
      gsi_msg_free(m);
      if (rc != 0) return lua_error(L);
      return n;
    }
    if (p->timed_out) {
      end_wait(p);
      if (abandon) gsi_pending_remove(p, ref, NULL);
      lua_pushboolean(L, 0);
      lua_pushliteral(L, "timeout");
      return 2;
    }
    if (wait_more(L, p)) return lua_yieldk(L, 0, ctx, answer_k);
  }
}

/* call(server, request [, timeout]) -> true, reply | false, kind, reason
** kind: "noproc" | "calling_self" | "timeout" | "down"
**
** Not gs_call, not even on a foreign thread, where blocking is what
** happens anyway: its results do not carry what the Lua API returns -- a
** request the server refused (undecodable, mailbox_full) comes back as
** false, reason, where gs_call gives GS_EEXIT with that reason as if the
** server had died; a reply that cannot be decoded raises the codec's
** error here; time-outs go past INT_MAX ms. stop (request + wait) and
** start (spawn + wait on a request id) are the same: wait() waits on ids
** that gs_* never expose. So the waits stay on the request/answer layer
** (recv.c) that gs_call/gs_stop/gs_start are themselves built on: late
** replies are dropped and exit signals noticed the same way in both. */
static int l_call(lua_State *L) {
  ENTER(L, p);
  uint64_t pid, ref;
  if (!gsi_topid(L, 1, &pid) && lua_type(L, 1) != LUA_TSTRING) {
    /* blame the line that called genserver.call (level 2: its Lua
    ** wrapper calls this one), not the wrapper */
    luaL_where(L, 2);
    lua_pushfstring(L, "bad argument #1 to 'genserver.call' (pid or registered "
                    "name expected, got %s)", luaL_typename(L, 1));
    lua_concat(L, 2);
    return lua_error(L);
  }
  pid = resolve(L, 1);
  luaL_checkany(L, 2);
  if (pid == 0) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "noproc");
    return 2;
  }
  if (pid == pid_of(p)) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "calling_self");
    return 2;
  }
  begin_wait(L, p, opt_deadline(L, 3, 5000));
  ref = start_request(L, p, pid, 2, GSI_M_CALL, 1);
  lua_settop(L, 0);
  lua_pushboolean(L, 1); /* abandon on time-out: the late reply is dropped */
  return answer_k(L, LUA_OK, (lua_KContext)ref);
}

/* request(server, request [, "system"]) -> ref */
static int l_request(lua_State *L) {
  ENTER(L, p);
  uint64_t pid = resolve(L, 1);
  int kind = GSI_M_CALL;
  luaL_checkany(L, 2);
  if (lua_type(L, 3) == LUA_TSTRING && strcmp(lua_tostring(L, 3), "system") == 0)
    kind = GSI_M_SYSTEM;
  if (kind == GSI_M_SYSTEM && outside_sandbox(p, pid))
    return luaL_error(L, "genserver: a sandboxed process may not send system requests "
                         "(stop, sys) to a process outside its sandbox");
  gsi_pushref(L, start_request(L, p, pid, 2, kind, 0));
  return 1;
}

/* wait(ref [, timeout [, abandon]]) -> as call */
static int l_wait(lua_State *L) {
  gsi_proc *p = self_of(L);
  uint64_t ref = check_ref(L, 1);
  int abandon = lua_toboolean(L, 3);
  begin_wait(L, p, opt_deadline(L, 2, HUGE_VAL));
  lua_settop(L, 0);
  lua_pushboolean(L, abandon);
  return answer_k(L, LUA_OK, (lua_KContext)ref);
}

/* The gen_server loop's reply (lserver.c) to the request it is handling:
** when from (at fidx) is the table core.next made for it, its ids are
** known and the value at idx goes straight out, with no table reads nor
** protected call. Returns 1 when sent, 0 when the caller must use
** core.reply (another from, or a value that cannot be encoded: reply
** then raises the usual error). Never raises but for memory errors. */
int gsi_reply_from(lua_State *L, int fidx, int idx) {
  gsi_proc *p = state_proc(L);
  gsi_buf *b;
  gsi_msg *m;
  if (p == NULL || p->from_tab == NULL || lua_topointer(L, fidx) != p->from_tab) return 0;
  idx = lua_absindex(L, idx);
  b = &gsi_scratch_get()->buf;
  b->len = 0;
  if (gsi_encode(L, idx, "reply", gsi_rt_limits(p->rt), b) != 0 ||
      gsi_check_code_to(L, idx, "reply", p->rt, p->from_pid, b) != 0) {
    lua_pop(L, 1); /* the error: core.reply makes it again, placed */
    return 0;
  }
  m = gsi_msg_new(GSI_M_REPLY, pid_of(p), p->from_ref, b->data, b->len);
  if (b->cap > (1u << 20)) gsi_buf_free(b);
  if (m == NULL) luaL_error(L, "genserver: out of memory");
  gsi_deliver(p->rt, p->from_pid, m, 1);
  gsi_count(&p->msgs_out);
  return 1;
}

/* A gen_server's ack to its starter (lserver.c): the value at idx, or
** { "ok" } when idx is 0, as the answer to (parent, start_ref). { "ok" }
** is written by hand: encoding a table would build the state's reverse
** index of loaded modules, which a server that never sends a table does
** not need. Raises as reply() does when the value cannot be sent. */
void gsi_ack(lua_State *L, int idx) {
  static const unsigned char ok[] = {GSI_WIRE_MAGIC, GSI_T_TABLE, 1, 0,
                                     GSI_T_FIXSTR | 2, 'o', 'k'};
  gsi_proc *p = state_proc(L);
  gsi_msg *m;
  if (p == NULL || p->start_ref == 0) return; /* not started by start() */
  if (idx == 0) {
    m = gsi_msg_new(GSI_M_REPLY, pid_of(p), p->start_ref, ok, sizeof ok);
    if (m == NULL) luaL_error(L, "genserver: out of memory");
  } else {
    m = encode_msg_to(L, idx, "reply", GSI_M_REPLY, pid_of(p), p->start_ref, p->parent);
  }
  gsi_deliver(p->rt, p->parent, m, 1);
}

/* reply(from, value) -> true; from = { pid, ref } */
static int l_reply(lua_State *L) {
  ENTER(L, p);
  uint64_t pid = 0, ref = 0;
  gsi_msg *m;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_rawgeti(L, 1, 1);
  lua_rawgeti(L, 1, 2);
  if (!gsi_topid(L, -2, &pid) || !from_tag(L, -1, &ref))
    luaL_argerror(L, 1, "not a 'from' given to handle_call");
  lua_pop(L, 2);
  m = encode_msg_to(L, 2, "reply", GSI_M_REPLY, pid_of(p), ref, pid);
  gsi_deliver(p->rt, pid, m, 1);
  gsi_count(&p->msgs_out);
  lua_pushboolean(L, 1);
  return 1;
}

/* ------------------------------------------------------ send and spawn */

static void buf_put_str(gsi_buf *b, const char *s, size_t n) {
  uint32_t n32 = (uint32_t)n;
  if (gsi_buf_reserve(b, 4 + n) != 0) return;
  memcpy(b->data + b->len, &n32, 4);
  memcpy(b->data + b->len + 4, s, n);
  b->len += 4 + n;
}

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

/* The spawn message: paths of the spawner, then { n, body, args... }. */
static gsi_msg *spawn_msg(lua_State *L, int body, int nargs) {
  gsi_buf *b = &gsi_scratch_get()->buf;
  size_t n;
  const char *s;
  int top = lua_gettop(L);
  gsi_msg *m;
  gsi_proc *self = state_proc(L);
  b->len = 0;
  if (self != NULL && self->sandbox && self->paths != NULL) {
    /* a sandbox passes on the paths it was given, not what it made of its
    ** package.path (DESIGN §5: its lookups stay inside them) */
    lua_pushstring(L, gsi_paths_path(self->paths));
    lua_pushstring(L, gsi_paths_cpath(self->paths));
  } else {
    lua_getglobal(L, LUA_LOADLIBNAME);
    if (lua_type(L, -1) != LUA_TTABLE) lua_pop(L, 1), lua_newtable(L);
    lua_getfield(L, -1, "path");
    lua_getfield(L, -2, "cpath");
  }
  s = lua_tolstring(L, -2, &n);
  buf_put_str(b, s ? s : "", s ? n : 0);
  s = lua_tolstring(L, -1, &n);
  buf_put_str(b, s ? s : "", s ? n : 0);
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
  if (gsi_encode(L, -1, "spawn", gsi_rt_limits(rt_of(L)), b) != 0) {
    rename_spawn_path(L, body + 1);
    raise_encode_error(L);
  }
  lua_settop(L, top);
  m = gsi_msg_new(GSI_M_USER, 0, 0, b->data, b->len);
  if (m == NULL) luaL_error(L, "genserver: out of memory");
  return m;
}

typedef struct spawn_lim {
  uint32_t limit;
  int overflow;
  size_t max_heap;
  int sandbox;
  uint64_t fail_at;
} spawn_lim;

/* mailbox_limit / overflow from the spawn options at t (a table or nil);
** raises for bad values, before any slot is taken. */
static void spawn_limits(lua_State *L, int t, spawn_lim *p) {
  static const char *const policies[] = {"drop", "reject", "kill", NULL};
  p->limit = 0;
  p->overflow = 0;
  p->max_heap = 0;
  p->sandbox = 0;
  p->fail_at = 0;
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
    p->limit = (uint32_t)n;
    p->overflow = GSI_OVF_DROP;
  }
  lua_pop(L, 1);
  if (lua_getfield(L, t, "overflow") != LUA_TNIL) {
    const char *s = lua_tostring(L, -1);
    int i;
    for (i = 0; s != NULL && policies[i] && strcmp(s, policies[i]) != 0; i++) {}
    if (s == NULL || lua_type(L, -1) != LUA_TSTRING || policies[i] == NULL)
      luaL_error(L, "genserver.spawn: opts.overflow must be \"drop\", \"reject\" or \"kill\"");
    if (p->limit == 0)
      luaL_error(L, "genserver.spawn: opts.overflow needs opts.mailbox_limit");
    p->overflow = GSI_OVF_DROP + i;
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
  gsi_rt *rt = rt_of(L);
  gsi_proc *p;
  int nargs = lua_gettop(L) - 2;
  ENTER(L, self);
  int link = opt_flag(L, 2, "link");
  int mon = opt_flag(L, 2, "monitor");
  /* internal options (genserver.logger's forwarder): it traps exits from
  ** the start, and is stopped last at program end (runtime.c) */
  int trap = opt_flag(L, 2, "trap_exit"), last = opt_flag(L, 2, "stop_last");
  uint64_t pid, ref = 0, req = 0;
  gsi_msg *sm;
  spawn_lim lim;
  char module[sizeof p->module];
  if (lua_type(L, 2) == LUA_TTABLE) {
    lua_getfield(L, 2, "request");
    if (!lua_isnil(L, -1) && !gsi_toref(L, -1, &req))
      luaL_argerror(L, 2, "opts.request must be a reference");
    lua_pop(L, 1);
  }
  if (lua_type(L, 1) != LUA_TFUNCTION && lua_type(L, 1) != LUA_TSTRING)
    luaL_typeerror(L, 1, "function or module name");
  if (nargs < 0) nargs = 0;
  spawn_limits(L, 2, &lim);
  /* everything a sandboxed process spawns or starts is sandboxed too,
  ** whatever the options say (DESIGN §5) */
  if (self->sandbox) lim.sandbox = 1;
  module[0] = '\0';
  if (lua_type(L, 2) == LUA_TTABLE) {
    lua_pushliteral(L, "module");
    if (lua_rawget(L, 2) == LUA_TSTRING)
      snprintf(module, sizeof module, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  if (module[0] == '\0' && lua_type(L, 1) == LUA_TSTRING)
    snprintf(module, sizeof module, "%s", lua_tostring(L, 1));
  sm = spawn_msg(L, 1, nargs);
  /* from here on nothing may raise until the process is queued: a slot
  ** taken and never run would never be freed */
  if (gsi_rt_ensure_started(rt) != 0 || (p = gsi_proc_alloc(rt)) == NULL) {
    gsi_msg_free(sm);
    return luaL_error(L, "genserver.spawn: cannot create a process "
                         "(process limit reached or runtime stopped)");
  }
  pid = gsi_proc_pid(p);
  if (req != 0 && gsi_pending_add(self, req, pid) != 0) {
    gsi_msg_free(sm);
    gsi_proc_release(p); /* never published */
    return luaL_error(L, "genserver: out of memory");
  }
  p->spawn_msg = sm;
  p->trap_exit = trap;
  p->stop_order = last ? GSI_STOP_LAST : GSI_STOP_NORMAL;
  p->parent = pid_of(self);
  p->start_ref = req; /* a gen_server's start (init.lua): its ack answers req */
  memcpy(p->module, module, sizeof module);
  p->mbox_limit = lim.limit;
  p->overflow = lim.overflow;
  p->max_heap = lim.max_heap;
  p->sandbox = lim.sandbox;
  p->fail_at = lim.fail_at;
  /* QUEUED before it is alive: a sender that finds it (list(), shutdown)
  ** sees QUEUED and does not queue it a second time. Links and monitors go
  ** in before it can run or die; then it is queued. */
  atomic_store(&p->sched, GSI_QUEUED);
  atomic_store(&p->alive, 1);
  if (link) gsi_link(self, pid);
  if (mon) {
    ref = gsi_new_ref(rt);
    gsi_monitor(self, pid, ref);
    gsi_mon_user_add(self, ref, pid);
  }
  if (req != 0) gsi_monitor(self, pid, req);
  atomic_fetch_add_explicit(&rt->spawned, 1, memory_order_relaxed);
  /* a start (req): the starter waits for the ack, so the new server runs
  ** next on this worker */
  if (req != 0) gsi_enqueue_next(rt, p);
  else gsi_enqueue(rt, p);
  gsi_pushpid(L, pid);
  if (!mon) return 1;
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
  gsi_msg *m = p->exit_msg;
  uint64_t pid = pid_of(p);
  int normal = m != NULL && (m->flags & GSI_XF_NORMAL);
  int killed = m == NULL || (m->flags & GSI_XF_KILL) || m->len == 0;
  /* Lua allocations first, while nothing is torn down: a memory error here
  ** leaves the process dying and m owned by it, to try again next call */
  push_exit_error(L, pid); /* the error: T */
  if (killed) {
    lua_pushliteral(L, "killed"); /* T, reason */
  } else { /* T, U: the reason's bytes, Lua-owned */
    memcpy(lua_newuserdatauv(L, m->len, 0), GSI_MSG_DATA(m), m->len);
  }
  /* now end the foreign process: links and monitors fire, nothing fails */
  p->exit_msg = NULL;
  p->dying = 0;
  gsi_foreign_exit(p, m != NULL ? GSI_MSG_DATA(m) : NULL, m != NULL ? m->len : 0,
                   normal);
  gsi_msg_free(m);
  if (!killed) { /* decode from the copy: nothing leaks if this fails */
    if (gsi_decode(L, lua_touserdata(L, -1), lua_rawlen(L, -1),
                   gsi_rt_limits(rt_of(L))) != 0) {
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
void gsi_lua_refuse(gsi_rt *rt, uint64_t server, uint64_t caller, uint64_t ref,
                    const char *why) { refuse_request(rt, server, caller, ref, why); }

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
  if (rc == GS_OK) gsi_scratch_release();
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
  uint64_t ms = opt_ms(L, 1, 5000);
  int rc;
  gsi_proc *self = state_proc(L);
  if (self != NULL) { /* a process state, sandboxed or not */
    return luaL_error(L, "genserver.runtime.shutdown: only the main script or host "
                         "may shut down%s",
                      self->sandbox ? " (not a sandboxed process)" : "");
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
      d->core = gsi_api_core(d->api);
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
    {"serve", gsi_serve},   {NULL, NULL}};

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
  gsi_proc *p = gsi_state_proc(L);
  gs_runtime *host;
  /* a process's state: light functions. Else the functions' record: a
  ** host's state bound to its runtime (gs_openlibs); else the default
  ** runtime, as for a plain lua5.4 script (again if this state holds it
  ** already and it still runs) */
  if (p == NULL && (host = gsi_host_api(L)) != NULL) {
    rtrec *r = lua_newuserdatauv(L, sizeof *r, 0);
    memset(r, 0, sizeof *r);
    r->core = gsi_api_core(host);
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
