/*
** internal.h - structures and protocols shared by the C core's files.
**
** Nothing here is public: every cross-file name is gsi_ and hidden. The
** public face is genserver.h.
**
** Ownership in one paragraph: a process slot (gsi_proc) lives in the
** process table for the life of the runtime and is reused by later
** processes; other threads name a process only by its pid (index +
** generation) and reach the slot through gsi_pin(), which fails for a stale
** pid. Fields are grouped below by who may touch them: "shared" fields are
** atomics, "locked" fields are guarded by proc->lk, and "owner" fields are
** touched only by the thread currently running the process (a worker, or
** the foreign OS thread that is the process).
*/
#ifndef GS_INTERNAL_H
#define GS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "lua.h"

#include "codec.h"
#include "core.h"

typedef struct gsi_modcache gsi_modcache;
typedef struct gsi_paths gsi_paths;
typedef struct gsi_fcache gsi_fcache;

/* --------------------------------------------------------------- hash */

/* FNV-1a over n bytes, continuing from h (start with GSI_HASH_SEED): the
** one string hash of the core (names, module cache, boot hints). */
#define GSI_HASH_SEED 14695981039346656037u
static inline uint64_t gsi_hash(uint64_t h, const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211u;
  return h;
}

/* ---------------------------------------------------------------- ids */

#define GSI_PID(index, gen) (((uint64_t)(gen) << 32) | (uint32_t)(index))
#define GSI_PID_INDEX(pid) ((uint32_t)((pid) & 0xffffffffu))
#define GSI_PID_GEN(pid) ((uint32_t)((pid) >> 32))

/* Timer ids are refs with the top bit set, so they never collide with
** make_ref values (a plain counter). */
#define GSI_TIMER_BIT ((uint64_t)1 << 63)

#define GSI_NAME_MAX 255 /* bytes in a registered name */

/* ----------------------------------------------------------- messages */

enum {
  GSI_M_USER = 1, /* process.send */
  GSI_M_CALL,     /* gen_server call: from + ref */
  GSI_M_CAST,     /* gen_server cast */
  GSI_M_REPLY,    /* answer to a pending ref */
  GSI_M_DOWN,     /* monitor fired: from = dead pid, ref = monitor ref */
  GSI_M_EXIT,     /* exit signal: from = sender, flags below */
  GSI_M_TIMEOUT,  /* a wait timer fired: ref = timer id */
  GSI_M_SYSTEM    /* sys / stop requests: from + ref */
};

/* flags of GSI_M_EXIT */
#define GSI_XF_LINK 1   /* sent because a linked process died */
#define GSI_XF_KILL 2   /* reason is "kill": cannot be trapped */
#define GSI_XF_NORMAL 4 /* reason is "normal" */
#define GSI_XF_UNTRAP 8 /* cannot be trapped; the reason is the payload */

/* flag of a message that holds I/O credit (io_loop.c): gsi_msg_free calls
** gsi_msg_credit_hook for it, which gives the credit back to its socket */
#define GSI_MF_CREDIT 0x80
GSI_FUNC void (*_Atomic gsi_msg_credit_hook)(gsi_msg *m);

/* what a full bounded mailbox does with one more message */
enum { GSI_OVF_DROP = 1, GSI_OVF_REJECT, GSI_OVF_KILL };

typedef struct gsi_nodecache gsi_nodecache;

/* A message: this header followed by len payload bytes (the codec's
** encoding), in one allocation. `next` is the mailbox link while queued in
** the MPSC queue and the saved-list link afterwards. */
struct gsi_msg {
  gsi_msg *_Atomic next;
  gsi_msg *prev; /* saved list only (owner) */
  uint64_t from;
  uint64_t ref;
  size_t len;
  gsi_nodecache *home; /* the node cache it goes back to, or NULL (msg.c) */
  uint8_t kind;
  uint8_t flags;
};

#define GSI_MSG_DATA(m) ((unsigned char *)((m) + 1))

/* Any thread may free a message any other thread made. */
GSI_FUNC gsi_msg *gsi_msg_new(int kind, uint64_t from, uint64_t ref,
                              const void *data, size_t len);
GSI_FUNC void gsi_msg_free(gsi_msg *m);
/* A worker thread ends: hand its node cache over to the next worker. */
GSI_FUNC void gsi_msg_thread_done(void);

/* Vyukov's intrusive MPSC queue. Producers: one atomic exchange on `head`.
** The single consumer owns `tail`. Invariant: every pushed node is
** reachable from `tail` once its producer finished the push; a push in
** progress makes pop return NULL (the producer notifies afterwards, so the
** consumer looks again). */
typedef struct gsi_mpsc {
  gsi_msg *_Atomic head;
  /* producers write head on every push, the consumer writes tail on every
  ** pop: 64 bytes apart they never share a cache line */
  char pad[64 - sizeof(gsi_msg *)];
  gsi_msg *tail;
  gsi_msg stub;
} gsi_mpsc;

GSI_FUNC void gsi_mpsc_init(gsi_mpsc *q);
GSI_FUNC void gsi_mpsc_push(gsi_mpsc *q, gsi_msg *m);
GSI_FUNC gsi_msg *gsi_mpsc_pop(gsi_mpsc *q);

/* ----------------------------------------------------------- processes */

/* sched states: the run-queue protocol (see sched.c). A process is on a
** run queue iff it is QUEUED, so at most once. */
enum { GSI_IDLE = 0, GSI_QUEUED, GSI_RUNNING, GSI_NOTIFIED };

/* Why a process yielded back to its worker. */
enum { GSI_W_NONE = 0, GSI_W_WAIT, GSI_W_YIELD, GSI_W_EXIT };

/* gen_server callbacks, for info().current (names: lgenserver.c) */
/* sflags: suspended; a debug hook is set; an idle deadline is pending */
enum { GSI_SF_SUSPENDED = 1, GSI_SF_HOOK = 2, GSI_SF_DEADLINE = 4 };

enum { GSI_CB_NONE = 0, GSI_CB_INIT, GSI_CB_CALL, GSI_CB_CAST, GSI_CB_INFO,
       GSI_CB_CONTINUE, GSI_CB_TERMINATE, GSI_CB_SYSTEM };

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

struct gsi_proc {
  /* shared. Layout: what a sender touches on every message (gsi_pin,
  ** gsi_deliver, gsi_notify) comes first and ends with mbox.head; what the
  ** owner writes on every message (mbox.tail, the *_pub counters, mem_pub
  ** on every allocation of its state) comes after mbox's padding, so the
  ** two sides do not bounce one cache line between them. */
  _Atomic uint32_t gen;  /* generation of the current incarnation */
  _Atomic uint32_t pins; /* senders inside gsi_pin..gsi_unpin */
  _Atomic int alive;     /* accepts messages; see gsi_pin */
  _Atomic int sched;     /* GSI_IDLE.. */
  _Atomic int sigpend;   /* an exit signal was pushed: drain soon */
  _Atomic uint64_t kill_at; /* when an untrappable exit signal was pushed
                               (ns; 0 = none): the watchdog abandons a
                               process that does not end soon after */
  _Atomic int died;      /* gsi_proc_die ran (signal.c) */
  _Atomic uint64_t msgs_in;   /* pushed to this mailbox (by senders) */
  uint32_t index;
  gsi_rt *rt;
  /* set before the process is published (alive = 1), then read-only */
  uint32_t mbox_limit; /* 0 = unbounded */
  int overflow;        /* GSI_OVF_* */
  gsi_mpsc mbox;
  _Atomic size_t mem_pub; /* memory of its state, published by owner */
  _Atomic uint64_t drained_pub; /* published by owner: moved out of mbox */
  _Atomic size_t svlen_pub;     /* published by owner: saved list length */
  size_t max_heap;     /* bytes its state may use, 0 = no cap */
  int sandbox;         /* no io/os/debug/loadlib, text chunks only */
  uint64_t fail_at;    /* fault injection: fail growth allocation number
                          fail_at (and Lua's retry after it), 0 = off */
  _Atomic uint64_t overflowed; /* messages the limit refused */
  /* introspection (process.info, sys.statistics): written by the owner
  ** only (a relaxed load + store, no read-modify-write), read by anyone */
  _Atomic uint64_t msgs_out;   /* messages this process sent */
  _Atomic uint64_t reductions; /* gen_server callbacks run */
  gsi_proc *rq_next; /* run queue link, guarded by the run queue lock */
  gsi_proc *free_next; /* free list link, guarded by the table lock */

  /* locked: guarded by lk. Invariant: once `exiting` is set nobody adds a
  ** link or monitor, so the exit path can take the lists and let go. */
  pthread_mutex_t lk;
  int exiting;
  gsi_idvec links;    /* pids */
  gsi_idvec monitors; /* (ref, watcher pid) pairs: monitors on me */
  char *name;         /* registered name; also guarded by registry lock */

  /* owner */
  lua_State *L;  /* the process state (NULL for foreign processes); the
                    body runs on its main thread, resumed like a coroutine */
  gsi_foreign *fg; /* non-NULL for a foreign (OS thread) process */
  gsi_msg *sv_head, *sv_tail; /* saved messages, in arrival order */
  size_t sv_len;
  gsi_pending *pend;
  size_t npend, cappend;
  gsi_idvec mon_out; /* (ref, target) monitors I hold */
  gsi_idvec *mon_user; /* the ones of them made by monitor()/spawn_monitor
                          (not a request's), for info(): allocated on
                          first use, written by the owner under lk */
  gsi_msg *spawn_msg; /* body + args, consumed by the first run */
  gsi_msg *exit_msg;  /* encoded reason when dying by signal */
  size_t mem;
  /* boot arena (palloc.c): [ar_base, ar_end) holds what the state
  ** allocated while booting; ar_top is the bump pointer, ar_open is set
  ** until the end of the first turn */
  char *ar_base, *ar_top, *ar_end;
  size_t ar_spill;     /* bytes the boot allocated outside the arena */
  gsi_paths *paths;    /* package.path/cpath it was started with */
  gsi_msg *held;       /* an answer being decoded (freed if that raised) */
  gsi_fcache *fc;      /* freed small blocks kept for reuse (palloc.c) */
  const void *from_tab; /* the last from table core.next pushed (a pointer
                           only compared, never followed), and its ids */
  uint64_t from_pid, from_ref;
  int ar_open;
  size_t heap_cap;     /* max_heap while it is enforced (lifted to die) */
  int heap_refused;    /* the last growth was refused */
  int heap_exceeded;   /* refused twice in a row: the process must end */
  int unwind;          /* growth allocations to refuse, so that the unwind
                          hook raises a memory error (preempt.c) */
  uint64_t nallocs;    /* growth allocations so far (for fail_at) */
  uint64_t parent;
  uint64_t start_ref;  /* a gen_server's start request: init's outcome goes to
                          (parent, start_ref); set by the spawner */
  uint64_t wait_timer; /* timer armed for the current wait, or 0 */
  uint64_t deadline;   /* of the current wait (ns), 0 = none */
  int want;            /* GSI_W_* : meaning of the last yield */
  int trap_exit;
  int dying;           /* killed by a signal: stop at the next yield */
  int budget;          /* messages left in this turn */
  int send_budget;     /* sends left before a voluntary yield */
  int timed_out;
  int in_match;        /* a receive match function is running */
  int relay;           /* a nested coroutine was preempted (lcoro.c) */
  int crashed;         /* the body raised: its error is on top of L */
  char module[64];     /* for info()/crash reports */
  char *vsn;           /* the module's vsn field as a string (malloc), or
                          NULL; for info(); under lk */
  uint32_t vsn_n;      /* else its module cache counter, or 0; under lk */
  uint8_t server;      /* a gen_server (it called set_module); under lk */
  uint8_t nest;        /* messages next returned in this turn since the last
                          yield (lgenserver.c: NEXT_NEST_MAX); owner only */
  _Atomic uint8_t current; /* the gen_server callback running (GSI_CB_*,
                              0 = none): written by the owner, read by
                              info() (relaxed) */
  uint8_t sflags;      /* the gen_server loop's sys state (GSI_SF_*), so
                          that it costs a message no Lua lookups; owner */
  /* program end (runtime.c, gsi_rt_stop_all): stop_order (GSI_STOP_*) is
  ** written by the owner under lk, or by the spawner before the process
  ** is published; stop_sent is set by the stopping thread once it
  ** signalled it; born is the start order, set by gsi_proc_alloc under the
  ** table lock before the process is published */
  uint8_t stop_order;
  _Atomic uint8_t stop_sent;
  uint64_t born;
};

/* When runtime shutdown stops a process that is a root (its parent is
** gone or is a foreign thread): supervisors first, one at a time, in
** reverse start order; the logger last, once nothing else is left. */
enum { GSI_STOP_NORMAL = 0, GSI_STOP_FIRST, GSI_STOP_LAST };

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
** handoff: let the receiver run next on this worker. Returns 1 if
** delivered (or dropped by a "drop"/"kill" bounded mailbox), 0 if the pid
** is dead, GSI_REJECTED if a "reject" bounded mailbox refused it. */
#define GSI_REJECTED (-1)
GSI_FUNC int gsi_deliver(gsi_rt *rt, uint64_t pid, gsi_msg *m, int handoff);
/* Is pid a live sandboxed process? (Its flag is set before it is
** published and read-only after, as mbox_limit.) */
GSI_FUNC int gsi_pid_sandboxed(gsi_rt *rt, uint64_t pid);

GSI_FUNC void gsi_idvec_push(gsi_idvec *v, uint64_t a);
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

/* ----------------------------------------------------------- scheduler */

struct gsi_worker {
  gsi_rt *rt;
  int id;
  /* the worker thread's own scratch (gsi_scratch_get on that thread), set
  ** when it starts: the hot path reaches it without a thread-local lookup.
  ** Touched only by that thread. */
  struct gsi_scratch *scratch;
  pthread_t th;
  gsi_proc *_Atomic runnext; /* hand-off slot, only the owner pops it */
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
** then finishes p on its own (gsi_orphan_done at the end) and the thread
** leaves; it is not a worker any more (gsi_current_worker is NULL). */
GSI_FUNC void gsi_hold(gsi_proc *p, int closing);
GSI_FUNC int gsi_unhold(void);
GSI_FUNC int gsi_orphaned(void);
/* The watchdog: a new thread for w (its old one was abandoned). */
GSI_FUNC int gsi_worker_replace(gsi_worker *w);

/* Make p runnable after a message was pushed to it. */
GSI_FUNC void gsi_notify(gsi_proc *p, int handoff);
GSI_FUNC int gsi_sched_start(gsi_rt *rt);
GSI_FUNC void gsi_sched_stop(gsi_rt *rt);
GSI_FUNC void gsi_enqueue(gsi_rt *rt, gsi_proc *p);
/* p runs next on the calling worker (its runnext), or is queued. */
GSI_FUNC void gsi_enqueue_next(gsi_rt *rt, gsi_proc *p);
GSI_FUNC int gsi_runq_busy(gsi_rt *rt);
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
GSI_FUNC int gsi_watchdog_start(gsi_rt *rt);
GSI_FUNC void gsi_watchdog_stop(gsi_rt *rt);

/* Foreign wait: block the OS thread until notified or deadline (ns since
** CLOCK_MONOTONIC epoch, 0 = forever). Returns 0 if notified, 1 on time-out. */
GSI_FUNC int gsi_foreign_wait(gsi_proc *p, uint64_t deadline);

/* --------------------------------------------------------------- timers */

GSI_FUNC uint64_t gsi_now_ns(void);
GSI_FUNC int gsi_timer_start(gsi_rt *rt);
GSI_FUNC void gsi_timer_stop(gsi_rt *rt);
/* Arm a timer: after ms, deliver m to pid (or to the pid registered under
** name if name != NULL). Returns the timer id (GSI_TIMER_BIT set). A
** GSI_M_TIMEOUT message gets its ref set to the timer id. */
GSI_FUNC uint64_t gsi_timer_arm(gsi_rt *rt, uint64_t ms, uint64_t pid,
                                const char *name, gsi_msg *m);
/* A repeating timer: every ms (>= 1) a copy of m goes to pid (or name),
** until cancelled or the destination is gone (a dead pid, a name nobody
** holds). Returns the timer id, 0 when out of memory. */
GSI_FUNC uint64_t gsi_timer_arm_every(gsi_rt *rt, uint64_t ms, uint64_t pid,
                                      const char *name, gsi_msg *m);
/* Cancel: returns ms left (>= 0) or -1 if the timer already fired or is
** unknown. */
GSI_FUNC int64_t gsi_timer_cancel(gsi_rt *rt, uint64_t id);

/* ------------------------------------------------------------ registry */

GSI_FUNC int gsi_reg_init(gsi_rt *rt);
GSI_FUNC void gsi_reg_free(gsi_rt *rt);
/* 0 ok; -1 name taken (*holder set); -2 pid dead; -3 pid already named */
GSI_FUNC int gsi_reg_register(gsi_rt *rt, const char *name, uint64_t pid,
                              uint64_t *holder);
GSI_FUNC int gsi_reg_unregister(gsi_rt *rt, const char *name);
GSI_FUNC uint64_t gsi_reg_whereis(gsi_rt *rt, const char *name);
GSI_FUNC void gsi_reg_release(gsi_rt *rt, gsi_proc *p); /* on death */
GSI_FUNC void gsi_reg_name_of(gsi_rt *rt, uint64_t pid, char *buf, size_t size);
/* Calls fn for every name; under the registry lock (fn must not block). */
GSI_FUNC void gsi_reg_each(gsi_rt *rt, void (*fn)(void *, const char *, uint64_t),
                           void *ud);

/* ------------------------------------------------------------- signals */

/* 0 ok, -1 target dead (noproc). */
GSI_FUNC int gsi_link(gsi_proc *self, uint64_t pid);
GSI_FUNC void gsi_unlink(gsi_proc *self, uint64_t pid);
/* Add monitor ref on pid for self; returns 0, or -1 if pid is dead (the
** caller delivers DOWN noproc itself). */
GSI_FUNC int gsi_monitor(gsi_proc *self, uint64_t pid, uint64_t ref);
GSI_FUNC void gsi_demonitor(gsi_proc *self, uint64_t ref);
/* Send an exit signal carrying an encoded reason. */
GSI_FUNC void gsi_exit_signal(gsi_rt *rt, uint64_t from, uint64_t to,
                              const void *reason, size_t len, int flags);
/* The death protocol: links, monitors, name, mailbox; frees the slot.
** `normal`: the reason is "normal" (linked processes live on). It is
** gsi_proc_die (what others see: name, links, monitors; once, any thread)
** then gsi_proc_reap (owner data, the slot; after the state is closed). */
GSI_FUNC void gsi_proc_exit(gsi_proc *p, const void *reason, size_t len,
                            int normal);
GSI_FUNC void gsi_proc_die(gsi_proc *p, const void *reason, size_t len,
                           int normal);
GSI_FUNC void gsi_proc_reap(gsi_proc *p);

/* Owner-side mailbox (recv.c). */
GSI_FUNC size_t gsi_drain(gsi_proc *p);
/* For a receive that takes the oldest message: drain only while nothing
** is saved, a batch at a time; afterwards either a message is saved or the
** mailbox was empty. Leaves sigpend alone (the caller's self_of drained
** everything when a signal was pending). */
GSI_FUNC void gsi_drain_front(gsi_proc *p);
GSI_FUNC void gsi_sv_unlink(gsi_proc *p, gsi_msg *m);
GSI_FUNC gsi_pending *gsi_pending_find(gsi_proc *p, uint64_t ref);
GSI_FUNC int gsi_pending_add(gsi_proc *p, uint64_t ref, uint64_t target);
/* Forget a pending request (demonitor); its arrived answer is handed to
** *take if take != NULL, else freed. */
GSI_FUNC void gsi_pending_remove(gsi_proc *p, uint64_t ref, gsi_msg **take);
GSI_FUNC void gsi_sv_append(gsi_proc *p, gsi_msg *m);

/* Requests (call, send_request, stop, start's acknowledgement), shared by
** the Lua binding (which yields while it waits) and the C API (which
** blocks). gsi_request sends `len` bytes as a message of `kind` to server
** under a new pending ref, monitored so that the server's death answers
** it. Returns GSI_REQ_OK, GSI_REQ_NOPROC (server already dead: the request
** is not pending), GSI_REQ_FULL (a bounded mailbox refused it: not
** pending) or GSI_REQ_NOMEM. */
enum { GSI_REQ_OK = 0, GSI_REQ_NOPROC, GSI_REQ_FULL, GSI_REQ_NOMEM };
GSI_FUNC int gsi_request(gsi_proc *self, uint64_t server, int kind,
                         const void *data, size_t len, int handoff,
                         uint64_t *ref);
/* One look for the answer to ref (drains the mailbox first):
** GSI_ANS_READY (*ans taken, the request forgotten), GSI_ANS_WAIT,
** GSI_ANS_DYING (an exit signal ended the caller), GSI_ANS_UNKNOWN. */
enum { GSI_ANS_READY = 0, GSI_ANS_WAIT, GSI_ANS_DYING, GSI_ANS_UNKNOWN };
GSI_FUNC int gsi_answer(gsi_proc *p, uint64_t ref, gsi_msg **ans);

/* Per-thread scratch memory (msg.c), shared by the binding and the C API:
** `buf` for encoding a message before it is copied into its node, so a
** send costs no extra allocation; `err` for gs_errmsg texts too long for
** api.c's fixed buffer; `killed` for gs_killed_reason. Only the owning
** thread touches them; gsi_scratch_release frees them (a worker or a host
** thread that leaves, a runtime closed). */
typedef struct gsi_scratch {
  gsi_buf buf;
  gsi_buf err;
  gsi_msg *killed;
} gsi_scratch;
GSI_FUNC gsi_scratch *gsi_scratch_get(void);
GSI_FUNC void gsi_scratch_release(void);

/* ------------------------------------------------------------ runtime */

typedef struct gsi_runq {
  pthread_mutex_t mu; /* guards head/tail/nparked; cv waits on it */
  pthread_cond_t cv;
  gsi_proc *head, *tail;
  _Atomic size_t len;
  _Atomic int nspinning;
  int nparked;
} gsi_runq;

typedef struct gsi_timers gsi_timers;
typedef struct gsi_names gsi_names;

#define GSI_BOOT_HINTS 64 /* a power of two */

struct gsi_rt {
  uint64_t serial; /* unique per runtime ever created in this process */
  /* the hooks of the faces above the core (core.h), set at creation,
  ** read-only after */
  gsi_face face;
  int nworkers;
  uint32_t max_procs;
  /* Codec limits: configure() may change them while workers encode and
  ** decode, so readers take the current immutable struct through `lim`
  ** (gsi_rt_limits); a replaced one is kept on `retired` until the runtime
  ** is freed, so a reader holding it never sees it go. */
  gsi_codec_limits limits; /* the first one, set before any thread */
  const gsi_codec_limits *_Atomic lim;
  struct gsi_retired *retired; /* guarded by life_mu */
  _Atomic int budget;
  /* bytes a process state takes to boot, per callback module (by a hash
  ** of its name; palloc.c). Relaxed: a sizing hint, a lost update or a
  ** collision of two names only makes one arena less well sized. */
  _Atomic size_t boot_hint[GSI_BOOT_HINTS];
  /* process table: chunks are allocated on demand and never moved, so a
  ** slot pointer stays valid for the runtime's life. */
  gsi_proc *_Atomic *chunks;
  uint32_t nchunks_max;
  pthread_mutex_t tbl_mu; /* guards free list and `used` */
  gsi_proc *free_head;
  uint32_t used; /* slots ever handed out */
  uint64_t births; /* processes ever allocated: their start order */
  _Atomic size_t live;   /* slots in use, foreign ones included */
  _Atomic size_t nforeign;
  _Atomic uint64_t next_ref;
  _Atomic uint64_t msgs_dead; /* messages received by processes now dead */
  _Atomic uint64_t spawned;
  /* Abandoned processes (preempt.c): `abandoned` counts them all (stats);
  ** `abandoned_live` those whose slot is not back yet (not Lua processes
  ** any more: lua_procs leaves them out); `orphan_threads` the threads
  ** left running them, which may still touch this runtime: while any is,
  ** gsi_rt_free leaves the table, module cache and struct in place. */
  _Atomic uint64_t abandoned;
  _Atomic size_t abandoned_live;
  _Atomic size_t orphan_threads;
  _Atomic int leaked; /* gsi_rt_free left it for such a thread */
  gsi_runq rq;
  gsi_worker *workers;
  pthread_t watchdog;
  _Atomic int started;
  _Atomic int stopping;
  _Atomic int shutting; /* gsi_rt_stop_all began: what crashes now is its doing */
  _Atomic int closed; /* freed but for this struct: every call fails */
  gsi_timers *timers;
  gsi_names *names;
  gsi_modcache *mods; /* compiled Lua modules (modcache.c) */
  /* The I/O layer (io_loop.c), set up on its first use: the exit path
  ** calls io_down(rt, pid) (close the sockets pid controls), gsi_rt_free
  ** calls io_stop(rt) (close them all, join the loop thread). */
  void *_Atomic io;
  void (*_Atomic io_down)(gsi_rt *rt, uint64_t pid);
  void (*_Atomic io_stop)(gsi_rt *rt);
  pthread_mutex_t life_mu; /* guards start/stop of threads */
  pthread_cond_t life_cv;  /* signalled when `live` reaches 0 */
};

#define GSI_CHUNK_BITS 12
#define GSI_CHUNK (1u << GSI_CHUNK_BITS)

GSI_FUNC uint64_t gsi_new_ref(gsi_rt *rt);
GSI_FUNC const gsi_codec_limits *gsi_rt_limits(gsi_rt *rt);
/* Change workers, max_procs (both only before the threads start; 0: as
** is), the codec limits (NULL: as is) and budget (0: as is): 0, -1 out of
** memory, -2 the threads run already (nothing changed). */
GSI_FUNC int gsi_rt_configure(gsi_rt *rt, int workers, uint32_t max_procs,
                              const gsi_codec_limits *lim, int budget);
GSI_FUNC int gsi_rt_ensure_started(gsi_rt *rt);
/* Lua processes alive: slots in use but for foreign and abandoned ones. */
GSI_FUNC size_t gsi_rt_lua_procs(gsi_rt *rt);
/* Stop every process (exit signal `reason`, then kill after half of ms);
** 0 when none is left. */
GSI_FUNC int gsi_rt_stop_all(gsi_rt *rt, const void *reason, size_t len,
                             uint64_t ms);
GSI_FUNC void gsi_rt_free(gsi_rt *rt);    /* all but the struct */
GSI_FUNC void gsi_rt_destroy(gsi_rt *rt); /* the struct */

/* ------------------------------------------------------ module cache */

GSI_FUNC gsi_modcache *gsi_modcache_new(void);
GSI_FUNC void gsi_modcache_free(gsi_modcache *c);
/* If (name, path) is cached: push its compiled chunk and the file it came
** from, return 1. Not cached: 0, nothing pushed. -1: the chunk could not
** be loaded (out of memory), its error pushed. */
GSI_FUNC int gsi_modcache_load(lua_State *L, gsi_modcache *c, const char *name,
                               const char *path);
/* Keep the function at the top of L, compiled from file, as (name, path).
** Best effort; never raises. */
GSI_FUNC void gsi_modcache_put(lua_State *L, gsi_modcache *c, const char *name,
                               const char *path, const char *file);

/* The package paths of a process, shared by every process started with
** the same ones (a reference; NULL when out of memory). */
/* Hot code reload (genserver.code): make the function at the top of L,
** compiled from `file`, the current version of (name, path), replacing a
** cached one (servers that loaded the old one keep it). vsn: the module's
** vsn field as a string, or NULL. Returns the new version counter (1 for
** a first version), 0 when it cannot be kept (out of memory, cache full).
** Never raises. */
GSI_FUNC uint64_t gsi_modcache_replace(lua_State *L, gsi_modcache *c,
                                       const char *name, const char *path,
                                       const char *file, const char *vsn);
/* The current version counter of (name, path), 0 if not cached; its vsn
** string (empty if none) is copied to vsn (size n). */
GSI_FUNC uint64_t gsi_modcache_version(gsi_modcache *c, const char *name,
                                       const char *path, char *vsn, size_t n);
GSI_FUNC gsi_paths *gsi_paths_get(gsi_modcache *c, const char *path, size_t plen,
                                  const char *cpath, size_t clen);
GSI_FUNC void gsi_paths_put(gsi_modcache *c, gsi_paths *e);
GSI_FUNC const char *gsi_paths_path(const gsi_paths *e);
GSI_FUNC const char *gsi_paths_cpath(const gsi_paths *e);

/* ------------------------------------------------------ process running */

/* The allocator of a process state (palloc.c). gsi_heap_newstate: a new
** state for p, counting on p (its boot arena opened, max_heap in force);
** gsi_heap_booted: the boot is over (the arena closes; call while
** p->ar_open); gsi_heap_closing: the state is about to be closed (freed
** blocks go straight back); gsi_heap_free: it is closed, free the rest.
** gsi_proc_trim: give p's cached free blocks back to malloc (owner; on
** hibernation). */
GSI_FUNC lua_State *gsi_heap_newstate(gsi_proc *p);
GSI_FUNC void gsi_heap_booted(gsi_proc *p);
GSI_FUNC void gsi_heap_closing(gsi_proc *p);
GSI_FUNC void gsi_heap_free(gsi_proc *p);
GSI_FUNC void gsi_proc_trim(gsi_proc *p);

/* Set up the libraries of a new process state (plibs.c): lazily, and
** without what a sandbox must not have. */
GSI_FUNC void gsi_open_libs(lua_State *L, int sandbox);

/* The codec's builtin hook for the runtime's states (plibs.c): in a
** process state, genserver.core's functions without its table, and base
** functions not yet put in _G (they are put there on first use). */
GSI_FUNC lua_CFunction gsi_state_builtin(lua_State *L, const char *module,
                                         size_t lm, const char *field, size_t lf);

/* Run p on the current worker until it waits, yields or ends. */
GSI_FUNC void gsi_run(gsi_worker *w, gsi_proc *p);
/* The thread-local foreign process of this OS thread for rt (created on
** first use). */
GSI_FUNC gsi_proc *gsi_foreign_self(gsi_rt *rt);
GSI_FUNC const gsi_codec_limits *gsi_limits_of(gsi_proc *p);
/* The value at idx of L was just encoded into b for `to`: if b holds a
** function sent by value (GSI_WIRE_CODE) and `to` is a sandboxed process,
** push the codec's error naming the path to it ("message.cb: cannot send
** a function to a sandboxed process ...") and return -1; else return 0.
** Costs nothing unless the message holds a function. Never raises. */
GSI_FUNC int gsi_check_code_to(lua_State *L, int idx, const char *what, gsi_rt *rt,
                               uint64_t to, const gsi_buf *b);
GSI_FUNC void gsi_foreign_reset(gsi_rt *rt);
/* End the calling thread's foreign process p with an encoded reason. */
GSI_FUNC void gsi_foreign_exit(gsi_proc *p, const void *reason, size_t len,
                               int normal);

/* Message handler for code whose crash becomes an exit reason (a process
** body, gen_server callbacks; prun.c): it records the error and the
** traceback taken where it was raised, and lets the error through
** unchanged, since it also runs for errors that get caught (load()
** inherits it while it compiles). */
GSI_FUNC int gsi_crash_msgh(lua_State *L);
/* Push the traceback gsi_crash_msgh took for the error at idx and return
** 1; return 0, pushing nothing, if that error is not the one it saw. */
GSI_FUNC int gsi_crash_traceback(lua_State *L, int idx);
/* require(name) in a process state's boot path (palloc.c): a module the
** runtime compiled before comes from its module cache. */
GSI_FUNC int gsi_require(lua_State *L);

#endif
