/*
** sched.c - worker threads, the run queue, wake-ups and foreign waits.
**
** The per-process protocol (p->sched):
**   IDLE     waiting for a message; on no queue
**   QUEUED   on exactly one run queue (the shared one, a worker's own, or
**            a worker's runnext: see "run queues" below)
**   RUNNING  a worker (or its own OS thread, if foreign) is running it
**   NOTIFIED running, and a message arrived since it last looked
** A sender, after pushing a message, moves IDLE->QUEUED (and queues it) or
** RUNNING->NOTIFIED. The runner, when the process wants to wait, moves
** RUNNING->IDLE; if that CAS fails the process was NOTIFIED and runs
** again, so no wake-up is lost and a process is never queued twice.
*/
#include <dlfcn.h>
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"

/* Spinning before parking. A futex wake-up round trip costs tens of
** microseconds on these machines, a spin hand-off well under one. But a
** spinner may share its core with the very thread it waits for (the kernel
** puts a woken thread where it likes), so after a short burst of `pause`
** the spinner polls with sched_yield(), which lets such a thread run, and
** gives up after a time budget rather than an iteration count. */
#define SPIN_PAUSE_NS 3000u    /* pure pause phase: 3 us, one hand-off */
#define WORKER_SPIN_NS 100000u  /* 100 us */
#define FOREIGN_SPIN_NS 100000u

/* read on every wake-up (gsi_current_worker, with tls_ticket): the fast
** TLS model (core.h) */
static _Thread_local gsi_worker *tls_worker GSI_TLS_FAST;

static inline void cpu_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* One step of a spin that started at *t0 (0 = not yet): returns 0 when the
** budget is spent. */
static int spin_step(unsigned *i, uint64_t *t0, uint64_t budget) {
  uint64_t spent;
  if (*t0 == 0) *t0 = gsi_now_ns();
  if (++*i & 15) { /* read the clock every 16 steps only */
    cpu_pause();
    return 1;
  }
  spent = gsi_now_ns() - *t0;
  if (spent > budget) return 0;
  if (spent > SPIN_PAUSE_NS) sched_yield();
  else cpu_pause();
  return 1;
}

/* This thread's ticket (see gsi_ticket), if it is a worker thread. */
static _Thread_local gsi_ticket *tls_ticket GSI_TLS_FAST;

int gsi_orphaned(void) {
  return tls_ticket != NULL &&
         atomic_load_explicit(&tls_ticket->hold, memory_order_acquire) == GSI_ABANDONED;
}

/* An abandoned thread is nobody's worker: it must not touch the worker
** (a new thread is that worker now). */
gsi_worker *gsi_current_worker(void) {
  if (tls_worker != NULL && gsi_orphaned()) return NULL;
  return tls_worker;
}

void gsi_hold(gsi_proc *p, int closing) {
  if (tls_ticket == NULL) return;
  if (closing) atomic_store(&tls_ticket->close_since, gsi_now_ns());
  atomic_store(&tls_ticket->hold, (uintptr_t)p | (closing ? 1u : 0u));
}

int gsi_unhold(void) {
  if (tls_ticket == NULL) return 0;
  return atomic_exchange(&tls_ticket->hold, 0) == GSI_ABANDONED ? (
    atomic_store(&tls_ticket->hold, GSI_ABANDONED), 1) : 0;
}

uint64_t gsi_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ----------------------------------------------------------- run queues */

/*
** Where a runnable process goes. A process's state is dozens of cache
** lines, and on this machine moving one line between two cores costs
** about half a microsecond: a process should run where it ran, and
** processes that talk to each other on one worker. So:
**   - woken from a worker whose process is about to wait on it (a hand-off:
**     a call's request, its reply, a start's acknowledgement): that
**     worker's runnext slot; the slot's previous occupant goes to the
**     worker's own queue.
**   - woken by any other message sent on a worker: that worker's own
**     queue (as Go puts a readied goroutine on its waker's P).
**   - but in both cases, a process whose home (the worker that ran it
**     last) is another worker, busy, goes on that worker's own queue:
**     processes that talk to each other gather on one worker and stay
**     there. A server called by a client that ran elsewhere for a turn
**     stays with its other clients, and its reply brings the client back
**     to them; a home that idles gives its processes up to their wakers.
**   - new (spawned) or yielded (its budget ran out: work of its own): the
**     shared queue while some worker is idle (spinning or parked), so that
**     parallel work spreads at once (Go's wakep on a new goroutine); else
**     the worker's own queue.
**   - from any other thread (the main script, a host thread, the timer
**     and I/O threads): the shared queue.
** An idle worker takes work from the shared queue only; it never steals
** from another worker's own queue, where everything would have run soon
** and close to its cache. Instead a busy worker gives away what waits too
** long there (Erlang's wake-up threshold in spirit: an idle worker should
** not take work that the busy one reaches within a millisecond or two):
** when it pops a process that waited more than SHARE_AGE_NS while some
** worker idles, it moves the next one to the shared queue (at most one
** per SHARE_AGE_NS, unless the next one has not run yet).
**
** Invariants:
**   - A worker stuck in one turn (a long C call: Lua code yields within a
**     slice) is nobody's home, and the watchdog moves what waits on its own
**     queue and runnext to the shared queue (gsi_sched_unstrand), so a
**     blocking callback holds up only its own process.
**   - A worker's runnext slot is pushed and popped only by the thread that
**     is that worker (and emptied by the watchdog's exchange, above). Its
**     own queue is popped by that thread and pushed by it or, for a
**     process whose home it is, by another worker that found it not idle,
**     under lq_mu. The worker sets `idle` under lq_mu
**     only when it finds its own queue empty there, before it looks at the
**     shared queue, spins or parks; it clears it once it has work. So work
**     on an own queue is never stranded: its worker is running and looks
**     there again before it idles. (lq_mu also keeps an abandoned thread,
**     which may still believe it is w, out of the new thread's way.)
**   - The shared queue: a worker parks only after finding it empty under
**     q->mu, and whoever pushes there while a worker is parked and nobody
**     spins signals one (global_push). A spinner polls it until it parks.
**   - A process is on at most one queue: it is queued by whoever moved
**     p->sched to QUEUED (the notify protocol above, gsi_run for a yield,
**     the spawner for a new process), once; giving one away moves it from
**     one queue to another under the first one's lock.
**   - Fairness: every FAIR_EVERY turns the shared queue goes first, and
**     half-way between, the own queue goes before runnext, so that neither
**     a call/reply pair handing each other runnext nor a busy own queue can
**     keep the rest waiting.
*/
#define SHARE_AGE_NS 2000000u /* 2 ms */

static gsi_proc *rq_pop_locked(gsi_runq *q) {
  gsi_proc *p = q->head;
  if (p != NULL) {
    q->head = p->rq_next;
    if (q->head == NULL) q->tail = NULL;
    p->rq_next = NULL;
    atomic_fetch_sub_explicit(&q->len, 1, memory_order_relaxed);
  }
  return p;
}

/* Onto the shared queue. A parked worker is woken only when nobody spins:
** a spinner will find the work itself, much sooner than a futex wake-up
** would. */
static void global_push(gsi_rt *rt, gsi_proc *p) {
  gsi_runq *q = &rt->rq;
  int wake;
  pthread_mutex_lock(&q->mu);
  p->rq_next = NULL;
  if (q->tail) q->tail->rq_next = p;
  else q->head = p;
  q->tail = p;
  atomic_fetch_add_explicit(&q->len, 1, memory_order_relaxed);
  wake = atomic_load(&q->nparked) > 0 && atomic_load(&q->nspinning) == 0;
  pthread_mutex_unlock(&q->mu);
  if (wake) pthread_cond_signal(&q->cv);
}

/* Is some worker idle (spinning or parked)? A hint, read without the lock:
** a wrong "no" leaves work on a busy worker's own queue (given away later
** if it waits too long), a wrong "yes" puts it on the shared queue, which
** is always safe. */
static int some_idle(gsi_rt *rt) {
  return atomic_load_explicit(&rt->rq.nspinning, memory_order_relaxed) > 0 ||
         atomic_load_explicit(&rt->rq.nparked, memory_order_relaxed) > 0;
}

/* The calling thread's worker of rt, or NULL (a foreign thread, a worker of
** another runtime, an abandoned thread). */
static gsi_worker *worker_of(gsi_rt *rt) {
  gsi_worker *w = gsi_current_worker();
  return w != NULL && w->rt == rt ? w : NULL;
}

/* The start of the calling worker's current turn (its clock, read
** anyway) or, between turns, the time: when a process was queued. */
static uint64_t turn_clock(gsi_worker *self) {
  uint64_t t = atomic_load_explicit(&self->since, memory_order_relaxed);
  return t != 0 ? t : gsi_now_ns();
}

/* lq_len is written under lq_mu only (a plain count there), read without
** it as a hint */
static void lq_len_set(gsi_worker *w, size_t n) {
  atomic_store_explicit(&w->lq_len, n, memory_order_relaxed);
}

static void lq_link_locked(gsi_worker *w, gsi_proc *p, uint64_t t) {
  p->rq_next = NULL;
  p->rq_since = t;
  if (w->lq_tail) w->lq_tail->rq_next = p;
  else w->lq_head = p;
  w->lq_tail = p;
  lq_len_set(w, atomic_load_explicit(&w->lq_len, memory_order_relaxed) + 1);
}

/* Onto the calling worker's own queue. */
static void lq_push(gsi_worker *w, gsi_proc *p) {
  uint64_t t = turn_clock(w);
  pthread_mutex_lock(&w->lq_mu);
  lq_link_locked(w, p, t);
  pthread_mutex_unlock(&w->lq_mu);
}

/* Has h been in one turn since well before t? Lua code yields within a
** slice, so such a turn is in a long C call (a blocking read, os.execute, a
** host's function) and may last: h is no home for anybody meanwhile. */
static int stuck(gsi_worker *h, uint64_t t) {
  uint64_t since = atomic_load_explicit(&h->since, memory_order_relaxed);
  return since != 0 && t > since + SHARE_AGE_NS;
}

/* Onto h's own queue, from another worker (self), unless h is idle or
** stuck in a long turn: returns 0 then (see the invariants above). */
static int lq_push_home(gsi_worker *h, gsi_worker *self, gsi_proc *p) {
  uint64_t t = turn_clock(self);
  int done = 0;
  if (stuck(h, t)) return 0;
  pthread_mutex_lock(&h->lq_mu);
  if (!h->idle) {
    lq_link_locked(h, p, t);
    done = 1;
  }
  pthread_mutex_unlock(&h->lq_mu);
  return done;
}

static gsi_proc *lq_unlink_locked(gsi_worker *w) {
  gsi_proc *p = w->lq_head;
  w->lq_head = p->rq_next;
  if (w->lq_head == NULL) w->lq_tail = NULL;
  p->rq_next = NULL;
  lq_len_set(w, atomic_load_explicit(&w->lq_len, memory_order_relaxed) - 1);
  return p;
}

/* The head of w's own queue, or NULL. If it waited longer than
** SHARE_AGE_NS and some worker idles, the next one is given away: any
** number of processes that have not run yet (they talk to nobody so far),
** else at most one per SHARE_AGE_NS (when the waits come from the system
** taking the worker's CPU away for other programs, not from work queued
** here, giving more only splits processes that talk to each other). */
static gsi_proc *lq_pop(gsi_worker *w) {
  gsi_proc *p, *give = NULL;
  if (atomic_load_explicit(&w->lq_len, memory_order_relaxed) == 0) return NULL;
  pthread_mutex_lock(&w->lq_mu);
  p = w->lq_head;
  if (p != NULL) {
    lq_unlink_locked(w);
    if (w->lq_head != NULL && some_idle(w->rt)) {
      uint64_t now = gsi_now_ns();
      if (now - p->rq_since > SHARE_AGE_NS &&
          (now - w->gave > SHARE_AGE_NS || w->lq_head->L == NULL)) {
        give = lq_unlink_locked(w);
        w->gave = now;
      }
    }
  }
  pthread_mutex_unlock(&w->lq_mu);
  if (give != NULL) global_push(w->rt, give);
  return p;
}

/* p (QUEUED) is new or yielded: see above. */
void gsi_enqueue(gsi_rt *rt, gsi_proc *p) {
  gsi_worker *w = worker_of(rt);
  if (w != NULL && !some_idle(rt)) lq_push(w, p);
  else global_push(rt, p);
}

/* Is anything else waiting to run where the caller runs (the shared queue
** or the caller's worker's own queue)? The runnext slot does not count, as
** before there were own queues: a process over its budget does not yield
** to the one it just handed off to. */
int gsi_runq_busy(gsi_rt *rt) {
  gsi_worker *w;
  if (atomic_load_explicit(&rt->rq.len, memory_order_relaxed) > 0) return 1;
  w = worker_of(rt);
  return w != NULL && atomic_load_explicit(&w->lq_len, memory_order_relaxed) > 0;
}

/* The watchdog (preempt.c) calls this for a worker in one turn for longer
** than a slice: its Lua code would have yielded by now, so the turn is in a
** long C call and may last. What waits on that worker's own queue and in
** its runnext slot moves to the shared queue, where idle workers take it
** (as Go's sysmon hands a P in a long system call to another thread). The
** owner takes from the same two places under lq_mu and by exchange, so
** each process is taken once. */
void gsi_sched_unstrand(gsi_worker *w) {
  gsi_proc *p, *next;
  if (atomic_load_explicit(&w->lq_len, memory_order_relaxed) == 0 &&
      atomic_load_explicit(&w->runnext, memory_order_relaxed) == NULL)
    return;
  pthread_mutex_lock(&w->lq_mu);
  p = w->lq_head;
  w->lq_head = w->lq_tail = NULL;
  lq_len_set(w, 0);
  pthread_mutex_unlock(&w->lq_mu);
  for (; p != NULL; p = next) {
    next = p->rq_next;
    global_push(w->rt, p);
  }
  if ((p = atomic_exchange(&w->runnext, NULL)) != NULL) global_push(w->rt, p);
}

/* Processes waiting to run: in the shared queue, in the workers' own queues
** and runnext slots, for statistics (relaxed reads: a snapshot). The
** workers exist from `started` (stored with release after gsi_sched_start)
** until the runtime is freed. */
size_t gsi_runq_len(gsi_rt *rt) {
  size_t n = atomic_load_explicit(&rt->rq.len, memory_order_relaxed);
  if (!atomic_load_explicit(&rt->started, memory_order_acquire)) return n;
  for (int i = 0; i < rt->nworkers; i++) {
    gsi_worker *w = &rt->workers[i];
    n += atomic_load_explicit(&w->lq_len, memory_order_relaxed);
    n += atomic_load_explicit(&w->runnext, memory_order_relaxed) != NULL;
  }
  return n;
}

/* Wake-ups of parked workers (the invariant that keeps them few): a worker
** parks only after finding the shared queue empty under q->mu, and
** whoever queues work there while a worker is parked and nobody spins
** signals one. So work is never stranded: a spinner (nspinning == 1)
** polls the queue until it parks, and re-checks it under q->mu before it
** does. Every other signal is for parallelism only, and is sent only when
** no one spins: a spinner would take the work itself much sooner than a
** futex wake-up, and signalling anyway made workers wake each other for
** one process each (2 workers ran the clients workload at 0.4x one
** worker). */
static void help_if_idle(gsi_runq *q) {
  int more;
  pthread_mutex_lock(&q->mu);
  more = q->head != NULL && atomic_load(&q->nparked) > 0 && atomic_load(&q->nspinning) == 0;
  pthread_mutex_unlock(&q->mu);
  if (more) pthread_cond_signal(&q->cv);
}

/* spinning: the caller is the spinner, which asks for help (see above)
** only once it stops spinning */
static gsi_proc *try_pop(gsi_runq *q, int spinning) {
  gsi_proc *p;
  int more;
  if (atomic_load_explicit(&q->len, memory_order_relaxed) == 0) return NULL;
  pthread_mutex_lock(&q->mu);
  p = rq_pop_locked(q);
  more = !spinning && q->head != NULL && atomic_load(&q->nparked) > 0 &&
         atomic_load(&q->nspinning) == 0;
  pthread_mutex_unlock(&q->mu);
  /* we took one and more wait: let a parked worker help */
  if (more) pthread_cond_signal(&q->cv);
  return p;
}

/* Next process from the shared queue for an idle worker (its own queue
** and runnext are empty, and stay so while it is idle: only it fills
** them), or NULL when the runtime stops. At most one worker spins; the
** others park on the condition variable. */
static gsi_proc *take(gsi_rt *rt) {
  gsi_runq *q = &rt->rq;
  gsi_proc *p = try_pop(q, 0);
  int none = 0;
  if (p != NULL) return p;
  if (atomic_compare_exchange_strong(&q->nspinning, &none, 1)) {
    unsigned i = 0;
    uint64_t t0 = 0;
    while (spin_step(&i, &t0, WORKER_SPIN_NS)) {
      if ((p = try_pop(q, 1)) != NULL) break;
      if (atomic_load_explicit(&rt->stopping, memory_order_relaxed)) break;
    }
    atomic_store(&q->nspinning, 0);
    if (p != NULL) {
      /* the spinner found work: if more waits, a parked worker may help */
      if (atomic_load_explicit(&q->len, memory_order_relaxed) > 0) help_if_idle(q);
      return p;
    }
  }
  pthread_mutex_lock(&q->mu);
  while ((p = rq_pop_locked(q)) == NULL) {
    if (atomic_load(&rt->stopping)) break;
    atomic_fetch_add(&q->nparked, 1);
    pthread_cond_wait(&q->cv, &q->mu);
    atomic_fetch_sub(&q->nparked, 1);
  }
  pthread_mutex_unlock(&q->mu);
  return p;
}

/* Go's scheduler looks at its global queue first every 61 ticks. */
#define FAIR_EVERY 16

static void *worker_main(void *arg) {
  gsi_worker *w = arg;
  unsigned ticks = 0;
  tls_worker = w;
  tls_ticket = atomic_load(&w->ticket);
  w->scratch = gsi_scratch_get();
  for (;;) {
    gsi_proc *p = NULL;
    unsigned t = ++ticks % FAIR_EVERY;
    if (t == 0) p = try_pop(&w->rt->rq, 0);
    else if (t == FAIR_EVERY / 2) p = lq_pop(w);
    if (p == NULL) p = atomic_exchange(&w->runnext, NULL);
    if (p == NULL) p = lq_pop(w);
    if (p == NULL) {
      /* idle from here (pushed meanwhile: not yet), until take() finds work */
      pthread_mutex_lock(&w->lq_mu);
      if (w->lq_head != NULL) p = lq_unlink_locked(w);
      else w->idle = 1;
      pthread_mutex_unlock(&w->lq_mu);
      if (p == NULL) {
        p = take(w->rt);
        pthread_mutex_lock(&w->lq_mu);
        w->idle = 0;
        pthread_mutex_unlock(&w->lq_mu);
      }
    }
    if (p == NULL) break;
    if (atomic_load_explicit(&p->home, memory_order_relaxed) != w->id + 1)
      atomic_store_explicit(&p->home, w->id + 1, memory_order_relaxed);
    gsi_run(w, p);
    if (gsi_orphaned()) { /* abandoned: w is another thread's now */
      free(tls_ticket);   /* nobody else looks at it any more */
      break;
    }
  }
  tls_ticket = NULL; /* a worker's own is freed by gsi_sched_stop */
  tls_worker = NULL;
  gsi_scratch_release();
  gsi_msg_thread_done();
  return NULL;
}

/* The library is never unloaded while a thread of it may still run: a
** worker stuck in a call that never returns (a finalizer that loops, a
** host's C function) outlives a runtime that could not stop it, and the
** interpreter's lua_close unloads C modules (dlclose) at program end. So
** once threads start, the shared object that holds this code is opened
** again with RTLD_NODELETE, which keeps it mapped until the program ends.
** (Linked statically into a host program, dladdr names the program:
** pinning it changes nothing.) */
static pthread_once_t pin_once = PTHREAD_ONCE_INIT;
static void pin_library(void) {
  Dl_info info;
  if (dladdr((void *)&gsi_sched_start, &info) != 0 && info.dli_fname != NULL)
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

int gsi_sched_start(gsi_rt *rt) {
  pthread_once(&pin_once, pin_library);
  rt->workers = calloc((size_t)rt->nworkers, sizeof(gsi_worker));
  if (rt->workers == NULL) return -1;
  for (int i = 0; i < rt->nworkers; i++) {
    gsi_worker *w = &rt->workers[i];
    w->rt = rt;
    w->id = i;
    pthread_mutex_init(&w->lq_mu, NULL);
    atomic_store(&w->ticket, calloc(1, sizeof(gsi_ticket)));
    if (atomic_load(&w->ticket) == NULL ||
        pthread_create(&w->th, NULL, worker_main, w) != 0) {
      free(atomic_load(&w->ticket));
      pthread_mutex_destroy(&w->lq_mu);
      rt->nworkers = i;
      return -1;
    }
  }
  return gsi_watchdog_start(rt);
}

/* The watchdog gave up on w's thread (which keeps its ticket and leaves
** when it can): a new thread with a new ticket is w from now on. The
** watchdog is the only one that writes w->th while threads run. */
int gsi_worker_replace(gsi_worker *w) {
  gsi_ticket *t = calloc(1, sizeof *t);
  pthread_t old = w->th;
  if (t == NULL) return -1;
  atomic_store(&w->ticket, t);
  atomic_store(&w->cur, NULL);
  atomic_store(&w->cur_co, NULL);
  atomic_store(&w->since, 0);
  atomic_store(&w->poked, 0);
  if (pthread_create(&w->th, NULL, worker_main, w) != 0) {
    w->th = old; /* lost: the runtime has a worker less */
    return -1;
  }
  pthread_detach(old);
  return 0;
}

/* Called once no process is left: wake everybody and join. */
void gsi_sched_stop(gsi_rt *rt) {
  gsi_runq *q = &rt->rq;
  pthread_mutex_lock(&q->mu);
  atomic_store(&rt->stopping, 1);
  pthread_cond_broadcast(&q->cv);
  pthread_mutex_unlock(&q->mu);
  gsi_watchdog_stop(rt);
  for (int i = 0; i < rt->nworkers; i++) pthread_join(rt->workers[i].th, NULL);
  for (int i = 0; i < rt->nworkers; i++) {
    free(atomic_load(&rt->workers[i].ticket));
    pthread_mutex_destroy(&rt->workers[i].lq_mu);
  }
  free(rt->workers);
  rt->workers = NULL;
}

/* -------------------------------------------------------------- notify */

/* p's home is another worker of p->rt than w, busy: queue p there (1). */
static int at_busy_home(gsi_worker *w, gsi_proc *p) {
  /* a process not started yet has no home (the slot's hint is stale) */
  int home = p->L != NULL ? atomic_load_explicit(&p->home, memory_order_relaxed) : 0;
  return home != 0 && home != w->id + 1 && home <= p->rt->nworkers &&
         lq_push_home(&p->rt->workers[home - 1], w, p);
}

static void wake(gsi_proc *p, int handoff) {
  if (p->fg != NULL) {
    /* the foreign thread re-checks p->sched under fg->mu before waiting */
    pthread_mutex_lock(&p->fg->mu);
    pthread_cond_signal(&p->fg->cv);
    pthread_mutex_unlock(&p->fg->mu);
    return;
  }
  if (handoff) {
    gsi_enqueue_next(p->rt, p);
  } else {
    /* woken by a message: at home if that worker is busy, else on the
    ** sender's (see "run queues") */
    gsi_worker *w = worker_of(p->rt);
    if (w != NULL) {
      if (!at_busy_home(w, p)) lq_push(w, p);
    } else {
      global_push(p->rt, p);
    }
  }
}

/* The caller is about to block on p (a sender waiting for the reply, a
** starter waiting for the ack): run p next on this worker, right here,
** instead of through a queue and maybe another worker. The slot's previous
** occupant goes to this worker's own queue. A process whose home is
** another worker, busy, goes on that worker's own queue instead (see "run
** queues"). */
void gsi_enqueue_next(gsi_rt *rt, gsi_proc *p) {
  gsi_worker *w = worker_of(rt);
  if (w != NULL) {
    gsi_proc *old;
    if (at_busy_home(w, p)) return;
    old = atomic_exchange(&w->runnext, p);
    if (old != NULL) lq_push(w, old);
    return;
  }
  global_push(rt, p);
}

void gsi_notify(gsi_proc *p, int handoff) {
  int s = atomic_load(&p->sched);
  for (;;) {
    if (s == GSI_IDLE) {
      if (atomic_compare_exchange_weak(&p->sched, &s, GSI_QUEUED)) {
        wake(p, handoff);
        return;
      }
    } else if (s == GSI_RUNNING) {
      if (atomic_compare_exchange_weak(&p->sched, &s, GSI_NOTIFIED)) return;
    } else {
      return; /* QUEUED or NOTIFIED: it will look at its mailbox anyway */
    }
  }
}

/* ------------------------------------------------------- foreign waits */

static void to_timespec(uint64_t ns, struct timespec *ts) {
  ts->tv_sec = (time_t)(ns / 1000000000u);
  ts->tv_nsec = (long)(ns % 1000000000u);
}

int gsi_foreign_wait(gsi_proc *p, uint64_t deadline) {
  int s;
  unsigned i = 0;
  uint64_t t0 = 0;
  uint64_t budget = FOREIGN_SPIN_NS;
  if (deadline != 0) {
    uint64_t now = gsi_now_ns();
    if (deadline <= now) budget = 0;
    else if (deadline - now < budget) budget = deadline - now;
  }
  while (spin_step(&i, &t0, budget)) {
    if (atomic_load_explicit(&p->sched, memory_order_acquire) == GSI_NOTIFIED) {
      atomic_store(&p->sched, GSI_RUNNING);
      return 0;
    }
  }
  s = GSI_RUNNING;
  if (!atomic_compare_exchange_strong(&p->sched, &s, GSI_IDLE)) {
    atomic_store(&p->sched, GSI_RUNNING); /* was NOTIFIED */
    return 0;
  }
  pthread_mutex_lock(&p->fg->mu);
  while (atomic_load(&p->sched) == GSI_IDLE) {
    if (deadline == 0) {
      pthread_cond_wait(&p->fg->cv, &p->fg->mu);
    } else {
      struct timespec ts;
      to_timespec(deadline, &ts);
      if (pthread_cond_timedwait(&p->fg->cv, &p->fg->mu, &ts) == ETIMEDOUT) {
        s = GSI_IDLE;
        if (atomic_compare_exchange_strong(&p->sched, &s, GSI_RUNNING)) {
          pthread_mutex_unlock(&p->fg->mu);
          return 1;
        }
      }
    }
  }
  pthread_mutex_unlock(&p->fg->mu);
  atomic_store(&p->sched, GSI_RUNNING);
  return 0;
}
