/*
** codec.c - the value codec's shared parts: limits, and module names
** both ways.
**
** The codec (codec.h) copies Lua values between lua_States as bytes, and
** is split by job (codec_int.h lists the files). This file holds what
** more than one of them needs and no hot path runs: the default limits
** and registry keys; the per-state reverse cache of loaded modules, by
** which the encoders send a module (or a C function of one) as its name;
** the lookup by which the decoder turns such a name back into this
** state's module or C function; and the two messages the runtime makes up
** itself without a Lua state. Keeping the names in one file keeps the
** two directions of "modules cross by name" (DESIGN section 1.4) side
** by side.
*/
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lua.h"
#include "lauxlib.h"

#include "codec_int.h"

const char gsi_codec_sandbox_key = 's';

/* the registry keys of the module caches (codec_int.h) */
const char gsi_codec_cache_key = 'c';
const char gsi_codec_cfcache_key = 'f';

const gsi_codec_limits gsi_codec_default_limits = {
  200, (size_t)64 << 20, 1, NULL
};


/* --------------------------------------------------------- error names */

/* Append s as a readable, quoted, truncated literal (names in error
** messages may be arbitrary bytes). */
void gsi_codec_addquoted (luaL_Buffer *B, const char *s, size_t len) {
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
  gsi_codec_addquoted(&B, s, len);
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


/* Scan package.loaded into a fresh cache (weak keys: it must not keep an
** unloaded module alive), store it in the registry and push it. With
** cfuncs, the C functions of the modules go in too. */
void gsi_codec_buildcache (lua_State *L, int cfuncs) {
  int cache, loaded;
  uint64_t *filter = NULL;
  luaL_checkstack(L, 10, "building the module cache");
  lua_createtable(L, 0, cfuncs ? 64 : 8);
  cache = lua_gettop(L);
  if (!cfuncs) {
    filter = (uint64_t *)lua_newuserdatauv(L, GSI_CODEC_MODFILTER_BITS / 8, 0);
    memset(filter, 0, GSI_CODEC_MODFILTER_BITS / 8);
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
          unsigned b = gsi_codec_modfilter_bit(lua_topointer(L, mod));
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
  lua_rawsetp(L, LUA_REGISTRYINDEX, cfuncs ? &gsi_codec_cfcache_key
                                          : &gsi_codec_cache_key);
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


void gsi_codec_invalidate (lua_State *L) {
  /* only overwrite existing entries: that never allocates, so this
  ** cannot raise */
  if (!lua_checkstack(L, 1))
    return;
  dropcache(L, &gsi_codec_cache_key);
  dropcache(L, &gsi_codec_cfcache_key);
}


/* ------------------------------------------- module lookup (decoder) */

/* package.loaded[name], or require(name) from a trusted sender (allowfn):
** the state's own require if its builtin hook names one, else _G.require */
void gsi_codec_pushmodule (lua_State *L, int allowfn,
    lua_CFunction (*builtin)(lua_State *, const char *, size_t,
                             const char *, size_t),
    const char *name, size_t len) {
  lua_CFunction req;
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
  if (!allowfn)
    failname(L, "module ", name, len, " is not loaded here");
  if (builtin != NULL && (req = builtin(L, name, len, NULL, 0)) != NULL) {
    lua_pushcfunction(L, req);
  } else {
    lua_pushglobaltable(L);
    lua_pushliteral(L, "require");
    if (lua_rawget(L, -2) != LUA_TFUNCTION) {
      /* not in _G yet: its __index may make it (a process state decoding
      ** without the runtime's limits: package opens) */
      lua_pop(L, 1);
      lua_getfield(L, -1, "require");
    }
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


/* a C function by name: the builtin hook's, or a field of its module */
void gsi_codec_pushcfunction (lua_State *L, int allowfn,
    lua_CFunction (*builtin)(lua_State *, const char *, size_t,
                             const char *, size_t),
    const char *m, size_t lm, const char *f, size_t lf) {
  if (builtin != NULL) {
    lua_CFunction fn = builtin(L, m, lm, f, lf);
    if (fn != NULL) {
      lua_pushcfunction(L, fn);
      return;
    }
  }
  gsi_codec_pushmodule(L, allowfn, builtin, m, lm);
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


/* ------------------------------------- messages made without a state */

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
