/*
** apool.c - the memory the boot arenas come from (palloc.c).
**
** A process state boots from one block, its arena (~8-10 KB for a small
** server), kept for the life of the state. From malloc, each arena was
** fresh memory at the top of the worker's heap: glibc grows a thread's
** heap a page at a time, with an mprotect call each time, and every new
** page then faulted on first touch. Measured: a third of a start's time
** was in the kernel for it (bench/run.lua start, 1 worker: 0.45-0.57 s of
** system time for 30,000 starts, 2.4 page faults per start).
**
** So arenas come from carriers: regions mapped with MAP_POPULATE (faulted
** in by one system call), 64 KB for the first and twice the last after,
** up to 1 MB, carved one arena after the other, as BEAM's allocators carve
** blocks from their carriers. A closed state's arena is kept on a list by
** its size: servers of one module boot alike (palloc.c sizes their arenas
** from one hint), so the next boot of that module takes it back, already
** faulted in. The carriers are unmapped with the runtime.
**
** One mutex, a leaf (rt.h): taken once per process start and once per end.
*/
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "apool.h"

#ifndef MAP_POPULATE
#define MAP_POPULATE 0
#endif

#define ALIGN 16
#define FIRST_CARRIER ((size_t)64 << 10)
#define MAX_CARRIER ((size_t)1 << 20)
#define NSIZES 64 /* distinct arena sizes kept (a power of two) */

typedef struct carrier {
  struct carrier *next;
  size_t size;
} carrier;
#define HEAD ((sizeof(carrier) + ALIGN - 1) & ~(size_t)(ALIGN - 1))

typedef struct freeblk {
  struct freeblk *next;
} freeblk;

/* The kept arenas of one size (size 0: an unused entry). */
typedef struct sizelist {
  size_t size;
  freeblk *head;
} sizelist;

struct gsi_apool {
  pthread_mutex_t mu; /* guards all below; a leaf lock (rt.h) */
  carrier *carriers;  /* every carrier, newest first */
  char *top, *end;    /* the newest carrier's part not carved yet */
  size_t next_size;   /* of the next carrier */
  sizelist sizes[NSIZES]; /* open addressing on the size */
};

static size_t round_up(size_t n, size_t a) { return (n + a - 1) & ~(a - 1); }

gsi_apool *gsi_apool_new(void) {
  gsi_apool *pool = calloc(1, sizeof *pool);
  if (pool == NULL) return NULL;
  pthread_mutex_init(&pool->mu, NULL);
  pool->next_size = FIRST_CARRIER;
  return pool;
}

void gsi_apool_free(gsi_apool *pool) {
  carrier *c;
  if (pool == NULL) return;
  while ((c = pool->carriers) != NULL) {
    pool->carriers = c->next;
    munmap(c, c->size);
  }
  pthread_mutex_destroy(&pool->mu);
  free(pool);
}

/* Whole pages of [p, p + n) back to the kernel (their contents are not
** needed any more; the range stays mapped). */
static void release_pages(char *p, size_t n) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  uintptr_t a = round_up((uintptr_t)p, page), b = ((uintptr_t)p + n) & ~(uintptr_t)(page - 1);
  if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

/* The table of sizes: linear probing from the size's hash. An entry,
** once used, keeps a size (size 0: never used), so a probe for n can stop
** at the first never-used entry; an entry whose list is empty may be
** given to another size (its own finds nothing to take anyway). */
static size_t first_probe(size_t n) {
  return (size_t)(((uint64_t)(n / ALIGN) * 0x9E3779B97F4A7C15u) >> 58); /* NSIZES */
}

/* The entry of size n, or NULL. Under mu. */
static sizelist *find_size(gsi_apool *pool, size_t n) {
  size_t h = first_probe(n);
  for (size_t i = 0; i < NSIZES; i++) {
    sizelist *s = &pool->sizes[(h + i) & (NSIZES - 1)];
    if (s->size == n) return s;
    if (s->size == 0) break;
  }
  return NULL;
}

/* The entry of size n, made if need be from the first on its probe path
** with nothing kept; NULL when every entry keeps blocks of other sizes.
** Under mu. */
static sizelist *claim_size(gsi_apool *pool, size_t n) {
  sizelist *s = find_size(pool, n);
  size_t h = first_probe(n);
  for (size_t i = 0; s == NULL && i < NSIZES; i++) {
    sizelist *e = &pool->sizes[(h + i) & (NSIZES - 1)];
    if (e->head == NULL) {
      e->size = n;
      s = e;
    }
  }
  return s;
}

/* A new carrier with room for n more bytes; the rest of the last one
** gives its whole pages back (it is smaller than an arena: nothing will
** fit there). Under mu. */
static int new_carrier(gsi_apool *pool, size_t n) {
  size_t size = pool->next_size;
  carrier *c;
  if (size < HEAD + n) size = round_up(HEAD + n, (size_t)sysconf(_SC_PAGESIZE));
  c = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
           -1, 0);
  if (c == MAP_FAILED) return -1;
  if (pool->top != NULL) release_pages(pool->top, (size_t)(pool->end - pool->top));
  c->next = pool->carriers;
  c->size = size;
  pool->carriers = c;
  pool->top = (char *)c + HEAD;
  pool->end = (char *)c + size;
  if (pool->next_size < MAX_CARRIER) pool->next_size *= 2;
  return 0;
}

void *gsi_apool_get(gsi_apool *pool, size_t n) {
  sizelist *s;
  void *b = NULL;
  n = round_up(n, ALIGN);
  if (n > GSI_APOOL_MAX) return NULL;
  pthread_mutex_lock(&pool->mu);
  if ((s = find_size(pool, n)) != NULL && s->head != NULL) {
    b = s->head;
    s->head = s->head->next;
  } else if ((size_t)(pool->end - pool->top) >= n || new_carrier(pool, n) == 0) {
    b = pool->top;
    pool->top += n;
  }
  pthread_mutex_unlock(&pool->mu);
  return b;
}

void gsi_apool_put(gsi_apool *pool, void *block, size_t n) {
  sizelist *s;
  n = round_up(n, ALIGN);
  pthread_mutex_lock(&pool->mu);
  if ((s = claim_size(pool, n)) != NULL) {
    freeblk *f = block;
    f->next = s->head;
    s->head = f;
  } else {
    /* more distinct sizes than the table keeps: this one is not reused,
    ** but its pages go back */
    release_pages(block, n);
  }
  pthread_mutex_unlock(&pool->mu);
}
