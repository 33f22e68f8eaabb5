/*
** ids.c - pid and ref userdata, interned per lua_State.
**
** Each kind keeps two things in the registry, under light-userdata keys
** (cheaper to look up than string keys, and private to this file):
**   - the interning table, id (as lua_Integer) -> userdata, weak values,
**     so an id nobody holds any more is collected as usual;
**   - the metatable, also registered by name for luaL_checkudata users.
** Both are created on the first push in a state. gsi_toid tells ids by
** the tag in their own block (see there), so it creates nothing and never
** raises.
*/
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "lua.h"
#include "lauxlib.h"

#include "ids.h"

typedef struct idkind {
  const char *mtname;
  int kind;
  char *cachekey;  /* addresses used as registry keys */
  char *mtkey;
} idkind;

static char pidcache, pidmt, refcache, refmt;

static const idkind pidkind = {GSI_PID_MT, GSI_ID_PID, &pidcache, &pidmt};
static const idkind refkind = {GSI_REF_MT, GSI_ID_REF, &refcache, &refmt};

/* The block of an id userdata (no user values): the id, and its kind's
** tag, the address of the kind's private registry key. Only pushid makes
** such a block; Lua code cannot write a userdata's bytes, and no other C
** code of the project makes one of this size with that address in it. */
typedef struct idblock {
  uint64_t id;
  const void *tag;
} idblock;


/* ids above INT64_MAX (refs with the top bit set) become negative keys;
** written without relying on implementation-defined conversion */
static lua_Integer idkey (uint64_t id) {
  if (id <= (uint64_t)INT64_MAX)
    return (lua_Integer)id;
  return -(lua_Integer)(~id) - 1;
}


int gsi_idstring (int kind, uint64_t id, char *buf) {
  int n;
  if (kind == GSI_ID_PID)
    n = snprintf(buf, GSI_ID_STRLEN, "<0.%" PRIu32 ".%" PRIu32 ">",
                 (uint32_t)(id & 0xffffffffu), (uint32_t)(id >> 32));
  else
    n = snprintf(buf, GSI_ID_STRLEN, "#Ref<0.%" PRIu64 ">", id);
  return n;
}


/* Never raises: only raw reads of the block. The kind is the tag in the
** block (idblock), cheaper to check than a user value (a push and a pop)
** or the metatable (a registry lookup). */
int gsi_toid (lua_State *L, int idx, uint64_t *id) {
  const idblock *b;
  int kind;
  if (lua_type(L, idx) != LUA_TUSERDATA || lua_rawlen(L, idx) != sizeof(idblock))
    return GSI_ID_NONE;
  b = (const idblock *)lua_touserdata(L, idx);
  if (b->tag == pidkind.mtkey)
    kind = GSI_ID_PID;
  else if (b->tag == refkind.mtkey)
    kind = GSI_ID_REF;
  else
    return GSI_ID_NONE;
  if (id != NULL)
    *id = b->id;
  return kind;
}


int gsi_isid (lua_State *L, int idx) {
  return gsi_toid(L, idx, NULL);
}


int gsi_topid (lua_State *L, int idx, uint64_t *pid) {
  uint64_t id;
  if (gsi_toid(L, idx, &id) != GSI_ID_PID)
    return 0;
  *pid = id;
  return 1;
}


int gsi_toref (lua_State *L, int idx, uint64_t *ref) {
  uint64_t id;
  if (gsi_toid(L, idx, &id) != GSI_ID_REF)
    return 0;
  *ref = id;
  return 1;
}


/* ---------------------------------------------------------- metamethods */

static int id_tostring (lua_State *L) {
  char buf[GSI_ID_STRLEN];
  uint64_t id = 0;
  int kind = gsi_toid(L, 1, &id);
  if (kind == GSI_ID_NONE)
    return luaL_argerror(L, 1, "pid or ref expected");
  lua_pushlstring(L, buf, (size_t)gsi_idstring(kind, id, buf));
  return 1;
}


static const char *kindname (lua_State *L, int kind, int idx) {
  switch (kind) {
    case GSI_ID_PID: return "pid";
    case GSI_ID_REF: return "ref";
    default: return luaL_typename(L, idx);
  }
}


/* Only ids of the same kind are ordered; anything else is the usual
** "attempt to compare" error. */
static int compare (lua_State *L, uint64_t *a, uint64_t *b) {
  int ka = gsi_toid(L, 1, a), kb = gsi_toid(L, 2, b);
  if (ka == GSI_ID_NONE || ka != kb)
    return luaL_error(L, "attempt to compare %s with %s",
                      kindname(L, ka, 1), kindname(L, kb, 2));
  return 0;
}


static int id_lt (lua_State *L) {
  uint64_t a = 0, b = 0;
  compare(L, &a, &b);
  lua_pushboolean(L, a < b);
  return 1;
}


static int id_le (lua_State *L) {
  uint64_t a = 0, b = 0;
  compare(L, &a, &b);
  lua_pushboolean(L, a <= b);
  return 1;
}


static const luaL_Reg id_meta[] = {
  {"__tostring", id_tostring},
  {"__lt", id_lt},
  {"__le", id_le},
  {NULL, NULL}
};


/* ------------------------------------------------------------ interning */

static char weakmt;  /* registry: { __mode = "v" }, shared by both caches */

/* Create the kind's metatable and interning table in this state; leaves
** the interning table on the stack. Tables are made at their final size
** (no rehash), and the weak-values metatable is shared by both kinds:
** every server makes both kinds when it starts. */
static void newkind (lua_State *L, const idkind *k) {
  int n = 0;
  while (id_meta[n].name != NULL)
    n++;
  lua_createtable(L, 0, n + 1);  /* as luaL_newmetatable, presized */
  lua_pushstring(L, k->mtname);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "__name");
  lua_pushvalue(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);  /* registry[mtname] = mt */
  luaL_setfuncs(L, id_meta, 0);
  lua_rawsetp(L, LUA_REGISTRYINDEX, k->mtkey);
  lua_createtable(L, 0, 0);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &weakmt) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &weakmt);
  }
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, k->cachekey);
}


static void pushid (lua_State *L, const idkind *k, uint64_t id) {
  lua_Integer key = idkey(id);
  idblock *b;
  luaL_checkstack(L, 4, "too many nested values");
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, k->cachekey) != LUA_TTABLE) {
    lua_pop(L, 1);
    newkind(L, k);
  }
  if (lua_rawgeti(L, -1, key) == LUA_TUSERDATA) {  /* hot path */
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 1);
  b = (idblock *)lua_newuserdatauv(L, sizeof(idblock), 0);
  b->id = id;
  b->tag = k->mtkey;  /* the kind, for gsi_toid */
  lua_rawgetp(L, LUA_REGISTRYINDEX, k->mtkey);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawseti(L, -3, key);
  lua_remove(L, -2);
}


void gsi_pushpid (lua_State *L, uint64_t pid) {
  pushid(L, &pidkind, pid);
}


void gsi_pushref (lua_State *L, uint64_t ref) {
  pushid(L, &refkind, ref);
}
