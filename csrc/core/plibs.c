/*
** plibs.c - the libraries of a process state, opened lazily: the base
** functions and the standard libraries come on first use (_G's __index,
** a stand-in string metatable), the package library with the runtime's
** module cache as its searcher, the boot path's require, the codec's hook
** for functions sent by name, and what a sandbox takes away (DESIGN §5).
*/
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lualib.h"

#include "internal.h"

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
  /* a module by name, not loaded yet: the codec requires it with the boot
  ** path's require (it does not run _G's __index, which opens package) */
  if (field == NULL) return gsi_require;
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
  int sandbox = gsi_state_proc(L)->sandbox;
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

/* The stand-in's events, with their names' lengths: the setup pushes
** them with lua_pushlstring and sets them raw, which skips lua_setfield's
** strlen and Lua's C-string cache (about 200 instructions a key; the
** names are Lua's metamethod names, already in every state). */
typedef struct named_fn {
  const char *name;
  size_t len;
  lua_CFunction f;
} named_fn;
#define NAMED(s, f) {s, sizeof s - 1, f}

static const named_fn lazy_string_mt[] = {
    NAMED("__index", lazy_string_index), NAMED("__add", lazy_add),
    NAMED("__sub", lazy_sub),            NAMED("__mul", lazy_mul),
    NAMED("__mod", lazy_mod),            NAMED("__pow", lazy_pow),
    NAMED("__div", lazy_div),            NAMED("__idiv", lazy_idiv),
    NAMED("__unm", lazy_unm)};
#define N_LAZY_STRING_MT (sizeof lazy_string_mt / sizeof lazy_string_mt[0])

/* t[name] = f raw, t at the top (t must be a table without a metatable
** that could tell the difference: one the setup made). */
static void set_named(lua_State *L, const char *name, size_t len, lua_CFunction f) {
  lua_pushlstring(L, name, len);
  lua_pushcfunction(L, f); /* light: allocates nothing */
  lua_rawset(L, -3);
}

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
  gsi_proc *p = gsi_state_proc(L);
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

/* The cache's hash of path if it is the one p was started with (as it
** usually is), else 0 (the cache hashes it). */
static uint64_t paths_hash(gsi_proc *p, const char *path) {
  const char *own = p->paths != NULL ? gsi_paths_path(p->paths) : NULL;
  return own != NULL && strcmp(own, path) == 0 ? gsi_paths_hash(p->paths) : 0;
}

/* package.searchers[2] of a process state: Lua files, compiled once per
** runtime (modcache.c). Same results and messages as Lua's own. */
static int search_cached(lua_State *L) {
  gsi_proc *p = gsi_state_proc(L);
  const char *name = luaL_checkstring(L, 1);
  const char *path, *file;
  lua_settop(L, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, 2, LUA_LOADLIBNAME); /* 3 */
  lua_getfield(L, 3, "path");          /* 4 */
  if ((path = lua_tostring(L, 4)) == NULL)
    return luaL_error(L, "'package.path' must be a string");
  switch (gsi_modcache_load(L, p->rt->mods, name, path, paths_hash(p, path))) {
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
  gsi_proc *p = gsi_state_proc(L);
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
  gsi_proc *p = gsi_state_proc(L);
  const char *name = luaL_checkstring(L, 1);
  lua_settop(L, 1);
  /* package.loaded by its name's length; the module by the string at 1
  ** (lua_gettable, not lua_getfield: no interning of the name again) */
  lua_pushlstring(L, LUA_LOADED_TABLE, sizeof LUA_LOADED_TABLE - 1);
  lua_rawget(L, LUA_REGISTRYINDEX); /* 2 */
  lua_pushvalue(L, 1);
  if (lua_gettable(L, 2) != LUA_TNIL && lua_toboolean(L, -1)) return 1;
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
  if (!p->sandbox && p->paths != NULL &&
      (lua_pushlstring(L, LUA_LOADLIBNAME, sizeof LUA_LOADLIBNAME - 1),
       lua_gettable(L, 2)) == LUA_TNIL) {
    int r = gsi_modcache_load(L, p->rt->mods, name, gsi_paths_path(p->paths),
                              gsi_paths_hash(p->paths));
    if (r == -1) return lua_error(L);
    if (r == 1) { /* as require does: chunk(name, file), then loaded[name] */
      lua_pushvalue(L, 1);
      lua_insert(L, -2);
      lua_call(L, 2, 1);
      if (!lua_isnil(L, -1)) {
        lua_pushvalue(L, 1);
        lua_insert(L, -2);
        lua_settable(L, 2);
      } else {
        lua_pop(L, 1);
      }
      lua_pushvalue(L, 1);
      if (lua_gettable(L, 2) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushvalue(L, 1);
        lua_pushboolean(L, 1);
        lua_settable(L, 2);
        lua_pushboolean(L, 1);
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

/* Entries of package.loaded a server's boot makes: _G and the callback
** module (more grow it as usual). Made at this size, the table is not
** rehashed when the module comes (the size a rehash would give anyway). */
#define LOADED_AT_BOOT 2

void gsi_open_libs(lua_State *L, int sandbox) {
  pthread_once(&base_once, read_base);
  if (sandbox) { /* its encoder refuses functions (codec.h) */
    lua_pushboolean(L, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &gsi_codec_sandbox_key);
  }
  /* package.loaded, as luaL_getsubtable would make it, at its boot size;
  ** the keys by length and set raw (the registry and a new table have no
  ** metatable) */
  lua_pushlstring(L, LUA_LOADED_TABLE, sizeof LUA_LOADED_TABLE - 1);
  lua_createtable(L, 0, LOADED_AT_BOOT);
  lua_rawset(L, LUA_REGISTRYINDEX);
  if (nbase == 0) { /* could not read it: the whole library now */
    luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
    lua_pop(L, 1);
    if (sandbox) sandbox_base(L);
  } else { /* package.loaded._G; the functions come on first use */
    lua_pushlstring(L, LUA_LOADED_TABLE, sizeof LUA_LOADED_TABLE - 1);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushlstring(L, LUA_GNAME, sizeof LUA_GNAME - 1);
    lua_pushglobaltable(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  /* until the string library is opened, strings get a stand-in metatable
  ** whose events open it, so that s:upper() and "10" + 1 work on first use */
  lua_createtable(L, 0, (int)N_LAZY_STRING_MT);
  for (size_t i = 0; i < N_LAZY_STRING_MT; i++)
    set_named(L, lazy_string_mt[i].name, lazy_string_mt[i].len, lazy_string_mt[i].f);
  /* any string will do to set the strings' metatable: one of the names
  ** just used (no new string) */
  lua_pushlstring(L, lazy_string_mt[0].name, lazy_string_mt[0].len);
  lua_insert(L, -2);
  lua_setmetatable(L, -2);
  lua_pop(L, 1);
  /* the other libraries, package included, on first use (lazy_index) */
  lua_pushglobaltable(L);
  lua_createtable(L, 0, 1);
  set_named(L, "__index", sizeof "__index" - 1, lazy_index);
  lua_setmetatable(L, -2);
  lua_pop(L, 1);
}
