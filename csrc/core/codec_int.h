/*
** codec_int.h - what the codec's files share, and nothing else includes.
**
** The codec (core/codec.h is its contract) is five files, one job each:
**   codec.c       the limits, the module names both ways (the reverse
**                 cache an encoder sends loaded modules and their C
**                 functions by; the lookup a decoder finds them with),
**                 the runtime's own Lua-free messages;
**   codec_fast.c  the entry points (gsi_encode, gsi_decode,
**                 gsi_decode_raw) and the fast paths they try first:
**                 every message goes through this file;
**   codec_enc.c   the full encoder (shared tables, functions, upvalues,
**                 error paths), the fallback of gsi_encode;
**   codec_env.c   the _ENV rule: what a function's environment is sent
**                 as, read from its bytecode;
**   codec_dec.c   the full decoder, the fallback of gsi_decode.
** The byte writers both encoders use are `static inline` here, so the
** hot path pays no call for them.
*/
#ifndef GS_CODEC_INT_H
#define GS_CODEC_INT_H

#include <stdint.h>
#include <string.h>

#include "lua.h"
#include "lauxlib.h"

#include "codec.h"

_Static_assert(sizeof(lua_Integer) == 8, "codec assumes 64-bit integers");
_Static_assert(sizeof(lua_Number) == 8, "codec assumes double floats");

#define GSI_CODEC_FN __attribute__((visibility("hidden"))) extern

#if defined(__GNUC__)
#define unlikely(x) __builtin_expect(!!(x), 0)
#else
#define unlikely(x) (x)
#endif


/* ---------------------------------------------------------- limits */

static inline void gsi_codec_getlimits (const gsi_codec_limits *lim,
                                        int *depth, size_t *size,
                                        int *allowfn) {
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


/* ---------------------------------------------------- byte writers */

static inline size_t gsi_codec_varintlen (uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

/* Writers shared by both encoders (the caller made room): each returns
** the bytes written. */
#define GSI_CODEC_MAXINTEGER 11   /* gsi_codec_put_integer writes at most this */
#define GSI_CODEC_MAXSTRHEAD 11   /* gsi_codec_put_strhead writes at most this */

static inline size_t gsi_codec_put_integer (unsigned char *p, lua_Integer i) {
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

static inline size_t gsi_codec_put_float (unsigned char *p, lua_Number x) {
  uint64_t u;
  int k;
  memcpy(&u, &x, sizeof(u));
  p[0] = GSI_T_FLOAT;
  for (k = 0; k < 8; k++)  /* little-endian whatever the host */
    p[1 + k] = (unsigned char)(u >> (8 * k));
  return 9;
}

/* the tag and length of a string of len bytes */
static inline size_t gsi_codec_put_strhead (unsigned char *p, size_t len) {
  if (len < 32) {
    p[0] = (unsigned char)(GSI_T_FIXSTR | len);
    return 1;
  }
  p[0] = GSI_T_STR;
  return 1 + gsi_putvarint(p + 1, len);
}


/* ------------------------------------------------ reverse module cache */

/* Registry keys (by address) of the per-state reverse caches of loaded
** modules: one of the modules themselves (needed whenever a table is
** sent), and a larger one that also holds every C function of every
** module (built only when a C function is sent: it costs a state several
** KB). Both map an object to its wire bytes (see codec.c). */
GSI_CODEC_FN const char gsi_codec_cache_key;
GSI_CODEC_FN const char gsi_codec_cfcache_key;

/* The module cache (not the C-function one) keeps, at integer key 0 (no
** module is a number), a userdata: a one-hash Bloom filter of the
** addresses of its tables and functions. The fast encoder tests a table
** against it (a few instructions) before the exact lookup (a rawget,
** ~150): a clear bit means "not a loaded module". The filter is written
** only while the cache is built, as every entry is, so it covers every
** entry; an entry the weak cache dropped leaves a bit set, which only sends
** that address to the exact lookup. */
#define GSI_CODEC_MODFILTER_BITS 512

static inline unsigned gsi_codec_modfilter_bit (const void *p) {
  return (unsigned)((((uint64_t)(uintptr_t)p >> 4) * 0x9E3779B97F4A7C15u) >> 55);
}

static inline int gsi_codec_modfilter_maybe (const uint64_t *f,
                                             const void *p) {
  unsigned b = gsi_codec_modfilter_bit(p);
  return (f[b >> 6] >> (b & 63)) & 1;
}

/* Scan package.loaded into a fresh cache, store it in the registry and
** push it. With cfuncs, the C functions of the modules go in too. Raises
** (memory): run protected. */
GSI_CODEC_FN void gsi_codec_buildcache (lua_State *L, int cfuncs);

/* Append s as a readable, quoted, truncated literal (names and keys in
** error messages may be arbitrary bytes). */
GSI_CODEC_FN void gsi_codec_addquoted (luaL_Buffer *B, const char *s,
                                       size_t len);


/* ---------------------------------------------- module lookup (decoder) */

/* Push package.loaded[name], or require(name) when allowfn (a trusted
** sender), with the require builtin names (field NULL: codec.h) if any;
** raises "module \"x\" is not loaded here" and the like. */
GSI_CODEC_FN void gsi_codec_pushmodule (lua_State *L, int allowfn,
    lua_CFunction (*builtin)(lua_State *, const char *, size_t,
                             const char *, size_t),
    const char *name, size_t len);

/* Push the C function field f of module m: the builtin hook's (if any),
** else the loaded (or required) module's. Raises if there is none. */
GSI_CODEC_FN void gsi_codec_pushcfunction (lua_State *L, int allowfn,
    lua_CFunction (*builtin)(lua_State *, const char *, size_t,
                             const char *, size_t),
    const char *m, size_t lm, const char *f, size_t lf);


/* ------------------------------------------------- decoders' size hints */

/* Size hints are capped by what the input could hold (a value takes at
** least one byte) and by a constant, so a lying count cannot make us
** allocate much; big tables still grow as usual. */
#define GSI_CODEC_MAXHINT (1 << 16)

static inline int gsi_codec_hint (uint64_t n) {
  return n > GSI_CODEC_MAXHINT ? GSI_CODEC_MAXHINT : (int)n;
}


/* ------------------------------------------------------------- _ENV rule */

/* What a function's _ENV upvalue (a table at t) is sent as (codec_env.c):
** ENV_NO by name or by value as any table, ENV_DIRECT as an environment
** by value (shared), ENV_RESOLVE as a per-function copy. */
enum { GSI_ENV_NO = 0, GSI_ENV_DIRECT, GSI_ENV_RESOLVE };

GSI_CODEC_FN int gsi_codec_envkind (lua_State *L, int t);

/* Push the fresh table an GSI_ENV_RESOLVE environment at env is sent as;
** the function's lua_dump output is dump[0..n). */
GSI_CODEC_FN void gsi_codec_envcopy (lua_State *L, int env,
                                     const unsigned char *dump, size_t n);


/* -------------------------------------------------- the full paths */

/* The full encoder (codec_enc.c): gsi_encode's contract, for what the
** fast path gave up on. idx is absolute and 3 stack slots are free. */
GSI_CODEC_FN int gsi_codec_encode_full (lua_State *L, int idx,
                                        const char *what,
                                        const gsi_codec_limits *lim,
                                        gsi_buf *b);

/* The full decoder (codec_dec.c), run inside gsi_decode's protected call
** after the fast path gave up: pushes the value of p[0..len), or raises
** the error string. Returns 1 (a lua_CFunction's result count). */
GSI_CODEC_FN int gsi_codec_decode_full (lua_State *L, const unsigned char *p,
                                        size_t len,
                                        const gsi_codec_limits *lim);

#endif
