/*
** prun.c - a process's life on a worker: its state set up from the spawn
** message (the body on the state's main thread, under a handler that
** keeps its crash), running it turn by turn (gsi_run), and turning its end
** into an exit reason for the death protocol (signal.c).
*/
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lualib.h"

#include "internal.h"
#include "spawnmsg.h"

/* Runs every CLOSE_COUNT instructions of the code lua_close runs: a
** killed body's pending <close> handlers (Lua closes a suspended main
** thread's to-be-closed variables) and finalizers. They run outside any
** turn, where the watchdog cannot preempt them: one that runs this long
** is stopped with an error, which lua_close reports and goes past. */
#define CLOSE_COUNT 1000000
static void close_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  luaL_error(L, "genserver: cleanup code ran too long after the process ended");
}

/* Close p's state and free its arena. */
static void close_state(gsi_proc *p) {
  gsi_heap_closing(p);
  p->unwind = 0;
  if (p->L != NULL) {
    lua_sethook(p->L, close_hook, LUA_MASKCOUNT, CLOSE_COUNT);
    lua_close(p->L);
  }
  gsi_heap_free(p);
  p->L = NULL;
  gsi_paths_put(p->rt->mods, p->paths);
  p->paths = NULL;
  gsi_msg_free(p->held); /* an answer whose decoding raised */
  p->held = NULL;
}


/* --------------------------------------------------------- spawn boot */

/* Registry keys: the last error gsi_crash_msgh saw, and the traceback
** it took there. */
static const char TBERR_KEY = 'e', TB_KEY = 't';

/* The runtime's own frames at the bottom of a traceback (the body's boot,
** the gen_server loop) say nothing to the user: cut them. */
static void cut_runtime_frames(lua_State *L) {
  static const char *const tails[] = {"\n\t[C]: in ?",
                                      "\n\t[C]: in function 'genserver.core.serve'"};
  size_t len;
  const char *s = lua_tolstring(L, -1, &len), *end = s + len;
  for (int cut = 1; cut;) {
    cut = 0;
    for (size_t i = 0; i < sizeof tails / sizeof tails[0]; i++) {
      size_t n = strlen(tails[i]);
      if ((size_t)(end - s) > n && memcmp(end - n, tails[i], n) == 0) end -= n, cut = 1;
    }
  }
  if ((size_t)(end - s) != len) {
    lua_pushlstring(L, s, (size_t)(end - s));
    lua_replace(L, -2);
  }
}

int gsi_crash_msgh(lua_State *L) {
  lua_settop(L, 1);
  lua_pushvalue(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &TBERR_KEY);
  luaL_traceback(L, L, NULL, 1); /* from the function that raised */
  cut_runtime_frames(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &TB_KEY);
  return 1;
}

int gsi_crash_traceback(lua_State *L, int idx) {
  int top = lua_gettop(L);
  idx = lua_absindex(L, idx);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &TBERR_KEY);
  if (lua_rawequal(L, -1, idx) && lua_rawgetp(L, LUA_REGISTRYINDEX, &TB_KEY) == LUA_TSTRING) {
    lua_remove(L, -2);
    return 1;
  }
  lua_settop(L, top);
  return 0;
}

/* The body proper: require the module if the body is a name, then call
** it with the arguments (1 = { n = N, body, arg1, ..., argN }). */
static int body_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return lua_gettop(L) - 1;
}

static int run_body(lua_State *L) {
  lua_Integer n;
  luaL_checktype(L, 1, LUA_TTABLE);
  n = (lua_getfield(L, 1, "n"), lua_tointeger(L, -1));
  lua_settop(L, 1);
  lua_rawgeti(L, 1, 1);
  if (lua_type(L, -1) == LUA_TSTRING) {
    lua_pushcfunction(L, gsi_require);
    lua_insert(L, -2);
    lua_call(L, 1, 1);
    if (lua_type(L, -1) == LUA_TTABLE) lua_getfield(L, -1, "main"), lua_remove(L, -2);
    if (lua_type(L, -1) != LUA_TFUNCTION)
      return luaL_error(L, "spawn: module '%s' is not a function and has no main",
                        (lua_rawgeti(L, 1, 1), lua_tostring(L, -1)));
  }
  if (n < 0 || n > 250) n = 0;
  luaL_checkstack(L, (int)n + 2, "too many spawn arguments");
  for (lua_Integer i = 1; i <= n; i++) lua_rawgeti(L, 1, i + 1);
  lua_callk(L, (int)n, LUA_MULTRET, 0, body_k);
  return body_k(L, LUA_OK, 0);
}

/* The process body runs on the state's main thread (no coroutine of its
** own: ~0.9 KB less per process), under a protected call, so that a crash
** ends it normally with its reason on top (p->crashed) and the state
** stays usable for finish(). boot_done also continues it after yields. */
static int boot_done(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  if (status != LUA_OK && status != LUA_YIELD) {
    gsi_proc *p = gsi_state_proc(L);
    p->crashed = 1; /* the error on top; see make_reason */
    /* reported as Erlang does for a process that crashed; not a kill,
    ** max_heap or out of memory (finish() gives those their reasons) */
    if (status == LUA_ERRRUN && !p->dying && !p->heap_exceeded &&
        p->rt->face.report_crash != NULL)
      p->rt->face.report_crash(L, -1);
    return 1;
  }
  return lua_gettop(L) - 1; /* above the handler */
}

static int boot(lua_State *L) {
  lua_pushcfunction(L, gsi_crash_msgh); /* light: allocates nothing */
  lua_insert(L, 1);
  lua_pushcfunction(L, run_body);
  lua_insert(L, 2);
  return boot_done(L, lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 1, 0, boot_done), 0);
}

static int boot_fail(lua_State *L) {
  return luaL_error(L, "spawn: cannot receive the body: %s", lua_tostring(L, 1));
}

/* The protected part of start_state (1 = the process): libraries, paths,
** the host's hook, the body and its arguments. Any error here, a memory
** error included, is returned to start_state instead of reaching Lua's
** panic handler. Returns boot and the decoded arguments. */
static int setup_state(lua_State *L) {
  gsi_proc *p = lua_touserdata(L, 1);
  gsi_msg *sm = p->spawn_msg;
  gsi_spawnmsg m; /* its layout: spawnmsg.h */
  /* a gen_server's boot (serve, require, init: nested C calls that each
  ** reserve LUA_MINSTACK slots) takes ~85 slots of the main thread's 45.
  ** Growing now, early in the boot arena, lets the old stack's block be
  ** reused by what follows instead of becoming a hole late in the boot. */
  if (p->start_ref != 0) lua_checkstack(L, 90);
  gsi_open_libs(L, p->sandbox);
  if (gsi_spawnmsg_read(GSI_MSG_DATA(sm), sm->len, &m) != 0)
    return luaL_error(L, "malformed spawn message");
  /* kept outside the state, shared with the processes that have the same
  ** paths, until the package library is opened (if ever) */
  p->paths = gsi_paths_get(p->rt->mods, m.path, m.plen, m.cpath, m.clen);
  if (p->paths == NULL) return luaL_error(L, "not enough memory");
  if (p->rt->face.state_hook) p->rt->face.state_hook(L, p->rt->face.ud);
  luaL_checkstack(L, 4, "spawn");
  lua_pushcfunction(L, boot);
  if (gsi_decode_raw(L, m.body, m.blen, gsi_limits_of(p)) != 0) {
    lua_pushcfunction(L, boot_fail); /* raises the decode error */
    lua_replace(L, -3);
  }
  return 2; /* the body and its argument, resumed on this thread */
}

/* A new state for p with its body on the main thread, ready to resume
** with *nargs.
** Returns 0, or -1 with p->L possibly set (closed by the caller) and, if
** the setup failed with a string error, that error at the top of p->L. */
static int start_state(gsi_proc *p, int *nargs) {
  lua_State *L;
  L = gsi_heap_newstate(p);
  if (L == NULL) return -1;
  p->L = L;
  /* The one test of a state's process is gsi_state_proc (its allocator's
  ** datum). The extra space holds it too, for code that runs in process
  ** states only (the gen_server loop, lserver.c) through gen/bif.h's
  ** gsi_bif_extra_proc: set before any thread is created (threads copy it). */
  *(gsi_proc **)lua_getextraspace(L) = p;
  /* everything allocated while setting up is live: collecting meanwhile
  ** is wasted work (restarted below, before any user code runs) */
  lua_gc(L, LUA_GCSTOP);
  lua_pushcfunction(L, setup_state); /* light: pushing allocates nothing */
  lua_pushlightuserdata(L, p);
  p->crashed = 0;
  if (lua_pcall(L, 1, 2, 0) != LUA_OK) return -1;
  gsi_msg_free(p->spawn_msg);
  p->spawn_msg = NULL;
  lua_gc(L, LUA_GCRESTART);
  *nargs = 1;
  return 0;
}

/* ------------------------------------------------------------ exiting */

/* Codec limits for decoding into p's state: a sandbox takes no bytecode,
** but modules and their C functions by name. */
const gsi_codec_limits *gsi_limits_of(gsi_proc *p) {
  static _Thread_local gsi_codec_limits sandboxed;
  if (!p->sandbox) return gsi_rt_limits(p->rt);
  sandboxed = *gsi_rt_limits(p->rt);
  sandboxed.allow_functions = GSI_FN_NAMES;
  return &sandboxed;
}

int gsi_check_code_to(lua_State *L, int idx, const char *what, gsi_rt *rt,
                      uint64_t to, const gsi_buf *b) {
  gsi_codec_limits lim;
  gsi_buf scratch;
  int rc, top = lua_gettop(L);
  if (b->len == 0 || !(b->data[0] & GSI_WIRE_CODE) || !gsi_pid_sandboxed(rt, to))
    return 0;
  /* encode it again as for a sandbox, which fails at the function with
  ** its path (the cold path: only for a function sent to a sandbox) */
  lim = *gsi_rt_limits(rt);
  lim.allow_functions = GSI_FN_NAMES;
  gsi_buf_init(&scratch);
  rc = gsi_encode(L, idx, what, &lim, &scratch);
  gsi_buf_free(&scratch);
  if (rc == 0 || lua_gettop(L) == top)
    lua_pushliteral(L, "cannot send a function to a sandboxed process");
  return -1;
}


/* The end of a process that has a state (DESIGN §1.2: dying cannot be
** blocked): first what others see (DOWN, EXIT, its name released), then
** its state is closed, which runs finalizers and pending __close handlers
** that may never end. The watchdog abandons a close that takes longer
** than its bound (preempt.c): this thread then leaves when (if ever) the
** close returns, and a new thread is the worker. */
static void end_process(gsi_proc *p, const void *reason, size_t len, int normal) {
  gsi_proc_die(p, reason, len, normal);
  gsi_hold(p, 1);
  close_state(p);
  if (gsi_unhold()) {
    gsi_rt *rt = p->rt;
    atomic_fetch_sub(&rt->abandoned_live, 1);
    gsi_proc_reap(p);
    atomic_fetch_sub(&rt->orphan_threads, 1); /* the last touch of rt */
    return;
  }
  gsi_proc_reap(p);
}

/* Protected (1 = the reason_ctx, 2 = the crash value): the reason of a
** body that crashed, encoded. A reason that cannot be sent is replaced
** by its tostring(). */
typedef struct reason_ctx {
  gsi_proc *p;
  gsi_buf b;
} reason_ctx;

static int make_reason(lua_State *L) {
  reason_ctx *c = lua_touserdata(L, 1);
  const gsi_codec_limits *lim = gsi_rt_limits(c->p->rt);
  /* { error = message, traceback } with the traceback taken where this
  ** error was raised (gsi_crash_msgh; none for a memory error). A string or
  ** number error becomes its text, a table crosses as it is, anything
  ** else becomes its tostring(). */
  lua_createtable(L, 0, 2);
  if (lua_type(L, 2) == LUA_TSTRING || lua_type(L, 2) == LUA_TNUMBER)
    lua_pushstring(L, lua_tostring(L, 2));
  else if (lua_type(L, 2) == LUA_TTABLE)
    lua_pushvalue(L, 2);
  else
    luaL_tolstring(L, 2, NULL);
  lua_setfield(L, 3, "error");
  if (!gsi_crash_traceback(L, 2)) lua_pushliteral(L, "stack traceback:\n\t(not available)");
  lua_setfield(L, 3, "traceback");
  lua_settop(L, 3);
  lua_replace(L, 2);
  if (gsi_encode(L, 2, "exit reason", lim, &c->b) != 0) {
    lua_pop(L, 1); /* the codec's error */
    luaL_tolstring(L, 2, NULL);
    c->b.len = 0;
    if (gsi_encode(L, -1, "exit reason", lim, &c->b) != 0) c->b.len = 0;
  }
  return 0;
}

/* The process is done: compute the reason, close the state, then run the
** death protocol. Nothing here may raise: a crash's reason is encoded
** under lua_pcall (the body ended normally: boot caught the crash), the
** others in C. */
static void finish(gsi_proc *p, int st) {
  gsi_msg *rm;
  int normal = 0;
  if (p->dying && p->exit_msg != NULL && !p->heap_exceeded &&
      !(p->exit_msg->flags & GSI_XF_KILL)) {
    rm = p->exit_msg; /* killed by a signal, or exit(reason) */
    p->exit_msg = NULL;
    normal = (rm->flags & GSI_XF_NORMAL) != 0;
  } else {
    gsi_buf b;
    gsi_buf_init(&b);
    if (p->heap_exceeded) {
      gsi_encode_field_int(&b, "max_heap", (lua_Integer)p->max_heap);
    } else if (p->dying) {
      gsi_encode_cstring(&b, "killed");
    } else if (st == LUA_OK && !p->crashed) {
      /* the body returned: "normal", with nothing left to fail */
      normal = gsi_encode_cstring(&b, "normal") == 0;
    } else if (st == LUA_OK) {
      reason_ctx c;
      c.p = p;
      gsi_buf_init(&c.b);
      lua_pushcfunction(p->L, make_reason); /* light: allocates nothing */
      lua_pushlightuserdata(p->L, &c);
      lua_pushvalue(p->L, -3); /* the crash value, boot's result */
      if (lua_pcall(p->L, 2, 0, 0) != LUA_OK) c.b.len = 0;
      b = c.b;
    } else if (lua_type(p->L, -1) == LUA_TSTRING) {
      /* an error outside boot's protection (the thread is dead: no calls
      ** on it any more); a string error reads without allocating */
      gsi_encode_cstring(&b, lua_tostring(p->L, -1));
    }
    if (b.len == 0) {
      normal = 0;
      gsi_encode_cstring(&b, "out of memory");
    }
    rm = gsi_msg_new(GSI_M_EXIT, 0, 0, b.data, b.len);
    gsi_buf_free(&b);
  }
  if (rm == NULL) end_process(p, NULL, 0, normal);
  else {
    end_process(p, GSI_MSG_DATA(rm), rm->len, normal);
    gsi_msg_free(rm);
  }
}

static void cancel_wait_timer(gsi_proc *p) {
  if (p->wait_timer != 0) {
    gsi_timer_drop(p->rt, p->wait_timer);
    p->wait_timer = 0;
  }
}

/* The watchdog abandoned p while it ran (killed, it did not end within
** the bound: a finalizer that loops, where no hook runs) and has run
** gsi_proc_die for it. The code returned after all: close the state and
** give the slot back; this thread then leaves (see worker_main). Nothing
** here touches the worker. */
static void abandoned_end(gsi_proc *p) {
  gsi_rt *rt = p->rt;
  if (p->ar_open) gsi_heap_booted(p);
  close_state(p);
  atomic_fetch_sub(&rt->abandoned_live, 1);
  gsi_proc_reap(p);
  atomic_fetch_sub(&rt->orphan_threads, 1); /* the last touch of rt */
}

void gsi_run(gsi_worker *w, gsi_proc *p) {
  int nargs = 0;
  atomic_store(&p->sched, GSI_RUNNING);
  p->budget = atomic_load_explicit(&p->rt->budget, memory_order_relaxed);
  p->nest = 0;
  if (p->L == NULL && start_state(p, &nargs) != 0) {
    /* the state could not be set up: a cap too small for the state itself,
    ** out of memory, or the host's hook failed */
    gsi_buf b;
    gsi_buf_init(&b);
    if (p->heap_exceeded)
      gsi_encode_field_int(&b, "max_heap", (lua_Integer)p->max_heap);
    else if (p->L != NULL && lua_type(p->L, -1) == LUA_TSTRING)
      gsi_encode_cstring(&b, lua_tostring(p->L, -1));
    else if (p->max_heap != 0 && p->L == NULL)
      gsi_encode_field_int(&b, "max_heap", (lua_Integer)p->max_heap);
    else
      gsi_encode_cstring(&b, "out of memory");
    end_process(p, b.data, b.len, 0);
    gsi_buf_free(&b);
    return;
  }
  for (;;) {
    int nres = 0;
    int st;
    p->want = GSI_W_NONE;
    if (p->dying) {
      cancel_wait_timer(p);
      finish(p, LUA_OK);
      return;
    }
    gsi_turn_begin(w, p);
    gsi_hold(p, 0);
    st = lua_resume(p->L, NULL, nargs, &nres);
    if (gsi_unhold()) { /* abandoned by the watchdog: w is not ours */
      abandoned_end(p);
      return;
    }
    gsi_turn_end(w, p);
    if (p->ar_open) gsi_heap_booted(p); /* the first turn ends the boot */
    nargs = 0;
    if (st != LUA_YIELD || p->dying || p->want == GSI_W_EXIT) {
      cancel_wait_timer(p);
      finish(p, st);
      return;
    }
    lua_pop(p->L, nres);
    if (p->want == GSI_W_WAIT) {
      int s = GSI_RUNNING;
      if (atomic_compare_exchange_strong(&p->sched, &s, GSI_IDLE)) return;
      atomic_store(&p->sched, GSI_RUNNING); /* NOTIFIED: look again */
      continue;
    }
    /* a voluntary yield (budget, preemption, a bare coroutine.yield) */
    atomic_store(&p->sched, GSI_QUEUED);
    gsi_enqueue(p->rt, p);
    return;
  }
}

