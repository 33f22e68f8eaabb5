/*
** codec_env.c - the codec's _ENV rule: what a function's environment is
** sent as.
**
** The full encoder (codec_enc.c) asks this file two things about a Lua
** function's _ENV upvalue: what kind of environment it is, and, for one
** that must be resolved per function, the table to send instead, which
** needs the global names the function reads, found in its bytecode. That
** is a reader of lua_dump's format, a job of its own, with nothing to do
** with writing the wire format; it runs only when a function is sent by
** value, never on the path of a plain message, so it lives apart from
** the encoder.
**
** A function's _ENV upvalue that is the sender's _G crosses by name (it is
** package.loaded._G) and arrives as the receiver's globals. One that is an
** *environment* -- a table whose metatable's __index falls back to the
** sender's _G, directly, through a chain of tables, or through a function
** (busted's per-file environment) -- is sent as GSI_T_ENV + a table and
** arrives with a metatable falling back to the receiver's globals:
**   GSI_ENV_DIRECT (__index is _G itself): its own fields, sent as an
**     object like any table (shared by every function that has it);
**   GSI_ENV_RESOLVE (a chain, or a function): a copy of its own fields
**     plus every global name the function's code reads (GETTABUP on _ENV,
**     in the function and its nested functions, read from the bytecode
**     just dumped) whose value, looked up through the environment as the
**     function would, differs from the sender's _G[name]. Such a copy is
**     made per function (not shared), as it holds that function's names.
** (DESIGN section 1.4.)
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lua.h"
#include "lauxlib.h"

#include "codec_int.h"

#define ENV_CHAIN_MAX 32

/* What the table at t, a function's _ENV, is sent as (GSI_ENV_*). */
int gsi_codec_envkind (lua_State *L, int t) {
  int top = lua_gettop(L), kind = GSI_ENV_NO, i;
  luaL_checkstack(L, 4, "environment");
  lua_pushglobaltable(L);  /* top + 1 */
  if (lua_rawequal(L, t, top + 1)) {
    lua_settop(L, top);
    return GSI_ENV_NO;  /* _G itself: by name */
  }
  lua_pushvalue(L, t);  /* top + 2: the table along the chain */
  for (i = 0; i < ENV_CHAIN_MAX && lua_getmetatable(L, top + 2); i++) {
    lua_pushliteral(L, "__index");
    lua_rawget(L, -2);
    if (lua_rawequal(L, -1, top + 1)) {
      kind = i == 0 ? GSI_ENV_DIRECT : GSI_ENV_RESOLVE;
      break;
    }
    if (lua_type(L, -1) == LUA_TFUNCTION) {
      kind = GSI_ENV_RESOLVE;
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

/* Push the fresh table a GSI_ENV_RESOLVE environment at env is sent as
** (see above); the function's dump is dump[0..n). */
void gsi_codec_envcopy (lua_State *L, int env, const unsigned char *dump,
                        size_t n) {
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
  globalnames(L, dump, n);
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
