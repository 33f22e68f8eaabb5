/*
** lgenserver.c - genserver.core: the process primitives as Lua functions.
**
** The binding is a client of the public C API (genserver.h, api.c) -- one
** core, two faces (DESIGN.md §1): the Lua default runtime is a gs_runtime
** (opened, configured and closed with gs_runtime_*), and whatever has a
** public counterpart goes through it: cast and send (gs_cast, gs_send),
** whereis and name lookups (gs_whereis), self on a foreign thread
** (gs_self), stats (gs_runtime_stats). Every state reaches its gs_runtime
** through the core's back-pointer (gsi_rt.api).
**
** What waits stays on the internal request/answer layer (recv.c) that the
** C API's own waits are built on: in a process a wait must yield the
** coroutine to its worker, never block the thread, which the blocking
** gs_call/gs_stop/gs_start do by design. See l_call for why a foreign
** thread's waits stay here too.
**
** Blocking primitives (receive, call, wait, sleep) yield the body (the
** state's main thread) back to its worker with p->want = GSI_W_WAIT and
** a continuation that looks again; on a foreign thread they block the thread instead. Errors
** are raised only when no lock is held and every buffer has an owner.
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
#include "gen/gen.h"
#include "lface.h"
#include "lgenserver.h"
#include "lio.h"


static const char SENTINEL_KEY = 's';  /* registry: lets go of the default runtime */
#define ERROR_MT "genserver.error"

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

static int die(lua_State *L, gsi_proc *p);

/* Entry of a primitive that does not wait: a process killed by a signal
** stops here instead of carrying on. */
#define ENTER(L, p)                      \
  gsi_proc *p = self_of(L);              \
  if (p->dying) return die(L, p)

static uint64_t check_pid(lua_State *L, int idx) {
  uint64_t pid;
  if (!gsi_topid(L, idx, &pid))
    luaL_typeerror(L, idx, "pid");
  return pid;
}

static uint64_t check_ref(lua_State *L, int idx) {
  uint64_t ref;
  if (!gsi_toref(L, idx, &ref)) luaL_typeerror(L, idx, "reference");
  return ref;
}

/* The pid registered as name, or 0 (no such name, or not a valid one). */
static uint64_t lookup(lua_State *L, const char *name) {
  gs_pid pid;
  int rc = gs_whereis(api_of(L), name, &pid);
  if (rc == GS_ECLOSED) raise_closed(L); /* stopped between the two looks */
  return rc == GS_OK ? pid : 0;
}

/* A server argument: a pid or a registered name. Returns 0 for a name
** nobody holds. */
static uint64_t resolve(lua_State *L, int idx) {
  uint64_t pid;
  if (gsi_topid(L, idx, &pid)) return pid;
  if (lua_type(L, idx) == LUA_TSTRING) return lookup(L, lua_tostring(L, idx));
  luaL_typeerror(L, idx, "pid or registered name");
  return 0;
}

/* Is self sandboxed and pid a live process outside any sandbox? Such a
** process is out of a sandbox's reach for what would end it or take it
** over: exit signals and system requests (stop, sys). Otherwise a sandbox
** could end every process of the runtime, the main script's included,
** which is shutting it down (DESIGN §5). */
static int outside_sandbox(gsi_proc *self, uint64_t pid) {
  gsi_proc *q;
  int out;
  if (!self->sandbox || pid == 0) return 0;
  if ((q = gsi_pin(self->rt, pid)) == NULL) return 0; /* dead: nothing to end */
  out = !q->sandbox; /* set before it was published, read-only since */
  gsi_unpin(q);
  return out;
}

/* A time in ms: nil -> def_ms; a number; "infinity" or math.huge -> none.
** Returns the ms, or NO_TIMEOUT. Anything past a thousand years is none
** too (so no conversion below can overflow). */
#define NO_TIMEOUT UINT64_MAX
#define MAX_MS 1e13 /* ~317 years; ms * 1e6 + now stays far below 2^64 */

static uint64_t opt_ms(lua_State *L, int idx, double def_ms) {
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
static uint64_t opt_deadline(lua_State *L, int idx, double def_ms) {
  uint64_t ms = opt_ms(L, idx, def_ms);
  return ms == NO_TIMEOUT ? 0 : gsi_now_ns() + ms * 1000000u;
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

/* Raise the codec's error string (on top) with the caller's position. */
static int raise_encode_error(lua_State *L) {
  if (lua_type(L, -1) != LUA_TSTRING) lua_pushstring(L, "cannot encode value");
  where_user(L);
  lua_insert(L, -2);
  lua_concat(L, 2);
  return lua_error(L);
}

/* Encode the value at idx into a new message for `to` (0: not known
** yet), or raise the codec's error (nothing is sent). */
static gsi_msg *encode_msg_to(lua_State *L, int idx, const char *what, int kind,
                              uint64_t from, uint64_t ref, uint64_t to) {
  gsi_buf *b = &gsi_scratch_get()->buf;
  gsi_msg *m;
  idx = lua_absindex(L, idx);
  b->len = 0;
  if (gsi_encode(L, idx, what, gsi_rt_limits(rt_of(L)), b) != 0 ||
      (to != 0 && gsi_check_code_to(L, idx, what, rt_of(L), to, b) != 0))
    raise_encode_error(L);
  m = gsi_msg_new(kind, from, ref, b->data, b->len);
  if (b->cap > (1u << 20)) gsi_buf_free(b); /* do not keep a huge scratch */
  if (m == NULL) luaL_error(L, "genserver: out of memory");
  return m;
}

/* The same for a value whose receiver is not known here, or that holds
** no function (the runtime's own reasons). */
static gsi_msg *encode_msg(lua_State *L, int idx, const char *what, int kind,
                           uint64_t from, uint64_t ref) {
  return encode_msg_to(L, idx, what, kind, from, ref, 0);
}

/* Encode a string constant (reasons made up by the runtime). */
static gsi_msg *encode_str(lua_State *L, const char *s, int kind,
                           uint64_t from, uint64_t ref) {
  gsi_msg *m;
  lua_pushstring(L, s);
  m = encode_msg(L, -1, "reason", kind, from, ref);
  lua_pop(L, 1);
  return m;
}

/* Push the payload of m; 0 or -1 with an error string pushed. An empty
** payload (a process that could not even start) reads as nil. */
static int decode_payload(lua_State *L, gsi_msg *m) {
  if (m->len == 0) {
    lua_pushnil(L);
    return 0;
  }
  gsi_proc *p = state_proc(L);
  return gsi_decode(L, GSI_MSG_DATA(m), m->len,
                    p != NULL ? gsi_limits_of(p) : gsi_rt_limits(rt_of(L)));
}

/* As decode_payload, for next() in a process: plain data skips the
** protected call (gsi_decode_raw). A memory error then raises from here
** with the message still queued; the server dies of it either way. */
static int decode_next(lua_State *L, gsi_msg *m) {
  gsi_proc *p = state_proc(L);
  if (m->len == 0 || p == NULL) return decode_payload(L, m);
  return gsi_decode_raw(L, GSI_MSG_DATA(m), m->len, gsi_limits_of(p));
}

/* A call's from: { caller pid, tag }. The tag is the call's ref as a
** plain integer: it is only ever handed back to reply(), and an integer
** costs the server's state nothing (a ref would be a new userdata and an
** interning entry per call). reply() also takes a ref there. */
static void push_from(lua_State *L, gsi_msg *m) {
  lua_createtable(L, 2, 0);
  gsi_pushpid(L, m->from);
  lua_rawseti(L, -2, 1);
  lua_pushinteger(L, (lua_Integer)m->ref);
  lua_rawseti(L, -2, 2);
}

/* The tag of a from (see push_from): an integer, or a ref. */
static int from_tag(lua_State *L, int idx, uint64_t *ref) {
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
static void mark_reason(lua_State *L, int idx) {
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
  mark_reason(L, -1);
  lua_getmetatable(L, -1);
  return 1;
}

/* The reason of an exit signal or DOWN: "killed" for an untrappable kill. */
static int push_reason(lua_State *L, gsi_msg *m) {
  int rc;
  if (m->kind == GSI_M_EXIT && (m->flags & GSI_XF_KILL)) {
    lua_pushliteral(L, "kill");
    return 0;
  }
  rc = decode_payload(L, m);
  if (rc == 0) mark_reason(L, -1);
  return rc;
}

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

static int exit_error_tostring(lua_State *L) {
  lua_getfield(L, 1, "reason");
  lua_pushfstring(L, "process.exit(%s)", luaL_tolstring(L, -1, NULL));
  return 1;
}

static int raise_exit_error(lua_State *L, int idx) {
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

/* Protected part of gsi_report_crash (1 = the error). */
static int report_crash(lua_State *L) {
  gsi_proc *p = state_proc(L);
  lua_settop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "genserver.logger");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "report"); /* 1 = e, 2 = logger, 3 = report */
  lua_createtable(L, 0, 5);
  lua_pushliteral(L, "process");
  lua_setfield(L, -2, "kind");
  gsi_pushpid(L, pid_of(p));
  lua_setfield(L, -2, "pid");
  if (lua_isnil(L, 1)) lua_pushliteral(L, "(error object is a nil value)");
  else if (lua_type(L, 1) == LUA_TTABLE || lua_type(L, 1) == LUA_TSTRING) lua_pushvalue(L, 1);
  else luaL_tolstring(L, 1, NULL);
  lua_setfield(L, -2, "error");
  if (gsi_crash_traceback(L, 1)) lua_setfield(L, -2, "traceback");
  lua_call(L, 1, 0);
  return 0;
}

/* A plain process's body raised the error at idx: an error report goes to
** genserver.logger (printed if it is not running), as Erlang prints
** "Error in process ... with exit value". A gen_server's loop reports its
** own crashes. Never raises, never waits. */
void gsi_report_crash(lua_State *L, int idx) {
  int serving;
  idx = lua_absindex(L, idx);
  if (!lua_checkstack(L, 4)) return;
  serving = lua_rawgetp(L, LUA_REGISTRYINDEX, &SERVING_KEY) != LUA_TNIL;
  lua_pop(L, 1);
  /* not once the runtime is shutting down: a process that meets the
  ** stopped runtime ("the runtime has been shut down") did not crash */
  if (serving || state_proc(L) == NULL || atomic_load(&state_proc(L)->rt->shutting)) return;
  lua_pushcfunction(L, report_crash);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    /* the logger could not be used (out of memory, a sandbox without it):
    ** one line here, a string error quoted up to a bound */
    uint64_t pid = pid_of(state_proc(L));
    const char *e = lua_type(L, idx) == LUA_TSTRING ? lua_tostring(L, idx) : NULL;
    fprintf(stderr, "=ERROR REPORT==== Error in process <0.%u.%u> with exit value: %.500s\n",
            GSI_PID_INDEX(pid), GSI_PID_GEN(pid), e != NULL ? e : luaL_typename(L, idx));
    lua_pop(L, 1);
  }
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

/* Push message m as the value a plain receive returns. */
static int push_msg(lua_State *L, gsi_msg *m) {
  int rc = 0;
  lua_checkstack(L, 6);
  switch (m->kind) {
  case GSI_M_CALL:
  case GSI_M_SYSTEM:
    lua_createtable(L, 3, 0);
    lua_pushstring(L, m->kind == GSI_M_CALL ? "$gen_call" : "$system");
    lua_rawseti(L, -2, 1);
    push_from(L, m);
    lua_rawseti(L, -2, 2);
    if ((rc = decode_payload(L, m)) == 0) lua_rawseti(L, -2, 3);
    break;
  case GSI_M_CAST:
    lua_createtable(L, 2, 0);
    lua_pushliteral(L, "$gen_cast");
    lua_rawseti(L, -2, 1);
    if ((rc = decode_payload(L, m)) == 0) lua_rawseti(L, -2, 2);
    break;
  case GSI_M_REPLY:
    lua_createtable(L, 3, 0);
    lua_pushliteral(L, "$reply");
    lua_rawseti(L, -2, 1);
    gsi_pushref(L, m->ref);
    lua_rawseti(L, -2, 2);
    if ((rc = decode_payload(L, m)) == 0) lua_rawseti(L, -2, 3);
    break;
  case GSI_M_DOWN:
    lua_createtable(L, 1, 3);
    lua_pushliteral(L, "DOWN");
    lua_rawseti(L, -2, 1);
    gsi_pushref(L, m->ref);
    lua_setfield(L, -2, "ref");
    if (m->from) gsi_pushpid(L, m->from), lua_setfield(L, -2, "pid");
    if ((rc = push_reason(L, m)) == 0) lua_setfield(L, -2, "reason");
    break;
  case GSI_M_EXIT:
    lua_createtable(L, 1, 2);
    lua_pushliteral(L, "EXIT");
    lua_rawseti(L, -2, 1);
    if (m->from) gsi_pushpid(L, m->from), lua_setfield(L, -2, "pid");
    if ((rc = push_reason(L, m)) == 0) lua_setfield(L, -2, "reason");
    break;
  default:
    return decode_payload(L, m);
  }
  if (rc != 0) lua_replace(L, -2); /* keep only the error string */
  return rc;
}

/* Take m out of the saved list and free it, forgetting the pending request
** it answered (a reply taken by a plain receive is consumed for good). */
static void consume(gsi_proc *p, gsi_msg *m) {
  gsi_pending *e;
  if ((m->kind == GSI_M_REPLY || m->kind == GSI_M_DOWN) &&
      (e = gsi_pending_find(p, m->ref)) != NULL && e->answer == m) {
    gsi_msg *taken;
    gsi_pending_remove(p, m->ref, &taken);
  } else {
    gsi_sv_unlink(p, m);
  }
  gsi_msg_free(m);
}

/* Push m (then free it) or raise the decoding error. */
static void push_consume(lua_State *L, gsi_proc *p, gsi_msg *m) {
  int rc = push_msg(L, m);
  consume(p, m);
  if (rc != 0) {
    lua_pushfstring(L, "genserver: cannot receive a message: %s",
                    lua_tostring(L, -1));
    lua_error(L);
  }
}

/* -------------------------------------------------------------- waiting */

static void end_wait(gsi_proc *p) {
  if (p->wait_timer != 0) {
    gsi_timer_cancel(p->rt, p->wait_timer);
    p->wait_timer = 0;
  }
  p->timed_out = 0;
  p->deadline = 0;
}

/* Inside a receive match function, receiving or waiting would free the
** saved messages the outer receive is walking (and reset its wait). */
static void no_receive(lua_State *L, gsi_proc *p) {
  if (p->in_match)
    luaL_error(L, "genserver: cannot receive or wait inside a receive match function");
}

static void begin_wait(lua_State *L, gsi_proc *p, uint64_t deadline) {
  no_receive(L, p);
  end_wait(p);
  p->deadline = deadline;
}

/* The process has to stop: a signal killed it or it called exit(). In a
** worker process, yield to the worker, which ends it; on a foreign thread,
** end the foreign process and raise the reason as a genserver error. */
static int die(lua_State *L, gsi_proc *p) {
  end_wait(p);
  if (p->fg != NULL) raise_exit(L, p);
  p->want = GSI_W_EXIT;
  if (L == p->L && lua_isyieldable(L)) return lua_yield(L, 0);
  gsi_unwind(L, p); /* inside a C call: an error pcall cannot keep */
  return 0;
}

/* Nothing to take yet. Returns 1 if the caller must yield (processes),
** 0 to look again (foreign thread woke up or timed out: timed_out set). */
static int wait_more(lua_State *L, gsi_proc *p) {
  if (p->deadline != 0 && !p->timed_out && gsi_now_ns() >= p->deadline)
    p->timed_out = 1;
  if (p->timed_out) return 0;
  if (p->fg != NULL) {
    if (gsi_foreign_wait(p, p->deadline) == 1) p->timed_out = 1;
    return 0;
  }
  if (L != p->L || !lua_isyieldable(L))
    luaL_error(L, "genserver: cannot wait here (inside a nested coroutine "
                  "or across a C call boundary)");
  if (p->deadline != 0 && p->wait_timer == 0) {
    uint64_t now = gsi_now_ns();
    uint64_t ms = p->deadline > now ? (p->deadline - now + 999999) / 1000000 : 0;
    gsi_msg *t = gsi_msg_new(GSI_M_TIMEOUT, 0, 0, NULL, 0);
    if (t == NULL) luaL_error(L, "genserver: out of memory");
    p->wait_timer = gsi_timer_arm(p->rt, ms, pid_of(p), NULL, t);
    if (p->wait_timer == 0) {
      gsi_msg_free(t);
      luaL_error(L, "genserver: out of memory");
    }
  }
  p->want = GSI_W_WAIT;
  return 1;
}

/* Fairness: a process that took its budget of messages this turn goes to
** the back of the run queue when others are waiting for a worker. */
static int over_budget(lua_State *L, gsi_proc *p) {
  if (p->fg != NULL || --p->budget > 0) return 0;
  p->budget = atomic_load_explicit(&p->rt->budget, memory_order_relaxed);
  if (!gsi_runq_busy(p->rt) || L != p->L || !lua_isyieldable(L)) return 0;
  p->want = GSI_W_YIELD;
  return 1;
}

/* ------------------------------------------------------------- receive */

/* receive([match], [timeout]) -> msg | nil */
static int receive_k(lua_State *L, int status, lua_KContext ctx) {
  gsi_proc *p = self_of(L);
  int has_match = (int)ctx;
  (void)status;
  for (;;) {
    if (has_match) gsi_drain(p);
    else gsi_drain_front(p);
    if (p->dying) return die(L, p);
    if (!has_match) {
      if (p->sv_head != NULL) {
        end_wait(p);
        push_consume(L, p, p->sv_head);
        return 1;
      }
    } else {
      /* in_match: while a match function runs, nothing may take or free
      ** saved messages (see no_receive), so m stays valid */
      gsi_msg *m;
      for (m = p->sv_head; m != NULL;
           m = atomic_load_explicit(&m->next, memory_order_relaxed)) {
        int st, ok;
        lua_pushvalue(L, 1);
        p->in_match++;
        if (push_msg(L, m) != 0) {
          p->in_match--;
          consume(p, m);
          return lua_error(L);
        }
        st = lua_pcall(L, 1, 1, 0);
        p->in_match--;
        if (st != LUA_OK) return lua_error(L);
        ok = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (ok) {
          end_wait(p);
          push_consume(L, p, m);
          return 1;
        }
      }
    }
    if (p->timed_out) {
      end_wait(p);
      lua_pushnil(L);
      return 1;
    }
    if (wait_more(L, p)) return lua_yieldk(L, 0, ctx, receive_k);
  }
}

static int l_receive(lua_State *L) {
  gsi_proc *p = self_of(L);
  int has_match = lua_type(L, 1) == LUA_TFUNCTION;
  begin_wait(L, p, opt_deadline(L, has_match ? 2 : 1, HUGE_VAL));
  lua_settop(L, has_match ? 1 : 0);
  if (over_budget(L, p)) return lua_yieldk(L, 0, has_match, receive_k);
  return receive_k(L, LUA_OK, has_match);
}

/* next([timeout]) -> kind, a, b: the gen_server loop's receive.
**   K_CALL, request, from | K_CAST, msg | K_INFO, msg | K_SYSTEM, req, from
**   nothing on time-out */
static int next_k(lua_State *L, int status, lua_KContext ctx) {
  gsi_proc *p = self_of(L);
  (void)status;
  for (;;) {
    gsi_msg *m = NULL;
    if (ctx) { /* suspended (sys): only system messages and the parent's
                  or the runtime's EXIT; the rest stays queued in order */
      gsi_drain(p);
      for (m = p->sv_head; m != NULL;
           m = atomic_load_explicit(&m->next, memory_order_relaxed))
        if (m->kind == GSI_M_SYSTEM ||
            (m->kind == GSI_M_EXIT && (m->from == 0 ||
                                       (p->parent != 0 && m->from == p->parent))))
          break;
    } else {
      gsi_drain_front(p);
      m = p->sv_head;
    }
    if (p->dying) return die(L, p);
    if (m != NULL) {
      int kind = m->kind, n = 2, rc;
      end_wait(p);
      switch (kind) {
      case GSI_M_CALL:
      case GSI_M_SYSTEM:
        lua_pushinteger(L, kind == GSI_M_CALL ? K_CALL : K_SYSTEM);
        rc = decode_next(L, m);
        if (rc == 0) {
          push_from(L, m), n = 3;
          /* for gsi_reply_from: this from table stands for (from, ref) */
          p->from_tab = lua_topointer(L, -1);
          p->from_pid = m->from;
          p->from_ref = m->ref;
        }
        break;
      case GSI_M_CAST:
        p->from_tab = NULL; /* gsi_reply_from: only the call being handled */
        lua_pushinteger(L, K_CAST);
        rc = decode_next(L, m);
        break;
      default:
        lua_pushinteger(L, K_INFO);
        rc = push_msg(L, m);
        /* an exit signal from no process: the runtime is shutting down
        ** (gsi_rt_stop_all); the loop then terminates, see dispatch */
        if (rc == 0 && kind == GSI_M_EXIT && m->from == 0) lua_pushboolean(L, 1), n = 3;
      }
      if (rc != 0) {
        /* one undecodable message (e.g. functions sent to a sandbox) must
        ** not kill the server: a call is refused at its caller, anything
        ** else is logged and dropped */
        const char *why = lua_tostring(L, -1);
        if (why != NULL && strcmp(why, "not enough memory") == 0) {
          consume(p, m); /* out of memory is no bad request: crash */
          return lua_error(L);
        }
        if (kind == GSI_M_CALL || kind == GSI_M_SYSTEM) {
          lua_pushfstring(L, "undecodable request: %s", why);
          gsi_gen_refuse(p->rt, pid_of(p), m->from, m->ref, lua_tostring(L, -1));
        } else {
          fprintf(stderr, "genserver <0.%u.%u>: dropped a message it cannot "
                  "receive: %s\n", GSI_PID_INDEX(pid_of(p)),
                  GSI_PID_GEN(pid_of(p)), why);
        }
        consume(p, m);
        lua_settop(L, 0);
        continue;
      }
      consume(p, m);
      return n;
    }
    if (p->timed_out) {
      end_wait(p);
      return 0;
    }
    if (wait_more(L, p)) return lua_yieldk(L, 0, ctx, next_k);
  }
}

/* The gen_server loop (lserver.c) is written in continuation style: when
** next returns a message without yielding, the loop goes on by calling
** its continuation, and so on for each message of the turn. An -O2 build
** turns those calls into jumps, but an -O0/-O1 build (the sanitizer
** builds among them) nests a few C frames per message: a server that
** never waits (a flood in its mailbox, an idle run queue, a callback the
** watchdog cannot preempt) went thousands of frames deep, enough for
** ThreadSanitizer's 65,536-frame limit and near a thread's C stack. Only
** a yield unwinds them, so next yields at least every NEXT_NEST_MAX
** messages, even when nobody waits for a worker. */
#define NEXT_NEST_MAX 64

/* next([timeout [, system_only]]) */
static int l_next(lua_State *L) {
  gsi_proc *p = self_of(L);
  lua_KContext sysonly = lua_toboolean(L, 2);
  begin_wait(L, p, opt_deadline(L, 1, HUGE_VAL));
  lua_settop(L, 0);
  if (over_budget(L, p)) return lua_yieldk(L, 0, sysonly, next_k);
  if (p->fg == NULL && ++p->nest >= NEXT_NEST_MAX) {
    p->nest = 0;
    if (L == p->L && lua_isyieldable(L)) {
      p->want = GSI_W_YIELD;
      return lua_yieldk(L, 0, sysonly, next_k);
    }
  }
  return next_k(L, LUA_OK, sysonly);
}

/* sleep(ms): wait for the time only; messages stay queued. */
static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  gsi_proc *p = self_of(L);
  (void)status;
  for (;;) {
    gsi_drain(p);
    if (p->dying) return die(L, p);
    if (p->timed_out) {
      end_wait(p);
      return 0;
    }
    if (wait_more(L, p)) return lua_yieldk(L, 0, ctx, sleep_k);
  }
}

static int l_sleep(lua_State *L) {
  gsi_proc *p = self_of(L);
  /* sleep("infinity") waits until an exit signal ends the process */
  begin_wait(L, p, opt_deadline(L, 1, 0));
  lua_settop(L, 0);
  return sleep_k(L, LUA_OK, 0);
}

/* ---------------------------------------------------- requests, calls */

/* Push a DOWN ... "noproc" answer for ref into our own mailbox. */
static void self_down_noproc(lua_State *L, gsi_proc *p, uint64_t ref,
                             uint64_t pid) {
  gsi_msg *m = encode_str(L, "noproc", GSI_M_DOWN, pid, ref);
  gsi_deliver(p->rt, pid_of(p), m, 0);
}

/* Send the value at idx to pid as a request of `kind` (GSI_GEN_CALL /
** _SYSTEM) under a new pending ref. Its answer always comes through the
** mailbox: a dead server's as DOWN "noproc", a full mailbox's as a
** refusal (gsi_gen_request). A stop request (stop set) is { "stop",
** value }, made by the protocol layer around the encoded value. */
static uint64_t start_request(lua_State *L, gsi_proc *p, uint64_t pid,
                              int idx, int kind, int handoff, int stop) {
  gsi_buf *b = &gsi_scratch_get()->buf;
  const char *what = stop ? "request[2]" : "request";
  uint64_t ref;
  int rc;
  idx = lua_absindex(L, idx);
  b->len = 0;
  if (gsi_encode(L, idx, what, gsi_rt_limits(rt_of(L)), b) != 0 ||
      gsi_check_code_to(L, idx, what, p->rt, pid, b) != 0)
    raise_encode_error(L);
  if (stop) {
    gsi_buf sb;
    gsi_buf_init(&sb);
    rc = gsi_gen_stop_encode(&sb, b->data, b->len);
    if (rc == GSI_OK)
      rc = gsi_gen_request(p, pid, kind, sb.data, sb.len, handoff, NULL, &ref);
    gsi_buf_free(&sb);
  } else {
    rc = gsi_gen_request(p, pid, kind, b->data, b->len, handoff, NULL, &ref);
  }
  if (rc != GSI_OK) luaL_error(L, "genserver: out of memory");
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
    int st = gsi_gen_answer(p, ref, &m);
    if (st == GSI_GEN_DYING) return die(L, p);
    if (st == GSI_GEN_UNKNOWN) {
      end_wait(p);
      return luaL_error(L, "genserver: unknown request (already answered?)");
    }
    if (st != GSI_GEN_WAIT) {
      int rc, n;
      end_wait(p);
      if (st == GSI_GEN_REPLY) {
        lua_pushboolean(L, 1);
        /* plain data without a protected call; a memory error raising
        ** from there leaves m on p->held, freed later (not lost) */
        gsi_msg_free(p->held);
        p->held = m;
        rc = decode_next(L, m);
        p->held = NULL;
        n = 2;
      } else if (st == GSI_GEN_REFUSED) { /* the server refused it */
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
      if (abandon) gsi_gen_abandon(p, ref);
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
** that gs_* never expose. So both faces make and wait for their requests
** through the protocol layer (gen.c: gsi_gen_request, gsi_gen_answer):
** late replies are dropped, answers classified and exit signals noticed
** the same way in both; only the waiting differs (yield / block). */
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
  ref = start_request(L, p, pid, 2, GSI_GEN_CALL, 1, 0);
  lua_settop(L, 0);
  lua_pushboolean(L, 1); /* abandon on time-out: the late reply is dropped */
  return answer_k(L, LUA_OK, (lua_KContext)ref);
}

/* request(server, request [, "system" | "stop"]) -> ref
** "stop": request is the reason of a stop request { "stop", reason }. */
static int l_request(lua_State *L) {
  ENTER(L, p);
  uint64_t pid = resolve(L, 1);
  int kind = GSI_GEN_CALL, stop = 0;
  const char *k = lua_type(L, 3) == LUA_TSTRING ? lua_tostring(L, 3) : "";
  luaL_checkany(L, 2);
  if (strcmp(k, "system") == 0 || (stop = strcmp(k, "stop") == 0))
    kind = GSI_GEN_SYSTEM;
  if (kind == GSI_GEN_SYSTEM && outside_sandbox(p, pid))
    return luaL_error(L, "genserver: a sandboxed process may not send system requests "
                         "(stop, sys) to a process outside its sandbox");
  gsi_pushref(L, start_request(L, p, pid, 2, kind, 0, stop));
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
  int rc;
  if (p == NULL || p->from_tab == NULL || lua_topointer(L, fidx) != p->from_tab) return 0;
  idx = lua_absindex(L, idx);
  b = &gsi_scratch_get()->buf;
  b->len = 0;
  if (gsi_encode(L, idx, "reply", gsi_rt_limits(p->rt), b) != 0 ||
      gsi_check_code_to(L, idx, "reply", p->rt, p->from_pid, b) != 0) {
    lua_pop(L, 1); /* the error: core.reply makes it again, placed */
    return 0;
  }
  rc = gsi_gen_reply(p, p->from_pid, p->from_ref, b->data, b->len);
  if (b->cap > (1u << 20)) gsi_buf_free(b);
  if (rc != GSI_OK) luaL_error(L, "genserver: out of memory");
  return 1;
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
    b = &gsi_scratch_get()->buf;
    b->len = 0;
    lua_rawgeti(L, idx, 2);
    if (gsi_encode(L, -1, "reply[2]", gsi_rt_limits(rt_of(L)), b) != 0 ||
        gsi_check_code_to(L, lua_gettop(L), "reply[2]", rt_of(L), starter, b) != 0)
      raise_encode_error(L);
    lua_pop(L, 1);
  }
  rc = gsi_gen_ack(p, tag, b != NULL ? b->data : NULL, b != NULL ? b->len : 0);
  if (b != NULL && b->cap > (1u << 20)) gsi_buf_free(b); /* no huge scratch kept */
  if (rc < 0) luaL_error(L, "genserver: out of memory");
}

/* Is the value at idx the pid of the process that spawned this one? */
int gsi_is_parent(lua_State *L, int idx) {
  gsi_proc *p = state_proc(L);
  uint64_t pid;
  return p != NULL && p->parent != 0 && gsi_topid(L, idx, &pid) && pid == p->parent;
}

/* reply(from, value) -> true; from = { pid, ref } */
static int l_reply(lua_State *L) {
  ENTER(L, p);
  uint64_t pid = 0, ref = 0;
  gsi_buf *b = &gsi_scratch_get()->buf;
  int rc;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_rawgeti(L, 1, 1);
  lua_rawgeti(L, 1, 2);
  if (!gsi_topid(L, -2, &pid) || !from_tag(L, -1, &ref))
    luaL_argerror(L, 1, "not a 'from' given to handle_call");
  lua_pop(L, 2);
  b->len = 0;
  if (gsi_encode(L, 2, "reply", gsi_rt_limits(rt_of(L)), b) != 0 ||
      gsi_check_code_to(L, 2, "reply", rt_of(L), pid, b) != 0)
    raise_encode_error(L);
  rc = gsi_gen_reply(p, pid, ref, b->data, b->len);
  if (b->cap > (1u << 20)) gsi_buf_free(b); /* do not keep a huge scratch */
  if (rc != GSI_OK) luaL_error(L, "genserver: out of memory");
  lua_pushboolean(L, 1);
  return 1;
}

/* ------------------------------------------------------ send and spawn */

#define SEND_BUDGET 256

static int sent_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  lua_pushboolean(L, 1);
  return 1;
}

/* cast and send: gs_cast / gs_send, from a process as from a foreign
** thread (the value is at the top; they consume it). The sender is the
** calling process either way: gs_* take the process running on a worker,
** or the thread's foreign process, which self_of has just checked. */
static int send_kind(lua_State *L, int kind) {
  ENTER(L, p);
  uint64_t pid = resolve(L, 1), me = pid_of(p);
  gs_runtime *api = gsi_api_of(p->rt);
  luaL_checkany(L, 2);
  if (pid == 0 && kind == GSI_M_USER)
    return luaL_error(L, "genserver.send: no process is registered as '%s'",
                      lua_tostring(L, 1));
  if (lua_gettop(L) != 2) lua_settop(L, 2); /* the value on top */
  /* pid 0 (a cast to a name nobody holds) still encodes the value, so a
  ** value that cannot be sent is refused the same either way */
  switch (kind == GSI_M_CAST ? gs_cast(api, pid, L) : gs_send(api, pid, L)) {
  case GS_OK:
  case GS_ENOPROC: /* OTP: a message to a dead process is silently dropped */
    gsi_count(&p->msgs_out);
    break;
  case GS_EFULL:
    lua_pushboolean(L, 0); /* a bounded mailbox refused it */
    return 1;
  case GS_EENCODE: /* nothing was sent; the codec's message names the path */
    lua_pushstring(L, gs_errmsg());
    return raise_encode_error(L);
  case GS_EKILLED: /* a signal came just now: gs_* ended the process */
    return raise_killed(L, me);
  case GS_ECLOSED:
    return raise_closed(L);
  default:
    return luaL_error(L, "genserver: out of memory");
  }
  /* a loop that only sends gives the worker up now and then, so its
  ** receivers (and everybody else) get to run */
  if (p->fg == NULL && --p->send_budget <= 0) {
    p->send_budget = SEND_BUDGET;
    if (gsi_runq_busy(p->rt) && L == p->L && lua_isyieldable(L)) {
      p->want = GSI_W_YIELD;
      return lua_yieldk(L, 0, 0, sent_k);
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_send(lua_State *L) { return send_kind(L, GSI_M_USER); }
static int l_cast(lua_State *L) { return send_kind(L, GSI_M_CAST); }

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
  gsi_buf *b = &gsi_scratch_get()->buf;
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
  if (gsi_encode(L, -1, "spawn", gsi_rt_limits(rt_of(L)), b) != 0) {
    rename_spawn_path(L, body + 1);
    raise_encode_error(L);
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
  ENTER(L, self);
  gsi_spawn_spec spec = {0};
  uint64_t pid, ref = 0;
  gsi_buf *sm;
  char module[64];
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
  module[0] = '\0';
  if (lua_type(L, 2) == LUA_TTABLE) {
    lua_pushliteral(L, "module");
    if (lua_rawget(L, 2) == LUA_TSTRING)
      snprintf(module, sizeof module, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  if (module[0] == '\0' && lua_type(L, 1) == LUA_TSTRING)
    snprintf(module, sizeof module, "%s", lua_tostring(L, 1));
  spec.module = module;
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
  if (sm->cap > (1u << 20)) gsi_buf_free(sm); /* do not keep a huge scratch */
  gsi_pushpid(L, pid);
  if (!spec.monitor) return 1;
  gsi_pushref(L, ref);
  return 2;
}

/* ----------------------------------------------- links, monitors, exit */

static int l_monitor(lua_State *L) {
  ENTER(L, p);
  uint64_t pid = resolve(L, 1);
  uint64_t ref = gsi_new_ref(p->rt);
  int rc = pid == 0 ? GSI_ENOPROC : gsi_monitor(p, pid, ref);
  if (rc == GSI_ENOMEM) return raise_error(L, "genserver.monitor", rc, NULL);
  if (rc != GSI_OK) {
    gsi_idvec_push(&p->mon_out, ref);
    gsi_idvec_push(&p->mon_out, pid);
    self_down_noproc(L, p, ref, pid);
  } else {
    gsi_mon_user_add(p, ref, pid);
  }
  gsi_pushref(L, ref);
  return 1;
}

static int l_demonitor(lua_State *L) {
  gsi_proc *p = self_of(L);
  uint64_t ref = check_ref(L, 1);
  int flush = lua_type(L, 2) == LUA_TSTRING &&
              strcmp(lua_tostring(L, 2), "flush") == 0;
  no_receive(L, p);
  /* as Erlang: a DOWN already delivered stays (unless flushed), none comes
  ** later. Draining first keeps the delivered ones (the monitor is still
  ** known); any DOWN arriving after this is dropped when drained. */
  gsi_drain(p);
  gsi_demonitor(p, ref);
  gsi_mon_user_remove(p, ref);
  if (flush) {
    gsi_msg *m = p->sv_head;
    while (m != NULL) {
      gsi_msg *next = atomic_load_explicit(&m->next, memory_order_relaxed);
      if (m->kind == GSI_M_DOWN && m->ref == ref &&
          gsi_pending_find(p, ref) == NULL) {
        gsi_sv_unlink(p, m);
        gsi_msg_free(m);
      }
      m = next;
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

static void push_exit_error(lua_State *L, uint64_t pid);

static int l_link(lua_State *L) {
  ENTER(L, p);
  uint64_t pid = check_pid(L, 1);
  int rc = gsi_link(p, pid);
  if (rc == GSI_ENOMEM) return raise_error(L, "genserver.link", rc, NULL);
  if (rc != GSI_OK) {
    /* as Erlang's link/1: a process that traps exits gets {"EXIT", pid,
    ** "noproc"}; one that does not gets a catchable error (it lives on) */
    if (p->trap_exit) {
      gsi_msg *m = encode_str(L, "noproc", GSI_M_EXIT, pid, 0);
      gsi_deliver(p->rt, pid_of(p), m, 0);
    } else {
      push_exit_error(L, pid);
      lua_pushliteral(L, "link");
      lua_setfield(L, -2, "op");
      lua_pushliteral(L, "noproc");
      lua_setfield(L, -2, "reason");
      return lua_error(L);
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_unlink(lua_State *L) {
  ENTER(L, p);
  gsi_unlink(p, check_pid(L, 1));
  lua_pushboolean(L, 1);
  return 1;
}

static int l_trap_exit(lua_State *L) {
  gsi_proc *p = self_of(L);
  int old = p->trap_exit;
  if (!lua_isnoneornil(L, 1)) { /* owner reads it freely; info() under lk */
    pthread_mutex_lock(&p->lk);
    p->trap_exit = lua_toboolean(L, 1);
    pthread_mutex_unlock(&p->lk);
  }
  lua_pushboolean(L, old);
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
  gsi_proc *p = self_of(L);
  gsi_msg *m;
  if (lua_gettop(L) >= 2) {
    uint64_t pid = check_pid(L, 1);
    luaL_checkany(L, 2);
    if (outside_sandbox(p, pid))
      return luaL_error(L, "genserver.exit: a sandboxed process may not send exit "
                           "signals to a process outside its sandbox");
    m = encode_msg_to(L, 2, "reason", GSI_M_EXIT, pid_of(p), 0, pid);
    m->flags = (uint8_t)reason_flags(L, 2);
    gsi_deliver(p->rt, pid, m, 0);
    if (pid == pid_of(p)) {
      gsi_drain(p);
      if (p->dying) return die(L, p);
    }
    lua_pushboolean(L, 1);
    return 1;
  }
  luaL_checkany(L, 1);
  if (p->fg == NULL && lua_rawgetp(L, LUA_REGISTRYINDEX, &SERVING_KEY) == LUA_TBOOLEAN &&
      lua_toboolean(L, -1))
    return raise_exit_error(L, 1);
  lua_settop(L, 1);
  m = encode_msg(L, 1, "reason", GSI_M_EXIT, pid_of(p), 0);
  m->flags = (uint8_t)(reason_flags(L, 1) & GSI_XF_NORMAL);
  gsi_msg_free(p->exit_msg);
  p->exit_msg = m;
  p->dying = 1;
  return die(L, p);
}

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
  gsi_msg_free(gsi_gen_end_killed(p, &normal));
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

/* -------------------------------------------------------------- names */

static int l_register(lua_State *L) {
  ENTER(L, p);
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len);
  uint64_t pid = lua_isnoneornil(L, 2) ? pid_of(p) : check_pid(L, 2), holder;
  if (len == 0 || len > GSI_NAME_MAX || strlen(name) != len)
    return luaL_error(L, "genserver.register: a name is 1 to %d bytes, no zero bytes",
                      GSI_NAME_MAX);
  int rc = gsi_reg_register(p->rt, name, pid, &holder);
  if (rc == GSI_EALREADY) {
    lua_pushnil(L);
    lua_createtable(L, 0, 1);
    gsi_pushpid(L, holder);
    lua_setfield(L, -2, "already_started");
    return 2;
  }
  if (rc == GSI_ENOPROC) return luaL_error(L, "genserver.register: process is not alive");
  if (rc == GSI_EINVAL)
    return luaL_error(L, "genserver.register: process already has a name");
  if (rc != GSI_OK) return raise_error(L, "genserver.register", rc, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_unregister(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  gsi_proc *self = state_proc(L);
  /* a sandbox cannot free a name held outside it (and so take it over) */
  if (self != NULL && self->sandbox && outside_sandbox(self, lookup(L, name)))
    return luaL_error(L, "genserver.unregister: a sandboxed process may not unregister "
                         "a name held outside its sandbox");
  lua_pushboolean(L, gsi_reg_unregister(rt_of(L), name) == 0);
  return 1;
}

static int l_whereis(lua_State *L) {
  uint64_t pid = lookup(L, luaL_checkstring(L, 1));
  if (pid == 0) lua_pushnil(L);
  else gsi_pushpid(L, pid);
  return 1;
}

typedef struct names_acc {
  char **v;
  size_t n, cap;
} names_acc;

static void collect_name(void *ud, const char *name, uint64_t pid) {
  names_acc *a = ud;
  (void)pid;
  if (a->n == a->cap) {
    size_t ncap = a->cap ? a->cap * 2 : 16;
    char **nv = realloc(a->v, ncap * sizeof *nv);
    if (nv == NULL) return;
    a->v = nv;
    a->cap = ncap;
  }
  if ((a->v[a->n] = strdup(name)) != NULL) a->n++;
}

/* The names are copied out under the registry lock, then pushed. */
static int l_registered(lua_State *L) {
  names_acc a = {NULL, 0, 0};
  gsi_reg_each(rt_of(L), collect_name, &a);
  lua_createtable(L, (int)a.n, 0);
  for (size_t i = 0; i < a.n; i++) {
    lua_pushstring(L, a.v[i]);
    free(a.v[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  free(a.v);
  return 1;
}

/* -------------------------------------------------------------- timers */

/* send_after(ms, dest, msg) / send_interval(ms, dest, msg) -> tref */
static int arm_timer(lua_State *L, int every) {
  ENTER(L, p);
  uint64_t ms = opt_ms(L, 1, 0);
  const char *name = NULL;
  uint64_t pid = 0, id;
  gsi_msg *m;
  luaL_checknumber(L, 1);
  if (lua_type(L, 2) == LUA_TSTRING) name = lua_tostring(L, 2);
  else pid = check_pid(L, 2);
  luaL_checkany(L, 3);
  if (gsi_rt_ensure_started(p->rt) != 0)
    return luaL_error(L, "genserver: runtime stopped");
  if (every && (lua_tonumber(L, 1) < 1 || lua_tonumber(L, 1) == HUGE_VAL))
    return luaL_argerror(L, 1, "send_interval: the interval must be at least 1 ms");
  m = encode_msg_to(L, 3, "message", GSI_M_USER, pid_of(p), 0, pid);
  /* "never" is a timer that outlives the program: it can still be cancelled */
  id = every ? gsi_timer_arm_every(p->rt, ms, pid, name, m)
             : gsi_timer_arm(p->rt, ms, pid, name, m);
  if (id == 0) {
    gsi_msg_free(m);
    return luaL_error(L, "genserver: out of memory");
  }
  gsi_pushref(L, id);
  return 1;
}

static int l_send_after(lua_State *L) { return arm_timer(L, 0); }
static int l_send_interval(lua_State *L) { return arm_timer(L, 1); }

/* now() -> ms, monotonic (a float) */
static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)gsi_now_ns() / 1e6);
  return 1;
}

static int l_cancel_timer(lua_State *L) {
  int64_t left = gsi_timer_cancel(rt_of(L), check_ref(L, 1));
  if (left < 0) lua_pushboolean(L, 0);
  else lua_pushinteger(L, (lua_Integer)left);
  return 1;
}

/* ---------------------------------------------------------- inspection */

/* In a process: its pid. On a foreign thread: gs_self, which also ends a
** process an exit signal killed (raised here with its reason). */
static int l_self(lua_State *L) {
  gs_runtime *api;
  gsi_proc *fp;
  gs_pid pid;
  uint64_t me;
  if (state_proc(L) != NULL) {
    gsi_pushpid(L, pid_of(self_of(L)));
    return 1;
  }
  api = api_of(L);
  /* the pid as it is now, for the error if a signal killed it */
  if ((fp = gsi_api_foreign(api)) == NULL)
    return luaL_error(L, "genserver: too many processes");
  me = pid_of(fp);
  switch (gs_self(api, &pid)) {
  case GS_OK: break;
  case GS_EKILLED: return raise_killed(L, me);
  case GS_ECLOSED: return raise_closed(L);
  default: return luaL_error(L, "genserver: too many processes");
  }
  gsi_pushpid(L, pid);
  return 1;
}

static int l_make_ref(lua_State *L) {
  gsi_pushref(L, gsi_new_ref(rt_of(L)));
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
  gsi_proc *t = gsi_pin(rt_of(L), check_pid(L, 1));
  lua_pushboolean(L, t != NULL);
  if (t != NULL) gsi_unpin(t);
  return 1;
}

static uint32_t slots_used(gsi_rt *rt) {
  uint32_t used;
  pthread_mutex_lock(&rt->tbl_mu);
  used = rt->used;
  pthread_mutex_unlock(&rt->tbl_mu);
  return used;
}

static int l_list(lua_State *L) {
  gsi_rt *rt = rt_of(L);
  uint32_t used = slots_used(rt);
  lua_Integer n = 0;
  lua_newtable(L);
  for (uint32_t i = 1; i <= used; i++) {
    gsi_proc *p = gsi_proc_at(rt, i);
    if (p == NULL || !atomic_load(&p->alive)) continue;
    gsi_pushpid(L, gsi_proc_pid(p));
    lua_rawseti(L, -2, ++n);
  }
  return 1;
}

static const char *const callback_names[] = {
    NULL, "init", "handle_call", "handle_cast", "handle_info",
    "handle_continue", "terminate", "system"};

static const char *const status_names[] = {"waiting", "runnable", "running",
                                           "running"};

static void set_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

static void push_ids(lua_State *L, const gsi_idvec *v, size_t step,
                     size_t off) {
  lua_createtable(L, (int)(v->n / step), 0);
  for (size_t i = off, k = 1; i < v->n; i += step, k++) {
    gsi_pushpid(L, v->v[i]);
    lua_rawseti(L, -2, (lua_Integer)k);
  }
}

/* info(pid) -> table | nil. The lists are copied under the target's lock
** into C memory first, then pushed (no Lua allocation under a lock). */
static int l_info(lua_State *L) {
  gsi_rt *rt = rt_of(L);
  uint64_t pid = check_pid(L, 1);
  gsi_proc *t = gsi_pin(rt, pid);
  gsi_idvec links = {0}, mons = {0}, mine = {0};
  char name[GSI_NAME_MAX + 1] = "";
  char module[sizeof t->module], vsn[48] = "";
  int current;
  uint64_t in, drained, overflowed, out, reds, vsn_n;
  uint32_t limit;
  size_t sv, mem, max_heap;
  int st, foreign, trap, server;
  if (t == NULL) {
    lua_pushnil(L);
    return 1;
  }
  pthread_mutex_lock(&t->lk);
  for (size_t i = 0; i < t->links.n; i++) gsi_idvec_push(&links, t->links.v[i]);
  for (size_t i = 0; i < t->monitors.n; i++)
    gsi_idvec_push(&mons, t->monitors.v[i]);
  if (t->mon_user != NULL)
    for (size_t i = 0; i < t->mon_user->n; i++)
      gsi_idvec_push(&mine, t->mon_user->v[i]);
  memcpy(module, t->module, sizeof module);
  if (t->vsn != NULL) snprintf(vsn, sizeof vsn, "%s", t->vsn);
  vsn_n = t->vsn_n;
  trap = t->trap_exit;
  server = t->server;
  pthread_mutex_unlock(&t->lk);
  module[sizeof module - 1] = '\0';
  out = atomic_load_explicit(&t->msgs_out, memory_order_relaxed);
  reds = atomic_load_explicit(&t->reductions, memory_order_relaxed);
  current = atomic_load_explicit(&t->current, memory_order_relaxed);
  st = atomic_load(&t->sched);
  foreign = t->fg != NULL;
  in = atomic_load_explicit(&t->msgs_in, memory_order_relaxed);
  drained = atomic_load_explicit(&t->drained_pub, memory_order_relaxed);
  sv = atomic_load_explicit(&t->svlen_pub, memory_order_relaxed);
  mem = atomic_load_explicit(&t->mem_pub, memory_order_relaxed);
  overflowed = atomic_load_explicit(&t->overflowed, memory_order_relaxed);
  limit = t->mbox_limit;
  max_heap = t->max_heap;
  gsi_unpin(t);
  gsi_reg_name_of(rt, pid, name, sizeof name);
  lua_createtable(L, 0, 12);
  lua_pushstring(L, status_names[st & 3]);
  lua_setfield(L, -2, "status");
  set_int(L, "mailbox", (lua_Integer)(sv + (in > drained ? in - drained : 0)));
  set_int(L, "messages_in", (lua_Integer)in);
  set_int(L, "memory", (lua_Integer)mem);
  set_int(L, "overflowed", (lua_Integer)overflowed);
  if (limit) set_int(L, "mailbox_limit", (lua_Integer)limit);
  if (max_heap) set_int(L, "max_heap", (lua_Integer)max_heap);
  if (module[0]) lua_pushstring(L, module), lua_setfield(L, -2, "module");
  if (name[0]) lua_pushstring(L, name), lua_setfield(L, -2, "name");
  lua_pushboolean(L, foreign);
  lua_setfield(L, -2, "foreign");
  push_ids(L, &links, 1, 0);
  lua_setfield(L, -2, "links");
  push_ids(L, &mons, 2, 1);
  lua_setfield(L, -2, "monitored_by");
  push_ids(L, &mine, 2, 1);
  lua_setfield(L, -2, "monitors");
  set_int(L, "messages_out", (lua_Integer)out);
  set_int(L, "reductions", (lua_Integer)reds);
  lua_pushboolean(L, trap);
  lua_setfield(L, -2, "trap_exit");
  if (server) lua_pushboolean(L, 1), lua_setfield(L, -2, "server");
  if (vsn[0]) lua_pushstring(L, vsn), lua_setfield(L, -2, "vsn");
  else if (vsn_n) set_int(L, "vsn", (lua_Integer)vsn_n);
  if (current > GSI_CB_NONE && current <= GSI_CB_SYSTEM)
    lua_pushstring(L, callback_names[current]), lua_setfield(L, -2, "current");
  gsi_idvec_free(&links);
  gsi_idvec_free(&mons);
  gsi_idvec_free(&mine);
  return 1;
}

/* ------------------------------------------------------------ runtime */

/* configure{...}: the fields are checked here (the messages name the Lua
** function), then applied at once with gs_runtime_configure on a zeroed
** gs_config, whose 0 fields leave a setting as it is. */
static int l_configure(lua_State *L) {
  gs_runtime *api = api_of(L);
  gsi_proc *self = state_proc(L);
  gs_config cfg;
  int rc;
  if (self != NULL && self->sandbox) /* settings of every process (§5) */
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
  default: return raise_error(L, "genserver.runtime.configure", rc, gs_errmsg());
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_stats(lua_State *L) {
  gs_stats st;
  if (gs_runtime_stats(api_of(L), &st) != GS_OK)
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

/* set_module(name [, vsn]): a gen_server names its module and version.
** module and vsn are read by info() on other threads: written under lk.
** Without a vsn (a string or a number), the version is the module cache's
** counter for the name (genserver.code), if it has one. */
static int l_set_module(lua_State *L) {
  gsi_proc *p = self_of(L);
  const char *name = luaL_checkstring(L, 1);
  char *vsn = NULL, *old;
  uint64_t n = 0;
  if (lua_type(L, 2) == LUA_TSTRING || lua_type(L, 2) == LUA_TNUMBER) {
    size_t len;
    const char *s = lua_tolstring(L, 2, &len);
    if (len > 47) len = 47; /* a version, not a document */
    if ((vsn = malloc(len + 1)) != NULL) {
      memcpy(vsn, s, len);
      vsn[len] = '\0';
    }
  } else if (p->paths != NULL) {
    n = gsi_modcache_version(p->rt->mods, name, gsi_paths_path(p->paths), NULL, 0);
  }
  pthread_mutex_lock(&p->lk);
  snprintf(p->module, sizeof p->module, "%s", name);
  old = p->vsn;
  p->vsn = vsn;
  p->vsn_n = (uint32_t)n;
  p->server = 1;
  pthread_mutex_unlock(&p->lk);
  free(old);
  return 0;
}

/* code_reload(name, path, fn, file [, vsn]) -> version | nil: make fn
** (compiled from file) the current version of (name, path) in the
** runtime's module cache (genserver.code.reload). */
static int l_code_reload(lua_State *L) {
  gsi_rt *rt = rt_of(L);
  const char *name = luaL_checkstring(L, 1);
  const char *path = luaL_checkstring(L, 2);
  const char *file = luaL_checkstring(L, 4);
  const char *vsn = NULL;
  uint64_t v;
  luaL_checktype(L, 3, LUA_TFUNCTION);
  if (lua_type(L, 5) == LUA_TSTRING || lua_type(L, 5) == LUA_TNUMBER)
    vsn = lua_tostring(L, 5);
  lua_settop(L, 3);
  v = gsi_modcache_replace(L, rt->mods, name, path, file, vsn);
  if (v == 0) lua_pushnil(L);
  else lua_pushinteger(L, (lua_Integer)v);
  return 1;
}

/* code_version(name, path) -> version counter, vsn string | nil */
static int l_code_version(lua_State *L) {
  gsi_rt *rt = rt_of(L);
  const char *name = luaL_checkstring(L, 1);
  const char *path = luaL_checkstring(L, 2);
  char vsn[48];
  uint64_t v = gsi_modcache_version(rt->mods, name, path, vsn, sizeof vsn);
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
  gsi_proc *p = self_of(L);
  int o = luaL_checkoption(L, 1, NULL, orders);
  pthread_mutex_lock(&p->lk);
  p->stop_order = o == 1 ? GSI_STOP_FIRST : o == 2 ? GSI_STOP_LAST : GSI_STOP_NORMAL;
  pthread_mutex_unlock(&p->lk);
  return 0;
}

static int l_parent(lua_State *L) {
  gsi_proc *p = self_of(L);
  if (p->parent == 0) lua_pushnil(L);
  else gsi_pushpid(L, p->parent);
  return 1;
}

/* clock() -> seconds, monotonic (for time-outs and benchmarks) */
static int l_clock(lua_State *L) {
  lua_pushnumber(L, (lua_Number)gsi_now_ns() / 1e9);
  return 1;
}

static int l_error_mt(lua_State *L) {
  luaL_getmetatable(L, ERROR_MT);
  return 1;
}

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

static const luaL_Reg funcs[] = {
    {"self", l_self},           {"spawn", l_spawn},
    {"send", l_send},           {"cast", l_cast},
    {"receive", l_receive},     {"next", l_next},
    {"sleep", l_sleep},         {"call", l_call},
    {"request", l_request},     {"wait", l_wait},
    {"reply", l_reply},
    {"monitor", l_monitor},     {"demonitor", l_demonitor},
    {"link", l_link},           {"unlink", l_unlink},
    {"trap_exit", l_trap_exit}, {"exit", l_exit},
    {"register", l_register},   {"unregister", l_unregister},
    {"whereis", l_whereis},     {"registered", l_registered},
    {"send_after", l_send_after}, {"cancel_timer", l_cancel_timer},
    {"make_ref", l_make_ref},   {"is_pid", l_is_pid},
    {"is_ref", l_is_ref},       {"alive", l_alive},
    {"list", l_list},           {"info", l_info},
    {"configure", l_configure}, {"stats", l_stats},
    {"shutdown", l_shutdown},   {"set_module", l_set_module},
    {"parent", l_parent},       {"error_mt", l_error_mt},
    {"reason_mt", l_reason_mt}, {"stop_order", l_stop_order},
    {"clock", l_clock},         {"serve", gsi_serve},
    {"code_reload", l_code_reload}, {"code_version", l_code_version},
    {"send_interval", l_send_interval}, {"now", l_now},
    {NULL, NULL}};

const gsi_core_fns gsi_core = {l_next, l_reply,     l_self,       l_exit,
                               l_trap_exit, l_register, l_unregister,
                               l_set_module};

/* genserver.core's function `field` as a light C function, for a process
** state only (the core's codec hook checks that first: a host state's
** functions are closures over their runtime); NULL otherwise. */
static lua_CFunction core_builtin(lua_State *L, const char *module, size_t lm,
                                  const char *field, size_t lf) {
  static const char core[] = "genserver.core";
  (void)L; /* a process state: its caller, gsi_state_builtin, checked */
  if (lm != sizeof core - 1 || memcmp(module, core, lm) != 0) return NULL;
  for (const luaL_Reg *r = funcs; r->name != NULL; r++)
    if (strlen(r->name) == lf && memcmp(r->name, field, lf) == 0) return r->func;
  for (const luaL_Reg *r = gsi_io_funcs; r->name != NULL; r++)
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
  lua_createtable(L, 0, sizeof funcs / sizeof funcs[0] + 5);
  if (p != NULL) {
    luaL_setfuncs(L, funcs, 0); /* light functions: see state_proc */
    luaL_setfuncs(L, gsi_io_funcs, 0);
  } else {
    lua_pushvalue(L, -2); /* the record: upvalue 1 */
    luaL_setfuncs(L, funcs, 1);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, gsi_io_funcs, 1);
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
