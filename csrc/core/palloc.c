/*
** palloc.c - the allocator of a process state: every byte counted on its
** slot (info(), max_heap, fault injection), the boot arena a state boots
** from, and the cache of small freed blocks a running state reuses. Its
** allocator is also what marks a state as a process state (gsi_state_proc).
*/
#include <stdlib.h>
#include <string.h>

#include "lua.h"

#include "internal.h"
#include "apool.h"

/* ---------------------------------------------------------- allocator */

/* Every byte of a process state is counted on its slot. Only the thread
** running the process allocates in its state, so `mem` is owner data; the
** published copy is for info() on other threads. */
/* max_heap: growth past the cap is refused. Lua then collects in an
** emergency and asks again; a second refusal in a row is a real overrun:
** the process must end (dying) with { max_heap = bytes }, and the cap is
** lifted so that it can unwind and be reported. The end is the same as a
** kill's (gsi_unwind_arm): no pcall can keep the process alive at its cap.
** A shrink never fails, and does not count as the growth that succeeds
** between two refusals (the emergency collection shrinks the string table
** between Lua's two tries). */
static int over_cap(gsi_proc *p, size_t osize, size_t nsize) {
  if (nsize <= osize) return 0;
  if (p->unwind > 0) { /* gsi_unwind raises a memory error */
    p->unwind--;
    return 1;
  }
  if (p->max_heap == 0 || p->heap_exceeded ||
      p->mem + (nsize - osize) <= p->max_heap) {
    p->heap_refused = 0;
    return 0;
  }
  if (p->heap_refused) {
    p->heap_exceeded = 1; /* lifts the cap */
    p->dying = 1;
    gsi_unwind_arm(p);
  }
  p->heap_refused = 1;
  return 1;
}

/* ---------------------------------------------------------- boot arena */

/* What a state allocates while it boots (lua_newstate, the libraries, the
** callback module, init: ~300 small blocks) comes from one block, the
** boot arena, sized from what earlier boots of the same callback module
** took (rt->boot_hint, see hint_of). Bumping
** a pointer is cheaper than malloc, the blocks carry no malloc header
** (~2.5 KB per idle server), and closing the state frees one block.
**
** While the arena is open (until the end of the first turn, see gsi_run)
** a freed block goes on this thread's free list for its size, and an
** allocation of that size takes it back; the lists are emptied when the
** arena closes, which is before this worker runs anything else. After
** that, a freed arena block is simply not reused (at most the arena's
** size per process), and new blocks come from malloc as usual. Userdata
** never go in the arena (their payload may need malloc's 16-byte
** alignment; Lua's own objects need 8). Off under AddressSanitizer, so
** that it sees every Lua object. */
#if defined(__SANITIZE_ADDRESS__)
#define ARENA_ON 0
#else
#define ARENA_ON 1
#endif
#define AR_ALIGN 8
#define AR_CLASSES 64 /* free lists for sizes up to 64 * AR_ALIGN bytes */
#define AR_MIN 1024
#define AR_MAX ((size_t)256 << 10)

/* Free blocks of the open arena: ar_free[c] lists blocks of c * AR_ALIGN
** bytes; ar_big lists larger ones, each with its size in its second
** word. Per thread: only one process boots on a thread at a time. The
** small ones are GSI_TLS_FAST: a boot makes ~300 allocations. */
typedef struct ar_block {
  struct ar_block *next;
  size_t size; /* ar_big only */
} ar_block;
static _Thread_local ar_block *ar_free[AR_CLASSES + 1];
/* ar_free of this thread: the array is too big for GSI_TLS_FAST, a
** pointer to it is not (set when an arena opens) */
static _Thread_local ar_block **ar_lists GSI_TLS_FAST;
static _Thread_local uint64_t ar_mask GSI_TLS_FAST; /* bit c-1: ar_free[c] not empty */
static _Thread_local ar_block *ar_big GSI_TLS_FAST;
/* The open arena's bump pointer and what the boot allocated outside it
** (for the hint): per thread as well, for the same reason, so that the
** slot does not carry them for the life of the process. */
static _Thread_local char *ar_top GSI_TLS_FAST;
static _Thread_local size_t ar_spill GSI_TLS_FAST;

static size_t ar_round(size_t n) { return (n + AR_ALIGN - 1) & ~(size_t)(AR_ALIGN - 1); }

static int in_arena(gsi_proc *p, void *ptr) {
  return (char *)ptr >= p->ar_base && (char *)ptr < p->ar_end;
}

static void ar_lists_clear(void) {
  ar_lists = ar_free;
  memset(ar_lists, 0, sizeof ar_free);
  ar_mask = 0;
  ar_big = NULL;
  ar_top = NULL;
  ar_spill = 0;
}

/* p's slot of rt->boot_hint: servers of one module boot alike, and one
** kind of big server must not size the arenas of all the small ones. */
static _Atomic size_t *hint_of(gsi_proc *p) {
  uint64_t h = gsi_hash(GSI_HASH_SEED, p->module, strlen(p->module));
  return &p->rt->boot_hint[h & (GSI_BOOT_HINTS - 1)];
}

static void arena_open(gsi_proc *p) {
  size_t n = atomic_load_explicit(hint_of(p), memory_order_relaxed);
  p->ar_open = 0;
  p->ar_base = p->ar_end = NULL;
  ar_lists_clear();
  if (!ARENA_ON) return;
  if (n < AR_MIN) n = 16 << 10;
  if (n > AR_MAX) n = AR_MAX;
  if ((p->ar_base = gsi_apool_get(p->rt->apool, n)) == NULL) return;
  ar_top = p->ar_base;
  p->ar_end = p->ar_base + n;
  p->ar_open = 1;
}

/* End of the boot: no more arena allocations; learn its size. The hint
** follows the largest recent boot, to the byte: up at once to a bigger
** one (what does not fit spills into malloc blocks, each with its
** header), down by an eighth of the gap (rounded up, so that it gets
** there) after a smaller one, so that one odd boot does not size all the
** next. Boots of one module are alike, so their arenas end up with no
** tail: an arena's unused tail is lost for the life of its state (it was
** ~80 bytes per idle server when the need was rounded up to 256 and
** averaged, which also stopped short of the need). */
static void arena_close(gsi_proc *p) {
  size_t need, hint;
  if (!p->ar_open) return;
  p->ar_open = 0;
  need = ar_round((size_t)(ar_top - p->ar_base) + ar_spill);
  ar_lists_clear();
  hint = atomic_load_explicit(hint_of(p), memory_order_relaxed);
  if (hint <= need) hint = need;
  else hint -= ar_round((hint - need + 7) / 8); /* at least AR_ALIGN */
  if (hint < need) hint = need;
  atomic_store_explicit(hint_of(p), hint, memory_order_relaxed);
}

/* The state is closed: its arena goes at once. */
static void arena_free_all(gsi_proc *p) {
  if (p->ar_open) {
    p->ar_open = 0;
    ar_lists_clear();
  }
  if (p->ar_base != NULL) gsi_apool_put(p->rt->apool, p->ar_base, (size_t)(p->ar_end - p->ar_base));
  p->ar_base = p->ar_end = NULL;
}

/* Put n bytes at b (n a multiple of AR_ALIGN) on a free list. */
static void ar_push(void *b, size_t n) {
  ar_block *k = b;
  if (n < sizeof(ar_block)) return; /* a sliver: lost until the state closes */
  if (n / AR_ALIGN <= AR_CLASSES) {
    k->next = ar_lists[n / AR_ALIGN];
    ar_lists[n / AR_ALIGN] = k;
    ar_mask |= (uint64_t)1 << (n / AR_ALIGN - 1);
  } else {
    k->size = n;
    k->next = ar_big;
    ar_big = k;
  }
}

static void arena_release(gsi_proc *p, void *ptr, size_t osize) {
  size_t n = ar_round(osize);
  if (!p->ar_open) return;
  if ((char *)ptr + n == ar_top) ar_top = ptr;
  else ar_push(ptr, n);
}

static ar_block *ar_take(size_t c) {
  ar_block *b = ar_lists[c];
  if ((ar_lists[c] = b->next) == NULL) ar_mask &= ~((uint64_t)1 << (c - 1));
  return b;
}

/* A free block of n bytes (split from a bigger one if need be), or NULL. */
static void *ar_reuse(size_t n) {
  size_t c = n / AR_ALIGN;
  ar_block *b, **pp;
  /* nothing freed yet: not even a look at the lists */
  if (ar_mask == 0 && ar_big == NULL) return NULL;
  if (c <= AR_CLASSES) {
    uint64_t bigger;
    if (ar_lists[c] != NULL) return ar_take(c);
    /* the smallest class with room for n and a remainder of 2 words */
    bigger = c + 1 < AR_CLASSES ? ar_mask & ~(((uint64_t)1 << (c + 1)) - 1) : 0;
    if (bigger != 0) {
      size_t d = (size_t)__builtin_ctzll(bigger) + 1;
      b = ar_take(d);
      ar_push((char *)b + n, d * AR_ALIGN - n);
      return b;
    }
  }
  for (pp = &ar_big; (b = *pp) != NULL; pp = &b->next) /* first fit */
    if (b->size >= n) {
      size_t left = b->size - n;
      *pp = b->next;
      ar_push((char *)b + n, left);
      return b;
    }
  return NULL;
}

/* nsize bytes from the open arena (moving ptr's osize bytes there if ptr
** is not NULL), or NULL when it has no room. */
static void *arena_alloc(gsi_proc *p, void *ptr, size_t osize, size_t nsize) {
  size_t n = ar_round(nsize);
  void *np;
  if (ptr != NULL && in_arena(p, ptr)) {
    if ((char *)ptr + ar_round(osize) == ar_top && (char *)ptr + n <= p->ar_end) {
      ar_top = (char *)ptr + n; /* the last block: grow or shrink in place */
      return ptr;
    }
    if (n <= ar_round(osize)) { /* shrink: keep the block, free its tail */
      ar_push((char *)ptr + n, ar_round(osize) - n);
      return ptr;
    }
  }
  if ((np = ar_reuse(n)) == NULL) {
    if ((size_t)(p->ar_end - ar_top) < n) return NULL;
    np = ar_top;
    ar_top += n;
  }
  if (ptr != NULL) {
    memcpy(np, ptr, osize < nsize ? osize : nsize);
    if (in_arena(p, ptr)) arena_release(p, ptr, osize);
    else free(ptr);
  }
  return np;
}

/* ----------------------------------------------------- block cache */

/* After the boot, a state that handles messages frees and allocates the
** same small blocks over and over (the tables and strings of each
** message, freed in bursts by the collector). Up to FC_DEPTH freed
** malloc blocks per size class (16 to FC_MAX bytes, 8 apart) and FC_BYTES
** in all are kept for the next allocation of that size, which then skips
** malloc/free. The cache is made on the first such free (a state that
** never handles a message never has one) and is emptied on hibernation
** and when the state closes. Owner data: only the thread running the process
** allocates in its state. */
#define FC_MAX 128
#define FC_NCLASS (FC_MAX / AR_ALIGN - 1) /* 16, 24, ..., FC_MAX */
#define FC_DEPTH 64
#define FC_BYTES 8192 /* at most this much kept per state */

struct gsi_fcache {
  void *head[FC_NCLASS];
  unsigned char n[FC_NCLASS];
  int off;      /* the state is closing: free at once */
  size_t bytes; /* kept, at most FC_BYTES */
};

static int fc_class(size_t n) { return (int)(ar_round(n) / AR_ALIGN) - 2; }

/* What to ask malloc for n bytes: a small block is made the whole size of
** its class, so that any block of the class can serve any request in it. */
static size_t msize(size_t n) { return n <= FC_MAX ? ar_round(n) : n; }

/* Keep the malloc block ptr (osize bytes) for reuse; 0 if not kept. */
static int fc_put(gsi_proc *p, void *ptr, size_t osize) {
  gsi_fcache *c = p->fc;
  int k;
  if (!ARENA_ON || osize < 16 || osize > FC_MAX || p->ar_open) return 0; /* ASan: off */
  if (c == NULL) {
    if ((c = p->fc = calloc(1, sizeof *c)) == NULL) return 0;
  }
  k = fc_class(osize);
  if (c->off || c->n[k] >= FC_DEPTH || c->bytes + osize > FC_BYTES) return 0;
  *(void **)ptr = c->head[k];
  c->head[k] = ptr;
  c->n[k]++;
  c->bytes += ar_round(osize);
  return 1;
}

static void *fc_get(gsi_proc *p, size_t nsize) {
  gsi_fcache *c = p->fc;
  void *b;
  int k;
  if (c == NULL || nsize < 16 || nsize > FC_MAX) return NULL;
  k = fc_class(nsize);
  if ((b = c->head[k]) == NULL) return NULL;
  c->head[k] = *(void **)b;
  c->n[k]--;
  c->bytes -= ar_round(nsize);
  return b;
}

/* Give the cached blocks back to malloc (hibernation, closing). */
static void fc_empty(gsi_proc *p) {
  gsi_fcache *c = p->fc;
  if (c == NULL) return;
  for (int k = 0; k < FC_NCLASS; k++) {
    while (c->head[k] != NULL) {
      void *b = c->head[k];
      c->head[k] = *(void **)b;
      free(b);
    }
    c->n[k] = 0;
  }
  c->bytes = 0;
}

void gsi_proc_trim(gsi_proc *p) { fc_empty(p); }

/* The allocator of every process state, and so the marker of one
** (gsi_state_proc, core.h): no other state has it; its datum is the
** process. */
void *gsi_palloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  gsi_proc *p = ud;
  void *np;
  int userdata = ptr == NULL && osize == LUA_TUSERDATA;
  if (ptr == NULL) osize = 0;
  if (nsize == 0) {
    if (ptr != NULL && in_arena(p, ptr)) arena_release(p, ptr, osize);
    else if (ptr != NULL && !fc_put(p, ptr, osize)) free(ptr);
    p->mem -= osize;
    atomic_store_explicit(&p->mem_pub, p->mem, memory_order_relaxed);
    return NULL;
  }
  if (over_cap(p, osize, nsize)) return NULL;
  if (p->fail_at != 0 && nsize > osize) {
    /* fault injection (opts.fail_alloc): growth allocation number F
    ** fails, and so does the next, which is Lua's retry after its
    ** emergency collection. fail_at counts down from F + 1 (set at
    ** gsi_heap_newstate): at 1 and at 0 the allocation fails, and from 0
    ** on injection is off. */
    if (--p->fail_at <= 1) return NULL;
  }
  np = NULL;
  if (p->ar_open && !userdata) np = arena_alloc(p, ptr, osize, nsize);
  if (np == NULL) {
    if (ptr != NULL && in_arena(p, ptr)) { /* leaves the arena */
      if ((np = malloc(msize(nsize))) != NULL) {
        memcpy(np, ptr, osize < nsize ? osize : nsize);
        arena_release(p, ptr, osize);
      }
    } else if (ptr != NULL || (np = fc_get(p, nsize)) == NULL) {
      np = realloc(ptr, msize(nsize));
    }
    if (np != NULL && p->ar_open) ar_spill += nsize - (nsize > osize ? osize : nsize);
  }
  if (np != NULL) {
    p->mem += nsize - osize;
    atomic_store_explicit(&p->mem_pub, p->mem, memory_order_relaxed);
  }
  return np;
}

/* The allocator of a state while its arena is open (its boot). Most of a
** boot's ~190 calls (bench_server) are a new block bumped from the arena
** (~75), a block of the same size taken back from its free lists (~60)
** or a block freed back to it (~50): done here, in a function small
** enough that the compiler saves no registers for it, as long as there
** is no cap, no injected failure and no unwind pending; everything else
** is gsi_palloc's, with the same result. When the boot ends the state
** gets gsi_palloc itself (gsi_heap_booted), so that what a running state
** allocates pays for none of these tests. (gsi_palloc for every call of
** a boot cost ~58 instructions per call, a fifth of them saving and
** restoring registers.) */
void *gsi_palloc_boot(void *ud, void *ptr, size_t osize, size_t nsize) {
  gsi_proc *p = ud;
  if (nsize == 0) {
    if (ptr != NULL && p->ar_open && in_arena(p, ptr)) {
      size_t n = ar_round(osize);
      if ((char *)ptr + n == ar_top) ar_top = ptr;
      else if (n >= sizeof(ar_block) && n / AR_ALIGN <= AR_CLASSES) ar_push(ptr, n);
      else return gsi_palloc(ud, ptr, osize, nsize);
      p->mem -= osize;
      atomic_store_explicit(&p->mem_pub, p->mem, memory_order_relaxed);
      return NULL;
    }
  } else if (ptr == NULL && p->ar_open && osize != LUA_TUSERDATA &&
             (p->unwind | p->heap_refused) == 0 && p->max_heap == 0 && p->fail_at == 0) {
    size_t n = ar_round(nsize), c = n / AR_ALIGN;
    void *np = NULL;
    if (ar_mask == 0 && ar_big == NULL) { /* nothing freed yet: bump */
      if ((size_t)(p->ar_end - ar_top) >= n) {
        np = ar_top;
        ar_top += n;
      }
    } else if (c <= AR_CLASSES && ar_lists[c] != NULL) { /* a block of its size */
      np = ar_take(c);
    }
    if (np != NULL) {
      p->mem += nsize;
      atomic_store_explicit(&p->mem_pub, p->mem, memory_order_relaxed);
      return np;
    }
  }
  return gsi_palloc(ud, ptr, osize, nsize);
}

/* ------------------------------------------------------------ the state */

lua_State *gsi_heap_newstate(gsi_proc *p) {
  if (p->fail_at != 0 && p->fail_at != UINT64_MAX) p->fail_at++; /* see gsi_palloc */
  arena_open(p);
  return lua_newstate(p->ar_open ? gsi_palloc_boot : gsi_palloc, p);
}

void gsi_heap_booted(gsi_proc *p) {
  arena_close(p);
  if (p->L != NULL) lua_setallocf(p->L, gsi_palloc, p); /* the boot is over */
}

void gsi_heap_closing(gsi_proc *p) {
  if (p->fc != NULL) p->fc->off = 1; /* lua_close frees straight to malloc */
}

void gsi_heap_free(gsi_proc *p) {
  fc_empty(p);
  free(p->fc);
  p->fc = NULL;
  arena_free_all(p);
}
