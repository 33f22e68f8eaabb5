/*
** proc.h - the process slot (gsi_proc) and the process table's protocol:
** allocation, pinning by pid, delivery, id vectors (proc.c).
**
** Ownership in one paragraph: a process slot lives in the process table
** for the life of the runtime and is reused by later processes; other
** threads name a process only by its pid (index + generation) and reach
** the slot through gsi_pin(), which fails for a stale pid. Fields are
** grouped below by who may touch them: "shared" fields are atomics,
** "locked" fields are guarded by proc->lk, and "owner" fields are touched
** only by the thread currently running the process (a worker, or the
** foreign OS thread that is the process). One more class, marked "owner,
** under lk": fields only the owner writes (or the spawner, before the
** process is published), always under lk, because another thread reads
** them (info(), the shutdown order) -- under lk, never without; the owner
** itself reads them without lk. The lock order: rt.h, at gsi_rt.
*/
#ifndef GS_PROC_H
#define GS_PROC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "lua.h"

#include "core.h"
#include "msg.h"

typedef struct gsi_paths gsi_paths;
typedef struct gsi_fcache gsi_fcache;

typedef struct gsi_idvec {
  uint64_t *v; /* pairs for monitors: (ref, pid) */
  size_t n, cap;
} gsi_idvec;

/* A pending request (call, send_request, start): replies and DOWNs with
** this ref are kept; anything else with a ref is a late answer, dropped. */
typedef struct gsi_pending {
  uint64_t ref;
  uint64_t target; /* monitored pid, for demonitor */
  gsi_msg *answer; /* arrived answer, also linked in the saved list */
} gsi_pending;

typedef struct gsi_foreign {
  pthread_mutex_t mu;
  pthread_cond_t cv;
} gsi_foreign;

/* The slot is laid out in cache lines (the chunks are 64-byte aligned,
** GSI_LINE): a line that another thread writes on every message is never
** one that the owner writes on every message. This machine's two CPUs
** take ~490 ns for a cache-line round trip, so this is worth more than a
** few bytes; everything else is packed (flags as bytes, the cold fields
** at the end). Checked at compile time below and by spec/c/slot_test.c. */
#define GSI_LINE 64

struct gsi_proc {
  /* line 0 -- shared, what a sender touches on every message (gsi_pin,
  ** gsi_deliver, gsi_notify): the atomics it writes and the read-only
  ** fields it reads, then mbox.head as the line's last word. */
  _Alignas(GSI_LINE) _Atomic uint32_t gen; /* generation of the current incarnation */
  _Atomic uint32_t pins; /* senders inside gsi_pin..gsi_unpin */
  _Atomic int alive;     /* accepts messages; see gsi_pin */
  _Atomic int sched;     /* GSI_IDLE.. */
  _Atomic int sigpend;   /* an exit signal was pushed: drain soon */
  /* set before the process is published (alive = 1), then read-only */
  uint32_t mbox_limit;   /* 0 = unbounded */
  _Atomic uint64_t msgs_in; /* pushed to this mailbox (by senders) */
  gsi_rt *rt;
  gsi_foreign *fg; /* non-NULL for a foreign (OS thread) process; set
                      before it is published (read by gsi_notify) */
  uint32_t index;
  uint8_t overflow;    /* GSI_OVF_* */
  uint8_t sandbox;     /* no io/os/debug/loadlib, text chunks only */
  uint8_t exiting;     /* locked (see lk): once set nobody adds a link or
                          monitor; read by every adder, written once */
  _Atomic uint8_t stop_sent; /* program end (runtime.c): set by the
                                stopping thread once it signalled it */
  /* the queue: head ends line 0 (senders exchange it), tail and the stub
  ** fill line 1 (the owner pops; a sender writes stub.next only when it
  ** pushes on an empty queue) -- msg.h: gsi_mpsc has no padding of its
  ** own, its container places it */
  gsi_mpsc mbox;

  /* line 2 -- owner, every message: the published counters (relaxed
  ** stores read by senders only for bounded mailboxes and by info()) and
  ** the saved list */
  _Alignas(GSI_LINE) _Atomic size_t mem_pub; /* memory of its state, published by owner */
  _Atomic uint64_t drained_pub; /* published by owner: moved out of mbox */
  _Atomic size_t svlen_pub;     /* published by owner: saved list length */
  size_t mem;
  lua_State *L;  /* the process state (NULL for foreign processes); the
                    body runs on its main thread, resumed like a coroutine */
  gsi_msg *sv_head, *sv_tail; /* saved messages, in arrival order */
  size_t sv_len;

  /* line 3 -- owner: requests and the gen_server loop's reply */
  gsi_pending *pend;
  uint32_t npend, cappend;
  const void *from_tab; /* the last from table core.next pushed (a pointer
                           only compared, never followed), and its ids */
  uint64_t from_pid, from_ref;
  gsi_fcache *fc;      /* freed small blocks kept for reuse (palloc.c) */
  gsi_msg *held;       /* an answer being decoded (freed if that raised) */

  /* line 4 -- owner */
  gsi_idvec mon_out; /* (ref, target) monitors I hold */
  uint64_t wait_timer; /* timer armed for the current wait, or 0 */
  uint64_t deadline;   /* of the current wait (ns), 0 = none */
  /* introspection (process.info, sys.statistics): written by the owner
  ** only (a relaxed load + store, no read-modify-write), read by anyone */
  _Atomic uint64_t msgs_out;   /* messages this process sent */
  _Atomic uint64_t reductions; /* gen_server callbacks run */
  int budget;          /* messages left in this turn */
  int send_budget;     /* sends left before a voluntary yield */

  /* line 5 -- owner: flags, then what the boot and the end use */
  uint8_t want;        /* GSI_W_* : meaning of the last yield */
  uint8_t dying;       /* killed by a signal: stop at the next yield */
  uint8_t timed_out;
  uint8_t in_match;    /* a receive match function is running */
  uint8_t relay;       /* a nested coroutine was preempted (lcoro.c) */
  uint8_t crashed;     /* the body raised: its error is on top of L */
  uint8_t nest;        /* messages next returned in this turn since the last
                          yield (lreceive.c: NEXT_NEST_MAX); owner only */
  _Atomic uint8_t current; /* the gen_server callback running (GSI_CB_*,
                              0 = none): written by the owner, read by
                              info() (relaxed) */
  uint8_t sflags;      /* the gen_server loop's sys state (GSI_SF_*), so
                          that it costs a message no Lua lookups; owner */
  uint8_t ar_open;     /* the boot arena is open (palloc.c) */
  uint8_t heap_refused;  /* the last growth was refused */
  uint8_t heap_exceeded; /* refused twice in a row: the process must end */
  uint8_t unwind;      /* growth allocations to refuse, so that the unwind
                          hook raises a memory error (preempt.c) */
  uint8_t trap_exit;   /* owner, under lk (info() reads it) */
  uint8_t server;      /* a gen_server (it called set_module); owner,
                          under lk */
  /* program end (runtime.c, gsi_rt_stop_all): stop_order (GSI_STOP_*) is
  ** owner, under lk (the stopping thread reads it); born (below) is the
  ** start order, set by gsi_proc_alloc under the table lock before the
  ** process is published */
  uint8_t stop_order;
  uint32_t vsn_n;      /* the module's cache counter when it has no vsn
                          field, or 0; for info(); owner, under lk */
  _Atomic int died;    /* gsi_proc_die ran (signal.c) */
  gsi_msg *spawn_msg; /* body + args, consumed by the first run */
  gsi_msg *exit_msg;  /* encoded reason when dying by signal */
  gsi_paths *paths;    /* package.path/cpath it was started with */
  /* boot arena (palloc.c): [ar_base, ar_end) holds what the state
  ** allocated while booting (its bump pointer lives in the booting
  ** thread while ar_open is set, until the end of the first turn) */
  char *ar_base, *ar_end;

  /* cold: set by the spawner before the process is published, or used
  ** only by the boot, the heap cap, the end and introspection */
  uint64_t parent;
  uint64_t start_ref;  /* a gen_server's start request: init's outcome goes to
                          (parent, start_ref); set by the spawner */
  size_t max_heap;     /* bytes its state may use, 0 = no cap; enforced
                          until heap_exceeded (then lifted, to die) */
  uint64_t fail_at;    /* fault injection: fail growth allocation number
                          fail_at (and Lua's retry after it), 0 = off; set
                          by the spawner, then counted down (palloc.c) */
  uint64_t born;
  char *vsn;           /* the module's vsn field as a string (malloc), or
                          NULL; for info(); owner, under lk */
  _Atomic uint64_t overflowed; /* messages the limit refused (senders) */
  _Atomic uint64_t kill_at; /* when an untrappable exit signal was pushed
                               (ns; 0 = none): the watchdog abandons a
                               process that does not end soon after */
  gsi_proc *rq_next;   /* run queue link, guarded by the run queue lock */
  uint64_t rq_since;   /* when it was put on a worker's own queue (ns),
                          guarded by that queue's lock (sched.c) */
  _Atomic int home;    /* 1 + the worker that ran it last, 0 = none: a hint
                          (sched.c), written by that worker only when it
                          changes, read by whoever queues it (on this line,
                          which it writes anyway: rq_next) */
  gsi_proc *free_next; /* free list link, guarded by the table lock */
  char module[64];     /* for info()/crash reports; owner, under lk */

  /* locked: guarded by lk (lock order: rt.h -- taken after the registry's
  ** names->mu, never with another process's lk or any other lock held
  ** under it). Invariant: once `exiting` is set nobody adds a
  ** link or monitor, so the exit path can take the lists and let go.
  ** Another process takes lk and writes monitors on every call it makes
  ** to this one (its request monitors the server): last, after the cold
  ** fields, away from the owner's lines. */
  pthread_mutex_t lk;
  gsi_idvec monitors; /* (ref, watcher pid) pairs: monitors on me */
  gsi_idvec links;    /* pids */
  char *name;         /* registered name; also guarded by registry lock */
  gsi_idvec *mon_user; /* the monitors of mon_out made by monitor() or
                          spawn_monitor (not a request's), for info():
                          allocated on first use; owner, under lk */
};

/* The layout's promises (see GSI_LINE): what senders write and what the
** owner writes on every message are on different lines. */
_Static_assert(offsetof(struct gsi_proc, mbox) + offsetof(gsi_mpsc, head) < GSI_LINE,
               "mbox.head on the senders' line");
_Static_assert((offsetof(struct gsi_proc, mbox) + offsetof(gsi_mpsc, tail)) / GSI_LINE == 1,
               "mbox.tail on the owner's first line");
_Static_assert(offsetof(struct gsi_proc, msgs_in) < GSI_LINE &&
               offsetof(struct gsi_proc, fg) < GSI_LINE &&
               offsetof(struct gsi_proc, exiting) < GSI_LINE,
               "what a sender reads or writes on line 0");
_Static_assert(offsetof(struct gsi_proc, mem_pub) == 2 * GSI_LINE,
               "the owner's counters after the queue");
_Static_assert(offsetof(struct gsi_proc, lk) >= 7 * GSI_LINE,
               "lk and monitors (written by callers) after the owner's lines");

/* Count one on an owner-written counter (msgs_out, reductions): only the
** owner writes it, so a relaxed load + store is enough; readers may see
** a slightly old value, never a torn one. */
static inline void gsi_count(_Atomic uint64_t *c) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                        memory_order_relaxed);
}

GSI_FUNC gsi_proc *gsi_proc_alloc(gsi_rt *rt); /* slot with alive=0 */
GSI_FUNC void gsi_proc_release(gsi_proc *p);   /* back to the free list */
GSI_FUNC gsi_proc *gsi_proc_at(gsi_rt *rt, uint32_t index);
GSI_FUNC uint64_t gsi_proc_pid(gsi_proc *p);

/* Pin a live process so a message can be pushed: returns NULL for a stale
** or dead pid. Pair every success with gsi_unpin. */
GSI_FUNC gsi_proc *gsi_pin(gsi_rt *rt, uint64_t pid);
GSI_FUNC void gsi_unpin(gsi_proc *p);

/* Deliver m to pid (takes ownership of m; frees it if the pid is dead).
** handoff: let the receiver run next on this worker. Returns GSI_OK if
** delivered (or dropped by a "drop"/"kill" bounded mailbox), GSI_ENOPROC
** if the pid is dead, GSI_EFULL if a "reject" bounded mailbox refused it. */
GSI_FUNC int gsi_deliver(gsi_rt *rt, uint64_t pid, gsi_msg *m, int handoff);
/* Is pid a live sandboxed process? (Its flag is set before it is
** published and read-only after, as mbox_limit.) */
GSI_FUNC int gsi_pid_sandboxed(gsi_rt *rt, uint64_t pid);

/* GSI_OK, or GSI_ENOMEM (v unchanged). */
GSI_FUNC int gsi_idvec_push(gsi_idvec *v, uint64_t a);
/* Push the pair (a, b), both or neither (a lone first id would put the
** pairs out of step): GSI_OK, or GSI_ENOMEM (v unchanged). */
GSI_FUNC int gsi_idvec_push_pair(gsi_idvec *v, uint64_t a, uint64_t b);
GSI_FUNC int gsi_idvec_remove(gsi_idvec *v, uint64_t a); /* one id */
GSI_FUNC int gsi_idvec_remove_pair(gsi_idvec *v, uint64_t a); /* pair with first = a */
GSI_FUNC int gsi_idvec_has(const gsi_idvec *v, uint64_t a);
GSI_FUNC void gsi_idvec_free(gsi_idvec *v);
/* p's list of user monitors (mon_user), under p->lk: add (ref, target),
** remove ref's pair. */
GSI_FUNC void gsi_mon_user_add(gsi_proc *p, uint64_t ref, uint64_t target);
GSI_FUNC void gsi_mon_user_remove(gsi_proc *p, uint64_t ref);
/* Free mon_user and vsn (the process is gone, or the runtime). */
GSI_FUNC void gsi_proc_introspection_free(gsi_proc *p);

#endif
