/*
** pstate.c - a process's own lua_State: creation with the runtime's
** counting allocator (boot arena, block cache), lazy standard libraries,
** the body (run on the state's main thread), running it on a worker, and
** turning its end into an exit reason. Also the foreign processes (OS
** threads outside the workers).
*/
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lualib.h"

#include "internal.h"

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
  if (p->heap_cap == 0 || p->mem + (nsize - osize) <= p->heap_cap) {
    p->heap_refused = 0;
    return 0;
  }
  if (p->heap_refused) {
    p->heap_exceeded = 1;
    p->dying = 1;
    p->heap_cap = 0;
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
** word. Per thread: only one process boots on a thread at a time. */
typedef struct ar_block {
  struct ar_block *next;
  size_t size; /* ar_big only */
} ar_block;
static _Thread_local ar_block *ar_free[AR_CLASSES + 1];
static _Thread_local uint64_t ar_mask; /* bit c-1: ar_free[c] not empty */
static _Thread_local ar_block *ar_big;

static size_t ar_round(size_t n) { return (n + AR_ALIGN - 1) & ~(size_t)(AR_ALIGN - 1); }

static int in_arena(gsi_proc *p, void *ptr) {
  return (char *)ptr >= p->ar_base && (char *)ptr < p->ar_end;
}

static void ar_lists_clear(void) {
  memset(ar_free, 0, sizeof ar_free);
  ar_mask = 0;
  ar_big = NULL;
}

/* p's slot of rt->boot_hint: servers of one module boot alike, and one
** kind of big server must not size the arenas of all the small ones. */
static _Atomic size_t *hint_of(gsi_proc *p) {
  uint64_t h = gsi_hash(GSI_HASH_SEED, p->module, strlen(p->module));
  return &p->rt->boot_hint[h & (GSI_BOOT_HINTS - 1)];
}

static void arena_open(gsi_proc *p) {
  size_t n = atomic_load_explicit(hint_of(p), memory_order_relaxed);
  p->ar_spill = 0;
  p->ar_open = 0;
  p->ar_base = p->ar_top = p->ar_end = NULL;
  if (!ARENA_ON) return;
  if (n < AR_MIN) n = 16 << 10;
  if (n > AR_MAX) n = AR_MAX;
  if ((p->ar_base = malloc(n)) == NULL) return;
  p->ar_top = p->ar_base;
  p->ar_end = p->ar_base + n;
  p->ar_open = 1;
}

/* End of the boot: no more arena allocations; learn its size. */
static void arena_close(gsi_proc *p) {
  size_t need, hint;
  if (!p->ar_open) return;
  p->ar_open = 0;
  ar_lists_clear();
  need = (size_t)(p->ar_top - p->ar_base) + p->ar_spill;
  need = (need + 255) & ~(size_t)255;
  /* a moving average, so that one odd boot does not size all the next */
  hint = atomic_load_explicit(hint_of(p), memory_order_relaxed);
  hint = hint == 0 ? need : hint - hint / 8 + need / 8;
  atomic_store_explicit(hint_of(p), hint, memory_order_relaxed);
}

/* The state is closed: its arena goes at once. */
static void arena_free_all(gsi_proc *p) {
  if (p->ar_open) {
    p->ar_open = 0;
    ar_lists_clear();
  }
  free(p->ar_base);
  p->ar_base = p->ar_top = p->ar_end = NULL;
}

/* Put n bytes at b (n a multiple of AR_ALIGN) on a free list. */
static void ar_push(void *b, size_t n) {
  ar_block *k = b;
  if (n < sizeof(ar_block)) return; /* a sliver: lost until the state closes */
  if (n / AR_ALIGN <= AR_CLASSES) {
    k->next = ar_free[n / AR_ALIGN];
    ar_free[n / AR_ALIGN] = k;
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
  if ((char *)ptr + n == p->ar_top) p->ar_top = ptr;
  else ar_push(ptr, n);
}

static ar_block *ar_take(size_t c) {
  ar_block *b = ar_free[c];
  if ((ar_free[c] = b->next) == NULL) ar_mask &= ~((uint64_t)1 << (c - 1));
  return b;
}

/* A free block of n bytes (split from a bigger one if need be), or NULL. */
static void *ar_reuse(size_t n) {
  size_t c = n / AR_ALIGN;
  ar_block *b, **pp;
  if (c <= AR_CLASSES) {
    uint64_t bigger;
    if (ar_free[c] != NULL) return ar_take(c);
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
    if ((char *)ptr + ar_round(osize) == p->ar_top && (char *)ptr + n <= p->ar_end) {
      p->ar_top = (char *)ptr + n; /* the last block: grow or shrink in place */
      return ptr;
    }
    if (n <= ar_round(osize)) { /* shrink: keep the block, free its tail */
      ar_push((char *)ptr + n, ar_round(osize) - n);
      return ptr;
    }
  }
  if ((np = ar_reuse(n)) == NULL) {
    if ((size_t)(p->ar_end - p->ar_top) < n) return NULL;
    np = p->ar_top;
    p->ar_top += n;
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

static void *palloc(void *ud, void *ptr, size_t osize, size_t nsize);

/* The marker of a process state is its allocator (core.h). */
gsi_proc *gsi_state_proc(lua_State *L) {
  void *ud;
  return lua_getallocf(L, &ud) == palloc ? ud : NULL;
}

static void *palloc(void *ud, void *ptr, size_t osize, size_t nsize) {
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
    /* fault injection (opts.fail_alloc): allocation fail_at fails, and so
    ** does the next, which is Lua's retry after its emergency collection */
    uint64_t n = ++p->nallocs;
    if (n == p->fail_at || n == p->fail_at + 1) return NULL;
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
    if (np != NULL && p->ar_open) p->ar_spill += nsize - (nsize > osize ? osize : nsize);
  }
  if (np != NULL) {
    p->mem += nsize - osize;
    atomic_store_explicit(&p->mem_pub, p->mem, memory_order_relaxed);
  }
  return np;
}

/* Runs every CLOSE_COUNT instructions of the code lua_close runs: a
** killed body's pending <close> handlers (Lua closes a suspended main
** thread's to-be-closed variables) and finalizers. They run outside any
** turn, where the watchdog cannot preempt them: one that runs this long
** is stopped with an error, which lua_close reports and goes past. */
#define CLOSE_COUNT 1000000
static void close_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  luaL_error(L, "genserver: cleanup code ran too long after the process ended");
}

/* Close p's state and free its arena. */
static void close_state(gsi_proc *p) {
  if (p->fc != NULL) p->fc->off = 1; /* lua_close frees straight to malloc */
  p->unwind = 0;
  if (p->L != NULL) {
    lua_sethook(p->L, close_hook, LUA_MASKCOUNT, CLOSE_COUNT);
    lua_close(p->L);
  }
  fc_empty(p);
  free(p->fc);
  p->fc = NULL;
  p->L = NULL;
  arena_free_all(p);
  gsi_paths_put(p->rt->mods, p->paths);
  p->paths = NULL;
  gsi_msg_free(p->held); /* an answer whose decoding raised */
  p->held = NULL;
}

/* ------------------------------------------------------ lazy libraries */

static gsi_proc *proc_of(lua_State *L) { return *(gsi_proc **)lua_getextraspace(L); }

static int lazy_string_index(lua_State *L);
static void open_package(lua_State *L);
static int load_text(lua_State *L);

static const luaL_Reg lazy_libs[] = {
    {LUA_STRLIBNAME, luaopen_string},
    {LUA_TABLIBNAME, luaopen_table}, {LUA_MATHLIBNAME, luaopen_math},
    {LUA_COLIBNAME, gsi_open_coroutine}, {LUA_UTF8LIBNAME, luaopen_utf8},
    {LUA_IOLIBNAME, luaopen_io}, {LUA_OSLIBNAME, luaopen_os},
    {LUA_DBLIBNAME, luaopen_debug}, {NULL, NULL}};

/* Libraries a sandboxed state never gets. */
static int forbidden(const char *name) {
  return strcmp(name, LUA_IOLIBNAME) == 0 || strcmp(name, LUA_OSLIBNAME) == 0 ||
         strcmp(name, LUA_DBLIBNAME) == 0;
}

/* The base library's functions, read once from a scratch state. A
** process state gets each one on first use (lazy_index) instead of all
** of them at setup: ~1.8 KB less per server. (lbaselib.c registers them
** without upvalues, so the bare C function is the very same function.)
** Written once under base_once, read-only after. */
#define BASE_MAX 48
typedef struct base_fn {
  char name[16];
  lua_CFunction f;
} base_fn;
static base_fn base_fns[BASE_MAX];
static int nbase; /* 0: could not be read; states then open base whole */
static pthread_once_t base_once = PTHREAD_ONCE_INIT;

/* Lua's own package.searchpath (loadlib.c registers it without upvalues),
** read at the same time: the runtime's searchers use it, never what a
** process put in its package.searchpath (DESIGN §5). NULL if it could not
** be read; the searchers then fail with an error. */
static lua_CFunction real_searchpath;

static void read_base(void) {
  lua_State *S = luaL_newstate();
  if (S == NULL) return;
  luaL_requiref(S, LUA_GNAME, luaopen_base, 1);
  lua_pushnil(S);
  while (lua_next(S, -2)) {
    const char *k = lua_type(S, -2) == LUA_TSTRING ? lua_tostring(S, -2) : NULL;
    lua_CFunction f = lua_tocfunction(S, -1);
    if (k != NULL && f != NULL && strlen(k) < sizeof base_fns[0].name &&
        nbase < BASE_MAX) {
      strcpy(base_fns[nbase].name, k);
      base_fns[nbase++].f = f;
    }
    lua_pop(S, 1);
  }
  /* after the base library was read: package puts its require in _G */
  luaL_requiref(S, LUA_LOADLIBNAME, luaopen_package, 0);
  lua_getfield(S, -1, "searchpath");
  real_searchpath = lua_tocfunction(S, -1);
  lua_close(S);
}

/* Push the base library's k for _G (at 1), or return 0. A sandbox has no
** loadfile/dofile, and a load that takes text only. */
static int push_base(lua_State *L, const char *k, int sandbox) {
  if (strcmp(k, LUA_GNAME) == 0) {
    lua_pushglobaltable(L);
    return 1;
  }
  if (strcmp(k, "_VERSION") == 0) {
    lua_pushliteral(L, LUA_VERSION);
    return 1;
  }
  for (int i = 0; i < nbase; i++)
    if (strcmp(k, base_fns[i].name) == 0) {
      if (sandbox && (strcmp(k, "loadfile") == 0 || strcmp(k, "dofile") == 0))
        return 0;
      lua_pushcfunction(L, base_fns[i].f);
      if (sandbox && strcmp(k, "load") == 0) lua_pushcclosure(L, load_text, 1);
      return 1;
    }
  return 0;
}

lua_CFunction gsi_state_builtin(lua_State *L, const char *module, size_t lm,
                                const char *field, size_t lf) {
  gsi_proc *p = gsi_state_proc(L);
  if (p == NULL) return NULL; /* a host's state: no lazy _G, no light core */
  if (!lua_checkstack(L, 5)) return NULL;
  if (lm == sizeof LUA_GNAME - 1 && memcmp(module, LUA_GNAME, lm) == 0) {
    lua_pushglobaltable(L);
    lua_pushlstring(L, field, lf);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TNIL) { /* not used here yet: put it in _G */
      lua_pop(L, 1);
      if (push_base(L, lua_tostring(L, -1), p->sandbox)) {
        lua_rawset(L, -3);
      } else {
        lua_pop(L, 1);
        /* require is the package library's: open it (as lazy_index does) */
        if (lf == sizeof "require" - 1 && memcmp(field, "require", lf) == 0)
          open_package(L);
      }
      lua_pop(L, 1);
    } else {
      lua_pop(L, 3);
    }
    return NULL; /* the usual lookup finds it now */
  }
  {
    const gsi_face *f = &p->rt->face;
    return f->builtin != NULL ? f->builtin(L, module, lm, field, lf) : NULL;
  }
}

/* _G's __index: the first use of `print`, `table`, `os`, ... puts that
** function or library in _G. */
static int lazy_index(lua_State *L) {
  const char *k = lua_tostring(L, 2);
  int sandbox = proc_of(L)->sandbox;
  if (k == NULL || lua_type(L, 2) != LUA_TSTRING) return 0;
  if (push_base(L, k, sandbox)) {
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
  }
  if (strcmp(k, LUA_LOADLIBNAME) == 0 || strcmp(k, "require") == 0) {
    open_package(L);
    lua_settop(L, 2);
    lua_rawget(L, 1);
    return 1;
  }
  if (!(sandbox && forbidden(k)))
    for (const luaL_Reg *r = lazy_libs; r->name; r++)
      if (strcmp(k, r->name) == 0) {
        luaL_requiref(L, r->name, r->func, 1);
        return 1;
      }
  return 0;
}

/* The stand-in string metatable's __index: open the string library (which
** sets the real metatable) and answer the lookup. */
static int lazy_string_index(lua_State *L) {
  luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

/* Its arithmetic events: in Lua 5.4, "10" + 1 converts the string through
** the string metatable's __add (lstrlib.c); open the library, whose real
** metatable then does the operation. */
static int lazy_string_arith(lua_State *L, int op) {
  luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
  lua_settop(L, op == LUA_OPUNM ? 1 : 2);
  lua_arith(L, op);
  return 1;
}

static int lazy_add(lua_State *L) { return lazy_string_arith(L, LUA_OPADD); }
static int lazy_sub(lua_State *L) { return lazy_string_arith(L, LUA_OPSUB); }
static int lazy_mul(lua_State *L) { return lazy_string_arith(L, LUA_OPMUL); }
static int lazy_mod(lua_State *L) { return lazy_string_arith(L, LUA_OPMOD); }
static int lazy_pow(lua_State *L) { return lazy_string_arith(L, LUA_OPPOW); }
static int lazy_div(lua_State *L) { return lazy_string_arith(L, LUA_OPDIV); }
static int lazy_idiv(lua_State *L) { return lazy_string_arith(L, LUA_OPIDIV); }
static int lazy_unm(lua_State *L) { return lazy_string_arith(L, LUA_OPUNM); }

static const luaL_Reg lazy_string_mt[] = {
    {"__index", lazy_string_index}, {"__add", lazy_add}, {"__sub", lazy_sub},
    {"__mul", lazy_mul},            {"__mod", lazy_mod}, {"__pow", lazy_pow},
    {"__div", lazy_div},            {"__idiv", lazy_idiv}, {"__unm", lazy_unm},
    {NULL, NULL}};

/* load() in a sandbox: text chunks only, whatever mode is asked for. */
static int load_text(lua_State *L) {
  lua_settop(L, 4);
  lua_pushliteral(L, "t");
  lua_replace(L, 3);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, 4, LUA_MULTRET);
  return lua_gettop(L);
}

/* Find module `name` on `path` with Lua's own searchpath (not the
** state's package.searchpath, which its code may have replaced) and load
** the file as a chunk in `mode`, as Lua's own searcher does: pushes the
** chunk and returns the file name (on the stack below it), or pushes the
** "no file" message and returns NULL. */
static const char *load_module_file(lua_State *L, const char *name, const char *path,
                                    const char *mode) {
  const char *file;
  if (real_searchpath == NULL)
    luaL_error(L, "module '%s': the module searcher is unavailable", name);
  lua_pushcfunction(L, real_searchpath);
  lua_pushstring(L, name);
  lua_pushstring(L, path);
  lua_call(L, 2, 2);
  if (lua_isnil(L, -2)) return NULL; /* the message on top */
  lua_pop(L, 1);
  file = lua_tostring(L, -1);
  if (luaL_loadfilex(L, file, mode) != LUA_OK)
    luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", name, file,
               lua_tostring(L, -1));
  return file;
}

/* package searcher for Lua files in a sandbox: text chunks only, found
** on the paths the sandbox was given, whatever it did to its package.path
** or package.searchpath (DESIGN §5). */
static int search_text(lua_State *L) {
  gsi_proc *p = proc_of(L);
  const char *name = luaL_checkstring(L, 1);
  const char *file;
  if (p->paths == NULL) return luaL_error(L, "module '%s': no package path", name);
  if ((file = load_module_file(L, name, gsi_paths_path(p->paths), "t")) == NULL)
    return 1;
  lua_pushstring(L, file);
  return 2;
}

/* Take away from a sandboxed state's base library what it must not have
** (DESIGN §5): loadfile, dofile, and binary chunks in load. (io, os and
** debug: lazy_index refuses them; package: sandbox_package.) */
static void sandbox_base(lua_State *L) {
  lua_pushnil(L);
  lua_setglobal(L, "loadfile");
  lua_pushnil(L);
  lua_setglobal(L, "dofile");
  lua_getglobal(L, "load");
  lua_pushcclosure(L, load_text, 1);
  lua_setglobal(L, "load");
}

/* The package library of a sandboxed state (at -1): no loadlib, no C
** modules, Lua files as text only, and no preloaded io/os/debug. */
static void sandbox_package(lua_State *L) {
  lua_pushnil(L);
  lua_setfield(L, -2, "loadlib");
  lua_pushliteral(L, "");
  lua_setfield(L, -2, "cpath");
  lua_createtable(L, 2, 0); /* searchers: preload, then text Lua files */
  lua_getfield(L, -2, "searchers");
  lua_rawgeti(L, -1, 1);
  lua_rawseti(L, -3, 1);
  lua_pop(L, 1);
  lua_pushcfunction(L, search_text);
  lua_rawseti(L, -2, 2);
  lua_setfield(L, -2, "searchers");
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const luaL_Reg *r = lazy_libs; r->name; r++)
    if (forbidden(r->name)) {
      lua_pushnil(L);
      lua_setfield(L, -2, r->name);
    }
  lua_pop(L, 1);
}

/* ------------------------------------------------------ lazy package */

/* package.searchers[2] of a process state: Lua files, compiled once per
** runtime (modcache.c). Same results and messages as Lua's own. */
static int search_cached(lua_State *L) {
  gsi_proc *p = proc_of(L);
  const char *name = luaL_checkstring(L, 1);
  const char *path, *file;
  lua_settop(L, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, 2, LUA_LOADLIBNAME); /* 3 */
  lua_getfield(L, 3, "path");          /* 4 */
  if ((path = lua_tostring(L, 4)) == NULL)
    return luaL_error(L, "'package.path' must be a string");
  switch (gsi_modcache_load(L, p->rt->mods, name, path)) {
  case 1: return 2;
  case -1: return lua_error(L);
  default: break;
  }
  /* Lua's own searchpath on the state's package.path: what is cached
  ** under (name, path) is what Lua would find there, whatever this state
  ** did to its package.searchpath (DESIGN §5) */
  if ((file = load_module_file(L, name, path, NULL)) == NULL) return 1;
  gsi_modcache_put(L, p->rt->mods, name, path, file);
  lua_pushstring(L, file);
  return 2;
}

/* Open the package library of a process state on first use: the paths
** the spawner gave, `require "table"` (and genserver.core) through
** package.preload, the cached searcher or the sandbox's. */
static void open_package(lua_State *L) {
  gsi_proc *p = proc_of(L);
  luaL_requiref(L, LUA_LOADLIBNAME, luaopen_package, 1); /* also _G.require */
  if (p->paths != NULL) {
    lua_pushstring(L, gsi_paths_path(p->paths));
    lua_setfield(L, -2, "path");
    lua_pushstring(L, gsi_paths_cpath(p->paths));
    lua_setfield(L, -2, "cpath");
  }
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const luaL_Reg *r = lazy_libs; r->name; r++) {
    lua_pushcfunction(L, r->func);
    lua_setfield(L, -2, r->name);
  }
  if (p->rt->face.open_core != NULL) {
    lua_pushcfunction(L, p->rt->face.open_core);
    lua_setfield(L, -2, "genserver.core");
  }
  lua_pop(L, 1);
  if (p->sandbox) {
    sandbox_package(L);
  } else {
    lua_getfield(L, -1, "searchers");
    lua_pushcfunction(L, search_cached);
    lua_rawseti(L, -2, 2);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* require(name) for the boot path (a spawn by module name, a server's
** callback module): a module the runtime has compiled already is loaded
** from the cache without opening the package library; anything else goes
** to the real require. */
int gsi_require(lua_State *L) {
  gsi_proc *p = proc_of(L);
  const char *name = luaL_checkstring(L, 1);
  lua_settop(L, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE); /* 2 */
  if (lua_getfield(L, 2, name) != LUA_TNIL && lua_toboolean(L, -1)) return 1;
  lua_pop(L, 1);
  /* a standard library not opened here yet (string, table, ...: the codec
  ** asks for them by name) is opened as lazy_index would, without the
  ** package library */
  for (const luaL_Reg *r = lazy_libs; r->name; r++)
    if (strcmp(name, r->name) == 0) {
      if (p->sandbox && forbidden(name)) break; /* not found, as require says */
      luaL_requiref(L, r->name, r->func, 1);
      return 1;
    }
  if (!p->sandbox && p->paths != NULL && lua_getfield(L, 2, LUA_LOADLIBNAME) == LUA_TNIL) {
    int r = gsi_modcache_load(L, p->rt->mods, name, gsi_paths_path(p->paths));
    if (r == -1) return lua_error(L);
    if (r == 1) { /* as require does: chunk(name, file), then loaded[name] */
      lua_pushvalue(L, 1);
      lua_insert(L, -2);
      lua_call(L, 2, 1);
      if (!lua_isnil(L, -1)) lua_setfield(L, 2, name);
      else lua_pop(L, 1);
      if (lua_getfield(L, 2, name) == LUA_TNIL) {
        lua_pushboolean(L, 1);
        lua_pushvalue(L, -1);
        lua_setfield(L, 2, name);
      }
      gsi_codec_invalidate(L);
      return 1;
    }
  }
  lua_settop(L, 1);
  lua_getglobal(L, "require");
  lua_insert(L, 1);
  lua_call(L, 1, 1);
  return 1;
}

static void open_libs(lua_State *L, int sandbox) {
  pthread_once(&base_once, read_base);
  if (sandbox) { /* its encoder refuses functions (codec.h) */
    lua_pushboolean(L, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &gsi_codec_sandbox_key);
  }
  if (nbase == 0) { /* could not read it: the whole library now */
    luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
    lua_pop(L, 1);
    if (sandbox) sandbox_base(L);
  } else { /* package.loaded._G; the functions come on first use */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushglobaltable(L);
    lua_setfield(L, -2, LUA_GNAME);
    lua_pop(L, 1);
  }
  /* until the string library is opened, strings get a stand-in metatable
  ** whose events open it, so that s:upper() and "10" + 1 work on first use */
  lua_pushliteral(L, "");
  lua_createtable(L, 0, sizeof lazy_string_mt / sizeof lazy_string_mt[0] - 1);
  luaL_setfuncs(L, lazy_string_mt, 0);
  lua_setmetatable(L, -2);
  lua_pop(L, 1);
  /* the codec's require (it does not run _G's __index) */
  lua_pushcfunction(L, gsi_require);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &gsi_codec_require_key);
  /* the other libraries, package included, on first use (lazy_index) */
  lua_pushglobaltable(L);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, lazy_index); /* light: allocates nothing */
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  lua_pop(L, 1);
}

/* --------------------------------------------------------- spawn boot */

/* The spawn message: u32 path length, path, u32 cpath length, cpath, then
** the codec's encoding of { n = N, body, arg1, ..., argN }. */
static int read_u32(const unsigned char **s, const unsigned char *e,
                    uint32_t *v) {
  if (e - *s < 4) return -1;
  memcpy(v, *s, 4);
  *s += 4;
  return 0;
}

/* Registry keys: the last error gsi_crash_msgh saw, and the traceback
** it took there. */
static const char TBERR_KEY = 'e', TB_KEY = 't';

/* The runtime's own frames at the bottom of a traceback (the body's boot,
** the gen_server loop) say nothing to the user: cut them. */
static void cut_runtime_frames(lua_State *L) {
  static const char *const tails[] = {"\n\t[C]: in ?",
                                      "\n\t[C]: in function 'genserver.core.serve'"};
  size_t len;
  const char *s = lua_tolstring(L, -1, &len), *end = s + len;
  for (int cut = 1; cut;) {
    cut = 0;
    for (size_t i = 0; i < sizeof tails / sizeof tails[0]; i++) {
      size_t n = strlen(tails[i]);
      if ((size_t)(end - s) > n && memcmp(end - n, tails[i], n) == 0) end -= n, cut = 1;
    }
  }
  if ((size_t)(end - s) != len) {
    lua_pushlstring(L, s, (size_t)(end - s));
    lua_replace(L, -2);
  }
}

int gsi_crash_msgh(lua_State *L) {
  lua_settop(L, 1);
  lua_pushvalue(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &TBERR_KEY);
  luaL_traceback(L, L, NULL, 1); /* from the function that raised */
  cut_runtime_frames(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &TB_KEY);
  return 1;
}

int gsi_crash_traceback(lua_State *L, int idx) {
  int top = lua_gettop(L);
  idx = lua_absindex(L, idx);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &TBERR_KEY);
  if (lua_rawequal(L, -1, idx) && lua_rawgetp(L, LUA_REGISTRYINDEX, &TB_KEY) == LUA_TSTRING) {
    lua_remove(L, -2);
    return 1;
  }
  lua_settop(L, top);
  return 0;
}

/* The body proper: require the module if the body is a name, then call
** it with the arguments (1 = { n = N, body, arg1, ..., argN }). */
static int body_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return lua_gettop(L) - 1;
}

static int run_body(lua_State *L) {
  lua_Integer n;
  luaL_checktype(L, 1, LUA_TTABLE);
  n = (lua_getfield(L, 1, "n"), lua_tointeger(L, -1));
  lua_settop(L, 1);
  lua_rawgeti(L, 1, 1);
  if (lua_type(L, -1) == LUA_TSTRING) {
    lua_pushcfunction(L, gsi_require);
    lua_insert(L, -2);
    lua_call(L, 1, 1);
    if (lua_type(L, -1) == LUA_TTABLE) lua_getfield(L, -1, "main"), lua_remove(L, -2);
    if (lua_type(L, -1) != LUA_TFUNCTION)
      return luaL_error(L, "spawn: module '%s' is not a function and has no main",
                        (lua_rawgeti(L, 1, 1), lua_tostring(L, -1)));
  }
  if (n < 0 || n > 250) n = 0;
  luaL_checkstack(L, (int)n + 2, "too many spawn arguments");
  for (lua_Integer i = 1; i <= n; i++) lua_rawgeti(L, 1, i + 1);
  lua_callk(L, (int)n, LUA_MULTRET, 0, body_k);
  return body_k(L, LUA_OK, 0);
}

/* The process body runs on the state's main thread (no coroutine of its
** own: ~0.9 KB less per process), under a protected call, so that a crash
** ends it normally with its reason on top (p->crashed) and the state
** stays usable for finish(). boot_done also continues it after yields. */
static int boot_done(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  if (status != LUA_OK && status != LUA_YIELD) {
    gsi_proc *p = proc_of(L);
    p->crashed = 1; /* the error on top; see make_reason */
    /* reported as Erlang does for a process that crashed; not a kill,
    ** max_heap or out of memory (finish() gives those their reasons) */
    if (status == LUA_ERRRUN && !p->dying && !p->heap_exceeded &&
        p->rt->face.report_crash != NULL)
      p->rt->face.report_crash(L, -1);
    return 1;
  }
  return lua_gettop(L) - 1; /* above the handler */
}

static int boot(lua_State *L) {
  lua_pushcfunction(L, gsi_crash_msgh); /* light: allocates nothing */
  lua_insert(L, 1);
  lua_pushcfunction(L, run_body);
  lua_insert(L, 2);
  return boot_done(L, lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 1, 0, boot_done), 0);
}

static int boot_fail(lua_State *L) {
  return luaL_error(L, "spawn: cannot receive the body: %s", lua_tostring(L, 1));
}

/* The protected part of start_state (1 = the process): libraries, paths,
** the host's hook, the body and its arguments. Any error here, a memory
** error included, is returned to start_state instead of reaching Lua's
** panic handler. Returns boot and the decoded arguments. */
static int setup_state(lua_State *L) {
  gsi_proc *p = lua_touserdata(L, 1);
  gsi_msg *sm = p->spawn_msg;
  const unsigned char *s = GSI_MSG_DATA(sm), *e = s + sm->len, *path;
  uint32_t n, plen;
  /* a gen_server's boot (serve, require, init: nested C calls that each
  ** reserve LUA_MINSTACK slots) takes ~85 slots of the main thread's 45.
  ** Growing now, early in the boot arena, lets the old stack's block be
  ** reused by what follows instead of becoming a hole late in the boot. */
  if (p->start_ref != 0) lua_checkstack(L, 90);
  open_libs(L, p->sandbox);
  if (read_u32(&s, e, &n) || (uint32_t)(e - s) < n)
    return luaL_error(L, "malformed spawn message");
  path = s;
  plen = n;
  s += n;
  if (read_u32(&s, e, &n) || (uint32_t)(e - s) < n)
    return luaL_error(L, "malformed spawn message");
  /* kept outside the state, shared with the processes that have the same
  ** paths, until the package library is opened (if ever) */
  p->paths = gsi_paths_get(p->rt->mods, (const char *)path, plen, (const char *)s, n);
  if (p->paths == NULL) return luaL_error(L, "not enough memory");
  s += n;
  if (p->rt->face.state_hook) p->rt->face.state_hook(L, p->rt->face.ud);
  luaL_checkstack(L, 4, "spawn");
  lua_pushcfunction(L, boot);
  if (gsi_decode_raw(L, s, (size_t)(e - s), gsi_limits_of(p)) != 0) {
    lua_pushcfunction(L, boot_fail); /* raises the decode error */
    lua_replace(L, -3);
  }
  return 2; /* the body and its argument, resumed on this thread */
}

/* A new state for p with its body on the main thread, ready to resume
** with *nargs.
** Returns 0, or -1 with p->L possibly set (closed by the caller) and, if
** the setup failed with a string error, that error at the top of p->L. */
static int start_state(gsi_proc *p, int *nargs) {
  lua_State *L;
  p->heap_cap = p->max_heap;
  arena_open(p);
  L = lua_newstate(palloc, p);
  if (L == NULL) return -1;
  p->L = L;
  /* the binding finds its process here (lgenserver.c, state_proc); set
  ** before any thread is created, since threads copy it */
  *(gsi_proc **)lua_getextraspace(L) = p;
  /* everything allocated while setting up is live: collecting meanwhile
  ** is wasted work (restarted below, before any user code runs) */
  lua_gc(L, LUA_GCSTOP);
  lua_pushcfunction(L, setup_state); /* light: pushing allocates nothing */
  lua_pushlightuserdata(L, p);
  p->crashed = 0;
  if (lua_pcall(L, 1, 2, 0) != LUA_OK) return -1;
  gsi_msg_free(p->spawn_msg);
  p->spawn_msg = NULL;
  lua_gc(L, LUA_GCRESTART);
  *nargs = 1;
  return 0;
}

/* ------------------------------------------------------------ exiting */

/* Codec limits for decoding into p's state: a sandbox takes no bytecode,
** but modules and their C functions by name. */
const gsi_codec_limits *gsi_limits_of(gsi_proc *p) {
  static _Thread_local gsi_codec_limits sandboxed;
  if (!p->sandbox) return gsi_rt_limits(p->rt);
  sandboxed = *gsi_rt_limits(p->rt);
  sandboxed.allow_functions = GSI_FN_NAMES;
  return &sandboxed;
}

int gsi_check_code_to(lua_State *L, int idx, const char *what, gsi_rt *rt,
                      uint64_t to, const gsi_buf *b) {
  gsi_codec_limits lim;
  gsi_buf scratch;
  int rc, top = lua_gettop(L);
  if (b->len == 0 || !(b->data[0] & GSI_WIRE_CODE) || !gsi_pid_sandboxed(rt, to))
    return 0;
  /* encode it again as for a sandbox, which fails at the function with
  ** its path (the cold path: only for a function sent to a sandbox) */
  lim = *gsi_rt_limits(rt);
  lim.allow_functions = GSI_FN_NAMES;
  gsi_buf_init(&scratch);
  rc = gsi_encode(L, idx, what, &lim, &scratch);
  gsi_buf_free(&scratch);
  if (rc == 0 || lua_gettop(L) == top)
    lua_pushliteral(L, "cannot send a function to a sandboxed process");
  return -1;
}


/* The end of a process that has a state (DESIGN §1.2: dying cannot be
** blocked): first what others see (DOWN, EXIT, its name released), then
** its state is closed, which runs finalizers and pending __close handlers
** that may never end. The watchdog abandons a close that takes longer
** than its bound (preempt.c): this thread then leaves when (if ever) the
** close returns, and a new thread is the worker. */
static void end_process(gsi_proc *p, const void *reason, size_t len, int normal) {
  gsi_proc_die(p, reason, len, normal);
  gsi_hold(p, 1);
  close_state(p);
  if (gsi_unhold()) {
    gsi_rt *rt = p->rt;
    atomic_fetch_sub(&rt->abandoned_live, 1);
    gsi_proc_reap(p);
    atomic_fetch_sub(&rt->orphan_threads, 1); /* the last touch of rt */
    return;
  }
  gsi_proc_reap(p);
}

/* Protected (1 = the reason_ctx, 2 = the crash value): the reason of a
** body that crashed, encoded. A reason that cannot be sent is replaced
** by its tostring(). */
typedef struct reason_ctx {
  gsi_proc *p;
  gsi_buf b;
} reason_ctx;

static int make_reason(lua_State *L) {
  reason_ctx *c = lua_touserdata(L, 1);
  const gsi_codec_limits *lim = gsi_rt_limits(c->p->rt);
  /* { error = message, traceback } with the traceback taken where this
  ** error was raised (gsi_crash_msgh; none for a memory error). A string or
  ** number error becomes its text, a table crosses as it is, anything
  ** else becomes its tostring(). */
  lua_createtable(L, 0, 2);
  if (lua_type(L, 2) == LUA_TSTRING || lua_type(L, 2) == LUA_TNUMBER)
    lua_pushstring(L, lua_tostring(L, 2));
  else if (lua_type(L, 2) == LUA_TTABLE)
    lua_pushvalue(L, 2);
  else
    luaL_tolstring(L, 2, NULL);
  lua_setfield(L, 3, "error");
  if (!gsi_crash_traceback(L, 2)) lua_pushliteral(L, "stack traceback:\n\t(not available)");
  lua_setfield(L, 3, "traceback");
  lua_settop(L, 3);
  lua_replace(L, 2);
  if (gsi_encode(L, 2, "exit reason", lim, &c->b) != 0) {
    lua_pop(L, 1); /* the codec's error */
    luaL_tolstring(L, 2, NULL);
    c->b.len = 0;
    if (gsi_encode(L, -1, "exit reason", lim, &c->b) != 0) c->b.len = 0;
  }
  return 0;
}

/* The process is done: compute the reason, close the state, then run the
** death protocol. Nothing here may raise: a crash's reason is encoded
** under lua_pcall (the body ended normally: boot caught the crash), the
** others in C. */
static void finish(gsi_proc *p, int st) {
  gsi_msg *rm;
  int normal = 0;
  if (p->dying && p->exit_msg != NULL && !p->heap_exceeded &&
      !(p->exit_msg->flags & GSI_XF_KILL)) {
    rm = p->exit_msg; /* killed by a signal, or exit(reason) */
    p->exit_msg = NULL;
    normal = (rm->flags & GSI_XF_NORMAL) != 0;
  } else {
    gsi_buf b;
    gsi_buf_init(&b);
    if (p->heap_exceeded) {
      gsi_encode_field_int(&b, "max_heap", (lua_Integer)p->max_heap);
    } else if (p->dying) {
      gsi_encode_cstring(&b, "killed");
    } else if (st == LUA_OK && !p->crashed) {
      /* the body returned: "normal", with nothing left to fail */
      normal = gsi_encode_cstring(&b, "normal") == 0;
    } else if (st == LUA_OK) {
      reason_ctx c;
      c.p = p;
      gsi_buf_init(&c.b);
      lua_pushcfunction(p->L, make_reason); /* light: allocates nothing */
      lua_pushlightuserdata(p->L, &c);
      lua_pushvalue(p->L, -3); /* the crash value, boot's result */
      if (lua_pcall(p->L, 2, 0, 0) != LUA_OK) c.b.len = 0;
      b = c.b;
    } else if (lua_type(p->L, -1) == LUA_TSTRING) {
      /* an error outside boot's protection (the thread is dead: no calls
      ** on it any more); a string error reads without allocating */
      gsi_encode_cstring(&b, lua_tostring(p->L, -1));
    }
    if (b.len == 0) {
      normal = 0;
      gsi_encode_cstring(&b, "out of memory");
    }
    rm = gsi_msg_new(GSI_M_EXIT, 0, 0, b.data, b.len);
    gsi_buf_free(&b);
  }
  if (rm == NULL) end_process(p, NULL, 0, normal);
  else {
    end_process(p, GSI_MSG_DATA(rm), rm->len, normal);
    gsi_msg_free(rm);
  }
}

static void cancel_wait_timer(gsi_proc *p) {
  if (p->wait_timer != 0) {
    gsi_timer_cancel(p->rt, p->wait_timer);
    p->wait_timer = 0;
  }
}

/* The watchdog abandoned p while it ran (killed, it did not end within
** the bound: a finalizer that loops, where no hook runs) and has run
** gsi_proc_die for it. The code returned after all: close the state and
** give the slot back; this thread then leaves (see worker_main). Nothing
** here touches the worker. */
static void abandoned_end(gsi_proc *p) {
  gsi_rt *rt = p->rt;
  arena_close(p);
  close_state(p);
  atomic_fetch_sub(&rt->abandoned_live, 1);
  gsi_proc_reap(p);
  atomic_fetch_sub(&rt->orphan_threads, 1); /* the last touch of rt */
}

void gsi_run(gsi_worker *w, gsi_proc *p) {
  int nargs = 0;
  atomic_store(&p->sched, GSI_RUNNING);
  p->budget = atomic_load_explicit(&p->rt->budget, memory_order_relaxed);
  p->nest = 0;
  if (p->L == NULL && start_state(p, &nargs) != 0) {
    /* the state could not be set up: a cap too small for the state itself,
    ** out of memory, or the host's hook failed */
    gsi_buf b;
    gsi_buf_init(&b);
    if (p->heap_exceeded)
      gsi_encode_field_int(&b, "max_heap", (lua_Integer)p->max_heap);
    else if (p->L != NULL && lua_type(p->L, -1) == LUA_TSTRING)
      gsi_encode_cstring(&b, lua_tostring(p->L, -1));
    else if (p->max_heap != 0 && p->L == NULL)
      gsi_encode_field_int(&b, "max_heap", (lua_Integer)p->max_heap);
    else
      gsi_encode_cstring(&b, "out of memory");
    end_process(p, b.data, b.len, 0);
    gsi_buf_free(&b);
    return;
  }
  for (;;) {
    int nres = 0;
    int st;
    p->want = GSI_W_NONE;
    if (p->dying) {
      cancel_wait_timer(p);
      finish(p, LUA_OK);
      return;
    }
    gsi_turn_begin(w, p);
    gsi_hold(p, 0);
    st = lua_resume(p->L, NULL, nargs, &nres);
    if (gsi_unhold()) { /* abandoned by the watchdog: w is not ours */
      abandoned_end(p);
      return;
    }
    gsi_turn_end(w, p);
    arena_close(p); /* the first turn ends the boot */
    nargs = 0;
    if (st != LUA_YIELD || p->dying || p->want == GSI_W_EXIT) {
      cancel_wait_timer(p);
      finish(p, st);
      return;
    }
    lua_pop(p->L, nres);
    if (p->want == GSI_W_WAIT) {
      int s = GSI_RUNNING;
      if (atomic_compare_exchange_strong(&p->sched, &s, GSI_IDLE)) return;
      atomic_store(&p->sched, GSI_RUNNING); /* NOTIFIED: look again */
      continue;
    }
    /* a voluntary yield (budget, preemption, a bare coroutine.yield) */
    atomic_store(&p->sched, GSI_QUEUED);
    gsi_enqueue(p->rt, p);
    return;
  }
}

/* --------------------------------------------------- foreign processes */

/* A thread's foreign processes, one per runtime it uses. An entry names
** its runtime by address AND serial: a runtime closed and freed while the
** thread still had an entry may be followed by a new one at the same
** address, and the stale entry must then not be touched (its slot memory
** is gone). A thread using more runtimes at once than FG_MAX gets no more
** foreign processes (gsi_foreign_self returns NULL). */
#define FG_MAX 8

typedef struct fg_entry {
  gsi_rt *rt;
  uint64_t serial;
  gsi_proc *p;
  uint64_t pid;
} fg_entry;

static _Thread_local fg_entry tls_fg[FG_MAX];

static fg_entry *fg_find(gsi_rt *rt) {
  for (int i = 0; i < FG_MAX; i++)
    if (tls_fg[i].rt == rt) {
      if (tls_fg[i].serial == rt->serial) return &tls_fg[i];
      tls_fg[i].rt = NULL; /* a closed runtime's: forget it, touch nothing */
    }
  return NULL;
}

static fg_entry *fg_free_entry(void) {
  for (int i = 0; i < FG_MAX; i++)
    if (tls_fg[i].rt == NULL) return &tls_fg[i];
  return NULL;
}

static gsi_proc *new_foreign(gsi_rt *rt) {
  pthread_condattr_t ca;
  gsi_proc *p = gsi_proc_alloc(rt);
  if (p == NULL) return NULL;
  p->fg = calloc(1, sizeof *p->fg);
  if (p->fg == NULL) {
    gsi_proc_release(p);
    return NULL;
  }
  pthread_mutex_init(&p->fg->mu, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&p->fg->cv, &ca);
  pthread_condattr_destroy(&ca);
  snprintf(p->module, sizeof p->module, "(foreign thread)");
  atomic_fetch_add(&rt->nforeign, 1);
  atomic_store(&p->sched, GSI_RUNNING);
  atomic_store(&p->alive, 1);
  return p;
}

gsi_proc *gsi_foreign_self(gsi_rt *rt) {
  fg_entry *e = fg_find(rt);
  gsi_proc *p;
  if (e != NULL && gsi_proc_pid(e->p) == e->pid) return e->p;
  if (e == NULL && (e = fg_free_entry()) == NULL) return NULL;
  if ((p = new_foreign(rt)) == NULL) return NULL;
  e->rt = rt;
  e->serial = rt->serial;
  e->p = p;
  e->pid = gsi_proc_pid(p);
  return p;
}

/* The foreign process of this thread ends (killed by a signal, or the
** thread leaves): run the death protocol; the next use makes a new one. */
void gsi_foreign_exit(gsi_proc *p, const void *reason, size_t len, int normal);
void gsi_foreign_exit(gsi_proc *p, const void *reason, size_t len,
                      int normal) {
  gsi_foreign *fg = p->fg;
  fg_entry *e = fg_find(p->rt);
  if (e != NULL && e->p == p) e->rt = NULL;
  /* before the slot goes: live - nforeign must never dip below zero */
  atomic_fetch_sub(&p->rt->nforeign, 1);
  gsi_proc_exit(p, reason, len, normal); /* no notifier touches fg after */
  pthread_mutex_destroy(&fg->mu);
  pthread_cond_destroy(&fg->cv);
  free(fg);
}

/* Forget this thread's foreign process in rt (the runtime is going). */
void gsi_foreign_reset(gsi_rt *rt) {
  fg_entry *e = fg_find(rt);
  if (e != NULL) e->rt = NULL;
}

