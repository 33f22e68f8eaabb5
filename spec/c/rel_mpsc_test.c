/*
** rel_mpsc_test.c - the mailbox queue (csrc/core/msg.c: Vyukov's intrusive MPSC
** queue) and the id vectors, hammered from several threads. Prints TAP;
** exits 0 iff every check passed.
**
** Every message in genserver goes through gsi_mpsc_push/gsi_mpsc_pop, so
** this is where a memory-ordering mistake would lose, duplicate or tear a
** message. The checks (no loss, no duplicate, FIFO per producer, payload
** intact, empty at the end) hold on any machine; the point of the test is
** to run it under ThreadSanitizer (make test-tsan: the queue's atomics are
** then checked for missing happens-before), AddressSanitizer (make
** test-asan) and valgrind (make test-valgrind).
**
**   make test CTESTS=spec/c/rel_mpsc_test.c
**   build/test/rel_mpsc_test [messages-per-producer]
*/
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

#define NPROD 4

#include "tap.h"


/* Payload: producer id, sequence number, then `len` bytes that are a
** function of both, so a torn or mixed-up message shows. */
typedef struct payload {
  uint32_t prod, len;
  uint64_t seq;
} payload;

static unsigned char fill (uint32_t prod, uint64_t seq, uint32_t i) {
  return (unsigned char)(prod * 31u + seq * 7u + i);
}


static gsi_msg *make_msg (uint32_t prod, uint64_t seq) {
  unsigned char buf[sizeof(payload) + 64];
  payload h;
  uint32_t i;
  h.prod = prod;
  h.seq = seq;
  h.len = (uint32_t)(seq % 64);
  memcpy(buf, &h, sizeof(h));
  for (i = 0; i < h.len; i++)
    buf[sizeof(h) + i] = fill(prod, seq, i);
  return gsi_msg_new(GSI_M_USER, prod, seq, buf, sizeof(h) + h.len);
}


/* 0 if m is intact, else a static description of what is wrong */
static const char *bad_msg (gsi_msg *m, payload *out) {
  payload h;
  uint32_t i;
  if (m->len < sizeof(h))
    return "short message";
  memcpy(&h, GSI_MSG_DATA(m), sizeof(h));
  if (m->len != sizeof(h) + h.len || h.len != h.seq % 64)
    return "length does not match the header";
  if (m->from != h.prod || m->ref != h.seq)
    return "message header does not match the payload";
  for (i = 0; i < h.len; i++)
    if (GSI_MSG_DATA(m)[sizeof(h) + i] != fill(h.prod, h.seq, i))
      return "payload bytes changed";
  *out = h;
  return NULL;
}


typedef struct prodarg {
  gsi_mpsc *q;
  uint32_t id;
  uint64_t n;
  int yield_every; /* 0: never */
} prodarg;


static void *producer (void *arg) {
  prodarg *a = (prodarg *)arg;
  uint64_t s;
  for (s = 1; s <= a->n; s++) {
    gsi_msg *m = make_msg(a->id, s);
    if (m == NULL)
      abort();
    gsi_mpsc_push(a->q, m);
    if (a->yield_every && s % (uint64_t)a->yield_every == 0)
      sched_yield();
  }
  return NULL;
}


/* NPROD producers push n messages each while this thread pops. */
static void run_queue (const char *name, uint64_t n, int yield_every) {
  gsi_mpsc q;
  pthread_t th[NPROD];
  prodarg args[NPROD];
  uint64_t next[NPROD], got = 0, spins = 0;
  const char *problem = NULL;
  char detail[160] = "";
  int i;
  gsi_mpsc_init(&q);
  for (i = 0; i < NPROD; i++) {
    next[i] = 1;
    args[i].q = &q;
    args[i].id = (uint32_t)i;
    args[i].n = n;
    args[i].yield_every = yield_every;
    if (pthread_create(&th[i], NULL, producer, &args[i]) != 0) {
      check(0, "%s: cannot start a producer thread", name);
      exit(1);
    }
  }
  while (got < NPROD * n) {
    gsi_msg *m = gsi_mpsc_pop(&q);
    payload h;
    if (m == NULL) {
      /* empty, or a producer between its exchange and its link */
      if (++spins % 64 == 0)
        sched_yield();
      continue;
    }
    if (problem == NULL) {
      const char *why = bad_msg(m, &h);
      if (why != NULL)
        problem = why;
      else if (h.prod >= NPROD)
        problem = "unknown producer";
      else if (h.seq != next[h.prod]) {
        problem = "FIFO per producer broken (lost, duplicated or reordered)";
        snprintf(detail, sizeof(detail), " (producer %u: got %llu, want %llu)",
                 h.prod, (unsigned long long)h.seq,
                 (unsigned long long)next[h.prod]);
      }
      else
        next[h.prod]++;
    }
    gsi_msg_free(m);
    got++;
  }
  for (i = 0; i < NPROD; i++)
    pthread_join(th[i], NULL);
  check(problem == NULL, "%s: %d producers x %llu messages, all intact, "
        "in order per producer%s%s%s", name, NPROD, (unsigned long long)n,
        problem ? ": " : "", problem ? problem : "", detail);
  check(gsi_mpsc_pop(&q) == NULL, "%s: the queue is empty afterwards", name);
}


/* One producer, one consumer, the queue emptied after every message: the
** consumer keeps taking the "last node" path (re-pushing the stub). */
typedef struct pingarg {
  gsi_mpsc *q;
  _Atomic uint64_t *acked;
  uint64_t n;
} pingarg;


static void *pinger (void *arg) {
  pingarg *a = (pingarg *)arg;
  uint64_t s;
  for (s = 1; s <= a->n; s++) {
    gsi_mpsc_push(a->q, make_msg(0, s));
    while (atomic_load_explicit(a->acked, memory_order_acquire) < s)
      sched_yield();
  }
  return NULL;
}


static void run_pingpong (uint64_t n) {
  gsi_mpsc q;
  _Atomic uint64_t acked = 0;
  pthread_t th;
  pingarg a;
  uint64_t want = 1;
  const char *problem = NULL;
  gsi_mpsc_init(&q);
  a.q = &q;
  a.acked = &acked;
  a.n = n;
  if (pthread_create(&th, NULL, pinger, &a) != 0) {
    check(0, "ping-pong: cannot start the thread");
    exit(1);
  }
  while (want <= n) {
    gsi_msg *m = gsi_mpsc_pop(&q);
    payload h;
    if (m == NULL) {
      sched_yield();
      continue;
    }
    if (problem == NULL) {
      problem = bad_msg(m, &h);
      if (problem == NULL && h.seq != want)
        problem = "out of order";
    }
    gsi_msg_free(m);
    atomic_store_explicit(&acked, want, memory_order_release);
    want++;
  }
  pthread_join(th, NULL);
  check(problem == NULL, "ping-pong: %llu messages through an emptied queue%s%s",
        (unsigned long long)n, problem ? ": " : "", problem ? problem : "");
  check(gsi_mpsc_pop(&q) == NULL, "ping-pong: the queue is empty afterwards");
}


static void test_idvec (void) {
  gsi_idvec v = {NULL, 0, 0};
  uint64_t i;
  int ok = 1;
  for (i = 1; i <= 1000; i++)
    gsi_idvec_push(&v, i);
  for (i = 1; i <= 1000; i += 2)
    ok &= gsi_idvec_remove(&v, i) == 1;
  ok &= v.n == 500 && gsi_idvec_remove(&v, 1) == 0;
  for (i = 1; i <= 1000; i++)
    ok &= gsi_idvec_has(&v, i) == (i % 2 == 0);
  check(ok, "id vector: push 1000, remove the odd ones, the even ones stay");
  gsi_idvec_free(&v);
  ok = v.v == NULL && v.n == 0 && v.cap == 0;
  for (i = 1; i <= 100; i++) { /* (ref, pid) pairs, as monitors keep them */
    gsi_idvec_push(&v, 1000 + i);
    gsi_idvec_push(&v, i);
  }
  ok &= gsi_idvec_remove_pair(&v, 1050) == 1 && gsi_idvec_remove_pair(&v, 1050) == 0;
  ok &= v.n == 198 && !gsi_idvec_has(&v, 1050) && !gsi_idvec_has(&v, 50);
  for (i = 1; i <= 100; i++)
    if (i != 50)
      ok &= gsi_idvec_remove_pair(&v, 1000 + i) == 1;
  ok &= v.n == 0;
  check(ok, "id vector: pairs removed by their first element, both halves go");
  gsi_idvec_free(&v);
}


int main (int argc, char **argv) {
  uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 20000;
  if (n == 0)
    n = 1;
  run_queue("flood", n, 0);
  run_queue("interleaved", n / 4 + 1, 3);
  run_pingpong(n / 4 + 1);
  test_idvec();
  printf("1..%d\n", ntest);
  if (nfail)
    printf("# %d of %d failed\n", nfail, ntest);
  return nfail ? 1 : 0;
}
