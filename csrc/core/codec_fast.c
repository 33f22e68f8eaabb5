/*
** codec_fast.c - the codec's entry points and the fast paths they try
** first: every message goes through this file.
**
** This is the hot path of every message, so the common case (a small
** table of strings and numbers) is kept cheap:
**   - encoding writes straight into a malloc'd gsi_buf with no protected
**     call, tracks the few tables it has seen in a C array and pays one
**     Bloom-filter test per table (a Lua hash lookup in the per-state
**     reverse cache of loaded modules only when the filter says maybe);
**   - decoding builds tables with size hints and, for plain data, runs
**     without a protected call at all (gsi_decode_raw).
** Whatever a fast path gives up on goes to the full encoder (codec_enc.c)
** or decoder (codec_dec.c), which start again from the beginning and
** write or accept the same bytes. The fast paths and the public entry
** points share this file so that each fast path is a static function the
** compiler inlines into its entry point, and the byte writers come from
** codec_int.h as static inline: the split of the codec into files costs
** a plain message no call it did not make before.
*/
#include <stdint.h>
#include <string.h>

#include "lua.h"
#include "lauxlib.h"

#include "codec_int.h"
#include "ids.h"


/* ------------------------------------------------ encoder: fast path */

/* Most messages are small trees of nil, booleans, numbers, strings, pids,
** refs and plain tables (and a C function of a loaded module, such as
** genserver.core.serve in every start). The fast path encodes those without the
** protected call and without path frames, using only API functions that
** cannot raise here: type tests and conversions of values that already
** have the type, raw reads, lua_next over a table nothing changes
** meanwhile, and pushes of existing values after lua_checkstack. It
** gives up (returns -1, the buffer and the stack as they were) on
** anything else: a Lua function, a value that cannot be sent, a table seen
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
  int cfslot, havecf;  /* stack slot of the C functions' cache, fetched? */
  const uint64_t *filter;  /* the cache's filter (codec_int.h) */
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
  if (e->filter == NULL || gsi_codec_modfilter_maybe(e->filter, ptr)) {
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
  if ((k = gsi_codec_varintlen(nh)) > 1) {  /* move the values up, as patchvarint */
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


/* A C function of a loaded module goes by name: the very bytes the full
** path takes from its cache of them (codec.c), so both write the same.
** -1 for a Lua function, when there is no cache yet (the full path
** builds it) or the function is not in it (the full path looks again,
** or refuses it). */
static int fastcfunc (lua_State *L, fastenc *e, int idx) {
  const char *s;
  size_t len;
  unsigned char *p;
  if (!lua_iscfunction(L, idx) || !lua_checkstack(L, 2))
    return -1;
  if (!e->havecf) {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &gsi_codec_cfcache_key) != LUA_TTABLE)
      return -1;
    lua_replace(L, e->cfslot);
    e->havecf = 1;
  }
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->cfslot) != LUA_TSTRING)
    return -1;
  s = lua_tolstring(L, -1, &len);
  if ((p = fastneed(e, len)) == NULL)
    return -1;
  memcpy(p, s, len);
  e->b->len += len;
  lua_pop(L, 1);
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
      if ((p = fastneed(e, GSI_CODEC_MAXINTEGER)) == NULL)
        return -1;
      if (lua_isinteger(L, idx))
        e->b->len += gsi_codec_put_integer(p, lua_tointeger(L, idx));
      else
        e->b->len += gsi_codec_put_float(p, lua_tonumber(L, idx));
      return 0;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);  /* a string: no copy */
      if (len > SIZE_MAX - GSI_CODEC_MAXSTRHEAD ||
          (p = fastneed(e, GSI_CODEC_MAXSTRHEAD + len)) == NULL)
        return -1;
      p += gsi_codec_put_strhead(p, len);
      memcpy(p, s, len);
      e->b->len = (size_t)(p - e->b->data) + len;
      return 0;
    }
    case LUA_TTABLE:
      return fasttable(L, e, idx);
    case LUA_TFUNCTION:
      return fastcfunc(L, e, idx);
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
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &gsi_codec_cache_key) != LUA_TTABLE) {
      lua_settop(L, top);
      return -1;
    }
    e.cache = top + 1;
    if (lua_rawgeti(L, e.cache, 0) == LUA_TUSERDATA)
      e.filter = (const uint64_t *)lua_touserdata(L, -1);
    lua_pop(L, 1);  /* the cache holds it while the cache is on the stack */
  }
  /* a slot for the C functions' cache, fetched on first need (a table
  ** being traversed keeps its key and value on top) */
  lua_pushnil(L);
  e.cfslot = lua_gettop(L);
  e.havecf = 0;
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
  int maxdepth, allowfn;
  size_t maxsize, limit;
  idx = lua_absindex(L, idx);
  if (!lua_checkstack(L, 4))
    return -1;
  gsi_codec_getlimits(lim, &maxdepth, &maxsize, &allowfn);
  limit = maxsize > SIZE_MAX - b->len ? SIZE_MAX : b->len + maxsize;
  if (fastencode(L, idx, b, limit, maxdepth) == 0)
    return 0;
  return gsi_codec_encode_full(L, idx, what, lim, b);
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
  lua_createtable(L, gsi_codec_hint(na), gsi_codec_hint(nh));
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


typedef struct decargs {
  const unsigned char *p;
  size_t len;
  const gsi_codec_limits *lim;
  int maxdepth, allowfn;
  size_t maxsize;
} decargs;

/* protected part: 1 = decargs */
static int decmain (lua_State *L) {
  const decargs *a = (const decargs *)lua_touserdata(L, 1);
  if (fastdecode(L, a->p, a->len, a->maxdepth, a->maxsize,
                 a->allowfn && a->lim != NULL ? a->lim->builtin : NULL) == 0)
    return 1;
  return gsi_codec_decode_full(L, a->p, a->len, a->lim);
}


int gsi_decode (lua_State *L, const unsigned char *p, size_t len,
                const gsi_codec_limits *lim) {
  static const unsigned char empty[1] = {0};
  decargs a;
  if (!lua_checkstack(L, 3))
    return -1;
  if (p == NULL)  /* no arithmetic on a null pointer */
    p = empty, len = 0;
  a.p = p;
  a.len = len;
  a.lim = lim;
  gsi_codec_getlimits(lim, &a.maxdepth, &a.maxsize, &a.allowfn);
  lua_pushcfunction(L, decmain);
  lua_pushlightuserdata(L, &a);
  return lua_pcall(L, 1, 1, 0) == LUA_OK ? 0 : -1;
}


int gsi_decode_raw (lua_State *L, const unsigned char *p, size_t len,
                    const gsi_codec_limits *lim) {
  int maxdepth, allowfn;
  size_t maxsize;
  gsi_codec_getlimits(lim, &maxdepth, &maxsize, &allowfn);
  if (p != NULL && fastdecode(L, p, len, maxdepth, maxsize,
                             allowfn && lim != NULL ? lim->builtin : NULL) == 0)
    return 0;
  return gsi_decode(L, p, len, lim);
}
