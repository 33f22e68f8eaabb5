/*
** timer.c - one timer thread for every time-out in the runtime: call and
** receive time-outs, sleep, send_after, send_interval (a repeating timer
** keeps its slot and id, and delivers a copy of its message at each tick)
** and the gen_server idle time-out.
**
** Timers live in NSHARD shards, each with its own mutex, slab (index +
** generation, like pids: a timer id is a handle, never a pointer) and
** binary min-heap of slab indexes. A thread arms on the shard it was given
** the first time it armed (round robin), so two workers arming and
** cancelling their calls' time-outs share no lock and no cache line (as
** long as the process is cancelled on the worker that armed and there are
** no more arming threads than shards); a timer id names its shard, so a
** cancel goes straight there from any thread. One timer thread fires them
** all: it sleeps until the earliest deadline over the shards (each
** publishes its own, `top`), fires what is due shard by shard (a batch
** drawn from several shards sorted by deadline), and delivers the
** messages after every lock is dropped, so no timer lock is ever held
** while a run queue or process lock is taken.
**
** Waking the timer thread -- the protocol. Most arms (a call's 5 s
** time-out) fall after the thread's next look at the shards and must cost
** it nothing; only an arm earlier than that may signal it.
**   shard.top  (under shard.mu, read by the thread without it): a lower
**              bound of the shard's earliest deadline, UINT64_MAX if it has
**              none. Only an arm lowers it, with a seq_cst store. A cancel
**              leaves it alone (a stale low value costs the thread one
**              early look, never a late timer); the thread sets it exactly
**              when it looks at the shard under shard.mu.
**   timers.wake (written under timers.mu: by the thread, and set to 0 by
**              an arm that has just signalled it): when the thread
**              will next look at every shard's top -- the deadline of its
**              timed wait, UINT64_MAX for a wait without one, 0 while it
**              is awake (it looks again before it sleeps).
** The arm: lower top (seq_cst store), then read wake (seq_cst load); if
** its deadline is before wake, signal cv under timers.mu (after dropping
** shard.mu: both locks are leaves). The thread, before it sleeps, holds
** timers.mu, stores wake = W (seq_cst), then re-reads every top (seq_cst)
** and sleeps only if none is below W. Dekker: of "arm stores top, reads
** wake" and "thread stores wake, reads top" at least one sees the other's
** store. If the thread sees the lower top it does not sleep to W; if the
** arm sees W it signals, and since the thread holds timers.mu from its
** store of W until the wait releases it, the signal cannot fall before the
** wait. Invariant: while the thread sleeps until W, every timer due before
** W either is in a shard whose top the thread saw below W (then it would
** not sleep), or its arm signals cv. A signal for a timer cancelled since
** costs one loop turn.
*/
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

typedef struct tentry {
  uint64_t deadline; /* ns, CLOCK_MONOTONIC */
  uint64_t pid;
  char *name;  /* deliver to this registered name instead, if set */
  gsi_msg *m;  /* what to deliver (a repeating timer delivers copies) */
  uint64_t interval; /* ns between ticks of a repeating timer, 0 = once */
  uint32_t gen;
  uint32_t hidx; /* position in the heap */
  uint32_t next_free;
  int used;
} tentry;

/* A timer id: GSI_TIMER_BIT | generation (31 bits) << 32 | shard << 29 |
** slot. */
#define NSHARD 8 /* a power of two, <= 1 << (32 - SLOT_BITS) */
#define SLOT_BITS 29
#define SLOT_MASK ((1u << SLOT_BITS) - 1)
#define LINE 128 /* two cache lines: the adjacent-line prefetcher pairs them */

typedef struct shard {
  _Alignas(LINE) pthread_mutex_t mu; /* a leaf (lock order: rt.h) */
  _Atomic uint64_t top; /* see the protocol above */
  uint32_t no;          /* this shard's number */
  tentry *ents;
  uint32_t nents, cap;
  uint32_t free_head; /* index + 1; 0 = empty */
  uint32_t *heap;
  uint32_t hlen;
} shard;

struct gsi_timers {
  shard sh[NSHARD];
  _Alignas(LINE) pthread_mutex_t mu; /* the thread's; a leaf */
  pthread_cond_t cv; /* CLOCK_MONOTONIC; an earlier deadline signals it */
  pthread_t th;
  int stop; /* under mu */
  _Atomic uint64_t wake; /* see the protocol above */
};

/* The shard a thread arms on: chosen round robin the first time it arms
** (any runtime), number + 1; 0 = not chosen yet. */
static _Atomic uint32_t next_shard;
static _Thread_local uint32_t tls_shard GSI_TLS_FAST;

static shard *my_shard(gsi_timers *t) {
  uint32_t s = tls_shard;
  if (s == 0) {
    s = atomic_fetch_add_explicit(&next_shard, 1, memory_order_relaxed) % NSHARD + 1;
    tls_shard = s;
  }
  return &t->sh[s - 1];
}

static uint64_t id_of(const shard *s, uint32_t i) {
  return GSI_TIMER_BIT | (uint64_t)(s->ents[i].gen & 0x7fffffffu) << 32 |
         (uint64_t)s->no << SLOT_BITS | i;
}

/* ------------------------------------------------------------- heap */

static int before(shard *s, uint32_t a, uint32_t b) {
  return s->ents[s->heap[a]].deadline < s->ents[s->heap[b]].deadline;
}

static void hswap(shard *s, uint32_t a, uint32_t b) {
  uint32_t x = s->heap[a];
  s->heap[a] = s->heap[b];
  s->heap[b] = x;
  s->ents[s->heap[a]].hidx = a;
  s->ents[s->heap[b]].hidx = b;
}

static void sift_up(shard *s, uint32_t i) {
  while (i > 0 && before(s, i, (i - 1) / 2)) {
    hswap(s, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
}

static void sift_down(shard *s, uint32_t i) {
  for (;;) {
    uint32_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < s->hlen && before(s, l, m)) m = l;
    if (r < s->hlen && before(s, r, m)) m = r;
    if (m == i) return;
    hswap(s, i, m);
    i = m;
  }
}

static void heap_remove(shard *s, uint32_t i) {
  s->hlen--;
  if (i != s->hlen) {
    s->heap[i] = s->heap[s->hlen];
    s->ents[s->heap[i]].hidx = i;
    sift_down(s, i);
    sift_up(s, i);
  }
}

/* ------------------------------------------------------------- slab */

static int grow(shard *s) {
  uint32_t ncap = s->cap ? s->cap * 2 : 64;
  tentry *ne;
  uint32_t *nh;
  if (ncap > SLOT_MASK + 1u) return -1; /* the slot no longer fits an id */
  ne = realloc(s->ents, ncap * sizeof *ne);
  if (ne == NULL) return -1;
  s->ents = ne;
  nh = realloc(s->heap, ncap * sizeof *nh);
  if (nh == NULL) return -1;
  s->heap = nh;
  memset(&s->ents[s->cap], 0, (ncap - s->cap) * sizeof *ne);
  s->cap = ncap;
  return 0;
}

static int64_t entry_alloc(shard *s) {
  uint32_t i;
  if (s->free_head != 0) {
    i = s->free_head - 1;
    s->free_head = s->ents[i].next_free;
  } else {
    if (s->nents == s->cap && grow(s) != 0) return -1;
    i = s->nents++;
  }
  s->ents[i].used = 1;
  return i;
}

static void entry_free(shard *s, uint32_t i) {
  tentry *e = &s->ents[i];
  e->used = 0;
  e->gen++;
  e->m = NULL;
  e->name = NULL;
  e->next_free = s->free_head;
  s->free_head = i + 1;
}

/* ----------------------------------------------------------- thread */

typedef struct fired {
  uint64_t due; /* the deadline it fired for: the batch's order */
  uint64_t pid;
  char *name;
  gsi_msg *m;
  uint64_t every; /* the id of a repeating timer, else 0 */
} fired;

#define BATCH 64

static void deliver_fired(gsi_rt *rt, fired *f, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint64_t pid = f[i].pid;
    if (f[i].name != NULL) {
      pid = gsi_reg_whereis(rt, f[i].name);
      free(f[i].name);
    }
    /* a repeating timer whose destination is gone stops */
    if (gsi_deliver(rt, pid, f[i].m, 0) == GSI_ENOPROC && f[i].every != 0)
      gsi_timer_cancel(rt, f[i].every);
  }
}

/* A tick of the repeating timer i (under s->mu): a copy of its message for
** the batch, and the next deadline. A copy that cannot be made (out of
** memory) skips this tick. Returns 1 if f was filled. */
static int tick(shard *s, uint32_t i, uint64_t now, fired *f) {
  tentry *e = &s->ents[i];
  gsi_msg *m = e->m;
  int ok = 0;
  f->m = gsi_msg_new(m->kind, m->from, m->ref, GSI_MSG_DATA(m), m->len);
  f->name = NULL;
  if (f->m != NULL && e->name != NULL && (f->name = strdup(e->name)) == NULL) {
    gsi_msg_free(f->m);
    f->m = NULL;
  }
  if (f->m != NULL) {
    f->due = e->deadline;
    f->pid = e->pid;
    f->every = id_of(s, i);
    ok = 1;
  }
  e->deadline += e->interval;
  if (e->deadline <= now) e->deadline = now + e->interval; /* late: no burst */
  sift_down(s, e->hidx);
  return ok;
}

/* Fire what is due in s (the thread, under s->mu) into f (room for at
** most `room`), in deadline order, and set s->top exactly. A wait
** time-out's message (m == NULL) is made now; if it cannot be (out of
** memory) the time-out tries again a millisecond later. Returns how many
** were filled. */
static size_t expire(shard *s, uint64_t now, fired *f, size_t room) {
  size_t n = 0;
  while (s->hlen > 0 && n < room && s->ents[s->heap[0]].deadline <= now) {
    uint32_t i = s->heap[0];
    tentry *e = &s->ents[i];
    if (e->interval != 0) {
      n += (size_t)tick(s, i, now, &f[n]);
      continue;
    }
    if (e->m == NULL &&
        (e->m = gsi_msg_new(GSI_M_TIMEOUT, 0, id_of(s, i), NULL, 0)) == NULL) {
      e->deadline = now + 1000000u;
      sift_down(s, 0);
      continue;
    }
    f[n].due = e->deadline;
    f[n].every = 0;
    f[n].pid = e->pid;
    f[n].name = e->name;
    f[n].m = e->m;
    n++;
    heap_remove(s, 0);
    entry_free(s, i);
  }
  atomic_store_explicit(&s->top, s->hlen ? s->ents[s->heap[0]].deadline : UINT64_MAX,
                        memory_order_relaxed);
  return n;
}

/* The batch filled from several shards, in deadline order (each shard's
** part is already): an insertion sort, stable, of at most BATCH. */
static void sort_batch(fired *f, size_t n) {
  for (size_t i = 1; i < n; i++) {
    fired x = f[i];
    size_t j = i;
    for (; j > 0 && f[j - 1].due > x.due; j--) f[j] = f[j - 1];
    f[j] = x;
  }
}

static uint64_t min_top(gsi_timers *t) {
  uint64_t d = UINT64_MAX;
  for (int k = 0; k < NSHARD; k++) {
    uint64_t x = atomic_load(&t->sh[k].top); /* seq_cst: the protocol */
    if (x < d) d = x;
  }
  return d;
}

static void *timer_main(void *arg) {
  gsi_rt *rt = arg;
  gsi_timers *t = rt->timers;
  fired batch[BATCH];
  for (;;) {
    /* awake, timers.mu not held, wake == 0 */
    uint64_t now = gsi_now_ns(), w;
    size_t n = 0;
    int k, parts = 0;
    for (k = 0; k < NSHARD && n < BATCH; k++) {
      shard *s = &t->sh[k];
      size_t got;
      /* nothing due here: a top lowered meanwhile is seen by min_top's
      ** seq_cst loads below (or its arm signals), never missed */
      if (atomic_load_explicit(&s->top, memory_order_relaxed) > now) continue;
      pthread_mutex_lock(&s->mu);
      got = expire(s, now, batch + n, BATCH - n);
      pthread_mutex_unlock(&s->mu);
      n += got;
      parts += got > 0;
    }
    if (parts > 1) sort_batch(batch, n);
    if (n > 0) deliver_fired(rt, batch, n);
    if (n == BATCH) continue; /* more may be due */
    pthread_mutex_lock(&t->mu);
    if (t->stop) break;
    w = min_top(t);
    if (w > gsi_now_ns()) {
      atomic_store(&t->wake, w);
      if (min_top(t) >= w) { /* nothing armed below w meanwhile: sleep */
        if (w == UINT64_MAX) {
          pthread_cond_wait(&t->cv, &t->mu);
        } else {
          struct timespec ts = {(time_t)(w / 1000000000u), (long)(w % 1000000000u)};
          pthread_cond_timedwait(&t->cv, &t->mu, &ts);
        }
      }
      atomic_store(&t->wake, 0);
      if (t->stop) break;
    }
    pthread_mutex_unlock(&t->mu);
  }
  pthread_mutex_unlock(&t->mu);
  return NULL;
}

int gsi_timer_start(gsi_rt *rt) {
  gsi_timers *t = aligned_alloc(LINE, sizeof *t);
  pthread_condattr_t ca;
  if (t == NULL) return -1;
  memset(t, 0, sizeof *t);
  for (int k = 0; k < NSHARD; k++) {
    pthread_mutex_init(&t->sh[k].mu, NULL);
    atomic_init(&t->sh[k].top, UINT64_MAX);
    t->sh[k].no = (uint32_t)k;
  }
  pthread_mutex_init(&t->mu, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&t->cv, &ca);
  pthread_condattr_destroy(&ca);
  atomic_init(&t->wake, 0);
  rt->timers = t;
  if (pthread_create(&t->th, NULL, timer_main, rt) != 0) {
    rt->timers = NULL;
    for (int k = 0; k < NSHARD; k++) pthread_mutex_destroy(&t->sh[k].mu);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
    return -1;
  }
  return 0;
}

void gsi_timer_stop(gsi_rt *rt) {
  gsi_timers *t = rt->timers;
  if (t == NULL) return;
  pthread_mutex_lock(&t->mu);
  t->stop = 1;
  pthread_cond_signal(&t->cv);
  pthread_mutex_unlock(&t->mu);
  pthread_join(t->th, NULL);
  for (int k = 0; k < NSHARD; k++) {
    shard *s = &t->sh[k];
    for (uint32_t i = 0; i < s->nents; i++)
      if (s->ents[i].used) {
        gsi_msg_free(s->ents[i].m);
        free(s->ents[i].name);
      }
    free(s->ents);
    free(s->heap);
    pthread_mutex_destroy(&s->mu);
  }
  pthread_mutex_destroy(&t->mu);
  pthread_cond_destroy(&t->cv);
  free(t);
  rt->timers = NULL;
}

/* ms as ns, bounded so that now + the result cannot wrap */
static uint64_t ms_ns(uint64_t ms) {
  if (ms > UINT64_MAX / 2000000u) ms = UINT64_MAX / 2000000u;
  return ms * 1000000u;
}

/* deadline: ns, CLOCK_MONOTONIC; interval: ns between ticks, 0 = once */
static uint64_t arm(gsi_rt *rt, uint64_t deadline, uint64_t interval, uint64_t pid,
                    const char *name, gsi_msg *m) {
  gsi_timers *t = rt->timers;
  shard *s = my_shard(t);
  char *nm = NULL;
  int64_t i;
  uint64_t id;
  int kick = 0;
  if (name != NULL && (nm = strdup(name)) == NULL) return 0;
  pthread_mutex_lock(&s->mu);
  i = entry_alloc(s);
  if (i < 0) {
    pthread_mutex_unlock(&s->mu);
    free(nm);
    return 0;
  }
  tentry *e = &s->ents[i];
  e->deadline = deadline;
  e->interval = interval;
  e->pid = pid;
  e->name = nm;
  e->m = m;
  id = id_of(s, (uint32_t)i);
  if (m != NULL && m->kind == GSI_M_TIMEOUT) m->ref = id;
  e->hidx = s->hlen;
  s->heap[s->hlen++] = (uint32_t)i;
  sift_up(s, e->hidx);
  /* the protocol above: most arms (a call's 5 s time-out) are not below
  ** the shard's top and touch nothing the timer thread reads */
  if (deadline < atomic_load_explicit(&s->top, memory_order_relaxed)) {
    atomic_store(&s->top, deadline);
    kick = deadline < atomic_load(&t->wake);
  }
  pthread_mutex_unlock(&s->mu);
  if (kick) {
    pthread_mutex_lock(&t->mu);
    pthread_cond_signal(&t->cv);
    /* the thread is in its wait (it holds mu from its store of wake until
    ** then) or already awake: either way it looks before it sleeps again,
    ** so later arms need no signal */
    atomic_store_explicit(&t->wake, 0, memory_order_relaxed);
    pthread_mutex_unlock(&t->mu);
  }
  return id;
}

uint64_t gsi_timer_arm(gsi_rt *rt, uint64_t ms, uint64_t pid, const char *name,
                       gsi_msg *m) {
  return arm(rt, gsi_now_ns() + ms_ns(ms), 0, pid, name, m);
}

uint64_t gsi_timer_arm_at(gsi_rt *rt, uint64_t deadline, uint64_t pid) {
  return arm(rt, deadline, 0, pid, NULL, NULL);
}

uint64_t gsi_timer_arm_every(gsi_rt *rt, uint64_t ms, uint64_t pid,
                             const char *name, gsi_msg *m) {
  uint64_t every = ms_ns(ms < 1 ? 1 : ms);
  if (m == NULL) return 0; /* each tick copies m */
  return arm(rt, gsi_now_ns() + every, every, pid, name, m);
}

/* Takes timer id out; its deadline in *deadline. 0 if it is not there
** (fired, cancelled, unknown), 1 if it was. */
static int take_out(gsi_rt *rt, uint64_t id, uint64_t *deadline) {
  gsi_timers *t = rt->timers;
  uint32_t i = (uint32_t)id & SLOT_MASK;
  uint32_t gen = (uint32_t)(id >> 32) & 0x7fffffffu;
  gsi_msg *m = NULL;
  char *nm = NULL;
  int found = 0;
  shard *s;
  if (t == NULL || !(id & GSI_TIMER_BIT)) return 0;
  s = &t->sh[((uint32_t)id >> SLOT_BITS) % NSHARD];
  pthread_mutex_lock(&s->mu);
  if (i < s->nents && s->ents[i].used && (s->ents[i].gen & 0x7fffffffu) == gen) {
    tentry *e = &s->ents[i];
    *deadline = e->deadline;
    m = e->m;
    nm = e->name;
    /* top stays: a lower bound (see the protocol above) */
    heap_remove(s, e->hidx);
    entry_free(s, i);
    found = 1;
  }
  pthread_mutex_unlock(&s->mu);
  gsi_msg_free(m);
  free(nm);
  return found;
}

int64_t gsi_timer_cancel(gsi_rt *rt, uint64_t id) {
  uint64_t deadline, now;
  if (!take_out(rt, id, &deadline)) return -1;
  now = gsi_now_ns();
  return deadline > now ? (int64_t)((deadline - now) / 1000000u) : 0;
}

void gsi_timer_drop(gsi_rt *rt, uint64_t id) {
  uint64_t deadline;
  (void)take_out(rt, id, &deadline);
}
