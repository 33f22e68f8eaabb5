/*
** codec_enc.c - the full encoder: every value the codec can send, with
** its path in every error.
**
** gsi_encode (codec_fast.c) tries its fast path first; what that path
** gives up on comes here: tables seen twice (shared or cyclic, sent as
** back-references), loaded modules and C functions (sent by name through
** the reverse cache of codec.c), Lua functions (bytecode and upvalues,
** with the _ENV rule of codec_env.c), values that cannot be sent, and the
** limits, each reported as "what.path: reason". It runs its Lua API work
** inside one lua_pcall, so nothing it does raises out of it; the C memory
** it owns (the seen set's hash) lives in gsi_codec_encode_full's frame
** and is freed there. It is apart from the fast path because a message
** that gets here is rare and already expensive, while the fast path runs
** on every message and is kept small.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua.h"
#include "lauxlib.h"

#include "codec_int.h"
#include "ids.h"


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


static void emitinteger (lua_State *L, enc *e, lua_Integer i) {
  /* exact room for one-byte integers: the size limit is exact */
  unsigned char *p = need(L, e, (i >= -32 && i < 0x80) ? 1
                                                      : GSI_CODEC_MAXINTEGER);
  e->b->len += gsi_codec_put_integer(p, i);
}


static void emitfloat (lua_State *L, enc *e, lua_Number x) {
  unsigned char *p = need(L, e, 9);
  e->b->len += gsi_codec_put_float(p, x);
}


static void emitstring (lua_State *L, enc *e, const char *s, size_t len) {
  unsigned char *p;
  /* cannot happen with a real Lua string */
  if (len > SIZE_MAX - GSI_CODEC_MAXSTRHEAD)
    toobig(L, e);
  p = need(L, e, (len < 32 ? 1 : GSI_CODEC_MAXSTRHEAD) + len);
  p += gsi_codec_put_strhead(p, len);
  memcpy(p, s, len);
  e->b->len = (size_t)(p - e->b->data) + len;
}


/* Write v at pos, where room bytes were reserved: padded with 0x80 bytes
** when shorter, moving what follows when longer (rare: big tables and
** functions, once each). */
static void patchvarint (lua_State *L, enc *e, size_t pos, size_t room,
                         uint64_t v) {
  size_t k = gsi_codec_varintlen(v);
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
        gsi_codec_addquoted(B, s, KEY_QUOTE_MAX);
        snprintf(tmp, sizeof(tmp), "...(%zu bytes)]", len);
        luaL_addstring(B, tmp);
      }
      else if (isident(s, len)) {
        luaL_addchar(B, '.');
        luaL_addlstring(B, s, len);
      }
      else {
        luaL_addchar(B, '[');
        gsi_codec_addquoted(B, s, len);
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
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, cfuncs ? &gsi_codec_cfcache_key
                                               : &gsi_codec_cache_key)
      != LUA_TTABLE) {
    lua_pop(L, 1);
    gsi_codec_buildcache(L, cfuncs);
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
    int kind = GSI_ENV_NO, v;
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
      kind = gsi_codec_envkind(L, v);
    fu.up = f; fu.kind = F_UPVAL; fu.idx = fi; fu.n = i;
    if (kind == GSI_ENV_RESOLVE) {  /* a copy of its own: no join, no object */
      gsi_codec_envcopy(L, v, e->b->data + dump, dumplen);
      emitbyte(L, e, GSI_T_ENV);
      enctablebody(L, e, lua_gettop(L), &fu);
    }
    else {
      if (seen_add(&e->seen, id, me, i) != 0)
        nomem(L, e);
      if (kind == GSI_ENV_DIRECT) {
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
      gsi_codec_buildcache(L, 1);
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
    size_t dumplen = e->b->len - pos - 2, k = gsi_codec_varintlen(dumplen);
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


int gsi_codec_encode_full (lua_State *L, int idx, const char *what,
                           const gsi_codec_limits *lim, gsi_buf *b) {
  enc e;
  int status, allowfn;
  e.b = b;
  e.start = b->len;
  e.what = what != NULL ? what : "value";
  gsi_codec_getlimits(lim, &e.maxdepth, &e.maxsize, &allowfn);
  e.limit = e.maxsize > SIZE_MAX - e.start ? SIZE_MAX : e.start + e.maxsize;
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
