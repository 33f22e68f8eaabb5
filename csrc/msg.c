/*
** msg.c - message nodes, the MPSC mailbox queue and small id vectors.
*/
#include <stdlib.h>
#include <string.h>

#include "internal.h"

gsi_msg *gsi_msg_new(int kind, uint64_t from, uint64_t ref, const void *data,
                     size_t len) {
  /* header and payload in one allocation: a small message costs one malloc */
  gsi_msg *m = malloc(sizeof(gsi_msg) + len);
  if (m == NULL) return NULL;
  atomic_store_explicit(&m->next, NULL, memory_order_relaxed);
  m->prev = NULL;
  m->from = from;
  m->ref = ref;
  m->len = len;
  m->kind = (uint8_t)kind;
  m->flags = 0;
  if (len > 0) memcpy(GSI_MSG_DATA(m), data, len);
  return m;
}

void gsi_msg_free(gsi_msg *m) { free(m); }

/* ------------------------------------------------------------ scratch */

static _Thread_local gsi_scratch scratch;

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

void gsi_idvec_push(gsi_idvec *v, uint64_t a) {
  if (v->n == v->cap) {
    size_t ncap = v->cap ? v->cap * 2 : 4;
    uint64_t *nv = realloc(v->v, ncap * sizeof *nv);
    if (nv == NULL) abort(); /* tiny; out of C memory is fatal here */
    v->v = nv;
    v->cap = ncap;
  }
  v->v[v->n++] = a;
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
