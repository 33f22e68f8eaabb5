/*
** codec_dec.c - the full decoder: every value the codec can receive, and
** every reason to refuse a byte string.
**
** gsi_decode (codec_fast.c) tries the fast decoder first, inside its
** protected call; what that gives up on comes here, starting again from
** the first byte: messages with back-references, modules and C functions
** by name (looked up by codec.c), Lua functions (bytecode, upvalues,
** joins) and environments, and input that is malformed, too deep or too
** large, reported as an error string. Objects are kept by number in a Lua
** table only if the encoder flagged back-references. Apart from the fast
** decoder because the fast one must never raise anything but a memory
** error and stays small for the common message; this one raises freely,
** always under gsi_decode's lua_pcall.
*/
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lua.h"
#include "lauxlib.h"

#include "codec_int.h"
#include "ids.h"


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


static void dectable (lua_State *L, dec *d) {
  uint64_t na = getvarint(L, d), nh = getvarint(L, d), i;
  int t;
  if (na > left(d) || nh > left(d) / 2)
    malformed(L, "table size exceeds message");
  denter(L, d);
  lua_createtable(L, gsi_codec_hint(na), gsi_codec_hint(nh));
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
  gsi_codec_pushmodule(L, d->allowfn, d->builtin, name, len);
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
  gsi_codec_pushcfunction(L, d->allowfn, d->builtin, m, lm, f, lf);
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


int gsi_codec_decode_full (lua_State *L, const unsigned char *p, size_t len,
                           const gsi_codec_limits *lim) {
  dec dd, *d = &dd;
  int h;
  d->p = p;
  d->end = p + len;
  gsi_codec_getlimits(lim, &d->maxdepth, &d->maxsize, &d->allowfn);
  d->builtin = lim != NULL ? lim->builtin : NULL;
  d->depth = 0;
  d->objs = 0;
  d->nobj = 0;
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
