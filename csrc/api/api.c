/*
** api.c - the public C API (genserver.h) on the core's internals.
**
** Layers, as in DESIGN.md §1: this file only uses the core (gsi_*), never
** the Lua binding; the binding could call these functions with the same
** meaning (its waits yield a coroutine where ours block the OS thread).
**
** A host thread is a foreign process of the runtime (foreign.c): its waits
** spin, then park on its condition variable. Every wait here is for one
** pending request (call, start, stop), found in O(1) among the answers
** drained from the mailbox (recv.c); a late answer is dropped there.
**
** Values cross as the codec's wire format (codec.h). A host lua_State is
** encoded and decoded with the codec itself; the C value API (gs_msg)
** writes and reads the same format directly, with no Lua state at all.
**
** The API is three files (api_int.h): this one (errors, the runtime's
** life, host states), msg.c (gs_msg values) and call.c (the calling
** thread; call, cast, send, stop, start, on the protocol layer, gen.h).
**
** Life of a gs_runtime: open -> (calls) -> stop -> close. `stopped` turns
** every entry point away (GS_ECLOSED); `inflight` counts the calls inside,
** so stop can wait for them to leave before close frees anything.
*/
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lauxlib.h"
#include "lualib.h"

#include "genserver.h"
#include "core/ids.h"
#include "core/wire.h"
#include "core/internal.h"
#include "api/api.h"
#include "api_int.h"

/* ------------------------------------------------------------- errors */

/* gs_errmsg's text: tls_err, or the thread's scratch `err` buffer when it
** does not fit (a codec error names a path, which has no bound). */
static _Thread_local char tls_err[256];
static _Thread_local int tls_err_long;

int gs_version(void) { return GS_VERSION_NUM; }

/* The text is the ids layer's, so C and Lua print a pid alike. */
int gs_pid_format(gs_pid pid, char *buf, size_t size) {
  char text[GSI_ID_STRLEN];
  int n;
  if (pid == 0 || (buf == NULL && size > 0)) return GS_EINVAL;
  n = gsi_idstring(GSI_ID_PID, pid, text);
  if (size > 0) {
    size_t k = (size_t)n < size ? (size_t)n : size - 1;
    memcpy(buf, text, k);
    buf[k] = '\0';
  }
  return n;
}

const char *gs_strerror(int code) {
  switch (code) {
  case GS_OK: return "success";
  case GS_EINVAL: return "invalid argument";
  case GS_ENOMEM: return "out of memory";
  case GS_ENOPROC: return "no such process";
  case GS_ETIMEDOUT: return "timed out";
  case GS_ECLOSED: return "the runtime is stopped";
  case GS_ECALLSELF: return "a process cannot call or stop itself";
  case GS_EEXIT: return "the server exited (its exit reason is returned)";
  case GS_EENCODE: return "the value cannot be sent";
  case GS_EDECODE: return "the value received cannot be decoded";
  case GS_ELIMIT: return "process limit reached, or the runtime's threads cannot start";
  case GS_EALREADY: return "the name is already registered";
  case GS_EIGNORE: return "the server's init returned \"ignore\"";
  case GS_EKILLED: return "this thread's process was killed by an exit signal";
  case GS_ECONTEXT: return "not allowed on a worker thread of the runtime";
  case GS_ETYPE: return "the value has a type this function cannot return";
  case GS_EFULL: return "the server's mailbox is full";
  case GS_EBUSY: return "too late: the runtime's threads are running";
  default: return "unknown error code";
  }
}

const char *gs_errmsg(void) {
  return tls_err_long ? (const char *)gsi_scratch_get()->err.data : tls_err;
}

/* Record details for gs_errmsg and return code. A text too long for
** tls_err goes whole into the scratch buffer (cut short only when out of
** memory). */
int fail(int code, const char *fmt, ...) {
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(tls_err, sizeof tls_err, fmt, ap);
  va_end(ap);
  tls_err_long = 0;
  if (n >= (int)sizeof tls_err) {
    gsi_buf *e = &gsi_scratch_get()->err;
    e->len = 0;
    if (gsi_buf_reserve(e, (size_t)n + 1) == 0) {
      va_start(ap, fmt);
      vsnprintf((char *)e->data, (size_t)n + 1, fmt, ap);
      va_end(ap);
      tls_err_long = 1;
    }
  }
  return code;
}

int ok(void) {
  tls_err[0] = '\0';
  tls_err_long = 0;
  return GS_OK;
}

void gs_free(void *p) { free(p); }

/* ------------------------------------------------------------ runtime */

static const char BOUND_KEY = 'b'; /* registry of a host state: its gs_runtime */
static _Atomic uint64_t next_serial = 1;

/* The core's errors are the public codes (core.h): one dialect. */
_Static_assert(GSI_EINVAL == GS_EINVAL && GSI_ENOMEM == GS_ENOMEM &&
                   GSI_ENOPROC == GS_ENOPROC && GSI_ETIMEDOUT == GS_ETIMEDOUT &&
                   GSI_ECLOSED == GS_ECLOSED && GSI_ECALLSELF == GS_ECALLSELF &&
                   GSI_EEXIT == GS_EEXIT && GSI_EENCODE == GS_EENCODE &&
                   GSI_EDECODE == GS_EDECODE && GSI_ELIMIT == GS_ELIMIT &&
                   GSI_EALREADY == GS_EALREADY && GSI_EIGNORE == GS_EIGNORE &&
                   GSI_EKILLED == GS_EKILLED && GSI_ECONTEXT == GS_ECONTEXT &&
                   GSI_ETYPE == GS_ETYPE && GSI_EFULL == GS_EFULL &&
                   GSI_EBUSY == GS_EBUSY && GSI_OK == GS_OK,
               "gsi_err and GS_E* must map 1:1");

void gs_config_init(gs_config *cfg) {
  if (cfg == NULL) return;
  memset(cfg, 0, sizeof *cfg);
  cfg->max_processes = (1u << 22) - 1;
  cfg->max_depth = 200;
  cfg->max_message_size = (size_t)64 << 20;
  cfg->budget = 64;
}

static int check_config(const gs_config *c) {
  if (c->workers < 0 || c->workers > 1024)
    return fail(GS_EINVAL, "config: workers must be 0 (automatic) to 1024");
  if (c->max_processes > (1u << 30))
    return fail(GS_EINVAL, "config: max_processes must be 0 (default) to 2^30");
  if (c->max_depth < 0 || c->max_depth > GSI_CODEC_MAXDEPTH)
    return fail(GS_EINVAL, "config: max_depth must be 0 (default) to %d",
                GSI_CODEC_MAXDEPTH);
  if (c->max_message_size != 0 && c->max_message_size < 16)
    return fail(GS_EINVAL, "config: max_message_size must be 0 (default) or >= 16");
  if (c->budget < 0) return fail(GS_EINVAL, "config: budget must be >= 0");
  return 0;
}

/* Lua's own default package.path/cpath (with $LUA_PATH_5_4 / $LUA_PATH /
** ... applied), read from a throwaway state. */
static int read_default_paths(lua_State *S) {
  luaL_requiref(S, LUA_LOADLIBNAME, luaopen_package, 1);
  lua_getfield(S, -1, "path");
  lua_getfield(S, -2, "cpath");
  return 2;
}

#ifdef GS_LUADIR
static char *cat3(const char *a, const char *b, const char *c) {
  size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
  char *s = malloc(la + lb + lc + 1);
  if (s == NULL) return NULL;
  memcpy(s, a, la);
  memcpy(s + la, b, lb);
  memcpy(s + la + lb, c, lc + 1);
  return s;
}
#endif

/* `path` with its ";;" replaced by the default, as Lua does for LUA_PATH. */
static char *expand_path(const char *path, const char *dft) {
  const char *mark;
  size_t len;
  char *s, *q;
  if (path == NULL) return strdup(dft);
  if ((mark = strstr(path, ";;")) == NULL) return strdup(path);
  len = strlen(path);
  if ((s = malloc(len + strlen(dft) + 3)) == NULL) return NULL;
  q = s;
  if (mark > path) {
    memcpy(q, path, (size_t)(mark - path));
    q += mark - path;
    *q++ = ';';
  }
  strcpy(q, dft);
  q += strlen(dft);
  if (mark + 2 < path + len) {
    *q++ = ';';
    strcpy(q, mark + 2);
  } else {
    *q = '\0';
  }
  return s;
}

static int make_paths(gs_runtime *rt, const gs_config *cfg) {
  lua_State *S = luaL_newstate();
  char *dpath = NULL, *dcpath = NULL;
  int rc = GS_ENOMEM;
  if (S == NULL) return GS_ENOMEM;
  lua_pushcfunction(S, read_default_paths);
  if (lua_pcall(S, 0, 2, 0) == LUA_OK && lua_isstring(S, -2) && lua_isstring(S, -1)) {
#ifdef GS_LUADIR
    /* where `make install` put genserver's own Lua modules */
    const char *own = GS_LUADIR "/?.lua;" GS_LUADIR "/?/init.lua";
    if (strstr(lua_tostring(S, -2), own) == NULL)
      dpath = cat3(lua_tostring(S, -2), ";", own);
    else
      dpath = strdup(lua_tostring(S, -2));
#else
    dpath = strdup(lua_tostring(S, -2));
#endif
    dcpath = strdup(lua_tostring(S, -1));
  }
  lua_close(S);
  if (dpath != NULL && dcpath != NULL) {
    rt->path = expand_path(cfg->path, dpath);
    rt->cpath = expand_path(cfg->cpath, dcpath);
    if (rt->path != NULL && rt->cpath != NULL) rc = 0;
  }
  free(dpath);
  free(dcpath);
  return rc;
}

/* ------------------------------------------------------- the state hook */

static int hook_call(lua_State *L) {
  gs_runtime *rt = lua_touserdata(L, 1);
  lua_settop(L, 0);
  rt->hook(L, rt->hook_ud);
  return 0;
}

/* `require` of a state whose hook failed: the process cannot start. */
static int hook_failed(lua_State *L) {
  return luaL_error(L, "state hook failed: %s", lua_tostring(L, lua_upvalueindex(1)));
}

static int poison(lua_State *L) {
  if (lua_type(L, 1) != LUA_TSTRING) {
    lua_settop(L, 0);
    lua_pushliteral(L, "(error object is not a string)");
  }
  lua_pushcclosure(L, hook_failed, 1);
  lua_setglobal(L, "require");
  return 0;
}

/* The runtime's state hook (prun.c calls it before any user code): run
** the host's hook in protected mode. If it fails, the state's `require`
** raises its error, so the process ends at once with that reason (a
** server's body is loaded with require). */
static void state_hook(lua_State *L, void *ud) {
  gs_runtime *rt = ud;
  int top = lua_gettop(L);
  lua_pushcfunction(L, hook_call);
  lua_pushlightuserdata(L, rt);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    lua_pushcfunction(L, poison);
    lua_insert(L, -2);
    lua_pcall(L, 1, 0, 0); /* out of memory here: nothing more to do */
  }
  lua_settop(L, top);
}

/* Messages pushed so far: the dead processes' total plus every slot's
** counter (a slot keeps counting for its next process; gsi_proc_exit adds
** the count of the one that died to msgs_dead and resets it). */
static uint64_t messages_total(gsi_rt *c) {
  uint32_t used;
  uint64_t msgs = atomic_load(&c->msgs_dead);
  pthread_mutex_lock(&c->tbl_mu); /* guards `used` */
  used = c->used;
  pthread_mutex_unlock(&c->tbl_mu);
  for (uint32_t i = 1; i <= used; i++) {
    gsi_proc *p = gsi_proc_at(c, i);
    if (p != NULL) msgs += atomic_load_explicit(&p->msgs_in, memory_order_relaxed);
  }
  return msgs;
}

int gs_runtime_stats(gs_runtime *rt, gs_stats *st) {
  gsi_rt *c;
  size_t nf;
  /* no enter(): stats stay readable after gs_runtime_stop */
  if (rt == NULL || st == NULL) return fail(GS_EINVAL, "gs_runtime_stats: NULL argument");
  c = rt->core;
  memset(st, 0, sizeof *st);
  nf = atomic_load(&c->nforeign);
  st->workers = c->nworkers;
  st->started = atomic_load(&c->started);
  st->processes = gsi_rt_lua_procs(c);
  st->abandoned_states = atomic_load(&c->abandoned);
  st->foreign = nf;
  st->run_queue = gsi_runq_len(c);
  st->spawned = atomic_load(&c->spawned);
  st->messages = messages_total(c);
  return ok();
}

/* ---------------------------------------------------- open, stop, close */

/* gs_runtime_open with the hooks of the face above (lua/linit.c gives the
** binding's): the API adds its own state hook and its datum (the
** gs_runtime, which gsi_api_of finds again from the core). */
int gsi_api_open(gs_runtime **out, const gs_config *cfg, const gsi_face *face) {
  gs_config defaults;
  gsi_rt_config rc_cfg;
  gs_runtime *rt;
  int rc;
  if (out == NULL) return fail(GS_EINVAL, "gs_runtime_open: NULL result pointer");
  *out = NULL;
  if (cfg == NULL) {
    gs_config_init(&defaults);
    cfg = &defaults;
  }
  if ((rc = check_config(cfg)) != 0) return rc;
  if ((rt = calloc(1, sizeof *rt)) == NULL) return fail(GS_ENOMEM, "out of memory");
  rt->hook = cfg->state_hook;
  rt->hook_ud = cfg->state_hook_ud;
  memset(&rc_cfg, 0, sizeof rc_cfg);
  rc_cfg.workers = cfg->workers;
  rc_cfg.max_procs = cfg->max_processes;
  rc_cfg.max_depth = cfg->max_depth;
  rc_cfg.max_size = cfg->max_message_size;
  rc_cfg.budget = cfg->budget;
  if (face != NULL) rc_cfg.face = *face;
  rc_cfg.face.state_hook = rt->hook != NULL ? state_hook : NULL;
  rc_cfg.face.ud = rt; /* before any thread sees the core */
  if ((rc = make_paths(rt, cfg)) != 0 || (rt->core = gsi_rt_new(&rc_cfg)) == NULL) {
    free(rt->path);
    free(rt->cpath);
    free(rt);
    return fail(GS_ENOMEM, "out of memory");
  }
  if (pthread_key_create(&rt->key, thread_gone) != 0) {
    gsi_rt_free(rt->core);
    gsi_rt_destroy(rt->core);
    free(rt->path);
    free(rt->cpath);
    free(rt);
    return fail(GS_ELIMIT, "no thread-specific key left (too many runtimes open)");
  }
  rt->serial = atomic_fetch_add(&next_serial, 1);
  pthread_mutex_init(&rt->life_mu, NULL);
  *out = rt;
  return ok();
}

int gs_runtime_configure(gs_runtime *rt, const gs_config *cfg) {
  gsi_codec_limits lim;
  int rc, changed = 0;
  if (cfg == NULL) return fail(GS_EINVAL, "gs_runtime_configure: NULL config");
  if (cfg->path != NULL || cfg->cpath != NULL || cfg->state_hook != NULL ||
      cfg->state_hook_ud != NULL)
    return fail(GS_EINVAL, "config: path, cpath and the state hook are fixed at open");
  if ((rc = check_config(cfg)) != 0) return rc;
  if ((rc = enter(rt)) != 0) return rc;
  /* slot 0 is never used: n processes need n + 1 slots, and the process
  ** table cannot grow past what the runtime was opened for */
  if (cfg->max_processes > 0 &&
      (uint64_t)cfg->max_processes + 1 > (uint64_t)rt->core->nchunks_max * GSI_CHUNK - 1)
    return leave(rt, fail(GS_EINVAL, "config: max_processes must be at most %llu for this runtime",
                          (unsigned long long)rt->core->nchunks_max * GSI_CHUNK - 2));
  lim = *gsi_rt_limits(rt->core);
  if (cfg->max_depth > 0) lim.max_depth = cfg->max_depth, changed = 1;
  if (cfg->max_message_size > 0) lim.max_size = cfg->max_message_size, changed = 1;
  switch (gsi_rt_configure(rt->core, cfg->workers,
                           cfg->max_processes > 0 ? cfg->max_processes + 1 : 0,
                           changed ? &lim : NULL, cfg->budget)) {
  case GSI_OK: rc = ok(); break;
  case GSI_EBUSY: rc = fail(GS_EBUSY, "config: workers and max_processes must be set "
                                      "before the first process starts"); break;
  default: rc = fail(GS_ENOMEM, "out of memory");
  }
  return leave(rt, rc);
}

static size_t lua_procs(gsi_rt *c) { return gsi_rt_lua_procs(c); }

int gs_runtime_stop(gs_runtime *rt, int timeout_ms) {
  uint64_t ms, deadline;
  gsi_buf b;
  int rc = 0;
  if (rt == NULL) return fail(GS_EINVAL, "gs_runtime_stop: no runtime");
  if (own_worker(rt)) return fail(GS_ECONTEXT, "gs_runtime_stop: on a worker thread");
  if (timeout_ms < 0 && timeout_ms != GS_INFINITY)
    return fail(GS_EINVAL, "time-out must be >= 0 or GS_INFINITY");
  ms = timeout_ms == GS_INFINITY ? MS_INFINITE : (uint64_t)timeout_ms;
  deadline = gsi_now_ns() + ms * 1000000u;
  pthread_mutex_lock(&rt->life_mu);
  if (rt->stop_done) {
    pthread_mutex_unlock(&rt->life_mu);
    return ok();
  }
  /* shutting first: a process turned away below did not crash */
  gsi_rt_shutting(rt->core);
  atomic_store(&rt->stopped, 1); /* no call gets in any more */
  gsi_buf_init(&b);
  if (gsi_wire_msg_cstr(&b, "shutdown") != 0) rc = fail(GS_ENOMEM, "out of memory");
  /* every process gets "shutdown" (then "kill"); calls still inside see
  ** their servers die and leave; a process one of them started late is
  ** caught by the next round */
  while (rc == 0) {
    uint64_t now = gsi_now_ns();
    if (gsi_rt_stop_all(rt->core, b.data, b.len,
                        now < deadline ? (deadline - now) / 1000000u : 0) != 0) {
      rc = fail(GS_ETIMEDOUT, "a process did not stop in time");
      break;
    }
    while (atomic_load(&rt->inflight) > 0 && gsi_now_ns() < deadline) {
      struct timespec ts = {0, 200000};
      nanosleep(&ts, NULL);
    }
    if (atomic_load(&rt->inflight) > 0) {
      rc = fail(GS_ETIMEDOUT, "a call into the runtime did not return in time");
      break;
    }
    if (lua_procs(rt->core) == 0) break;
  }
  gsi_buf_free(&b);
  if (rc == 0) {
    /* Lua states bound to rt raise from now on ("shut down") */
    atomic_store(&rt->core->closed, 1);
    rt->stop_done = 1;
    rc = ok();
  }
  pthread_mutex_unlock(&rt->life_mu);
  return rc;
}

int gs_runtime_close(gs_runtime *rt, int timeout_ms) {
  int rc;
  if (rt == NULL) return fail(GS_EINVAL, "gs_runtime_close: no runtime");
  if ((rc = gs_runtime_stop(rt, timeout_ms)) != 0) return rc;
  /* the calling thread's foreign process goes with the table */
  gsi_foreign_reset(rt->core);
  if (tls_core == rt->core) tls_core = NULL;
  pthread_setspecific(rt->key, NULL);
  pthread_key_delete(rt->key);
  gsi_rt_free(rt->core);
  gsi_rt_destroy(rt->core);
  gsi_scratch_release();
  pthread_mutex_destroy(&rt->life_mu);
  free(rt->path);
  free(rt->cpath);
  free(rt);
  return ok();
}

/* ------------------------------------------------------ Lua host states */

gsi_rt *gsi_api_core(gs_runtime *rt) { return rt->core; }

gs_runtime *gsi_api_of(gsi_rt *core) { return core->face.ud; }

gs_runtime *gsi_host_api(lua_State *L) {
  gs_runtime *rt;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &BOUND_KEY);
  rt = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return rt;
}

/* A package searcher for genserver's own Lua modules ("genserver",
** "genserver.*") along the runtime's path (upvalue 1), so that a bound
** state finds them where the runtime's processes do, whatever its own
** package.path says. Other names are not its business. */
static int genserver_searcher(lua_State *L) {
  const char *name = luaL_checkstring(L, 1), *file;
  if (strcmp(name, "genserver") != 0 && strncmp(name, "genserver.", 10) != 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  lua_getglobal(L, LUA_LOADLIBNAME);
  if (lua_type(L, -1) != LUA_TTABLE || lua_getfield(L, -1, "searchpath") != LUA_TFUNCTION)
    return 0;
  lua_pushvalue(L, 1);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_call(L, 2, 2);
  if ((file = lua_tostring(L, -2)) == NULL) { /* not there: say where we looked */
    lua_pushfstring(L, "\n\t(genserver runtime path)%s", lua_tostring(L, -1));
    return 1;
  }
  if (luaL_loadfilex(L, file, NULL) != LUA_OK)
    return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", name, file,
                      lua_tostring(L, -1));
  lua_pushstring(L, file);
  return 2;
}

/* Protected part of gs_openlibs: 1 = rt. Returns true, or false if
** genserver is loaded in L for another runtime already. */
static int bind_state(lua_State *L) {
  gs_runtime *rt = lua_touserdata(L, 1);
  int loaded;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &BOUND_KEY);
  if (lua_touserdata(L, -1) == rt) { /* again: nothing to do */
    lua_pushboolean(L, 1);
    return 1;
  }
  if (!lua_isnil(L, -1)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  loaded = lua_type(L, -1) == LUA_TTABLE &&
           lua_getfield(L, -1, "genserver.core") != LUA_TNIL;
  if (loaded) { /* already opened for the default runtime */
    lua_pushboolean(L, 0);
    return 1;
  }
  /* this library's genserver.core, not a copy found on package.cpath */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  if (rt->core->face.open_core != NULL) {
    lua_pushcfunction(L, rt->core->face.open_core);
    lua_setfield(L, -2, "genserver.core");
  }
  lua_getglobal(L, LUA_LOADLIBNAME);
  if (lua_type(L, -1) == LUA_TTABLE && lua_getfield(L, -1, "searchers") == LUA_TTABLE) {
    lua_pushstring(L, rt->path);
    lua_pushcclosure(L, genserver_searcher, 1);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1); /* last: L's own path first */
  }
  lua_pushlightuserdata(L, rt);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &BOUND_KEY);
  lua_pushboolean(L, 1);
  return 1;
}

int gs_openlibs(gs_runtime *rt, lua_State *L) {
  int rc, top;
  if (L == NULL) return fail(GS_EINVAL, "gs_openlibs: NULL state");
  if ((rc = enter(rt)) != 0) return rc;
  top = lua_gettop(L);
  if (!lua_checkstack(L, 4)) return leave(rt, fail(GS_ENOMEM, "Lua stack overflow"));
  lua_pushcfunction(L, bind_state);
  lua_pushlightuserdata(L, rt);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) rc = fail(GS_ENOMEM, "out of memory");
  else if (!lua_toboolean(L, -1))
    rc = fail(GS_EINVAL, "gs_openlibs: genserver is already loaded in this "
                         "state for another runtime");
  else rc = ok();
  lua_settop(L, top);
  return leave(rt, rc);
}

/* --------------------------------------------------------- Lua bridge */

int gs_msg_push(gs_runtime *rt, lua_State *L, const gs_msg *m) {
  gsi_codec_limits lim = gsi_codec_default_limits;
  if (L == NULL || !gs_msg_complete(m)) return fail(GS_EINVAL, "gs_msg_push: bad argument");
  if (rt != NULL) lim = *gsi_rt_limits(rt->core);
  if (!lua_checkstack(L, 4)) return fail(GS_ENOMEM, "Lua stack overflow");
  if (gsi_decode(L, m->b.data, m->b.len, &lim) != 0) {
    int rc = fail(GS_EDECODE, "%s", lua_type(L, -1) == LUA_TSTRING
                                        ? lua_tostring(L, -1) : "cannot decode");
    lua_pop(L, 1);
    return rc;
  }
  return ok();
}

int gs_msg_from_lua(gs_runtime *rt, lua_State *L, int idx, gs_msg **out) {
  gsi_codec_limits lim = gsi_codec_default_limits;
  gs_msg *m;
  if (out != NULL) *out = NULL;
  if (L == NULL || out == NULL || lua_type(L, idx) == LUA_TNONE)
    return fail(GS_EINVAL, "gs_msg_from_lua: bad argument");
  if (rt != NULL) lim = *gsi_rt_limits(rt->core);
  if (!lua_checkstack(L, 4)) return fail(GS_ENOMEM, "Lua stack overflow");
  if ((m = gs_msg_new()) == NULL) return fail(GS_ENOMEM, "out of memory");
  m->b.len = 0;
  if (gsi_encode(L, idx, "value", &lim, &m->b) != 0) {
    int rc = fail(GS_EENCODE, "%s", lua_type(L, -1) == LUA_TSTRING
                                        ? lua_tostring(L, -1) : "cannot encode");
    lua_pop(L, 1); /* the codec's error string */
    gs_msg_free(m);
    return rc;
  }
  m->complete = 1;
  *out = m;
  return ok();
}
