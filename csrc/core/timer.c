/*
** timer.c - one timer thread for every time-out in the runtime: call and
** receive time-outs, sleep, send_after, send_interval (a repeating timer
** keeps its slot and id, and delivers a copy of its message at each tick)
** and the gen_server idle time-out.
**
** Timers live in a slab (index + generation, like pids: a timer id is a
** handle, never a pointer) ordered by a binary min-heap of slab indexes.
** Everything is guarded by tm->mu. Messages of fired timers are delivered
** after the lock is dropped, so the timer lock is never held while a run
** queue or process lock is taken.
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

struct gsi_timers {
  pthread_mutex_t mu;
  pthread_cond_t cv; /* CLOCK_MONOTONIC; signalled when the top changes */
  pthread_t th;
  int stop;
  /* When the timer thread will next look at the heap's top, ns: the
  ** deadline of its timed wait, UINT64_MAX while it waits with no time-out,
  ** 0 while it is awake (it re-reads the top before it waits again).
  ** Invariant (all under mu): a timer armed with a deadline >= wake needs no
  ** signal, since the thread looks at the top by then anyway; only an
  ** earlier deadline signals cv. A spurious wake-up (a cancelled timer that
  ** was the top) costs one loop turn, never a late timer. */
  uint64_t wake;
  tentry *ents;
  uint32_t nents, cap;
  uint32_t free_head; /* index + 1; 0 = empty */
  uint32_t *heap;
  uint32_t hlen;
};

#define ID_OF(idx, gen) \
  (GSI_TIMER_BIT | ((uint64_t)((gen) & 0x7fffffffu) << 32) | (uint32_t)(idx))

/* ------------------------------------------------------------- heap */

static int before(gsi_timers *t, uint32_t a, uint32_t b) {
  return t->ents[t->heap[a]].deadline < t->ents[t->heap[b]].deadline;
}

static void hswap(gsi_timers *t, uint32_t a, uint32_t b) {
  uint32_t x = t->heap[a];
  t->heap[a] = t->heap[b];
  t->heap[b] = x;
  t->ents[t->heap[a]].hidx = a;
  t->ents[t->heap[b]].hidx = b;
}

static void sift_up(gsi_timers *t, uint32_t i) {
  while (i > 0 && before(t, i, (i - 1) / 2)) {
    hswap(t, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
}

static void sift_down(gsi_timers *t, uint32_t i) {
  for (;;) {
    uint32_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < t->hlen && before(t, l, m)) m = l;
    if (r < t->hlen && before(t, r, m)) m = r;
    if (m == i) return;
    hswap(t, i, m);
    i = m;
  }
}

static void heap_remove(gsi_timers *t, uint32_t i) {
  t->hlen--;
  if (i != t->hlen) {
    t->heap[i] = t->heap[t->hlen];
    t->ents[t->heap[i]].hidx = i;
    sift_down(t, i);
    sift_up(t, i);
  }
}

/* ------------------------------------------------------------- slab */

static int grow(gsi_timers *t) {
  uint32_t ncap = t->cap ? t->cap * 2 : 64;
  tentry *ne = realloc(t->ents, ncap * sizeof *ne);
  uint32_t *nh;
  if (ne == NULL) return -1;
  t->ents = ne;
  nh = realloc(t->heap, ncap * sizeof *nh);
  if (nh == NULL) return -1;
  t->heap = nh;
  memset(&t->ents[t->cap], 0, (ncap - t->cap) * sizeof *ne);
  t->cap = ncap;
  return 0;
}

static int64_t entry_alloc(gsi_timers *t) {
  uint32_t i;
  if (t->free_head != 0) {
    i = t->free_head - 1;
    t->free_head = t->ents[i].next_free;
  } else {
    if (t->nents == t->cap && grow(t) != 0) return -1;
    i = t->nents++;
  }
  t->ents[i].used = 1;
  return i;
}

static void entry_free(gsi_timers *t, uint32_t i) {
  tentry *e = &t->ents[i];
  e->used = 0;
  e->gen++;
  e->m = NULL;
  e->name = NULL;
  e->next_free = t->free_head;
  t->free_head = i + 1;
}

/* ----------------------------------------------------------- thread */

typedef struct fired {
  uint64_t pid;
  char *name;
  gsi_msg *m;
  uint64_t every; /* the id of a repeating timer, else 0 */
} fired;

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

/* A tick of the repeating timer i (under mu): a copy of its message for
** the batch, and the next deadline. A copy that cannot be made (out of
** memory) skips this tick. Returns 1 if f was filled. */
static int tick(gsi_timers *t, uint32_t i, uint64_t now, fired *f) {
  tentry *e = &t->ents[i];
  gsi_msg *m = e->m;
  int ok = 0;
  f->m = gsi_msg_new(m->kind, m->from, m->ref, GSI_MSG_DATA(m), m->len);
  f->name = NULL;
  if (f->m != NULL && e->name != NULL && (f->name = strdup(e->name)) == NULL) {
    gsi_msg_free(f->m);
    f->m = NULL;
  }
  if (f->m != NULL) {
    f->pid = e->pid;
    f->every = ID_OF(i, e->gen);
    ok = 1;
  }
  e->deadline += e->interval;
  if (e->deadline <= now) e->deadline = now + e->interval; /* late: no burst */
  sift_down(t, e->hidx);
  return ok;
}

static void *timer_main(void *arg) {
  gsi_rt *rt = arg;
  gsi_timers *t = rt->timers;
  fired batch[64];
  pthread_mutex_lock(&t->mu);
  while (!t->stop) {
    size_t n = 0;
    uint64_t now;
    if (t->hlen == 0) {
      t->wake = UINT64_MAX;
      pthread_cond_wait(&t->cv, &t->mu);
      t->wake = 0;
      continue;
    }
    now = gsi_now_ns();
    while (t->hlen > 0 && n < 64 && t->ents[t->heap[0]].deadline <= now) {
      uint32_t i = t->heap[0];
      if (t->ents[i].interval != 0) {
        n += (size_t)tick(t, i, now, &batch[n]);
        continue;
      }
      batch[n].every = 0;
      batch[n].pid = t->ents[i].pid;
      batch[n].name = t->ents[i].name;
      batch[n].m = t->ents[i].m;
      n++;
      heap_remove(t, 0);
      entry_free(t, i);
    }
    if (n > 0) {
      pthread_mutex_unlock(&t->mu);
      deliver_fired(rt, batch, n);
      pthread_mutex_lock(&t->mu);
    } else {
      uint64_t d = t->ents[t->heap[0]].deadline;
      struct timespec ts = {(time_t)(d / 1000000000u), (long)(d % 1000000000u)};
      t->wake = d;
      pthread_cond_timedwait(&t->cv, &t->mu, &ts);
      t->wake = 0;
    }
  }
  pthread_mutex_unlock(&t->mu);
  return NULL;
}

int gsi_timer_start(gsi_rt *rt) {
  gsi_timers *t = calloc(1, sizeof *t);
  pthread_condattr_t ca;
  if (t == NULL) return -1;
  pthread_mutex_init(&t->mu, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&t->cv, &ca);
  pthread_condattr_destroy(&ca);
  rt->timers = t;
  if (pthread_create(&t->th, NULL, timer_main, rt) != 0) {
    rt->timers = NULL;
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
  for (uint32_t i = 0; i < t->nents; i++)
    if (t->ents[i].used) {
      gsi_msg_free(t->ents[i].m);
      free(t->ents[i].name);
    }
  free(t->ents);
  free(t->heap);
  pthread_mutex_destroy(&t->mu);
  pthread_cond_destroy(&t->cv);
  free(t);
  rt->timers = NULL;
}

static uint64_t arm(gsi_rt *rt, uint64_t ms, uint64_t pid, const char *name,
                    gsi_msg *m, int every) {
  gsi_timers *t = rt->timers;
  char *nm = NULL;
  int64_t i;
  uint64_t id;
  if (name != NULL && (nm = strdup(name)) == NULL) return 0;
  pthread_mutex_lock(&t->mu);
  i = entry_alloc(t);
  if (i < 0) {
    pthread_mutex_unlock(&t->mu);
    free(nm);
    return 0;
  }
  tentry *e = &t->ents[i];
  if (ms > UINT64_MAX / 2000000u) ms = UINT64_MAX / 2000000u;
  e->deadline = gsi_now_ns() + ms * 1000000u;
  e->interval = every ? ms * 1000000u : 0;
  e->pid = pid;
  e->name = nm;
  e->m = m;
  id = ID_OF(i, e->gen);
  if (m->kind == GSI_M_TIMEOUT) m->ref = id;
  e->hidx = t->hlen;
  t->heap[t->hlen++] = (uint32_t)i;
  sift_up(t, e->hidx);
  /* see wake: most arms (a call's 5 s time-out) fall after the thread's
  ** next look and need no futex wake-up */
  if (e->deadline < t->wake) {
    pthread_cond_signal(&t->cv); /* wake != 0: it is in a wait on cv */
    t->wake = 0;                 /* it will look: no second signal */
  }
  pthread_mutex_unlock(&t->mu);
  return id;
}

uint64_t gsi_timer_arm(gsi_rt *rt, uint64_t ms, uint64_t pid, const char *name,
                       gsi_msg *m) {
  return arm(rt, ms, pid, name, m, 0);
}

uint64_t gsi_timer_arm_every(gsi_rt *rt, uint64_t ms, uint64_t pid,
                             const char *name, gsi_msg *m) {
  return arm(rt, ms < 1 ? 1 : ms, pid, name, m, 1);
}

int64_t gsi_timer_cancel(gsi_rt *rt, uint64_t id) {
  gsi_timers *t = rt->timers;
  uint32_t i = (uint32_t)id;
  uint32_t gen = (uint32_t)(id >> 32) & 0x7fffffffu;
  int64_t left = -1;
  gsi_msg *m = NULL;
  char *nm = NULL;
  if (t == NULL || !(id & GSI_TIMER_BIT)) return -1;
  pthread_mutex_lock(&t->mu);
  if (i < t->nents && t->ents[i].used && (t->ents[i].gen & 0x7fffffffu) == gen) {
    tentry *e = &t->ents[i];
    uint64_t now = gsi_now_ns();
    left = e->deadline > now ? (int64_t)((e->deadline - now) / 1000000u) : 0;
    m = e->m;
    nm = e->name;
    heap_remove(t, e->hidx);
    entry_free(t, i);
  }
  pthread_mutex_unlock(&t->mu);
  gsi_msg_free(m);
  free(nm);
  return left;
}
