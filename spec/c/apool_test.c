/*
** apool_test.c - the pool the boot arenas come from (csrc/core/apool.c):
** aligned blocks carved from carriers, a block given back taken again by
** the next request of its size (already faulted in: no new memory per
** start when servers come and go), blocks of many sizes, and threads.
** Prints TAP; exits 0 iff every check passed.
**
**   make test CTESTS=spec/c/apool_test.c
*/
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/apool.h"
#include "tap.h"

/* Blocks are 16-byte aligned, apart, writable to their last byte. */
static void t_carve(void) {
  gsi_apool *pool = gsi_apool_new();
  char *a = gsi_apool_get(pool, 9000), *b = gsi_apool_get(pool, 9000);
  char *big = gsi_apool_get(pool, GSI_APOOL_MAX);
  check(pool != NULL && a != NULL && b != NULL && big != NULL, "blocks from a new pool");
  check(((uintptr_t)a | (uintptr_t)b | (uintptr_t)big) % 16 == 0, "16-byte aligned");
  check(b >= a + 9000 || a >= b + 9000, "two blocks do not overlap");
  memset(a, 1, 9000);
  memset(b, 2, 9000);
  memset(big, 3, GSI_APOOL_MAX);
  check(a[8999] == 1 && b[0] == 2 && big[GSI_APOOL_MAX - 1] == 3, "every byte writable");
  check(gsi_apool_get(pool, GSI_APOOL_MAX + 1) == NULL, "more than GSI_APOOL_MAX: refused");
  gsi_apool_free(pool);
}

/* Servers come and go: a block given back is the next one of its size
** (the pool does not grow), and a block of another size is not. */
static void t_reuse(void) {
  gsi_apool *pool = gsi_apool_new();
  char *a = gsi_apool_get(pool, 8200), *b, *c;
  int same = 1;
  gsi_apool_put(pool, a, 8200);
  b = gsi_apool_get(pool, 8200);
  check(b == a, "a block given back is taken again by its size");
  gsi_apool_put(pool, b, 8200);
  c = gsi_apool_get(pool, 4096);
  check(c != a, "not by another size");
  for (int i = 0; i < 10000 && same; i++) { /* churn: always the same block */
    char *d = gsi_apool_get(pool, 8200);
    same = d == a;
    gsi_apool_put(pool, d, 8200);
  }
  check(same, "10,000 starts and ends of one size reuse one block");
  gsi_apool_free(pool);
}

/* More distinct sizes than the table keeps: every get still works, and a
** size whose list emptied can be kept again. */
static void t_sizes(void) {
  gsi_apool *pool = gsi_apool_new();
  char *blk[200];
  int ok = 1;
  for (int i = 0; i < 200; i++) ok &= (blk[i] = gsi_apool_get(pool, 1024 + 16 * (size_t)i)) != NULL;
  check(ok, "200 sizes got");
  for (int i = 0; i < 200; i++) gsi_apool_put(pool, blk[i], 1024 + 16 * (size_t)i);
  ok = 1;
  for (int i = 0; i < 200; i++) ok &= gsi_apool_get(pool, 1024 + 16 * (size_t)i) != NULL;
  check(ok, "200 sizes got again after they were given back");
  {
    /* every kept list is empty again: a size the full table had to drop
    ** is kept now, in an entry another size had */
    size_t n = 1024 + 16 * 199;
    char *x = gsi_apool_get(pool, n);
    gsi_apool_put(pool, x, n);
    check(gsi_apool_get(pool, n) == x, "a size dropped once is kept when the table has room");
  }
  gsi_apool_free(pool);
}

/* Threads take and give back at once: no block is handed out twice. */
#define NT 4
#define NB 64
static gsi_apool *shared;
static void *worker(void *arg) {
  char *mine[NB];
  int *bad = arg;
  for (int r = 0; r < 200; r++) {
    for (int i = 0; i < NB; i++) {
      mine[i] = gsi_apool_get(shared, 2048);
      if (mine[i] == NULL) {
        (*bad)++;
        return NULL;
      }
      memset(mine[i], r & 0xff, 2048);
    }
    for (int i = 0; i < NB; i++) {
      if ((unsigned char)mine[i][0] != (r & 0xff) || (unsigned char)mine[i][2047] != (r & 0xff))
        (*bad)++;
      gsi_apool_put(shared, mine[i], 2048);
    }
  }
  return NULL;
}

static void t_threads(void) {
  pthread_t t[NT];
  int bad[NT] = {0}, sum = 0;
  shared = gsi_apool_new();
  for (int i = 0; i < NT; i++) pthread_create(&t[i], NULL, worker, &bad[i]);
  for (int i = 0; i < NT; i++) pthread_join(t[i], NULL);
  for (int i = 0; i < NT; i++) sum += bad[i];
  check(sum == 0, "4 threads, 51,200 gets and puts: no block shared");
  gsi_apool_free(shared);
}

int main(void) {
  t_carve();
  t_reuse();
  t_sizes();
  t_threads();
  printf("1..%d\n", ntest);
  return nfail == 0 ? 0 : 1;
}
