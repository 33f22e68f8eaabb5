/*
** preempt.c - the watchdog: a Lua loop that never blocks must not starve
** the other processes, and must still die when killed.
**
** A count hook left on permanently costs most of Lua's speed, so a hook is
** set only on a state that overran its slice, and only for that turn:
**   1. each worker publishes what it runs and since when (cur_co, since);
**   2. the watchdog thread wakes every tick and, for a worker whose current
**      turn is older than the slice, sends that worker's thread a signal;
**   3. the signal handler, on the worker's own thread (as lua.c does for
**      SIGINT: lua_sethook is meant to be callable from a signal handler),
**      sets a count hook on the running coroutine;
**   4. the hook yields the process back to its worker (or, if a kill or
**      another exit signal is pending, ends it), and the worker clears the
**      hook when the turn ends.
** A host that already handles SIGURG keeps its handler; its processes are
** then not preempted.
*/
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include "lauxlib.h"
#include "lua.h"

#include "internal.h"

#define PREEMPT_SIGNAL SIGURG
#define SLICE_NS 10000000u /* 10 ms */
#define TICK_NS 5000000u   /* 5 ms */
#define HOOK_COUNT 1000

static _Atomic int handler_installed;

/* The hook runs on the worker's thread, in the current turn, in whatever
** Lua thread of the process is running (see gsi_turn_switch): the body, or
** a coroutine the process resumed through lcoro.c's wrappers.
**
** A process that must stop (p->dying: killed, an exit signal it does not
** trap, max_heap) yields to its worker, which ends it. Where it cannot
** yield (inside a C call: a sort comparator, a gsub function, __tostring,
** __close, a message handler, a load reader, require; or in a nested
** coroutine) gsi_unwind raises an error instead, and keeps this hook on
** at every instruction: a pcall that catches the error is left at its
** next instruction by the next one, so each raise unwinds at least one
** protected call, until the body can yield. (A finalizer runs with hooks
** off: Lua's own rule; see the abandonment in prun.c for that case.) */
#define UNWIND_COUNT 1

/* A process that has ended for everyone stops where it is: the body
** yields with GSI_W_EXIT when it can, else the state is unwound
** uncatchably (gsi_unwind does not return). */
static void end_here(lua_State *L, gsi_proc *p) {
  if (L == p->L && lua_isyieldable(L)) {
    lua_sethook(L, NULL, 0, 0);
    p->want = GSI_W_EXIT;
    lua_yield(L, 0);
    return;
  }
  gsi_unwind(L, p);
}

static void preempt_hook(lua_State *L, lua_Debug *ar) {
  gsi_worker *w = gsi_current_worker();
  gsi_proc *p;
  (void)ar;
  if (w == NULL && gsi_orphaned()) {
    /* abandoned (see below), and back from where it was stuck: it has
    ** ended for everyone, so its code stops here, as a killed one's does */
    p = gsi_state_proc(L);
    end_here(L, p);
    return;
  }
  if (w == NULL || (p = atomic_load(&w->cur)) == NULL) {
    lua_sethook(L, NULL, 0, 0); /* stale: not in a turn any more */
    return;
  }
  p->unwind = 0; /* a refusal left over from the last raise */
  if (atomic_load_explicit(&p->sigpend, memory_order_relaxed)) gsi_drain(p);
  if (p->dying) {
    end_here(L, p);
    return;
  }
  if (!lua_isyieldable(L)) return; /* inside a C call: try again later */
  lua_sethook(L, NULL, 0, 0);
  if (L == p->L) {
    p->want = GSI_W_YIELD;
    lua_yield(L, 0);
    return;
  }
  /* a nested coroutine: the resume wrapper relays the yield up to the body */
  p->relay = 1;
  lua_yield(L, 0);
}

static void on_signal(int sig) {
  int saved = errno;
  gsi_worker *w = gsi_current_worker();
  (void)sig;
  if (w != NULL) {
    lua_State *co = atomic_load(&w->cur_co);
    if (co != NULL) lua_sethook(co, preempt_hook, LUA_MASKCOUNT, HOOK_COUNT);
  }
  errno = saved;
}

/* Install the handler unless the host has its own. */
static void install_handler(void) {
  struct sigaction old, sa;
  int expected = 0;
  if (!atomic_compare_exchange_strong(&handler_installed, &expected, 1)) return;
  if (sigaction(PREEMPT_SIGNAL, NULL, &old) != 0) return;
  if (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN) return;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(PREEMPT_SIGNAL, &sa, NULL);
}

/* Worker side: a turn of p begins / ends. */
void gsi_turn_begin(gsi_worker *w, gsi_proc *p) {
  atomic_store(&w->cur, p);
  atomic_store(&w->cur_co, p->L);
  atomic_store(&w->since, gsi_now_ns());
}

#if defined(__SANITIZE_THREAD__)
/* ThreadSanitizer holds a signal back until its thread calls an
** intercepted function, which a pure Lua loop never does. In such test
** builds the watchdog sets the hook itself, under hook_mu so that the state
** cannot be closed meanwhile (liblua is not instrumented, so TSan does not
** see the hook fields race with the running Lua code). */
static pthread_mutex_t hook_mu = PTHREAD_MUTEX_INITIALIZER;
#define POKE(w) poke_directly(w)
static void poke_directly(gsi_worker *w) {
  pthread_mutex_lock(&hook_mu);
  lua_State *co = atomic_load(&w->cur_co);
  if (co != NULL) lua_sethook(co, preempt_hook, LUA_MASKCOUNT, HOOK_COUNT);
  pthread_mutex_unlock(&hook_mu);
}
#define TURN_END_LOCK() pthread_mutex_lock(&hook_mu)
#define TURN_END_UNLOCK() pthread_mutex_unlock(&hook_mu)
#else
#define POKE(w) pthread_kill((w)->th, PREEMPT_SIGNAL)
#define TURN_END_LOCK() ((void)0)
#define TURN_END_UNLOCK() ((void)0)
#endif

/* Set the unwind hook on co (w runs a dying process). poked: the turn's
** end clears it, and the watchdog leaves it alone. */
static void arm_locked(gsi_worker *w, lua_State *co) {
  atomic_store(&w->poked, 1);
  if (co != NULL) lua_sethook(co, preempt_hook, LUA_MASKCOUNT, UNWIND_COUNT);
}

void gsi_turn_switch(gsi_worker *w, lua_State *running) {
  gsi_proc *p;
  if (gsi_orphaned()) { /* abandoned meanwhile: w is another thread's */
    if (running != NULL) lua_sethook(running, preempt_hook, LUA_MASKCOUNT, UNWIND_COUNT);
    return;
  }
  p = atomic_load(&w->cur);
  TURN_END_LOCK();
  atomic_store(&w->cur_co, running);
  /* a dying process's error left a coroutine: go on unwinding here */
  if (p != NULL && p->dying) arm_locked(w, running);
  TURN_END_UNLOCK();
}

void gsi_unwind_arm(gsi_proc *p) {
  gsi_worker *w = gsi_current_worker();
  if (w == NULL || atomic_load(&w->cur) != p) return; /* not in p's turn */
  TURN_END_LOCK();
  arm_locked(w, atomic_load(&w->cur_co));
  TURN_END_UNLOCK();
}

/* The error is a memory error, made by refusing the allocation of a
** userdata: Lua calls no message handler for one (an xpcall handler that
** loops is called with hooks off when an error is raised from a hook), and
** its message exists already. The hook stays on, at every instruction. */
void gsi_unwind(lua_State *L, gsi_proc *p) {
  gsi_worker *w = gsi_current_worker();
  TURN_END_LOCK();
  if (w != NULL && atomic_load(&w->cur) == p) atomic_store(&w->poked, 1);
  lua_sethook(L, preempt_hook, LUA_MASKCOUNT, UNWIND_COUNT);
  TURN_END_UNLOCK();
  p->unwind = 2; /* the allocation, and Lua's retry after its emergency GC */
  (void)lua_checkstack(L, 1);
  lua_newuserdatauv(L, 0, 0); /* raises */
  p->unwind = 0;              /* not reached; if it were: a plain error */
  luaL_error(L, "killed");
}

void gsi_turn_end(gsi_worker *w, gsi_proc *p) {
  int poked;
  TURN_END_LOCK();
  poked = atomic_exchange(&w->poked, 0);
  atomic_store(&w->since, 0);
  atomic_store(&w->cur_co, NULL);
  atomic_store(&w->cur, NULL);
  TURN_END_UNLOCK();
  /* a hook set for this turn must not fire in the next one */
  if (poked && p->L != NULL) lua_sethook(p->L, NULL, 0, 0);
}

/* Abandonment (DESIGN §1.2: dying cannot be blocked, a worker is never
** lost). A process killed (an untrappable exit signal) that still runs
** ABANDON_NS later, or a state whose close (finalizers, __close handlers)
** takes longer than that, is given up: Lua runs finalizers with hooks
** off, so a loop in one cannot be stopped in its thread. The watchdog
** takes the worker thread's hold (see gsi_ticket), ends the process as
** "killed" for everyone (gsi_proc_die: nothing if it did already), counts
** it, and starts a new thread as the worker. The old thread carries on with
** that process only, gives its slot back if its code ever returns, and
** leaves. */
#define ABANDON_NS 1000000000u /* 1 s */

static void abandon(gsi_rt *rt, gsi_worker *w, gsi_ticket *t, uintptr_t h,
                    uint64_t now) {
  gsi_proc *p = (gsi_proc *)(h & ~(uintptr_t)1);
  uint64_t start;
  if (h & 1) {
    start = atomic_load(&t->close_since);
  } else { /* killed, and in this turn for the whole bound */
    uint64_t turn = atomic_load(&w->since);
    start = atomic_load(&p->kill_at);
    if (start != 0 && turn > start) start = turn;
  }
  if (start == 0 || now < start + ABANDON_NS) return;
  /* counted first: the old thread may give the slot back at once */
  atomic_fetch_add(&rt->orphan_threads, 1);
  atomic_fetch_add(&rt->abandoned_live, 1);
  if (!atomic_compare_exchange_strong(&t->hold, &h, GSI_ABANDONED)) {
    atomic_fetch_sub(&rt->abandoned_live, 1); /* it moved on meanwhile */
    atomic_fetch_sub(&rt->orphan_threads, 1);
    return;
  }
  atomic_fetch_add(&rt->abandoned, 1);
  if (!(h & 1)) { /* killed while it ran: it has not died yet */
    gsi_buf b;
    gsi_buf_init(&b);
    gsi_encode_cstring(&b, "killed");
    gsi_proc_die(p, b.data, b.len, 0);
    gsi_buf_free(&b);
  }
  gsi_worker_replace(w);
}

static void *watchdog_main(void *arg) {
  gsi_rt *rt = arg;
  struct timespec tick = {0, TICK_NS};
  while (!atomic_load(&rt->stopping)) {
    uint64_t now = gsi_now_ns();
    for (int i = 0; i < rt->nworkers; i++) {
      gsi_worker *w = &rt->workers[i];
      gsi_ticket *t = atomic_load(&w->ticket);
      uintptr_t h = t != NULL ? atomic_load(&t->hold) : 0;
      uint64_t since;
      if (h > GSI_ABANDONED) abandon(rt, w, t, h, now);
      since = atomic_load(&w->since);
      if (since != 0 && now > since + SLICE_NS) {
        if (!atomic_load(&w->poked)) {
          atomic_store(&w->poked, 1);
          POKE(w);
        }
        gsi_sched_unstrand(w); /* whatever waits there runs elsewhere */
      }
    }
    nanosleep(&tick, NULL);
  }
  gsi_msg_thread_done(); /* abandon() may have sent messages */
  return NULL;
}

int gsi_watchdog_start(gsi_rt *rt) {
  install_handler();
  return pthread_create(&rt->watchdog, NULL, watchdog_main, rt) == 0 ? 0 : -1;
}

void gsi_watchdog_stop(gsi_rt *rt) { pthread_join(rt->watchdog, NULL); }
