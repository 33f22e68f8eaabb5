/*
** runtime.c - a runtime's life: create, start threads on first use, shut
** down (stop every process, join every thread, free everything).
*/
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "apool.h"

#define DEFAULT_MAX_PROCS (1u << 22)

static int default_workers(void) {
  const char *env = getenv("GENSERVER_WORKERS");
  long n = 0;
  if (env != NULL && *env) n = strtol(env, NULL, 10);
  if (n <= 0) n = sysconf(_SC_NPROCESSORS_ONLN);
  if (n <= 0) n = 1;
  if (n > 1024) n = 1024;
  return (int)n;
}

/* A runtime from its settings (core.h; 0 fields mean the defaults). The
** caller (api.c) has checked the ranges. */
gsi_rt *gsi_rt_new(const gsi_rt_config *cfg) {
  static _Atomic uint64_t serials = 1;
  gsi_rt *rt = calloc(1, sizeof *rt);
  uint32_t max_procs = DEFAULT_MAX_PROCS;
  if (rt == NULL) return NULL;
  rt->serial = atomic_fetch_add(&serials, 1);
  /* slot 0 is never used: n processes need n + 1 slots */
  if (cfg->max_procs > 0) max_procs = cfg->max_procs + 1;
  rt->nworkers = cfg->workers > 0 ? cfg->workers : default_workers();
  rt->max_procs = max_procs;
  rt->face = cfg->face;
  rt->limits = gsi_codec_default_limits;
  rt->limits.allow_functions = GSI_FN_ALL;
  rt->limits.builtin = gsi_state_builtin;
  atomic_store(&rt->budget, cfg->budget > 0 ? cfg->budget : 64);
  if (cfg->max_depth > 0) rt->limits.max_depth = cfg->max_depth;
  if (cfg->max_size > 0) rt->limits.max_size = cfg->max_size;
  /* room for the default at least (configure{max_processes} may raise it) */
  rt->nchunks_max =
      ((max_procs > DEFAULT_MAX_PROCS ? max_procs : DEFAULT_MAX_PROCS) >> GSI_CHUNK_BITS) + 1;
  rt->chunks = calloc(rt->nchunks_max, sizeof *rt->chunks);
  pthread_mutex_init(&rt->tbl_mu, NULL);
  pthread_mutex_init(&rt->rq.mu, NULL);
  pthread_cond_init(&rt->rq.cv, NULL);
  pthread_mutex_init(&rt->life_mu, NULL);
  pthread_cond_init(&rt->life_cv, NULL);
  rt->mods = gsi_modcache_new();
  rt->apool = gsi_apool_new();
  if (rt->chunks == NULL || rt->mods == NULL || rt->apool == NULL || gsi_reg_init(rt) != 0) {
    gsi_modcache_free(rt->mods);
    gsi_apool_free(rt->apool);
    free(rt->chunks);
    free(rt);
    return NULL;
  }
  return rt;
}


const gsi_face *gsi_rt_face(const gsi_rt *rt) { return &rt->face; }

typedef struct gsi_retired {
  struct gsi_retired *next;
  gsi_codec_limits lim;
} gsi_retired;

const gsi_codec_limits *gsi_rt_limits(gsi_rt *rt) {
  const gsi_codec_limits *l = atomic_load_explicit(&rt->lim, memory_order_acquire);
  return l != NULL ? l : &rt->limits;
}

/* Change settings of a running runtime (gs_runtime_configure has checked
** the ranges): workers > 0 and max_procs > 0 only while the threads are
** not started, lim (or NULL) and budget > 0 at any time. All or nothing:
** GSI_OK, GSI_ENOMEM, or GSI_EBUSY: the threads run already. Under life_mu, which
** also guards the start of the threads (gsi_rt_ensure_started reads
** nworkers there); max_procs is read under tbl_mu by gsi_proc_alloc (a
** foreign process may take a slot before the threads start), so it is
** written under both (lock order, rt.h: life_mu, then tbl_mu). */
int gsi_rt_configure(gsi_rt *rt, int workers, uint32_t max_procs,
                     const gsi_codec_limits *lim, int budget) {
  gsi_retired *r = NULL;
  if (lim != NULL && (r = malloc(sizeof *r)) == NULL) return GSI_ENOMEM;
  pthread_mutex_lock(&rt->life_mu);
  if ((workers > 0 || max_procs > 0) && atomic_load(&rt->started)) {
    pthread_mutex_unlock(&rt->life_mu);
    free(r);
    return GSI_EBUSY;
  }
  if (workers > 0) rt->nworkers = workers;
  if (max_procs > 0) {
    pthread_mutex_lock(&rt->tbl_mu);
    rt->max_procs = max_procs;
    pthread_mutex_unlock(&rt->tbl_mu);
  }
  if (r != NULL) {
    r->lim = *lim;
    r->lim.builtin = gsi_state_builtin;
    r->next = rt->retired;
    rt->retired = r;
    atomic_store_explicit(&rt->lim, &r->lim, memory_order_release);
  }
  if (budget > 0) atomic_store(&rt->budget, budget);
  pthread_mutex_unlock(&rt->life_mu);
  return GSI_OK;
}

/* Refs are unique and never 0, but not ordered: a thread takes them from a
** block of REF_BLOCK it reserves from one program-wide counter, so workers
** that make a ref on every call do not bounce that counter's cache line
** between them (a line moves between this machine's cores in ~250 ns).
** Unique across runtimes too: a runtime created where an earlier one was
** freed cannot meet a block the earlier one handed out. */
#define REF_BLOCK 1024u
static _Atomic uint64_t ref_blocks = 1;
static _Thread_local uint64_t ref_next GSI_TLS_FAST, ref_end GSI_TLS_FAST;

uint64_t gsi_new_ref(gsi_rt *rt) {
  (void)rt;
  if (ref_next == ref_end) {
    ref_next = atomic_fetch_add_explicit(&ref_blocks, REF_BLOCK, memory_order_relaxed);
    ref_end = ref_next + REF_BLOCK;
  }
  return ref_next++;
}

/* Threads start with the first process, so configure() can still change
** the number of workers until then. */
int gsi_rt_ensure_started(gsi_rt *rt) {
  int rc = 0;
  if (atomic_load_explicit(&rt->started, memory_order_acquire)) return 0;
  pthread_mutex_lock(&rt->life_mu);
  if (!atomic_load(&rt->started)) {
    if (atomic_load(&rt->stopping)) rc = -1;
    else if (gsi_timer_start(rt) != 0) rc = -1;
    else if (gsi_sched_start(rt) != 0) rc = -1;
    if (rc == 0) atomic_store_explicit(&rt->started, 1, memory_order_release);
  }
  pthread_mutex_unlock(&rt->life_mu);
  return rc;
}

size_t gsi_rt_lua_procs(gsi_rt *rt) {
  /* abandoned_live is read last: a slot given back meanwhile then counts
  ** once too often rather than one process too few */
  size_t live = atomic_load(&rt->live), nf = atomic_load(&rt->nforeign);
  size_t ab = atomic_load(&rt->abandoned_live);
  return live > nf + ab ? live - nf - ab : 0;
}
#define lua_procs gsi_rt_lua_procs

/* Send an exit signal to every live non-foreign process. */
static void signal_all(gsi_rt *rt, const void *reason, size_t len, int flags) {
  uint32_t used;
  pthread_mutex_lock(&rt->tbl_mu);
  used = rt->used;
  pthread_mutex_unlock(&rt->tbl_mu);
  for (uint32_t i = 1; i <= used; i++) {
    gsi_proc *p = gsi_proc_at(rt, i);
    uint64_t pid;
    int foreign;
    if (p == NULL) continue;
    /* pinned, fg is stable: the exit path clears it only once unpinned */
    pid = gsi_proc_pid(p);
    if ((p = gsi_pin(rt, pid)) == NULL) continue;
    foreign = p->fg != NULL;
    gsi_unpin(p);
    if (!foreign) gsi_exit_signal(rt, 0, pid, reason, len, flags);
  }
}

/* Wait until no Lua process is left or the deadline passes. */
static int wait_empty(gsi_rt *rt, uint64_t deadline) {
  int empty;
  pthread_mutex_lock(&rt->life_mu);
  while (!(empty = lua_procs(rt) == 0)) {
    uint64_t now = gsi_now_ns();
    struct timespec ts;
    uint64_t until = now + 10000000u; /* re-check every 10 ms */
    if (deadline && now >= deadline) break;
    if (deadline && until > deadline) until = deadline;
    clock_gettime(CLOCK_REALTIME, &ts);
    {
      uint64_t rel = until - now;
      ts.tv_nsec += (long)(rel % 1000000000u);
      ts.tv_sec += (time_t)(rel / 1000000000u) + ts.tv_nsec / 1000000000;
      ts.tv_nsec %= 1000000000;
    }
    pthread_cond_timedwait(&rt->life_cv, &rt->life_mu, &ts);
  }
  pthread_mutex_unlock(&rt->life_mu);
  return empty;
}

/* ------------------------------------------------------ program end */

/* A process the shutdown may signal now: a live Lua process whose parent
** is gone or is a foreign thread (the main script, a host's thread). */
typedef struct stop_root {
  uint64_t pid, born;
  int order;
} stop_root;

static int root_cmp(const void *a, const void *b) {
  const stop_root *x = a, *y = b;
  if (x->order != y->order) return x->order == GSI_STOP_FIRST ? -1 : 1;
  return x->born < y->born ? 1 : x->born > y->born ? -1 : 0; /* newest first */
}

/* A live process that is not a foreign thread? */
static int alive_lua(gsi_rt *rt, uint64_t pid) {
  gsi_proc *p = gsi_pin(rt, pid);
  int yes;
  if (p == NULL) return 0;
  yes = p->fg == NULL; /* pinned: fg is stable */
  gsi_unpin(p);
  return yes;
}

/* The roots not yet signalled, sorted: GSI_STOP_FIRST ones first, then
** the others, each group newest first; GSI_STOP_LAST ones only when no
** other Lua process is left. *n = how many; NULL when none or out of
** memory (the caller then kills what is left when its time is up). One
** pass over the table. */
static stop_root *collect_roots(gsi_rt *rt, size_t *n) {
  uint32_t used;
  size_t cap = 0, j = 0;
  int others = 0; /* a live Lua process that is not GSI_STOP_LAST */
  stop_root *v = NULL;
  *n = 0;
  pthread_mutex_lock(&rt->tbl_mu);
  used = rt->used;
  pthread_mutex_unlock(&rt->tbl_mu);
  for (uint32_t i = 1; i <= used; i++) {
    gsi_proc *p = gsi_proc_at(rt, i);
    stop_root r;
    int take;
    if (p == NULL) continue;
    r.pid = gsi_proc_pid(p);
    if ((p = gsi_pin(rt, r.pid)) == NULL) continue;
    if (p->fg != NULL) { /* pinned: fg is stable */
      gsi_unpin(p);
      continue;
    }
    /* parent and born were set before it was published */
    take = !atomic_load(&p->stop_sent) && (p->parent == 0 || !alive_lua(rt, p->parent));
    pthread_mutex_lock(&p->lk);
    r.order = p->stop_order;
    pthread_mutex_unlock(&p->lk);
    r.born = p->born;
    gsi_unpin(p);
    if (r.order != GSI_STOP_LAST) others = 1;
    if (!take) continue;
    if (*n == cap) {
      stop_root *nv = realloc(v, (cap = cap ? cap * 2 : 16) * sizeof *v);
      if (nv == NULL) break;
      v = nv;
    }
    v[(*n)++] = r;
  }
  for (size_t i = 0; i < *n; i++) /* the logger waits for the others */
    if (!(others && v[i].order == GSI_STOP_LAST)) v[j++] = v[i];
  *n = j;
  if (*n == 0) {
    free(v);
    return NULL;
  }
  qsort(v, *n, sizeof *v, root_cmp);
  return v;
}

static void send_stop(gsi_rt *rt, uint64_t pid, const void *reason, size_t len) {
  gsi_proc *p = gsi_pin(rt, pid);
  if (p == NULL) return;
  atomic_store(&p->stop_sent, 1);
  gsi_unpin(p);
  gsi_exit_signal(rt, 0, pid, reason, len, 0);
}

static void nap_ms(long ms) {
  struct timespec ts = {0, ms * 1000000L};
  nanosleep(&ts, NULL);
}

void gsi_rt_shutting(gsi_rt *rt) { atomic_store(&rt->shutting, 1); }

/* Stop every process the way its parent would (DESIGN 1.7): rounds of
** exit signals with `reason` (the encoded "shutdown") from the runtime
** itself (no sender pid), each to the roots not signalled yet --
** processes whose parent is gone or is a foreign thread. Supervisors
** (GSI_STOP_FIRST) go first, one at a time, newest first, each waited
** for; they stop their own children in order. Then the other roots at
** once; their linked children get the exit through the link, the others
** are roots of a later round. The logger (GSI_STOP_LAST) goes when
** nothing else is left, so that every report sent before reaches it.
** A gen_server that traps exits runs terminate(reason) on the runtime's
** signal (lserver.c). What is left after half the time-out is killed.
** Returns 0 when every process is gone, -1 otherwise. */
int gsi_rt_stop_all(gsi_rt *rt, const void *reason, size_t len, uint64_t ms);
int gsi_rt_stop_all(gsi_rt *rt, const void *reason, size_t len, uint64_t ms) {
  uint64_t start = gsi_now_ns(), half = start + ms * 500000u;
  uint64_t seen_births = 0;
  size_t seen_live = (size_t)-1;
  if (!atomic_load(&rt->started)) return 0;
  atomic_store(&rt->shutting, 1);
  for (;;) {
    size_t n, live = lua_procs(rt);
    uint64_t births;
    stop_root *v;
    if (live == 0) return 0;
    if (gsi_now_ns() >= half && seen_live != (size_t)-1) break;
    pthread_mutex_lock(&rt->tbl_mu);
    births = rt->births;
    pthread_mutex_unlock(&rt->tbl_mu);
    if (live == seen_live && births == seen_births) { /* none started or ended */
      nap_ms(1);
      continue;
    }
    seen_live = live;
    seen_births = births;
    v = collect_roots(rt, &n);
    for (size_t i = 0; i < n; i++) {
      send_stop(rt, v[i].pid, reason, len);
      if (v[i].order != GSI_STOP_FIRST) continue;
      while (alive_lua(rt, v[i].pid) && gsi_now_ns() < half) nap_ms(1);
    }
    free(v);
    /* look again when something has ended: children may be roots now */
    nap_ms(1);
  }
  signal_all(rt, NULL, 0, GSI_XF_KILL);
  return wait_empty(rt, start + ms * 1000000u) ? 0 : -1;
}

/* Join the threads and free everything but the struct itself, which Lua
** closures may still point to: it stays, marked closed, until
** gsi_rt_destroy. Only after gsi_rt_stop_all succeeded (no Lua process
** left); foreign processes are dropped. */
void gsi_rt_free(gsi_rt *rt);
void gsi_rt_free(gsi_rt *rt) {
  void (*io_stop)(gsi_rt *);
  atomic_store(&rt->closed, 1);
  /* the I/O loop delivers to processes: it stops before anything else */
  if ((io_stop = atomic_load(&rt->io_stop)) != NULL) io_stop(rt);
  if (atomic_load(&rt->started)) {
    gsi_sched_stop(rt);
    gsi_timer_stop(rt);
  }
  /* a thread left running an abandoned process may still use the process
  ** table, the module cache and the struct: they stay (a leak, once per
  ** runtime that had such a process still running at its end) */
  if (atomic_load(&rt->orphan_threads) > 0) {
    atomic_store(&rt->leaked, 1);
    return;
  }
  for (uint32_t c = 0; c < rt->nchunks_max; c++) {
    gsi_proc *chunk = atomic_load(&rt->chunks[c]);
    if (chunk == NULL) continue;
    for (uint32_t i = 0; i < GSI_CHUNK; i++) {
      gsi_proc *p = &chunk[i];
      gsi_msg *m;
      while ((m = gsi_mpsc_pop(&p->mbox)) != NULL) gsi_msg_free(m);
      for (m = p->sv_head; m != NULL;) {
        gsi_msg *next = atomic_load(&m->next);
        gsi_msg_free(m);
        m = next;
      }
      gsi_msg_free(p->held); /* a foreign thread's answer whose decoding raised */
      if (p->fg != NULL) {
        pthread_mutex_destroy(&p->fg->mu);
        pthread_cond_destroy(&p->fg->cv);
        free(p->fg);
      }
      gsi_idvec_free(&p->links);
      gsi_idvec_free(&p->monitors);
      gsi_idvec_free(&p->mon_out);
      gsi_proc_introspection_free(p);
      free(p->pend);
      gsi_msg_free(p->spawn_msg);
      gsi_msg_free(p->exit_msg);
      pthread_mutex_destroy(&p->lk);
    }
    free(chunk);
  }
  free(rt->chunks);
  while (rt->retired != NULL) {
    gsi_retired *next = rt->retired->next;
    free(rt->retired);
    rt->retired = next;
  }
  atomic_store(&rt->lim, NULL);
  gsi_reg_free(rt);
  gsi_modcache_free(rt->mods);
  rt->mods = NULL;
  gsi_apool_free(rt->apool); /* no state is left: their arenas came from it */
  rt->apool = NULL;
  pthread_mutex_destroy(&rt->tbl_mu);
  pthread_mutex_destroy(&rt->rq.mu);
  pthread_cond_destroy(&rt->rq.cv);
  pthread_mutex_destroy(&rt->life_mu);
  pthread_cond_destroy(&rt->life_cv);
  rt->chunks = NULL;
  rt->nchunks_max = 0;
}

void gsi_rt_destroy(gsi_rt *rt);
void gsi_rt_destroy(gsi_rt *rt) {
  if (!atomic_load(&rt->leaked)) free(rt);
}
