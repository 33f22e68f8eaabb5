/*
** codec.c - the value codec: Lua value <-> bytes, between lua_States.
**
** This is the hot path of every message, so the common case (a small
** table of strings and numbers) is kept cheap:
**   - encoding writes straight into a malloc'd gsi_buf, tracks tables it
**     has seen in a small C array (a malloc'd hash only past NSMALL
**     objects) and pays one Lua hash lookup per table, in the per-state
**     reverse cache of loaded modules;
**   - decoding builds tables with size hints and keeps a Lua table of
**     objects by number only if the encoder flagged back-references.
** Both run their Lua API work inside one lua_pcall so that nothing they
** do (memory errors, bad input, a failing `require`) raises out of them;
** all C memory they own lives in the caller's frame and is freed there.
*/
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua.h"
#include "lauxlib.h"

#include "codec.h"
#include "ids.h"

_Static_assert(sizeof(lua_Integer) == 8, "codec assumes 64-bit integers");
_Static_assert(sizeof(lua_Number) == 8, "codec assumes double floats");

#if defined(__GNUC__)
#define unlikely(x) __builtin_expect(!!(x), 0)
#else
#define unlikely(x) (x)
#endif

const char gsi_codec_require_key = 'r';
const char gsi_codec_sandbox_key = 's';

const gsi_codec_limits gsi_codec_default_limits = {
  200, (size_t)64 << 20, 1, NULL
};

/* registry keys of the per-state reverse caches of loaded modules: one of
** the modules themselves (needed whenever a table is sent), and a larger
** one that also holds every C function of every module (built only when a
** C function is sent: it costs a state several KB). */
static char cachekey;
static char cfcachekey;


/* ---------------------------------------------------------- utilities */

static void getlimits (const gsi_codec_limits *lim, int *depth,
                       size_t *size, int *allowfn) {
  if (lim == NULL)
    lim = &gsi_codec_default_limits;
  *depth = lim->max_depth > 0 ? lim->max_depth
                              : gsi_codec_default_limits.max_depth;
  if (*depth > GSI_CODEC_MAXDEPTH)
    *depth = GSI_CODEC_MAXDEPTH;
  *size = lim->max_size > 0 ? lim->max_size
                            : gsi_codec_default_limits.max_size;
  *allowfn = lim->allow_functions;
}


static size_t varintlen (uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}


/* Append s as a readable, quoted, truncated literal (names in error
** messages may be arbitrary bytes). */
static void addquoted (luaL_Buffer *B, const char *s, size_t len) {
  size_t i, n = len > 40 ? 40 : len;
  luaL_addchar(B, '"');
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      luaL_addchar(B, '\\');
      luaL_addchar(B, (char)c);
    }
    else if (c >= 0x20 && c < 0x7f)
      luaL_addchar(B, (char)c);
    else {
      char tmp[8];
      snprintf(tmp, sizeof(tmp), "\\x%02x", c);
      luaL_addstring(B, tmp);
    }
  }
  if (len > n)
    luaL_addstring(B, "...");
  luaL_addchar(B, '"');
}


/* Raise pre.."name"..post. */
static void failname (lua_State *L, const char *pre, const char *s,
                      size_t len, const char *post) {
  luaL_Buffer B;
  luaL_buffinit(L, &B);
  luaL_addstring(&B, pre);
  addquoted(&B, s, len);
  luaL_addstring(&B, post);
  luaL_pushresult(&B);
  lua_error(L);
}


/* ------------------------------------------------ reverse module cache */

/* Is the name a (new) better than b? Shorter first, then bytewise, so the
** choice does not depend on table traversal order. */
static int better (const char *a, size_t la, const char *b, size_t lb) {
  int c;
  if (la != lb)
    return la < lb;
  c = memcmp(a, b, la);
  return c < 0;
}


/* cache[obj] = name at top (unless cache already has a better one);
** pops the name */
static void offer (lua_State *L, int cache, int obj) {
  lua_pushvalue(L, obj);
  if (lua_rawget(L, cache) == LUA_TSTRING) {
    size_t lo, ln;
    const char *old = lua_tolstring(L, -1, &lo);
    const char *nw = lua_tolstring(L, -2, &ln);
    if (!better(nw, ln, old, lo)) {
      lua_pop(L, 2);
      return;
    }
  }
  lua_pop(L, 1);
  lua_pushvalue(L, obj);
  lua_insert(L, -2);
  lua_rawset(L, cache);
}


/* The cache stores ready-made wire bytes, so sending a module costs one
** memcpy: tag, varint length, module name [, varint length, field]. */
static void pushname (lua_State *L, int tag, const char *m, size_t lm,
                      const char *f, size_t lf) {
  luaL_Buffer B;
  unsigned char tmp[10];
  luaL_buffinit(L, &B);
  luaL_addchar(&B, (char)tag);
  luaL_addlstring(&B, (const char *)tmp, gsi_putvarint(tmp, lm));
  luaL_addlstring(&B, m, lm);
  if (f != NULL) {
    luaL_addlstring(&B, (const char *)tmp, gsi_putvarint(tmp, lf));
    luaL_addlstring(&B, f, lf);
  }
  luaL_pushresult(&B);
}


/* C functions stored under string keys of the module table at mod */
static void addfields (lua_State *L, int cache, int mod, const char *m,
                       size_t lm) {
  lua_pushnil(L);
  while (lua_next(L, mod)) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_iscfunction(L, -1)) {
      size_t lf;
      const char *f = lua_tolstring(L, -2, &lf);
      pushname(L, GSI_T_CFUNC, m, lm, f, lf);
      offer(L, cache, lua_gettop(L) - 1);
    }
    lua_pop(L, 1);
  }
}


/* The module cache (not the C-function one) keeps, at integer key 0 (no
** module is a number), a userdata: a one-hash Bloom filter of the
** addresses of its tables and functions. The fast encoder tests a table
** against it (a few instructions) before the exact lookup (a rawget,
** ~150): a clear bit means "not a loaded module". The filter is written
** only while the cache is built, as every entry is, so it covers every
** entry; an entry the weak cache dropped leaves a bit set, which only sends
** that address to the exact lookup. */
#define MODFILTER_BITS 512

static unsigned modfilter_bit (const void *p) {
  return (unsigned)((((uint64_t)(uintptr_t)p >> 4) * 0x9E3779B97F4A7C15u) >> 55);
}

static int modfilter_maybe (const uint64_t *f, const void *p) {
  unsigned b = modfilter_bit(p);
  return (f[b >> 6] >> (b & 63)) & 1;
}

/* Scan package.loaded into a fresh cache (weak keys: it must not keep an
** unloaded module alive), store it in the registry and push it. With
** cfuncs, the C functions of the modules go in too. */
static void buildcache (lua_State *L, int cfuncs) {
  int cache, loaded;
  uint64_t *filter = NULL;
  luaL_checkstack(L, 10, "building the module cache");
  lua_createtable(L, 0, cfuncs ? 64 : 8);
  cache = lua_gettop(L);
  if (!cfuncs) {
    filter = (uint64_t *)lua_newuserdatauv(L, MODFILTER_BITS / 8, 0);
    memset(filter, 0, MODFILTER_BITS / 8);
    lua_rawseti(L, cache, 0);
  }
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, cache);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  loaded = lua_gettop(L);
  if (lua_type(L, loaded) == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, loaded)) {
      int t = lua_type(L, -1);
      if (lua_type(L, -2) == LUA_TSTRING &&
          (t == LUA_TTABLE || t == LUA_TFUNCTION)) {
        int mod = lua_gettop(L);
        size_t lm;
        const char *m = lua_tolstring(L, mod - 1, &lm);
        pushname(L, GSI_T_MODULE, m, lm, NULL, 0);
        offer(L, cache, mod);
        if (filter != NULL) {
          unsigned b = modfilter_bit(lua_topointer(L, mod));
          filter[b >> 6] |= (uint64_t)1 << (b & 63);
        }
        if (t == LUA_TTABLE && cfuncs)
          addfields(L, cache, mod, m, lm);
      }
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  lua_pushvalue(L, cache);
  lua_rawsetp(L, LUA_REGISTRYINDEX, cfuncs ? &cfcachekey : &cachekey);
}


static void dropcache (lua_State *L, const void *key) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE) {
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
  }
  else
    lua_pop(L, 1);
}


int gsi_encode_cstring (gsi_buf *b, const char *s) {
  size_t n = strlen(s);
  unsigned char *p;
  if (gsi_buf_reserve(b, n + 12) != 0)
    return -1;
  p = b->data + b->len;
  *p++ = GSI_WIRE_MAGIC;
  *p++ = GSI_T_STR;
  p += gsi_putvarint(p, n);
  memcpy(p, s, n);
  b->len = (size_t)(p + n - b->data);
  return 0;
}


int gsi_encode_field_int (gsi_buf *b, const char *k, lua_Integer v) {
  size_t n = strlen(k);
  unsigned char *p;
  if (gsi_buf_reserve(b, n + 32) != 0)
    return -1;
  p = b->data + b->len;
  *p++ = GSI_WIRE_MAGIC;
  *p++ = GSI_T_TABLE;
  p += gsi_putvarint(p, 0);  /* array part */
  p += gsi_putvarint(p, 1);  /* one pair */
  *p++ = GSI_T_STR;
  p += gsi_putvarint(p, n);
  memcpy(p, k, n);
  p += n;
  *p++ = GSI_T_INT;
  p += gsi_putvarint(p, gsi_zigzag(v));
  b->len = (size_t)(p - b->data);
  return 0;
}




void gsi_codec_invalidate (lua_State *L) {
  /* only overwrite existing entries: that never allocates, so this
  ** cannot raise */
  if (!lua_checkstack(L, 1))
    return;
  dropcache(L, &cachekey);
  dropcache(L, &cfcachekey);
}


/* ------------------------------------------------------- seen objects */

/* Tables and Lua functions already encoded (key: lua_topointer, upn 0)
** and upvalues already encoded (key: lua_upvalueid, upn >= 1: upvalue upn
** of function object obj). The two kinds of pointer name distinct live
** objects, so they share one set. */
typedef struct seenent {
  const void *p;
  size_t obj;
  int upn;
} seenent;

#define NSMALL 16

typedef struct seenset {
  size_t n;
  size_t mask;      /* hash size - 1, once hash != NULL */
  seenent *hash;    /* NULL while the entries fit in small */
  seenent small[NSMALL];
} seenset;


static size_t hashptr (const void *p) {
  uint64_t h = (uint64_t)(uintptr_t)p * UINT64_C(0x9e3779b97f4a7c15);
  return (size_t)(h >> 32);
}


static seenent *seen_find (seenset *s, const void *p) {
  size_t i;
  if (s->hash == NULL) {
    for (i = 0; i < s->n; i++)
      if (s->small[i].p == p)
        return &s->small[i];
    return NULL;
  }
  for (i = hashptr(p) & s->mask; s->hash[i].p != NULL;
       i = (i + 1) & s->mask)
    if (s->hash[i].p == p)
      return &s->hash[i];
  return NULL;
}


static void hashput (seenent *h, size_t mask, const seenent *e) {
  size_t i = hashptr(e->p) & mask;
  while (h[i].p != NULL)
    i = (i + 1) & mask;
  h[i] = *e;
}


static int seen_grow (seenset *s) {
  size_t i, size = s->hash ? (s->mask + 1) * 2 : NSMALL * 4;
  seenent *h = (seenent *)calloc(size, sizeof(seenent));
  if (h == NULL)
    return -1;
  if (s->hash == NULL) {
    for (i = 0; i < s->n; i++)
      hashput(h, size - 1, &s->small[i]);
  }
  else {
    for (i = 0; i <= s->mask; i++)
      if (s->hash[i].p != NULL)
        hashput(h, size - 1, &s->hash[i]);
    free(s->hash);
  }
  s->hash = h;
  s->mask = size - 1;
  return 0;
}


/* 0, or -1 when out of memory */
static int seen_add (seenset *s, const void *p, size_t obj, int upn) {
  seenent e;
  e.p = p;
  e.obj = obj;
  e.upn = upn;
  if (s->hash == NULL && s->n < NSMALL) {
    s->small[s->n++] = e;
    return 0;
  }
  if ((s->hash == NULL || (s->n + 1) * 2 > s->mask + 1) && seen_grow(s))
    return -1;
  hashput(s->hash, s->mask, &e);
  s->n++;
  return 0;
}


/* ------------------------------------------------------------ encoder */

/* A frame per step of the path from the root to the value being encoded,
** living on the C stack: they cost nothing unless an error needs the
** path. */
enum { F_INDEX, F_FIELD, F_KEY, F_UPVAL };

typedef struct frame {
  const struct frame *up;
  int kind;
  int idx;          /* stack index of the key (F_FIELD, F_KEY) or of the
                       function (F_UPVAL) */
  lua_Integer n;    /* array index (F_INDEX) or upvalue number (F_UPVAL) */
} frame;

typedef struct enc {
  gsi_buf *b;
  size_t start;     /* b->len at entry, restored on failure */
  size_t limit;     /* b->len may not grow past this */
  size_t maxsize;
  const char *what;
  int maxdepth, depth;
  int cache;        /* stack slot of the module cache */
  int havecache;    /* slot filled */
  int cfcache;      /* stack slot of the cache with C functions */
  int havecf;       /* slot filled */
  int rebuilt;      /* cf cache built during this call: no second rebuild */
  int flags;        /* header flags */
  int dumperr;      /* set by the lua_dump writer */
  int nofn;         /* functions by value: -1 not looked at yet, 0 sent,
                       NOFN_OUT / NOFN_IN refused (see sandboxed) */
  size_t nobj;
  seenset seen;
} enc;

enum { NOFN_OUT = 1, NOFN_IN = 2 };

static void encvalue (lua_State *L, enc *e, int idx, const frame *f);


static void toobig (lua_State *L, enc *e) {
  char num[32];
  snprintf(num, sizeof(num), "%zu", e->maxsize);
  lua_pushfstring(L, "%s: too large (more than %s bytes encoded)",
                  e->what, num);
  lua_error(L);
}


static void nomem (lua_State *L, enc *e) {
  lua_pushfstring(L, "%s: not enough memory to encode", e->what);
  lua_error(L);
}


/* Room for n more bytes at the end of the buffer, within the size limit. */
static unsigned char *need (lua_State *L, enc *e, size_t n) {
  gsi_buf *b = e->b;
  if (unlikely(n > e->limit - b->len))
    toobig(L, e);
  if (unlikely(n > b->cap - b->len) && gsi_buf_reserve(b, n) != 0)
    nomem(L, e);
  return b->data + b->len;
}


static void emitbyte (lua_State *L, enc *e, int c) {
  unsigned char *p = need(L, e, 1);
  *p = (unsigned char)c;
  e->b->len++;
}


static void emittagvar (lua_State *L, enc *e, int tag, uint64_t v) {
  unsigned char *p = need(L, e, 11);
  p[0] = (unsigned char)tag;
  e->b->len += 1 + gsi_putvarint(p + 1, v);
}


static void emitvarint (lua_State *L, enc *e, uint64_t v) {
  unsigned char *p = need(L, e, 10);
  e->b->len += gsi_putvarint(p, v);
}


/* Byte writers shared by both encoders (the caller made room): each
** returns the bytes written. */
#define MAXINTEGER 11   /* put_integer writes at most this */
#define MAXSTRHEAD 11   /* put_strhead writes at most this */

static size_t put_integer (unsigned char *p, lua_Integer i) {
  if (i >= 0 && i < 0x80) {
    p[0] = (unsigned char)i;
    return 1;
  }
  if (i < 0 && i >= -32) {
    p[0] = (unsigned char)(GSI_T_NEGINT + (int)(i + 32));
    return 1;
  }
  p[0] = GSI_T_INT;
  return 1 + gsi_putvarint(p + 1, gsi_zigzag(i));
}


static size_t put_float (unsigned char *p, lua_Number x) {
  uint64_t u;
  int k;
  memcpy(&u, &x, sizeof(u));
  p[0] = GSI_T_FLOAT;
  for (k = 0; k < 8; k++)  /* little-endian whatever the host */
    p[1 + k] = (unsigned char)(u >> (8 * k));
  return 9;
}


/* the tag and length of a string of len bytes */
static size_t put_strhead (unsigned char *p, size_t len) {
  if (len < 32) {
    p[0] = (unsigned char)(GSI_T_FIXSTR | len);
    return 1;
  }
  p[0] = GSI_T_STR;
  return 1 + gsi_putvarint(p + 1, len);
}


static void emitinteger (lua_State *L, enc *e, lua_Integer i) {
  /* exact room for one-byte integers: the size limit is exact */
  unsigned char *p = need(L, e, (i >= -32 && i < 0x80) ? 1 : MAXINTEGER);
  e->b->len += put_integer(p, i);
}


static void emitfloat (lua_State *L, enc *e, lua_Number x) {
  unsigned char *p = need(L, e, 9);
  e->b->len += put_float(p, x);
}


static void emitstring (lua_State *L, enc *e, const char *s, size_t len) {
  unsigned char *p;
  if (len > SIZE_MAX - MAXSTRHEAD)  /* cannot happen with a real Lua string */
    toobig(L, e);
  p = need(L, e, (len < 32 ? 1 : MAXSTRHEAD) + len);
  p += put_strhead(p, len);
  memcpy(p, s, len);
  e->b->len = (size_t)(p - e->b->data) + len;
}


/* Write v at pos, where room bytes were reserved: padded with 0x80 bytes
** when shorter, moving what follows when longer (rare: big tables and
** functions, once each). */
static void patchvarint (lua_State *L, enc *e, size_t pos, size_t room,
                         uint64_t v) {
  size_t k = varintlen(v);
  unsigned char *p;
  if (k > room) {
    gsi_buf *b = e->b;
    need(L, e, k - room);
    memmove(b->data + pos + k, b->data + pos + room, b->len - pos - room);
    b->len += k - room;
    room = k;
  }
  p = e->b->data + pos;
  for (; room > 1; room--) {
    *p++ = (unsigned char)((v & 0x7f) | 0x80);
    v >>= 7;
  }
  *p = (unsigned char)v;
}


/* --- error paths: build "what.path: reason" and raise */

static int isident (const char *s, size_t len) {
  size_t i;
  if (len == 0 || (s[0] >= '0' && s[0] <= '9'))
    return 0;
  for (i = 0; i < len; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_'))
      return 0;
  }
  return 1;
}


static void addinteger (luaL_Buffer *B, lua_Integer i) {
  char tmp[40];
  snprintf(tmp, sizeof(tmp), "[" LUA_INTEGER_FMT "]", (LUAI_UACINT)i);
  luaL_addstring(B, tmp);
}


/* what an error path quotes of a string key at most: a 20 MB key must
** not make a 20 MB error message */
#define KEY_QUOTE_MAX 64

/* a key as a path step: .name, ["a b"], [3], [1.5], [true], [<0.4.1>],
** [<table>]; a long string key as ["its first bytes"...(N bytes)] */
static void addkey (lua_State *L, luaL_Buffer *B, int idx) {
  char tmp[64];
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      if (len > KEY_QUOTE_MAX) {
        luaL_addchar(B, '[');
        addquoted(B, s, KEY_QUOTE_MAX);
        snprintf(tmp, sizeof(tmp), "...(%zu bytes)]", len);
        luaL_addstring(B, tmp);
      }
      else if (isident(s, len)) {
        luaL_addchar(B, '.');
        luaL_addlstring(B, s, len);
      }
      else {
        luaL_addchar(B, '[');
        addquoted(B, s, len);
        luaL_addchar(B, ']');
      }
      return;
    }
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx))
        addinteger(B, lua_tointeger(L, idx));
      else {
        snprintf(tmp, sizeof(tmp), "[%.14g]", (double)lua_tonumber(L, idx));
        luaL_addstring(B, tmp);
      }
      return;
    case LUA_TBOOLEAN:
      luaL_addstring(B, lua_toboolean(L, idx) ? "[true]" : "[false]");
      return;
    case LUA_TUSERDATA: {
      uint64_t id;
      int kind = gsi_toid(L, idx, &id);
      if (kind != GSI_ID_NONE) {
        char s[GSI_ID_STRLEN];
        int n = gsi_idstring(kind, id, s);
        luaL_addchar(B, '[');
        luaL_addlstring(B, s, (size_t)n);
        luaL_addchar(B, ']');
        return;
      }
      break;
    }
    default:
      break;
  }
  snprintf(tmp, sizeof(tmp), "[<%s>]", luaL_typename(L, idx));
  luaL_addstring(B, tmp);
}


static void addpath (lua_State *L, luaL_Buffer *B, const frame *f) {
  if (f == NULL)
    return;
  addpath(L, B, f->up);
  switch (f->kind) {
    case F_INDEX:
      addinteger(B, f->n);
      break;
    case F_FIELD:
      addkey(L, B, f->idx);
      break;
    case F_KEY: {
      char tmp[64];
      snprintf(tmp, sizeof(tmp), "[<%s>]", luaL_typename(L, f->idx));
      luaL_addstring(B, tmp);
      break;
    }
    case F_UPVAL: {
      char tmp[64];
      const char *name = lua_getupvalue(L, f->idx, (int)f->n);
      if (name != NULL) {
        lua_pop(L, 1);  /* the name stays valid: the function holds it */
        if (*name == '\0' || *name == '(')  /* stripped: "(no name)" */
          name = NULL;
      }
      if (name != NULL) {
        luaL_addstring(B, "(upvalue '");
        luaL_addstring(B, name);
        luaL_addstring(B, "')");
      }
      else {
        snprintf(tmp, sizeof(tmp), "(upvalue %d)", (int)f->n);
        luaL_addstring(B, tmp);
      }
      break;
    }
  }
}


static void refuse (lua_State *L, enc *e, const frame *f, const char *what) {
  luaL_Buffer B;
  luaL_checkstack(L, 8, "building an error message");
  luaL_buffinit(L, &B);
  luaL_addstring(&B, e->what);
  addpath(L, &B, f);
  luaL_addstring(&B, ": cannot send a ");
  luaL_addstring(&B, what);
  if (f != NULL && f->kind == F_KEY)
    luaL_addstring(&B, " as a table key");
  luaL_pushresult(&B);
  lua_error(L);
}


/* --- tables and functions */

static void enter (lua_State *L, enc *e) {
  if (++e->depth > e->maxdepth) {
    lua_pushfstring(L, "%s: nested too deeply (more than %d levels)",
                    e->what, e->maxdepth);
    lua_error(L);
  }
  luaL_checkstack(L, 8, "value nested too deeply");
}


static void emitref (lua_State *L, enc *e, size_t obj) {
  e->flags |= GSI_WIRE_REFS;
  emittagvar(L, e, GSI_T_REF, obj);
}


static void newobj (lua_State *L, enc *e, const void *p) {
  if (seen_add(&e->seen, p, ++e->nobj, 0) != 0)
    nomem(L, e);
}


/* Fetch (building if needed) one of the caches into its slot. */
static void fetchcache (lua_State *L, enc *e, int cfuncs) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, cfuncs ? &cfcachekey : &cachekey)
      != LUA_TTABLE) {
    lua_pop(L, 1);
    buildcache(L, cfuncs);
    if (cfuncs)
      e->rebuilt = 1;
  }
  lua_replace(L, cfuncs ? e->cfcache : e->cache);
  if (cfuncs)
    e->havecf = 1;
  else
    e->havecache = 1;
}


/* If the object at obj is a loaded module (or a C function of one), send
** its name and return 1. The caches are fetched on first need, so messages
** without tables or functions never touch them. */
static int byname (lua_State *L, enc *e, int obj) {
  const char *s;
  size_t len;
  unsigned char *p;
  int cf = lua_iscfunction(L, obj);
  if (cf ? !e->havecf : !e->havecache)
    fetchcache(L, e, cf);
  lua_pushvalue(L, obj);
  if (lua_rawget(L, cf ? e->cfcache : e->cache) != LUA_TSTRING) {
    lua_pop(L, 1);
    return 0;
  }
  s = lua_tolstring(L, -1, &len);
  p = need(L, e, len);
  memcpy(p, s, len);
  e->b->len += len;
  lua_pop(L, 1);
  return 1;
}


static void enctablebody (lua_State *L, enc *e, int t, const frame *f);

static void enctable (lua_State *L, enc *e, int t, const frame *f) {
  const seenent *s = seen_find(&e->seen, lua_topointer(L, t));
  if (s != NULL) {
    emitref(L, e, s->obj);
    return;
  }
  if (byname(L, e, t))
    return;
  enctablebody(L, e, t, f);
}


/* A table not seen before, sent by value. */
static void enctablebody (lua_State *L, enc *e, int t, const frame *f) {
  const void *ptr = lua_topointer(L, t);
  lua_Integer n, i;
  size_t pos;
  uint64_t nh = 0;
  int k;
  unsigned char *p;
  enter(L, e);
  newobj(L, e, ptr);
  n = (lua_Integer)lua_rawlen(L, t);  /* a border: t[1..n] may hold nils */
  p = need(L, e, 12);
  p[0] = GSI_T_TABLE;
  pos = e->b->len + 1 + gsi_putvarint(p + 1, (uint64_t)n);
  e->b->len = pos + 1;  /* one byte reserved for the hash count */
  k = lua_gettop(L) + 1;  /* slot of array values, then of keys */
  for (i = 1; i <= n; i++) {
    frame fi;
    fi.up = f; fi.kind = F_INDEX; fi.idx = 0; fi.n = i;
    lua_rawgeti(L, t, i);
    encvalue(L, e, k, &fi);
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_Integer ki;
    if (n == 0 || !lua_isinteger(L, k) ||
        (ki = lua_tointeger(L, k)) < 1 || ki > n) {
      frame fk, fv;
      fk.up = f; fk.kind = F_KEY; fk.idx = k; fk.n = 0;
      fv.up = f; fv.kind = F_FIELD; fv.idx = k; fv.n = 0;
      encvalue(L, e, k, &fk);
      encvalue(L, e, k + 1, &fv);
      nh++;
    }
    lua_pop(L, 1);
  }
  patchvarint(L, e, pos, 1, nh);
  e->depth--;
}


/* lua_dump writer: must not raise, so it records the failure */
static int writer (lua_State *L, const void *p, size_t sz, void *ud) {
  enc *e = (enc *)ud;
  gsi_buf *b = e->b;
  (void)L;
  if (sz > e->limit - b->len) {
    e->dumperr = 1;
    return 1;
  }
  if (sz > b->cap - b->len && gsi_buf_reserve(b, sz) != 0) {
    e->dumperr = 2;
    return 1;
  }
  if (sz > 0)
    memcpy(b->data + b->len, p, sz);
  b->len += sz;
  return 0;
}


/* --- environments: the _ENV rule (DESIGN §1.4)
**
** A function's _ENV upvalue that is the sender's _G crosses by name (it is
** package.loaded._G) and arrives as the receiver's globals. One that is an
** *environment* -- a table whose metatable's __index falls back to the
** sender's _G, directly, through a chain of tables, or through a function
** (busted's per-file environment) -- is sent as GSI_T_ENV + a table and
** arrives with a metatable falling back to the receiver's globals:
**   ENV_DIRECT (__index is _G itself): its own fields, sent as an object
**     like any table (shared by every function that has it);
**   ENV_RESOLVE (a chain, or a function): a copy of its own fields plus
**     every global name the function's code reads (GETTABUP on _ENV, in
**     the function and its nested functions, read from the bytecode just
**     dumped) whose value, looked up through the environment as the
**     function would, differs from the sender's _G[name]. Such a copy is
**     made per function (not shared), as it holds that function's names. */
enum { ENV_NO = 0, ENV_DIRECT, ENV_RESOLVE };
#define ENV_CHAIN_MAX 32

static int envkind (lua_State *L, int t) {
  int top = lua_gettop(L), kind = ENV_NO, i;
  luaL_checkstack(L, 4, "environment");
  lua_pushglobaltable(L);  /* top + 1 */
  if (lua_rawequal(L, t, top + 1)) {
    lua_settop(L, top);
    return ENV_NO;  /* _G itself: by name */
  }
  lua_pushvalue(L, t);  /* top + 2: the table along the chain */
  for (i = 0; i < ENV_CHAIN_MAX && lua_getmetatable(L, top + 2); i++) {
    lua_pushliteral(L, "__index");
    lua_rawget(L, -2);
    if (lua_rawequal(L, -1, top + 1)) {
      kind = i == 0 ? ENV_DIRECT : ENV_RESOLVE;
      break;
    }
    if (lua_type(L, -1) == LUA_TFUNCTION) {
      kind = ENV_RESOLVE;
      break;
    }
    if (lua_type(L, -1) != LUA_TTABLE)
      break;
    lua_replace(L, top + 2);
    lua_settop(L, top + 2);
  }
  lua_settop(L, top);
  return kind;
}


/* Reading lua_dump output (Lua 5.4's format, ldump.c) for the global names
** a function reads. Any surprise (another format, a truncated chunk) just
** ends the reading: the environment then carries its own fields only. */
typedef struct dumprd {
  const unsigned char *p, *end;
  int bad;
} dumprd;

static size_t rdsize (dumprd *r) {
  size_t x = 0;
  int b, n = 0;
  do {
    if (r->p >= r->end || ++n > 10) {
      r->bad = 1;
      return 0;
    }
    b = *r->p++;
    x = (x << 7) | (size_t)(b & 0x7f);
  } while ((b & 0x80) == 0);
  return x;
}

static void rdskip (dumprd *r, size_t n) {
  if (r->bad || n > (size_t)(r->end - r->p))
    r->bad = 1;
  else
    r->p += n;
}

/* a string: pointer and length, or NULL */
static const unsigned char *rdstring (dumprd *r, size_t *len) {
  size_t n = rdsize(r);
  const unsigned char *s = r->p;
  *len = 0;
  if (r->bad || n == 0)
    return NULL;
  rdskip(r, n - 1);
  if (r->bad)
    return NULL;
  *len = n - 1;
  return s;
}

#define DUMP_OP_GETTABUP 11   /* lopcodes.h, Lua 5.4 */
#define DUMP_MAXK 4096        /* constants looked at per function */
#define DUMP_MAXDEPTH 64

/* One function (and its nested ones): add to the table at names each
** constant key k of a GETTABUP on an upvalue named _ENV. */
static void rdfunction (lua_State *L, dumprd *r, int names, int depth) {
  const unsigned char *code;
  size_t ncode, nk, i, nup, len;
  const unsigned char **kstr = NULL;
  size_t *klen = NULL;
  int envup[256];
  if (depth > DUMP_MAXDEPTH) {
    r->bad = 1;
    return;
  }
  rdstring(r, &len);  /* source */
  rdsize(r);  /* linedefined */
  rdsize(r);  /* lastlinedefined */
  rdskip(r, 3);  /* numparams, is_vararg, maxstacksize */
  ncode = rdsize(r);
  code = r->p;
  if (ncode > (size_t)(r->end - r->p) / 4)
    r->bad = 1;
  rdskip(r, ncode * 4);
  nk = rdsize(r);
  if (r->bad)
    return;
  if (nk > 0) {
    size_t keep = nk < DUMP_MAXK ? nk : DUMP_MAXK;
    kstr = (const unsigned char **)calloc(keep, sizeof(*kstr));
    klen = (size_t *)calloc(keep, sizeof(*klen));
    if (kstr == NULL || klen == NULL)
      r->bad = 1;
    for (i = 0; i < nk && !r->bad; i++) {
      int t;
      if (r->p >= r->end) {
        r->bad = 1;
        break;
      }
      t = *r->p++;
      switch (t) {
        case 0: case 1: case 17: break;  /* nil, false, true */
        case 3: case 19: rdskip(r, 8); break;  /* integer, float */
        case 4: case 20: {  /* short, long string */
          const unsigned char *str = rdstring(r, &len);
          if (i < keep) {
            kstr[i] = str;
            klen[i] = len;
          }
          break;
        }
        default: r->bad = 1;
      }
    }
  }
  nup = rdsize(r);
  if (nup > 255)
    r->bad = 1;
  rdskip(r, nup * 3);
  {
    size_t np = rdsize(r);
    for (i = 0; i < np && !r->bad; i++)
      rdfunction(L, r, names, depth + 1);
  }
  /* debug: lineinfo, abslineinfo, locvars, then the upvalue names */
  rdskip(r, rdsize(r));
  {
    size_t n = rdsize(r);
    for (i = 0; i < n && !r->bad; i++) {
      rdsize(r);
      rdsize(r);
    }
    n = rdsize(r);
    for (i = 0; i < n && !r->bad; i++) {
      rdstring(r, &len);
      rdsize(r);
      rdsize(r);
    }
    n = rdsize(r);
    memset(envup, 0, sizeof(envup));
    for (i = 0; i < n && !r->bad; i++) {
      const unsigned char *nm = rdstring(r, &len);
      if (i < 256 && nm != NULL && len == 4 && memcmp(nm, "_ENV", 4) == 0)
        envup[i] = 1;
    }
  }
  if (!r->bad) {
    for (i = 0; i < ncode; i++) {
      uint32_t ins;  /* dumped in the machine's own byte order */
      memcpy(&ins, code + 4 * i, 4);
      if ((ins & 0x7f) == DUMP_OP_GETTABUP) {
        size_t b = (ins >> 16) & 0xff, k = (ins >> 24) & 0xff;
        if (envup[b] && k < nk && k < DUMP_MAXK && kstr[k] != NULL) {
          lua_pushlstring(L, (const char *)kstr[k], klen[k]);
          lua_pushboolean(L, 1);
          lua_rawset(L, names);
        }
      }
    }
  }
  free(kstr);
  free(klen);
}

/* Push a table whose keys are the global names read by the function
** dumped at p[0..n) (empty if the dump cannot be read). */
static void globalnames (lua_State *L, const unsigned char *p, size_t n) {
  static const unsigned char head[] = {0x1b, 'L', 'u', 'a', 0x54, 0};
  dumprd r;
  int names;
  lua_newtable(L);
  names = lua_gettop(L);
  /* header: signature, version, format, LUAC_DATA (6), sizes of
  ** Instruction, lua_Integer, lua_Number (3), LUAC_INT, LUAC_NUM (16),
  ** then the main function's upvalue count */
  if (n < 32 || memcmp(p, head, sizeof(head)) != 0 || p[12] != 4 ||
      p[13] != 8 || p[14] != 8)
    return;
  r.p = p + 32;
  r.end = p + n;
  r.bad = 0;
  rdfunction(L, &r, names, 0);
}

/* Push the fresh table an ENV_RESOLVE environment at env is sent as (see
** above); the function's dump is at dump[0..n) of the buffer. */
static void envcopy (lua_State *L, enc *e, int env, size_t dump, size_t n) {
  int copy, names, g;
  luaL_checkstack(L, 8, "environment");
  lua_newtable(L);
  copy = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, env)) {  /* its own fields */
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, copy);
  }
  globalnames(L, e->b->data + dump, n);
  names = lua_gettop(L);
  lua_pushglobaltable(L);
  g = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, names)) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, copy) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_pushvalue(L, -1);
      lua_gettable(L, env);  /* as the function would see it */
      lua_pushvalue(L, -2);
      lua_rawget(L, g);
      if (!lua_isnil(L, -2) && !lua_rawequal(L, -1, -2)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, copy);
      }
      else
        lua_pop(L, 2);
    }
    else
      lua_pop(L, 1);
  }
  lua_settop(L, copy);
}


static void encupvalues (lua_State *L, enc *e, int fi, size_t me,
                         const frame *f, size_t dump, size_t dumplen) {
  lua_Debug ar;
  int i;
  lua_pushvalue(L, fi);
  lua_getinfo(L, ">u", &ar);
  emitvarint(L, e, ar.nups);
  for (i = 1; i <= ar.nups; i++) {
    const void *id = lua_upvalueid(L, fi, i);
    const seenent *s = seen_find(&e->seen, id);
    const char *name;
    int kind = ENV_NO, v;
    frame fu;
    if (s != NULL && s->upn > 0) {  /* shared with a function sent before */
      e->flags |= GSI_WIRE_REFS;
      emittagvar(L, e, GSI_T_UPJOIN, s->obj);
      emitvarint(L, e, (uint64_t)s->upn);
      continue;
    }
    name = lua_getupvalue(L, fi, i);
    v = lua_gettop(L);
    if (name != NULL && name[0] == '_' && strcmp(name, "_ENV") == 0 &&
        lua_type(L, v) == LUA_TTABLE)
      kind = envkind(L, v);
    fu.up = f; fu.kind = F_UPVAL; fu.idx = fi; fu.n = i;
    if (kind == ENV_RESOLVE) {  /* a copy of its own: no join, no object */
      envcopy(L, e, v, dump, dumplen);
      emitbyte(L, e, GSI_T_ENV);
      enctablebody(L, e, lua_gettop(L), &fu);
    }
    else {
      if (seen_add(&e->seen, id, me, i) != 0)
        nomem(L, e);
      if (kind == ENV_DIRECT) {
        const seenent *t = seen_find(&e->seen, lua_topointer(L, v));
        if (t != NULL)
          emitref(L, e, t->obj);  /* its first time carried the tag */
        else {
          emitbyte(L, e, GSI_T_ENV);
          enctablebody(L, e, v, &fu);
        }
      }
      else
        encvalue(L, e, v, &fu);
    }
    lua_settop(L, v - 1);
  }
}


/* A function about to be sent by value (bytecode): refused if either side
** is sandboxed (DESIGN §5). The sender's own flag is looked up once per
** encoding, and only when a function is sent, so other messages pay
** nothing for it. */
static void sandboxed (lua_State *L, enc *e, const frame *f) {
  if (e->nofn < 0) {
    e->nofn = lua_rawgetp(L, LUA_REGISTRYINDEX, &gsi_codec_sandbox_key) != LUA_TNIL
                  ? NOFN_OUT : 0;
    lua_pop(L, 1);
  }
  if (e->nofn == NOFN_OUT)
    refuse(L, e, f, "function out of a sandboxed process (functions do not "
                    "cross a sandbox; start modules by name)");
  if (e->nofn == NOFN_IN)
    refuse(L, e, f, "function to a sandboxed process (functions do not "
                    "cross a sandbox; start modules by name)");
}


static void encfunction (lua_State *L, enc *e, int fi, const frame *f) {
  const void *ptr = lua_topointer(L, fi);
  const seenent *s;
  size_t pos, me;
  if (lua_iscfunction(L, fi)) {
    if (byname(L, e, fi))
      return;
    if (!e->rebuilt) {  /* maybe loaded since: look once more */
      buildcache(L, 1);
      lua_replace(L, e->cfcache);
      e->rebuilt = 1;
      if (byname(L, e, fi))
        return;
    }
    refuse(L, e, f, "C function (not found in any loaded module)");
    return;
  }
  if ((s = seen_find(&e->seen, ptr)) != NULL) {
    emitref(L, e, s->obj);
    return;
  }
  if (byname(L, e, fi))
    return;
  sandboxed(L, e, f);
  enter(L, e);
  newobj(L, e, ptr);
  me = e->nobj;
  e->flags |= GSI_WIRE_CODE;
  emitbyte(L, e, GSI_T_FUNC);
  pos = e->b->len;
  need(L, e, 2);
  e->b->len += 2;  /* room for a length below 16 KiB */
  lua_pushvalue(L, fi);
  e->dumperr = 0;
  lua_dump(L, writer, e, 0);  /* keep debug info: tracebacks need lines */
  lua_pop(L, 1);
  if (e->dumperr == 1)
    toobig(L, e);
  else if (e->dumperr)
    nomem(L, e);
  {
    size_t dumplen = e->b->len - pos - 2, k = varintlen(dumplen);
    patchvarint(L, e, pos, 2, dumplen);  /* moves the dump if k > 2 */
    encupvalues(L, e, fi, me, f, pos + (k > 2 ? k : 2), dumplen);
  }
  e->depth--;
}


static void encvalue (lua_State *L, enc *e, int idx, const frame *f) {
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      emitbyte(L, e, GSI_T_NIL);
      break;
    case LUA_TBOOLEAN:
      emitbyte(L, e, lua_toboolean(L, idx) ? GSI_T_TRUE : GSI_T_FALSE);
      break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx))
        emitinteger(L, e, lua_tointeger(L, idx));
      else
        emitfloat(L, e, lua_tonumber(L, idx));
      break;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      emitstring(L, e, s, len);
      break;
    }
    case LUA_TTABLE:
      enctable(L, e, idx, f);
      break;
    case LUA_TFUNCTION:
      encfunction(L, e, idx, f);
      break;
    case LUA_TUSERDATA: {
      uint64_t id;
      switch (gsi_toid(L, idx, &id)) {
        case GSI_ID_PID: emittagvar(L, e, GSI_T_PID, id); break;
        case GSI_ID_REF: emittagvar(L, e, GSI_T_IDREF, id); break;
        default: refuse(L, e, f, "userdata");
      }
      break;
    }
    case LUA_TLIGHTUSERDATA:
      refuse(L, e, f, "light userdata");
      break;
    default:
      refuse(L, e, f, luaL_typename(L, idx));
      break;
  }
}


/* protected part: 1 = enc, 2 = value */
static int encmain (lua_State *L) {
  enc *e = (enc *)lua_touserdata(L, 1);
  lua_pushnil(L);  /* slots for the module caches */
  e->cache = lua_gettop(L);
  lua_pushnil(L);
  e->cfcache = lua_gettop(L);
  emitbyte(L, e, GSI_WIRE_MAGIC);
  encvalue(L, e, 2, NULL);
  e->b->data[e->start] |= (unsigned char)e->flags;
  return 0;
}


/* ------------------------------------------------ encoder: fast path */

/* Most messages are small trees of nil, booleans, numbers, strings, pids,
** refs and plain tables. The fast path encodes those without the
** protected call and without path frames, using only API functions that
** cannot raise here: type tests and conversions of values that already
** have the type, raw reads, lua_next over a table nothing changes
** meanwhile, and pushes of existing values after lua_checkstack. It
** gives up (returns -1, the buffer and the stack as they were) on
** anything else: a function, a value that cannot be sent, a table seen
** twice (shared or cyclic), a loaded module, more than FAST_TABLES
** tables, a limit, or no C memory. gsi_encode then encodes the value
** again on the full path, which handles all of those and reports errors
** with their path. Both paths write the same bytes. */

#define FAST_TABLES 8
#define FAST_DEPTH 16

typedef struct fastenc {
  gsi_buf *b;
  size_t limit;      /* b->len may not grow past this */
  int maxdepth, depth;
  int cache;         /* stack slot of the module cache, or 0 */
  const uint64_t *filter;  /* the cache's filter (see modfilter_maybe) */
  int ntables;
  const void *tables[FAST_TABLES];  /* tables started, to see repeats */
} fastenc;

static int fastvalue (lua_State *L, fastenc *e, int idx);


/* room for n more bytes, or NULL to give up */
static unsigned char *fastneed (fastenc *e, size_t n) {
  gsi_buf *b = e->b;
  if (n > e->limit - b->len)
    return NULL;
  if (n > b->cap - b->len && gsi_buf_reserve(b, n) != 0)
    return NULL;
  return b->data + b->len;
}


/* May leave values on the stack when it gives up (fastencode resets the
** top). */
static int fasttable (lua_State *L, fastenc *e, int t) {
  const void *ptr = lua_topointer(L, t);
  lua_Integer n, i;
  uint64_t nh = 0;
  size_t pos, k;
  unsigned char *p;
  int top;
  for (i = 0; i < e->ntables; i++)
    if (e->tables[i] == ptr)
      return -1;
  if (e->ntables == FAST_TABLES || e->depth == e->maxdepth ||
      !lua_checkstack(L, 4))
    return -1;
  /* a loaded module is sent by name (by the full path) */
  if (e->filter == NULL || modfilter_maybe(e->filter, ptr)) {
    lua_pushvalue(L, t);
    if (lua_rawget(L, e->cache) != LUA_TNIL)
      return -1;
    lua_pop(L, 1);
  }
  e->tables[e->ntables++] = ptr;
  e->depth++;
  n = (lua_Integer)lua_rawlen(L, t);
  if ((p = fastneed(e, 12)) == NULL)
    return -1;
  p[0] = GSI_T_TABLE;
  pos = e->b->len + 1 + gsi_putvarint(p + 1, (uint64_t)n);
  e->b->len = pos + 1;  /* one byte for the hash count, as enctable */
  /* One traversal: keys 1..n (the array part, nils skipped, comes first
  ** in lua_next's order) are written as array values, with a nil for
  ** each key skipped, then the other keys as pairs, in the order the full
  ** path writes them. A key 1..n after another key (it is in the hash
  ** part) cannot be written in place: give up. */
  top = lua_gettop(L);
  i = 1;  /* the next array index to write */
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_Integer ki;
    if (n > 0 && lua_isinteger(L, top + 1) &&
        (ki = lua_tointeger(L, top + 1)) >= 1 && ki <= n) {
      if (ki < i || nh > 0 || (p = fastneed(e, (size_t)(ki - i))) == NULL)
        return -1;
      memset(p, GSI_T_NIL, (size_t)(ki - i));
      e->b->len += (size_t)(ki - i);
      if (fastvalue(L, e, top + 2) != 0)
        return -1;
      i = ki + 1;
    }
    else {
      if (i <= n || fastvalue(L, e, top + 1) != 0 ||
          fastvalue(L, e, top + 2) != 0)
        return -1;
      nh++;
    }
    lua_pop(L, 1);
  }
  if (i <= n)  /* t[n] is not nil: it was not seen, so it came late */
    return -1;
  if ((k = varintlen(nh)) > 1) {  /* move the values up, as patchvarint */
    gsi_buf *b = e->b;
    if (fastneed(e, k - 1) == NULL)
      return -1;
    memmove(b->data + pos + k, b->data + pos + 1, b->len - pos - 1);
    b->len += k - 1;
  }
  gsi_putvarint(e->b->data + pos, nh);
  e->depth--;
  return 0;
}


static int fastvalue (lua_State *L, fastenc *e, int idx) {
  unsigned char *p;
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
    case LUA_TBOOLEAN:
      if ((p = fastneed(e, 1)) == NULL)
        return -1;
      *p = lua_isnil(L, idx) ? GSI_T_NIL
         : lua_toboolean(L, idx) ? GSI_T_TRUE : GSI_T_FALSE;
      e->b->len++;
      return 0;
    case LUA_TNUMBER:
      if ((p = fastneed(e, MAXINTEGER)) == NULL)
        return -1;
      if (lua_isinteger(L, idx))
        e->b->len += put_integer(p, lua_tointeger(L, idx));
      else
        e->b->len += put_float(p, lua_tonumber(L, idx));
      return 0;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);  /* a string: no copy */
      if (len > SIZE_MAX - MAXSTRHEAD ||
          (p = fastneed(e, MAXSTRHEAD + len)) == NULL)
        return -1;
      p += put_strhead(p, len);
      memcpy(p, s, len);
      e->b->len = (size_t)(p - e->b->data) + len;
      return 0;
    }
    case LUA_TTABLE:
      return fasttable(L, e, idx);
    case LUA_TUSERDATA: {
      uint64_t id;
      int kind = gsi_toid(L, idx, &id);  /* never raises */
      if (kind == GSI_ID_NONE || (p = fastneed(e, 11)) == NULL)
        return -1;
      p[0] = kind == GSI_ID_PID ? GSI_T_PID : GSI_T_IDREF;
      e->b->len += 1 + gsi_putvarint(p + 1, id);
      return 0;
    }
    default:
      return -1;
  }
}


/* 0 with the value at idx appended to b, or -1 with b and the stack
** unchanged: use the full path. */
static int fastencode (lua_State *L, int idx, gsi_buf *b, size_t limit,
                       int maxdepth) {
  fastenc e;
  size_t start = b->len;
  int top = lua_gettop(L), st = -1;
  unsigned char *p;
  e.b = b;
  e.limit = limit;
  e.maxdepth = maxdepth < FAST_DEPTH ? maxdepth : FAST_DEPTH;
  e.depth = 0;
  e.ntables = 0;
  e.cache = 0;
  e.filter = NULL;
  /* tables need the module cache; without one, the full path builds it */
  if (lua_type(L, idx) == LUA_TTABLE) {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &cachekey) != LUA_TTABLE) {
      lua_settop(L, top);
      return -1;
    }
    e.cache = top + 1;
    if (lua_rawgeti(L, e.cache, 0) == LUA_TUSERDATA)
      e.filter = (const uint64_t *)lua_touserdata(L, -1);
    lua_pop(L, 1);  /* the cache holds it while the cache is on the stack */
  }
  if ((p = fastneed(&e, 1)) != NULL) {
    *p = GSI_WIRE_MAGIC;  /* no flags: the fast path sends no references */
    b->len++;
    st = fastvalue(L, &e, idx);
  }
  lua_settop(L, top);
  if (st != 0)
    b->len = start;
  return st;
}


int gsi_encode (lua_State *L, int idx, const char *what,
                const gsi_codec_limits *lim, gsi_buf *b) {
  enc e;
  int status, allowfn;
  idx = lua_absindex(L, idx);
  if (!lua_checkstack(L, 3))
    return -1;
  e.b = b;
  e.start = b->len;
  e.what = what != NULL ? what : "value";
  getlimits(lim, &e.maxdepth, &e.maxsize, &allowfn);
  e.limit = e.maxsize > SIZE_MAX - e.start ? SIZE_MAX : e.start + e.maxsize;
  if (fastencode(L, idx, b, e.limit, e.maxdepth) == 0)
    return 0;
  e.depth = 0;
  e.cache = e.cfcache = 0;
  e.havecache = e.havecf = e.rebuilt = 0;
  e.flags = 0;
  e.dumperr = 0;
  e.nofn = allowfn == GSI_FN_NAMES ? NOFN_IN : -1;
  e.nobj = 0;
  e.seen.n = 0;
  e.seen.mask = 0;
  e.seen.hash = NULL;
  lua_pushcfunction(L, encmain);
  lua_pushlightuserdata(L, &e);
  lua_pushvalue(L, idx);
  status = lua_pcall(L, 2, 0, 0);
  free(e.seen.hash);
  if (status != LUA_OK) {
    b->len = e.start;
    return -1;
  }
  return 0;
}


/* ------------------------------------------------------------ decoder */

typedef struct dec {
  const unsigned char *p, *end;
  int maxdepth, depth;
  int allowfn;
  size_t maxsize;
  lua_CFunction (*builtin)(lua_State *, const char *, size_t, const char *,
                           size_t);
  int objs;            /* stack slot of the object table; 0 without refs */
  lua_Integer nobj;
} dec;

static void decvalue (lua_State *L, dec *d);


static void malformed (lua_State *L, const char *why) {
  lua_pushfstring(L, "malformed message: %s", why);
  lua_error(L);
}


static size_t left (const dec *d) {
  return (size_t)(d->end - d->p);
}


static int getbyte (lua_State *L, dec *d) {
  if (unlikely(d->p >= d->end))
    malformed(L, "truncated");
  return *d->p++;
}


static uint64_t getvarint (lua_State *L, dec *d) {
  uint64_t v = 0;
  int shift;
  for (shift = 0; shift < 64; shift += 7) {
    int c = getbyte(L, d);
    if (shift == 63 && c > 1)
      break;
    v |= (uint64_t)(c & 0x7f) << shift;
    if (c < 0x80)
      return v;
  }
  malformed(L, "bad varint");
  return 0;
}


/* a length, never more than what is left of the input */
static size_t getlen (lua_State *L, dec *d) {
  uint64_t n = getvarint(L, d);
  if (n > left(d))
    malformed(L, "length exceeds message");
  return (size_t)n;
}


static void denter (lua_State *L, dec *d) {
  if (++d->depth > d->maxdepth) {
    lua_pushfstring(L, "message too deep (more than %d levels)",
                    d->maxdepth);
    lua_error(L);
  }
  luaL_checkstack(L, 8, "message too deep");
}


static void newdobj (lua_State *L, dec *d, int obj) {
  d->nobj++;
  if (d->objs) {
    lua_pushvalue(L, obj);
    lua_rawseti(L, d->objs, d->nobj);
  }
}


static void getobj (lua_State *L, dec *d, uint64_t n) {
  if (d->objs == 0)
    malformed(L, "back-reference without the references flag");
  if (n < 1 || n > (uint64_t)d->nobj)
    malformed(L, "back-reference to an unknown object");
  lua_rawgeti(L, d->objs, (lua_Integer)n);
}


/* Size hints are capped by what the input could hold (a value takes at
** least one byte) and by a constant, so a lying count cannot make us
** allocate much; big tables still grow as usual. */
#define MAXHINT (1 << 16)

static int hint (uint64_t n) {
  return n > MAXHINT ? MAXHINT : (int)n;
}


static void dectable (lua_State *L, dec *d) {
  uint64_t na = getvarint(L, d), nh = getvarint(L, d), i;
  int t;
  if (na > left(d) || nh > left(d) / 2)
    malformed(L, "table size exceeds message");
  denter(L, d);
  lua_createtable(L, hint(na), hint(nh));
  t = lua_gettop(L);
  newdobj(L, d, t);
  for (i = 1; i <= na; i++) {
    decvalue(L, d);
    lua_rawseti(L, t, (lua_Integer)i);
  }
  for (i = 0; i < nh; i++) {
    decvalue(L, d);
    if (lua_isnil(L, -1))
      malformed(L, "nil table key");
    if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
      lua_Number k = lua_tonumber(L, -1);
      if (k != k)
        malformed(L, "NaN table key");
    }
    decvalue(L, d);
    lua_rawset(L, t);
  }
  d->depth--;
}


/* package.loaded[name], or require(name) from a trusted sender */
static void pushmodule (lua_State *L, dec *d, const char *name, size_t len) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_type(L, -1) == LUA_TTABLE) {
    lua_pushlstring(L, name, len);
    if (lua_rawget(L, -2) != LUA_TNIL) {
      lua_remove(L, -2);
      return;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (!d->allowfn)
    failname(L, "module ", name, len, " is not loaded here");
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &gsi_codec_require_key) != LUA_TFUNCTION) {
    lua_pop(L, 1);
    lua_pushglobaltable(L);
    lua_pushliteral(L, "require");
    lua_rawget(L, -2);
    lua_remove(L, -2);
  }
  if (lua_type(L, -1) != LUA_TFUNCTION)
    failname(L, "cannot load module ", name, len, ": no 'require'");
  lua_pushlstring(L, name, len);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    lua_pushfstring(L, ": %s", msg != NULL ? msg : "(error object)");
    failname(L, "cannot load module ", name, len, lua_tostring(L, -1));
  }
  gsi_codec_invalidate(L);  /* something new may be loaded */
  if (lua_isnil(L, -1))
    failname(L, "module ", name, len, " did not load");
}


/* Functions are code: only a state of this runtime may send them. */
static void nofunctions (lua_State *L) {
  lua_pushliteral(L, "message contains a function, "
                     "which this receiver does not accept");
  lua_error(L);
}


static void decmodule (lua_State *L, dec *d) {
  size_t len = getlen(L, d);
  const char *name = (const char *)d->p;
  d->p += len;
  pushmodule(L, d, name, len);
}


static void deccfunction (lua_State *L, dec *d) {
  size_t lm, lf;
  const char *m, *f;
  if (!d->allowfn)
    nofunctions(L);
  lm = getlen(L, d);
  m = (const char *)d->p;
  d->p += lm;
  lf = getlen(L, d);
  f = (const char *)d->p;
  d->p += lf;
  if (d->builtin != NULL) {
    lua_CFunction fn = d->builtin(L, m, lm, f, lf);
    if (fn != NULL) {
      lua_pushcfunction(L, fn);
      return;
    }
  }
  pushmodule(L, d, m, lm);
  if (lua_type(L, -1) == LUA_TTABLE) {
    lua_pushlstring(L, f, lf);
    lua_rawget(L, -2);
    if (lua_iscfunction(L, -1)) {
      lua_remove(L, -2);
      return;
    }
  }
  failname(L, "no such C function here: ", f, lf, "");
}


typedef struct reader {
  const char *p;
  size_t n;
} reader;


static const char *readchunk (lua_State *L, void *ud, size_t *size) {
  reader *r = (reader *)ud;
  (void)L;
  *size = r->n;
  r->n = 0;
  return *size > 0 ? r->p : NULL;
}


static void upjoin (lua_State *L, dec *d, int f, int n) {
  uint64_t obj = getvarint(L, d), k = getvarint(L, d);
  lua_Debug ar;
  getobj(L, d, obj);
  if (lua_type(L, -1) != LUA_TFUNCTION || lua_iscfunction(L, -1))
    malformed(L, "upvalue joined to a non-function");
  lua_pushvalue(L, -1);
  lua_getinfo(L, ">u", &ar);
  if (k < 1 || k > ar.nups)  /* lua_upvaluejoin does not check */
    malformed(L, "upvalue joined to a missing upvalue");
  lua_upvaluejoin(L, f, n, -1, (int)k);
  lua_pop(L, 1);
}


static void decfunction (lua_State *L, dec *d) {
  reader r;
  lua_Debug ar;
  uint64_t nup;
  int f, i, status;
  if (d->allowfn != GSI_FN_ALL)  /* bytecode: only from a trusted peer */
    nofunctions(L);
  r.n = getlen(L, d);
  r.p = (const char *)d->p;
  d->p += r.n;
  denter(L, d);
  status = lua_load(L, readchunk, &r, "=message", "b");
  if (status != LUA_OK) {
    if (status == LUA_ERRMEM)
      lua_error(L);
    lua_pushfstring(L, "malformed message: bad function (%s)",
                    lua_tostring(L, -1));
    lua_error(L);
  }
  f = lua_gettop(L);
  newdobj(L, d, f);
  nup = getvarint(L, d);
  lua_pushvalue(L, f);
  lua_getinfo(L, ">u", &ar);
  if (nup != ar.nups)
    malformed(L, "wrong number of upvalues");
  for (i = 1; i <= (int)nup; i++) {
    if (d->p < d->end && *d->p == GSI_T_UPJOIN) {
      d->p++;
      upjoin(L, d, f, i);
    }
    else {
      decvalue(L, d);
      lua_setupvalue(L, f, i);
    }
  }
  d->depth--;
}


/* A function's environment (the _ENV rule): the table, with a metatable
** falling back to this state's globals. */
static void decenv (lua_State *L, dec *d) {
  if (!d->allowfn)
    nofunctions(L);
  if (d->p >= d->end || *d->p != GSI_T_TABLE)
    malformed(L, "environment is not a table");
  d->p++;
  dectable(L, d);
  lua_createtable(L, 0, 1);
  lua_pushglobaltable(L);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
}


static void decvalue (lua_State *L, dec *d) {
  int c = getbyte(L, d);
  if (c < 0x80) {
    lua_pushinteger(L, c);
    return;
  }
  if (c < 0xa0) {
    size_t n = (size_t)(c & 0x1f);
    if (n > left(d))
      malformed(L, "truncated");
    lua_pushlstring(L, (const char *)d->p, n);
    d->p += n;
    return;
  }
  if (c >= GSI_T_NEGINT) {
    lua_pushinteger(L, c - GSI_T_NEGINT - 32);
    return;
  }
  switch (c) {
    case GSI_T_NIL: lua_pushnil(L); break;
    case GSI_T_FALSE: lua_pushboolean(L, 0); break;
    case GSI_T_TRUE: lua_pushboolean(L, 1); break;
    case GSI_T_INT: lua_pushinteger(L, gsi_unzigzag(getvarint(L, d))); break;
    case GSI_T_FLOAT: {
      uint64_t u = 0;
      lua_Number x;
      int k;
      if (left(d) < 8)
        malformed(L, "truncated");
      for (k = 0; k < 8; k++)
        u |= (uint64_t)d->p[k] << (8 * k);
      d->p += 8;
      memcpy(&x, &u, sizeof(x));
      lua_pushnumber(L, x);
      break;
    }
    case GSI_T_STR: {
      size_t n = getlen(L, d);
      lua_pushlstring(L, (const char *)d->p, n);
      d->p += n;
      break;
    }
    case GSI_T_TABLE: dectable(L, d); break;
    case GSI_T_REF: getobj(L, d, getvarint(L, d)); break;
    case GSI_T_PID: gsi_pushpid(L, getvarint(L, d)); break;
    case GSI_T_IDREF: gsi_pushref(L, getvarint(L, d)); break;
    case GSI_T_MODULE: decmodule(L, d); break;
    case GSI_T_CFUNC: deccfunction(L, d); break;
    case GSI_T_FUNC: decfunction(L, d); break;
    case GSI_T_ENV: decenv(L, d); break;
    default: malformed(L, "unknown tag");
  }
}


/* ------------------------------------------------ decoder: fast path */

/* Plain data (no references flag, no modules or functions: what most
** messages are) is decoded by a second, smaller decoder whose only
** failure is a memory error raised by the API calls it makes; bad input
** and everything else make it give up (-1, the stack as it was), and the
** full decoder starts again from the first byte and reports the problem.
** The full decoder runs it first inside its protected call; gsi_decode_raw
** runs it without one. */

typedef struct fastdec {
  const unsigned char *p, *end;
  int depth, maxdepth;
  /* C functions of the binding by name (a spawn's body, such as the
  ** gen_server loop); NULL: functions go to the full path */
  lua_CFunction (*builtin)(lua_State *, const char *, size_t, const char *,
                           size_t);
} fastdec;

static int fastdvalue (lua_State *L, fastdec *d);


static int fastdvarint (fastdec *d, uint64_t *v) {
  int shift;
  *v = 0;
  for (shift = 0; shift < 64 && d->p < d->end; shift += 7) {
    int c = *d->p++;
    if (shift == 63 && c > 1)
      return -1;
    *v |= (uint64_t)(c & 0x7f) << shift;
    if (c < 0x80)
      return 0;
  }
  return -1;
}


static int fastdtable (lua_State *L, fastdec *d) {
  uint64_t na, nh, i;
  size_t left;
  int t;
  if (fastdvarint(d, &na) != 0 || fastdvarint(d, &nh) != 0)
    return -1;
  left = (size_t)(d->end - d->p);
  /* room for a table, a key, a value and pushid's 4 (lua_checkstack
  ** raises nothing) */
  if (na > left || nh > left / 2 || d->depth == d->maxdepth ||
      !lua_checkstack(L, 8))
    return -1;
  d->depth++;
  lua_createtable(L, hint(na), hint(nh));
  t = lua_gettop(L);
  for (i = 1; i <= na; i++) {
    if (fastdvalue(L, d) != 0)
      return -1;
    lua_rawseti(L, t, (lua_Integer)i);
  }
  for (i = 0; i < nh; i++) {
    if (fastdvalue(L, d) != 0)
      return -1;
    if (lua_type(L, -1) == LUA_TNIL)  /* lua_rawset would raise */
      return -1;
    if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
      lua_Number k = lua_tonumber(L, -1);
      if (k != k)
        return -1;
    }
    if (fastdvalue(L, d) != 0)
      return -1;
    lua_rawset(L, t);
  }
  d->depth--;
  return 0;
}


/* May leave values on the stack when it gives up (the caller resets). */
static int fastdvalue (lua_State *L, fastdec *d) {
  int c;
  size_t n;
  if (d->p >= d->end)
    return -1;
  c = *d->p++;
  if (c < 0x80) {
    lua_pushinteger(L, c);
    return 0;
  }
  if (c < 0xa0) {
    n = (size_t)(c & 0x1f);
    if (n > (size_t)(d->end - d->p))
      return -1;
    lua_pushlstring(L, (const char *)d->p, n);
    d->p += n;
    return 0;
  }
  if (c >= GSI_T_NEGINT) {
    lua_pushinteger(L, c - GSI_T_NEGINT - 32);
    return 0;
  }
  switch (c) {
    case GSI_T_NIL: lua_pushnil(L); return 0;
    case GSI_T_FALSE: lua_pushboolean(L, 0); return 0;
    case GSI_T_TRUE: lua_pushboolean(L, 1); return 0;
    case GSI_T_TABLE: return fastdtable(L, d);
    case GSI_T_FLOAT: {
      uint64_t u = 0;
      lua_Number x;
      int k;
      if (d->end - d->p < 8)
        return -1;
      for (k = 0; k < 8; k++)
        u |= (uint64_t)d->p[k] << (8 * k);
      d->p += 8;
      memcpy(&x, &u, sizeof(x));
      lua_pushnumber(L, x);
      return 0;
    }
    case GSI_T_INT: case GSI_T_STR: case GSI_T_PID: case GSI_T_IDREF: {
      uint64_t v;
      if (fastdvarint(d, &v) != 0)
        return -1;
      if (c == GSI_T_INT)
        lua_pushinteger(L, gsi_unzigzag(v));
      else if (c == GSI_T_PID)
        gsi_pushpid(L, v);
      else if (c == GSI_T_IDREF)
        gsi_pushref(L, v);
      else {
        if (v > (uint64_t)(d->end - d->p))
          return -1;
        lua_pushlstring(L, (const char *)d->p, (size_t)v);
        d->p += v;
      }
      return 0;
    }
    case GSI_T_CFUNC: {  /* only the binding's own, found without raising */
      uint64_t lm, lf;
      const char *m, *f;
      lua_CFunction fn;
      if (d->builtin == NULL || fastdvarint(d, &lm) != 0 ||
          lm > (uint64_t)(d->end - d->p))
        return -1;
      m = (const char *)d->p;
      d->p += lm;
      if (fastdvarint(d, &lf) != 0 || lf > (uint64_t)(d->end - d->p))
        return -1;
      f = (const char *)d->p;
      d->p += lf;
      if ((fn = d->builtin(L, m, (size_t)lm, f, (size_t)lf)) == NULL)
        return -1;
      lua_pushcfunction(L, fn);
      return 0;
    }
    default:
      return -1;  /* references, modules, functions, unknown tags */
  }
}


/* 0 with the value pushed, or -1 with nothing pushed. */
static int fastdecode (lua_State *L, const unsigned char *p, size_t len,
                       int maxdepth, size_t maxsize,
                       lua_CFunction (*builtin)(lua_State *, const char *,
                                                size_t, const char *, size_t)) {
  fastdec d;
  int top = lua_gettop(L);
  if (len < 1 || len > maxsize || p[0] != GSI_WIRE_MAGIC ||
      !lua_checkstack(L, 8))
    return -1;
  d.p = p + 1;
  d.end = p + len;
  d.depth = 0;
  d.maxdepth = maxdepth;
  d.builtin = builtin;
  if (fastdvalue(L, &d) == 0 && d.p == d.end)
    return 0;
  lua_settop(L, top);
  return -1;
}


/* protected part: 1 = dec */
static int decmain (lua_State *L) {
  dec *d = (dec *)lua_touserdata(L, 1);
  int h;
  if (fastdecode(L, d->p, left(d), d->maxdepth, d->maxsize,
                 d->allowfn ? d->builtin : NULL) == 0)
    return 1;
  if (left(d) > d->maxsize) {
    char num[32];
    snprintf(num, sizeof(num), "%zu", d->maxsize);
    lua_pushfstring(L, "message too large (more than %s bytes)", num);
    lua_error(L);
  }
  h = getbyte(L, d);
  if ((h & ~GSI_WIRE_FLAGS) != GSI_WIRE_MAGIC)
    malformed(L, "unknown format");
  if ((h & GSI_WIRE_CODE) && d->allowfn != GSI_FN_ALL)
    nofunctions(L);  /* bytecode: only from a trusted peer (decfunction
                        checks again: the flag is the sender's word) */
  if (h & GSI_WIRE_REFS) {
    lua_createtable(L, 8, 0);
    d->objs = lua_gettop(L);
  }
  decvalue(L, d);
  if (d->p != d->end)
    malformed(L, "trailing bytes");
  return 1;
}


int gsi_decode (lua_State *L, const unsigned char *p, size_t len,
                const gsi_codec_limits *lim) {
  static const unsigned char empty[1] = {0};
  dec d;
  if (!lua_checkstack(L, 3))
    return -1;
  if (p == NULL)  /* no arithmetic on a null pointer */
    p = empty, len = 0;
  d.p = p;
  d.end = p + len;
  getlimits(lim, &d.maxdepth, &d.maxsize, &d.allowfn);
  d.builtin = lim != NULL ? lim->builtin : NULL;
  d.depth = 0;
  d.objs = 0;
  d.nobj = 0;
  lua_pushcfunction(L, decmain);
  lua_pushlightuserdata(L, &d);
  return lua_pcall(L, 1, 1, 0) == LUA_OK ? 0 : -1;
}


int gsi_decode_raw (lua_State *L, const unsigned char *p, size_t len,
                    const gsi_codec_limits *lim) {
  int maxdepth, allowfn;
  size_t maxsize;
  getlimits(lim, &maxdepth, &maxsize, &allowfn);
  if (p != NULL && fastdecode(L, p, len, maxdepth, maxsize,
                             allowfn && lim != NULL ? lim->builtin : NULL) == 0)
    return 0;
  return gsi_decode(L, p, len, lim);
}
