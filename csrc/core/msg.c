/*
** msg.c - message nodes, the MPSC mailbox queue and small id vectors.
*/
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* --------------------------------------------------------- node caches
**
** Most messages are small, made by a process on one worker and freed by
** a process on another. Through malloc, that pair makes both workers take
** the sending thread's arena lock and share its free lists on every
** message. So a small node (NODE_SIZE bytes, header included) made on a
** worker thread comes from that thread's cache and goes back to it:
**   - the owner thread takes nodes from `local` (owner only); when that is
**     empty it takes the whole `remote` list with one exchange;
**   - a worker that frees another cache's node collects such nodes in a
**     batch per home cache (tls_out) and pushes a batch onto the home's
**     `remote` list with one CAS; a thread that is not a worker pushes
**     each node by itself (it might never flush a batch).
** `remote` is a Treiber stack with one remover: many threads push, only
** the owner removes, and always the whole list (exchange with NULL), so
** no pusher's CAS can succeed on a node that was taken and pushed again
** meanwhile (no ABA). The pusher's release CAS publishes the links and
** all it did with the nodes; the owner's acquire exchange sees that
** before it reuses them.
** Caches are never freed, since a node in flight may still come back to
** one: when its worker ends, a cache goes on the idle list for the next
** worker thread (the mutex orders the two owners), and every cache stays
** reachable from cache_all. A cache keeps at most about CACHE_MAX free
** nodes on each list (`nremote` counts what is on `remote`: pushers add,
** the owner subtracts what it took); other nodes go back to malloc. */

#define NODE_SIZE 128
#define NODE_PAYLOAD (NODE_SIZE - sizeof(gsi_msg))
#define CACHE_MAX 1024
#define BATCH_MAX 32

struct gsi_nodecache {
  gsi_msg *_Atomic remote;  /* freed by other threads, for the owner */
  _Atomic size_t nremote;   /* nodes pushed on remote and not yet taken */
  char pad[64];             /* pushers' line apart from the owner's */
  gsi_msg *local;           /* owner only */
  size_t nlocal;
  gsi_nodecache *all_next;  /* cache_all, guarded by cache_mu */
  gsi_nodecache *idle_next; /* cache_idle, guarded by cache_mu */
};

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static gsi_nodecache *cache_all, *cache_idle;
static size_t cache_owned; /* caches a worker thread holds, under cache_mu */

static _Thread_local gsi_nodecache *tls_cache GSI_TLS_FAST; /* this thread owns it */

/* Nodes of one other cache, freed here and not yet pushed back. */
typedef struct outbatch {
  gsi_nodecache *home;
  gsi_msg *head, *tail;
  size_t n;
} outbatch;

static _Thread_local outbatch tls_out GSI_TLS_FAST;

static gsi_msg *link_of(gsi_msg *m) {
  return atomic_load_explicit(&m->next, memory_order_relaxed);
}

static void set_link(gsi_msg *m, gsi_msg *next) {
  atomic_store_explicit(&m->next, next, memory_order_relaxed);
}

/* This worker thread's cache; NULL on other threads (or out of memory). */
static gsi_nodecache *my_cache(void) {
  gsi_nodecache *c = tls_cache;
  if (c != NULL || gsi_current_worker() == NULL) return c;
  pthread_mutex_lock(&cache_mu);
  if ((c = cache_idle) != NULL) {
    cache_idle = c->idle_next;
  } else if ((c = calloc(1, sizeof *c)) != NULL) {
    atomic_init(&c->remote, NULL);
    atomic_init(&c->nremote, 0);
    c->all_next = cache_all;
    cache_all = c;
  }
  if (c != NULL) cache_owned++;
  pthread_mutex_unlock(&cache_mu);
  tls_cache = c;
  return c;
}

static void free_chain(gsi_msg *m) {
  while (m != NULL) {
    gsi_msg *next = link_of(m);
    free(m);
    m = next;
  }
}

/* Give the n nodes head..tail back to c, or to malloc when c has plenty. */
static void push_remote(gsi_nodecache *c, gsi_msg *head, gsi_msg *tail,
                        size_t n) {
  gsi_msg *old;
  if (atomic_fetch_add_explicit(&c->nremote, n, memory_order_relaxed) + n >
      CACHE_MAX) {
    atomic_fetch_sub_explicit(&c->nremote, n, memory_order_relaxed);
    free_chain(head);
    return;
  }
  old = atomic_load_explicit(&c->remote, memory_order_relaxed);
  do {
    set_link(tail, old);
  } while (!atomic_compare_exchange_weak_explicit(
      &c->remote, &old, head, memory_order_release, memory_order_relaxed));
}

static void flush_out(outbatch *o) {
  if (o->n > 0) push_remote(o->home, o->head, o->tail, o->n);
  o->home = NULL;
  o->head = o->tail = NULL;
  o->n = 0;
}

/* Owner: local is empty; make what others gave back local. */
static void take_remote(gsi_nodecache *c) {
  gsi_msg *m = atomic_exchange_explicit(&c->remote, NULL, memory_order_acquire);
  size_t n = 0;
  c->local = m;
  for (; m != NULL; m = link_of(m)) n++;
  c->nlocal = n;
  if (n > 0) atomic_fetch_sub_explicit(&c->nremote, n, memory_order_relaxed);
}

gsi_msg *gsi_msg_new(int kind, uint64_t from, uint64_t ref, const void *data,
                     size_t len) {
  /* header and payload in one allocation: a small message costs one node */
  gsi_nodecache *c = len <= NODE_PAYLOAD ? my_cache() : NULL;
  gsi_msg *m;
  if (c != NULL) {
    if (c->local == NULL) take_remote(c);
    if ((m = c->local) != NULL) {
      c->local = link_of(m);
      c->nlocal--;
    } else {
      m = malloc(NODE_SIZE); /* a full node: it joins the cache when freed */
    }
  } else {
    m = malloc(sizeof(gsi_msg) + len);
  }
  if (m == NULL) return NULL;
  set_link(m, NULL);
  m->prev = NULL;
  m->from = from;
  m->ref = ref;
  m->len = len;
  m->home = c;
  m->kind = (uint8_t)kind;
  m->flags = 0;
  if (len > 0) memcpy(GSI_MSG_DATA(m), data, len);
  return m;
}

void (*_Atomic gsi_msg_credit_hook)(gsi_msg *m);

void gsi_msg_free(gsi_msg *m) {
  gsi_nodecache *home, *c = tls_cache;
  outbatch *o;
  if (m == NULL) return; /* as free(NULL) */
  if (m->flags & GSI_MF_CREDIT) /* socket data taken: the I/O layer's hook */
    atomic_load_explicit(&gsi_msg_credit_hook, memory_order_acquire)(m);
  home = m->home;
  if (home == NULL) {
    free(m);
  } else if (home == c) {
    if (c->nlocal < CACHE_MAX) {
      set_link(m, c->local);
      c->local = m;
      c->nlocal++;
    } else {
      free(m);
    }
  } else if (c == NULL && gsi_current_worker() == NULL) {
    set_link(m, NULL);
    push_remote(home, m, m, 1);
  } else {
    o = &tls_out;
    if (o->home != home || o->n == BATCH_MAX) flush_out(o);
    set_link(m, o->head);
    if (o->head == NULL) o->tail = m;
    o->head = m;
    o->home = home;
    o->n++;
  }
}

void gsi_msg_thread_done(void) {
  gsi_nodecache *c = tls_cache;
  flush_out(&tls_out);
  if (c == NULL) return;
  tls_cache = NULL;
  pthread_mutex_lock(&cache_mu);
  c->idle_next = cache_idle;
  cache_idle = c;
  cache_owned--;
  pthread_mutex_unlock(&cache_mu);
}

/* The library is unloaded (or the program ends): with no worker thread
** left holding a cache, no node can come back to one, so the caches and
** the nodes they keep are freed. Priority 101: after lgenserver.c's
** at_unload, which closes the default runtimes (their messages are freed
** into these caches). A runtime still running keeps them all. */
__attribute__((destructor(101))) static void free_caches(void) {
  pthread_mutex_lock(&cache_mu);
  if (cache_owned == 0) {
    while (cache_all != NULL) {
      gsi_nodecache *c = cache_all;
      cache_all = c->all_next;
      free_chain(c->local);
      free_chain(atomic_load(&c->remote));
      free(c);
    }
    cache_idle = NULL;
  }
  pthread_mutex_unlock(&cache_mu);
}

/* ------------------------------------------------------------ scratch */

static _Thread_local gsi_scratch scratch GSI_TLS_FAST;

gsi_scratch *gsi_scratch_get(void) { return &scratch; }

void gsi_scratch_release(void) {
  gsi_buf_free(&scratch.buf);
  gsi_buf_free(&scratch.err);
  gsi_msg_free(scratch.killed);
  scratch.killed = NULL;
}

/* ------------------------------------------------------------- MPSC */

void gsi_mpsc_init(gsi_mpsc *q) {
  atomic_store_explicit(&q->stub.next, NULL, memory_order_relaxed);
  atomic_store_explicit(&q->head, &q->stub, memory_order_relaxed);
  q->tail = &q->stub;
}

/* Any thread. The exchange orders producers; the release store publishes
** the node to the consumer. Between the two a consumer sees a gap and
** returns NULL (see gsi_mpsc_pop). */
void gsi_mpsc_push(gsi_mpsc *q, gsi_msg *m) {
  gsi_msg *prev;
  atomic_store_explicit(&m->next, NULL, memory_order_relaxed);
  prev = atomic_exchange_explicit(&q->head, m, memory_order_acq_rel);
  atomic_store_explicit(&prev->next, m, memory_order_release);
}

/* Consumer only. */
gsi_msg *gsi_mpsc_pop(gsi_mpsc *q) {
  gsi_msg *tail = q->tail;
  gsi_msg *next = atomic_load_explicit(&tail->next, memory_order_acquire);
  if (tail == &q->stub) {
    if (next == NULL) return NULL;
    q->tail = next;
    tail = next;
    next = atomic_load_explicit(&tail->next, memory_order_acquire);
  }
  if (next != NULL) {
    q->tail = next;
    return tail;
  }
  if (tail != atomic_load_explicit(&q->head, memory_order_acquire))
    return NULL; /* a producer is between its exchange and its link */
  gsi_mpsc_push(q, &q->stub);
  next = atomic_load_explicit(&tail->next, memory_order_acquire);
  if (next != NULL) {
    q->tail = next;
    return tail;
  }
  return NULL;
}

/* ---------------------------------------------------------- id vectors */

int gsi_idvec_push(gsi_idvec *v, uint64_t a) {
  if (v->n == v->cap) {
    size_t ncap = v->cap ? v->cap * 2 : 4;
    uint64_t *nv = realloc(v->v, ncap * sizeof *nv);
    if (nv == NULL) return GSI_ENOMEM;
    v->v = nv;
    v->cap = ncap;
  }
  v->v[v->n++] = a;
  return GSI_OK;
}

int gsi_idvec_push_pair(gsi_idvec *v, uint64_t a, uint64_t b) {
  if (gsi_idvec_push(v, a) != GSI_OK) return GSI_ENOMEM;
  if (gsi_idvec_push(v, b) != GSI_OK) {
    v->n--; /* the lone first id */
    return GSI_ENOMEM;
  }
  return GSI_OK;
}

int gsi_idvec_remove(gsi_idvec *v, uint64_t a) {
  for (size_t i = 0; i < v->n; i++)
    if (v->v[i] == a) {
      v->v[i] = v->v[--v->n];
      return 1;
    }
  return 0;
}

/* Pairs (a, b) stored flat; removes the pair whose first element is a. */
int gsi_idvec_remove_pair(gsi_idvec *v, uint64_t a) {
  for (size_t i = 0; i + 1 < v->n; i += 2)
    if (v->v[i] == a) {
      v->v[i] = v->v[v->n - 2];
      v->v[i + 1] = v->v[v->n - 1];
      v->n -= 2;
      return 1;
    }
  return 0;
}

int gsi_idvec_has(const gsi_idvec *v, uint64_t a) {
  for (size_t i = 0; i < v->n; i++)
    if (v->v[i] == a) return 1;
  return 0;
}

void gsi_idvec_free(gsi_idvec *v) {
  free(v->v);
  v->v = NULL;
  v->n = v->cap = 0;
}
