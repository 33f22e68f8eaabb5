/*
** modcache.c - Lua modules compiled once per runtime.
**
** Every server started by module name `require`s its callback module in a
** state of its own. Parsing the file again for each one (an open, a read
** and the compiler, ~100 K instructions for a small module) was the
** largest single cost of a start. A runtime therefore keeps, per (module
** name, package.path), the file that was found and the chunk compiled
** from it as lua_dump output with its debug information; later states
** load that binary chunk, which gives them the same functions with the
** same source names and line numbers, without touching the file system.
**
** As in OTP, code is loaded once per runtime: editing a module's file
** while the runtime runs changes nothing for the servers started after,
** until genserver.code.reload makes the file's new contents the current
** version (gsi_modcache_replace); servers that run the old version keep
** it until sys.change_code. A new runtime (a new program) reads it again.
**
** Sandboxed states never use the cache (they load text chunks only,
** through their own searcher).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"

#include "internal.h"

/* One compiled module. Immutable once published in the table, and freed
** only with the runtime (a replaced entry moves to the retired list), so
** a reader may keep using an entry after it dropped the table's lock. */
typedef struct gsi_modent {
  struct gsi_modent *next;
  uint64_t hash;
  uint64_t version;  /* 1, then one more at each reload */
  char vsn[48];      /* the module's vsn field as given to reload, or "" */
  size_t nlen, plen; /* module name and package.path, in key[] */
  char *file;        /* "@" + the file found, the chunk's source name */
  size_t flen;       /* strlen(file) */
  unsigned char *code;
  size_t len;
  char key[];        /* name, then path */
} gsi_modent;

/* ------------------------------------------------------- package paths */

/* The package.path/cpath pairs processes were started with, shared: a
** runtime sees a handful of distinct pairs, and keeping them in every
** state cost each server ~0.5 KB. Guarded by the cache's mu; an entry's
** strings are immutable, and it is freed when its last process lets go
** (refs, under mu). */
struct gsi_paths {
  struct gsi_paths *next;
  size_t refs;
  uint64_t phash; /* hash_path(path): what the cache's keys start from */
  size_t plen, clen;
  char *path, *cpath; /* NUL-terminated, in data[] */
  char data[];
};

/* The table: chained buckets, guarded by mu. Entries are only added
** (never removed nor changed) until gsi_modcache_free. */
struct gsi_modcache {
  pthread_mutex_t mu;
  gsi_modent **tab;
  size_t cap, n;
  size_t bytes; /* code kept, for the limit */
  gsi_modent *retired; /* versions replaced by a reload, kept for readers */
  struct gsi_paths *paths; /* see gsi_paths_get */
};

/* beyond this much compiled code a runtime stops caching (the loads
** then go to the file system as before) */
#define MODCACHE_MAX_BYTES ((size_t)64 << 20)

/* An entry's hash: the path's (a package.path is a few hundred bytes,
** so a process's paths keep theirs, computed once per runtime: see
** gsi_paths), then the module name. */
static uint64_t hash_path(const char *path, size_t plen) {
  static const unsigned char sep = 0xff; /* no byte of a name */
  return gsi_hash(gsi_hash(GSI_HASH_SEED, path, plen), &sep, 1);
}

static uint64_t hash_key(const char *name, size_t nlen, uint64_t phash) {
  return gsi_hash(phash, name, nlen);
}

/* phash if the caller has it (not 0), else the path's own */
static uint64_t path_hash_of(uint64_t phash, const char *path, size_t plen) {
  return phash != 0 ? phash : hash_path(path, plen);
}

gsi_modcache *gsi_modcache_new(void) {
  gsi_modcache *c = calloc(1, sizeof *c);
  if (c != NULL) pthread_mutex_init(&c->mu, NULL);
  return c;
}

void gsi_modcache_free(gsi_modcache *c) {
  if (c == NULL) return;
  for (size_t i = 0; i < c->cap; i++)
    for (gsi_modent *e = c->tab[i], *next; e != NULL; e = next) {
      next = e->next;
      free(e->file);
      free(e->code);
      free(e);
    }
  free(c->tab);
  for (gsi_modent *e = c->retired, *next; e != NULL; e = next) {
    next = e->next;
    free(e->file);
    free(e->code);
    free(e);
  }
  while (c->paths != NULL) { /* processes never closed (the runtime died) */
    struct gsi_paths *next = c->paths->next;
    free(c->paths);
    c->paths = next;
  }
  pthread_mutex_destroy(&c->mu);
  free(c);
}

static gsi_modent *find(gsi_modcache *c, uint64_t h, const char *name,
                        size_t nlen, const char *path, size_t plen) {
  if (c->cap == 0) return NULL;
  for (gsi_modent *e = c->tab[h & (c->cap - 1)]; e != NULL; e = e->next)
    if (e->hash == h && e->nlen == nlen && e->plen == plen &&
        memcmp(e->key, name, nlen) == 0 && memcmp(e->key + nlen, path, plen) == 0)
      return e;
  return NULL;
}

/* Double the buckets (under mu). Out of memory keeps the old ones. */
static void grow(gsi_modcache *c) {
  size_t ncap = c->cap ? c->cap * 2 : 16;
  gsi_modent **nt = calloc(ncap, sizeof *nt);
  if (nt == NULL) return;
  for (size_t i = 0; i < c->cap; i++)
    for (gsi_modent *e = c->tab[i], *next; e != NULL; e = next) {
      next = e->next;
      e->next = nt[e->hash & (ncap - 1)];
      nt[e->hash & (ncap - 1)] = e;
    }
  free(c->tab);
  c->tab = nt;
  c->cap = ncap;
}

typedef struct chunk_reader {
  const unsigned char *p;
  size_t n;
} chunk_reader;

static const char *read_chunk(lua_State *L, void *ud, size_t *size) {
  chunk_reader *r = ud;
  (void)L;
  *size = r->n;
  r->n = 0;
  return *size ? (const char *)r->p : NULL;
}

/* If (name, path) is cached, push its compiled chunk and its file name
** (without the "@") and return 1; else push nothing and return 0. A chunk
** that fails to load (out of memory) leaves its error and returns -1. */
int gsi_modcache_load(lua_State *L, gsi_modcache *c, const char *name,
                      const char *path, uint64_t phash) {
  size_t nlen = strlen(name), plen = strlen(path);
  uint64_t h = hash_key(name, nlen, path_hash_of(phash, path, plen));
  gsi_modent *e;
  chunk_reader r;
  if (c == NULL) return 0;
  pthread_mutex_lock(&c->mu);
  e = find(c, h, name, nlen, path, plen);
  pthread_mutex_unlock(&c->mu);
  if (e == NULL) return 0; /* e stays valid without the lock: see gsi_modent */
  r.p = e->code;
  r.n = e->len;
  if (lua_load(L, read_chunk, &r, e->file, "b") != LUA_OK) return -1;
  lua_pushlstring(L, e->file + 1, e->flen - 1);
  return 1;
}

static int write_chunk(lua_State *L, const void *p, size_t sz, void *ud) {
  (void)L;
  if (gsi_buf_reserve(ud, sz) != 0) return 1;
  memcpy(((gsi_buf *)ud)->data + ((gsi_buf *)ud)->len, p, sz);
  ((gsi_buf *)ud)->len += sz;
  return 0;
}

/* A new entry for the Lua function at the top of L (compiled from file),
** not yet published; NULL when out of memory. */
static gsi_modent *new_entry(lua_State *L, const char *name, const char *path,
                             const char *file) {
  size_t nlen = strlen(name), plen = strlen(path), flen = strlen(file);
  gsi_buf b;
  gsi_modent *e;
  if (!lua_isfunction(L, -1) || lua_iscfunction(L, -1)) return NULL;
  gsi_buf_init(&b);
  if (lua_dump(L, write_chunk, &b, 0) != 0 || b.len == 0) {
    gsi_buf_free(&b);
    return NULL;
  }
  e = malloc(sizeof *e + nlen + plen);
  if (e != NULL) e->file = malloc(flen + 2);
  if (e == NULL || e->file == NULL) {
    free(e);
    gsi_buf_free(&b);
    return NULL;
  }
  e->file[0] = '@';
  memcpy(e->file + 1, file, flen + 1);
  e->flen = flen + 1;
  e->hash = hash_key(name, nlen, hash_path(path, plen));
  e->version = 1;
  e->vsn[0] = '\0';
  e->nlen = nlen;
  e->plen = plen;
  memcpy(e->key, name, nlen);
  memcpy(e->key + nlen, path, plen);
  e->code = b.data;
  e->len = b.len;
  return e;
}

/* Remember the Lua function at the top of L (just compiled from `file`)
** as (name, path). Best effort: out of memory or over the limit, nothing
** is kept. Never raises. */
void gsi_modcache_put(lua_State *L, gsi_modcache *c, const char *name,
                      const char *path, const char *file) {
  size_t nlen = strlen(name), plen = strlen(path);
  uint64_t h;
  gsi_modent *e;
  if (c == NULL || (e = new_entry(L, name, path, file)) == NULL) return;
  h = e->hash;
  pthread_mutex_lock(&c->mu);
  if (c->n >= c->cap) grow(c);
  if (c->cap == 0 || c->bytes + e->len > MODCACHE_MAX_BYTES ||
      find(c, h, name, nlen, path, plen) != NULL) {
    pthread_mutex_unlock(&c->mu); /* full, or another state was first */
    free(e->file);
    free(e->code);
    free(e);
    return;
  }
  e->next = c->tab[h & (c->cap - 1)];
  c->tab[h & (c->cap - 1)] = e;
  c->n++;
  c->bytes += e->len;
  pthread_mutex_unlock(&c->mu);
}

uint64_t gsi_modcache_replace(lua_State *L, gsi_modcache *c, const char *name,
                              const char *path, const char *file, const char *vsn) {
  size_t nlen = strlen(name), plen = strlen(path);
  gsi_modent *e, *old, **pp;
  uint64_t version;
  if (c == NULL || (e = new_entry(L, name, path, file)) == NULL) return 0;
  if (vsn != NULL) snprintf(e->vsn, sizeof e->vsn, "%s", vsn);
  pthread_mutex_lock(&c->mu);
  if (c->n >= c->cap) grow(c);
  if (c->cap == 0 || c->bytes + e->len > MODCACHE_MAX_BYTES) {
    pthread_mutex_unlock(&c->mu);
    free(e->file);
    free(e->code);
    free(e);
    return 0;
  }
  /* the old entry leaves the chain for the retired list: a reader that
  ** found it before keeps a valid pointer (see gsi_modent) */
  old = find(c, e->hash, name, nlen, path, plen);
  if (old != NULL) {
    for (pp = &c->tab[old->hash & (c->cap - 1)]; *pp != old; pp = &(*pp)->next) {
    }
    *pp = old->next;
    old->next = c->retired;
    c->retired = old;
    c->n--;
    e->version = old->version + 1;
  }
  e->next = c->tab[e->hash & (c->cap - 1)];
  c->tab[e->hash & (c->cap - 1)] = e;
  c->n++;
  c->bytes += e->len;
  version = e->version;
  pthread_mutex_unlock(&c->mu);
  return version;
}

uint64_t gsi_modcache_version(gsi_modcache *c, const char *name, const char *path,
                              uint64_t phash, char *vsn, size_t n) {
  size_t nlen = strlen(name), plen = strlen(path);
  gsi_modent *e;
  uint64_t version = 0;
  if (n > 0) vsn[0] = '\0';
  if (c == NULL) return 0;
  pthread_mutex_lock(&c->mu);
  e = find(c, hash_key(name, nlen, path_hash_of(phash, path, plen)), name, nlen, path,
           plen);
  if (e != NULL) {
    version = e->version;
    if (n > 0) snprintf(vsn, n, "%s", e->vsn);
  }
  pthread_mutex_unlock(&c->mu);
  return version;
}

gsi_paths *gsi_paths_get(gsi_modcache *c, const char *path, size_t plen,
                         const char *cpath, size_t clen) {
  gsi_paths *e;
  pthread_mutex_lock(&c->mu);
  for (e = c->paths; e != NULL; e = e->next)
    if (e->plen == plen && e->clen == clen && memcmp(e->path, path, plen) == 0 &&
        memcmp(e->cpath, cpath, clen) == 0) {
      e->refs++;
      pthread_mutex_unlock(&c->mu);
      return e;
    }
  if ((e = malloc(sizeof *e + plen + clen + 2)) != NULL) {
    e->refs = 1;
    e->phash = hash_path(path, plen);
    e->plen = plen;
    e->clen = clen;
    e->path = e->data;
    e->cpath = e->data + plen + 1;
    memcpy(e->path, path, plen);
    e->path[plen] = '\0';
    memcpy(e->cpath, cpath, clen);
    e->cpath[clen] = '\0';
    e->next = c->paths;
    c->paths = e;
  }
  pthread_mutex_unlock(&c->mu);
  return e;
}

void gsi_paths_put(gsi_modcache *c, gsi_paths *e) {
  gsi_paths **pp;
  if (e == NULL) return;
  pthread_mutex_lock(&c->mu);
  if (--e->refs == 0)
    for (pp = &c->paths; *pp != NULL; pp = &(*pp)->next)
      if (*pp == e) {
        *pp = e->next;
        free(e);
        break;
      }
  pthread_mutex_unlock(&c->mu);
}

const char *gsi_paths_path(const gsi_paths *e) { return e->path; }
uint64_t gsi_paths_hash(const gsi_paths *e) { return e->phash; }
const char *gsi_paths_cpath(const gsi_paths *e) { return e->cpath; }
