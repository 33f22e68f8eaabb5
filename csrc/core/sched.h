/*
** sched.h - workers, the run queue protocol, turns and the watchdog's hold
** on them (sched.c, preempt.c, lcoro.c).
*/
#ifndef GS_SCHED_H
#define GS_SCHED_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "lua.h"

#include "core.h"

struct gsi_worker {
  gsi_rt *rt;
  int id;
  /* the worker thread's own scratch (gsi_scratch_get on that thread), set
  ** when it starts: the hot path reaches it without a thread-local lookup.
  ** Touched only by that thread. */
  struct gsi_scratch *scratch;
  pthread_t th;
  gsi_proc *_Atomic runnext; /* hand-off slot, only the owner pops it */
  /* The worker's own run queue (sched.c, "run queues"): popped by the
  ** thread that is this worker, pushed by it and by other workers handing
  ** off a process whose home it is while it is busy (idle == 0); lq_head,
  ** lq_tail and idle are guarded by lq_mu; lq_len is written under it
  ** and read without it. */
  pthread_mutex_t lq_mu;
  gsi_proc *lq_head, *lq_tail;
  _Atomic size_t lq_len;
  int idle; /* looking for work in the shared queue, spinning or parked */
  uint64_t gave; /* when it last gave a process away (sched.c); owner only */
  /* published for the watchdog (preempt.c) */
  gsi_proc *_Atomic cur;
  lua_State *_Atomic cur_co;
  _Atomic uint64_t since; /* start of the current turn (ns), 0 = idle */
  _Atomic int poked;      /* the watchdog signalled this turn */
  /* the ticket of the thread that is this worker now (sched.c); replaced
  ** by the watchdog only */
  struct gsi_ticket *_Atomic ticket;
};

/* A worker thread's hold on what it runs, for the watchdog (sched.c):
** `hold` is the process in its turn (its address), or that address | 1
** while its state closes (since `close_since`), or 0; GSI_ABANDONED once
** the watchdog gave up on it: the thread is then no worker any more. The
** thread and the watchdog change `hold` only by exchange / compare-and-
** swap, so exactly one of them decides what happens to the process. */
#define GSI_ABANDONED ((uintptr_t)2)
typedef struct gsi_ticket {
  _Atomic uintptr_t hold;
  _Atomic uint64_t close_since;
} gsi_ticket;
/* The calling worker thread holds p (closing: its state is being closed).
** gsi_unhold: 0, or 1 if the watchdog abandoned it meanwhile: the caller
** then finishes p on its own (reaps it, then counts itself out of
** rt->orphan_threads: prun.c) and the thread leaves; it is not a worker
** any more (gsi_current_worker is NULL). */
GSI_FUNC void gsi_hold(gsi_proc *p, int closing);
GSI_FUNC int gsi_unhold(void);
GSI_FUNC int gsi_orphaned(void);
/* The watchdog: a new thread for w (its old one was abandoned). */
GSI_FUNC int gsi_worker_replace(gsi_worker *w);

/* Make p runnable after a message was pushed to it. */
GSI_FUNC void gsi_notify(gsi_proc *p, int handoff);
GSI_FUNC int gsi_sched_start(gsi_rt *rt);
GSI_FUNC void gsi_sched_stop(gsi_rt *rt);
/* Queue p (QUEUED by the caller), new or yielded: on the shared queue
** while some worker is idle, else on the calling worker's own (sched.c,
** "run queues"). */
GSI_FUNC void gsi_enqueue(gsi_rt *rt, gsi_proc *p);
/* p runs next on the calling worker (its runnext), or is queued. */
GSI_FUNC void gsi_enqueue_next(gsi_rt *rt, gsi_proc *p);
/* Something else waits to run on the caller's worker or the shared queue. */
GSI_FUNC int gsi_runq_busy(gsi_rt *rt);
/* Processes waiting to run: queues and runnext slots (statistics). */
GSI_FUNC size_t gsi_runq_len(gsi_rt *rt);
GSI_FUNC gsi_worker *gsi_current_worker(void);
GSI_FUNC void gsi_turn_begin(gsi_worker *w, gsi_proc *p);
GSI_FUNC void gsi_turn_end(gsi_worker *w, gsi_proc *p);
/* The running Lua thread of the current turn changes (a coroutine of the
** process is resumed, or returns): the watchdog hooks that one. */
GSI_FUNC void gsi_turn_switch(gsi_worker *w, lua_State *running);
GSI_FUNC int gsi_open_coroutine(lua_State *L); /* lcoro.c */
/* p must stop (p->dying) but L cannot yield to its worker (inside a C
** call, or a nested coroutine): raise an error in L that Lua code cannot
** keep. Never returns. (preempt.c) */
GSI_FUNC void gsi_unwind(lua_State *L, gsi_proc *p);
/* p, running on this thread, has started dying: make sure the hook that
** ends it runs soon in whatever Lua thread of p runs now. */
GSI_FUNC void gsi_unwind_arm(gsi_proc *p);
/* The watchdog: w is stuck in a long turn; its queued processes go to the
** shared queue (sched.c). */
GSI_FUNC void gsi_sched_unstrand(gsi_worker *w);
GSI_FUNC int gsi_watchdog_start(gsi_rt *rt);
GSI_FUNC void gsi_watchdog_stop(gsi_rt *rt);

/* Foreign wait: block the OS thread until notified or deadline (ns since
** CLOCK_MONOTONIC epoch, 0 = forever). Returns 0 if notified, 1 on time-out. */
GSI_FUNC int gsi_foreign_wait(gsi_proc *p, uint64_t deadline);

#endif
