/*
** c_host.c - a C program that embeds genserver.
**
** What it shows, in order:
**   1. A runtime is opened with a config: how many worker threads, where
**      the Lua modules of the servers are (cfg.path), and a STATE HOOK.
**   2. The state hook runs on every new server's lua_State before any of
**      its code: here it registers a global table `host` with two C
**      functions of this program, host.now() and host.log(msg). Every
**      server can call them (greeter.lua does).
**   3. A gen_server is started by module name ("greeter", the file
**      greeter.lua next to this program), with its init argument taken
**      from a host lua_State, and registered as "greeter".
**   4. Four host threads call it at the same time with plain C strings
**      (gs_call_str). Each thread becomes a "foreign process" of the
**      runtime on its first call; its calls block that thread only. When
**      the thread exits, its foreign process ends by itself.
**   5. The main thread casts, then asks for statistics with a structured
**      request built with the small C value API (gs_msg) and reads the
**      table it gets back with gs_read.
**   6. A host lua_State is bound to the runtime (gs_openlibs), so Lua code
**      of the host uses the very same servers through `require "genserver"`.
**   7. The server is stopped (its terminate runs), the runtime closed: all
**      threads joined, all memory freed.
**
** Build against an installed genserver (see the Makefile next to this
** file, and docs/embedding.md):
**   make install PREFIX=$HOME/gs                         # in the top directory
**   PKG_CONFIG_PATH=$HOME/gs/lib/pkgconfig make -C examples/c_host
**   examples/c_host/c_host
*/
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <genserver.h> /* includes lua.h */
#include <lauxlib.h>
#include <lualib.h>

#define NTHREADS 4
#define NCALLS 3

/* ----------------------------------------- what the host gives to Lua */

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER; /* one line at a time */
static struct timespec t0;

static double ms_since_start(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)(t.tv_sec - t0.tv_sec) * 1e3 + (double)(t.tv_nsec - t0.tv_nsec) / 1e6;
}

/* host.now() -> milliseconds since the host started */
static int host_now(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)ms_since_start());
  return 1;
}

/* host.log(msg): a line on the host's stdout. Called from worker threads,
** hence the lock. */
static int host_log(lua_State *L) {
  const char *msg = luaL_checkstring(L, 1);
  pthread_mutex_lock(&out_mu);
  printf("[lua] %s\n", msg);
  fflush(stdout);
  pthread_mutex_unlock(&out_mu);
  return 0;
}

/* The state hook: called on every new process state, on a worker thread,
** before any user code of that process runs. It must be thread-safe and
** must not wait. ud is cfg.state_hook_ud. */
static void state_hook(lua_State *L, void *ud) {
  static const luaL_Reg host_fns[] = {{"now", host_now}, {"log", host_log}, {NULL, NULL}};
  (void)ud;
  luaL_newlib(L, host_fns);
  lua_setglobal(L, "host");
}

/* -------------------------------------------------- the client threads */

typedef struct job {
  gs_runtime *rt;
  gs_pid greeter;
  int id;
} job;

static void *client(void *arg) {
  job *j = arg;
  for (int i = 1; i <= NCALLS; i++) {
    char req[64], *reply = NULL;
    size_t len = 0;
    int rc;
    snprintf(req, sizeof req, "hello %d from thread %d", i, j->id);
    rc = gs_call_str(j->rt, j->greeter, req, strlen(req), &reply, &len, 2000);
    pthread_mutex_lock(&out_mu);
    if (rc == GS_OK) printf("thread %d got: %s\n", j->id, reply);
    else printf("thread %d: call failed: %s (%s)\n", j->id, gs_strerror(rc), gs_errmsg());
    pthread_mutex_unlock(&out_mu);
    gs_free(reply);
  }
  return NULL; /* the thread's foreign process ends with the thread */
}

/* ------------------------------------------------------------------ main */

/* "<directory of this program>/?.lua;;" : greeter.lua is found next to the
** program; ";;" stands for Lua's default path, which also has the
** directory where `make install` put genserver's own Lua modules. */
static void make_path(const char *argv0, char *buf, size_t size) {
  const char *slash = strrchr(argv0, '/');
  int n = slash ? (int)(slash - argv0) : 1;
  snprintf(buf, size, "%.*s/?.lua;;", n, slash ? argv0 : ".");
}

static int fail(const char *what, int rc) {
  fprintf(stderr, "c_host: %s: %s (%s)\n", what, gs_strerror(rc), gs_errmsg());
  return 1;
}

int main(int argc, char **argv) {
  gs_config cfg;
  gs_runtime *rt;
  gs_start_opts opts = {0};
  gs_pid greeter;
  pthread_t th[NTHREADS];
  job jobs[NTHREADS];
  char path[PATH_MAX + 16];
  lua_State *L;
  int rc;
  (void)argc;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  if (gs_version() != GS_VERSION_NUM) {
    fprintf(stderr, "c_host: compiled for genserver %d, running with %d\n", GS_VERSION_NUM,
            gs_version());
    return 1;
  }

  /* 1. the runtime */
  gs_config_init(&cfg);
  cfg.workers = 2;
  make_path(argv[0], path, sizeof path);
  cfg.path = path;
  cfg.state_hook = state_hook; /* 2. every server gets `host` */
  cfg.state_hook_ud = NULL;
  if ((rc = gs_runtime_open(&rt, &cfg)) != GS_OK) return fail("gs_runtime_open", rc);

  /* 3. a server, its init argument from a host Lua state */
  L = luaL_newstate();
  luaL_openlibs(L);
  lua_pushliteral(L, "Hello");   /* greeter's init(prefix) */
  opts.name = "greeter";
  if ((rc = gs_start(rt, "greeter", L, &opts, &greeter)) != GS_OK) {
    fprintf(stderr, "c_host: start: %s\n", luaL_tolstring(L, -1, NULL)); /* the reason */
    return fail("gs_start", rc);
  }
  lua_settop(L, 0); /* gs_start left the new pid there */
  printf("started greeter as pid %llu\n", (unsigned long long)greeter);

  /* 4. four threads call it at once */
  for (int i = 0; i < NTHREADS; i++) {
    jobs[i] = (job){rt, greeter, i + 1};
    pthread_create(&th[i], NULL, client, &jobs[i]);
  }
  for (int i = 0; i < NTHREADS; i++) pthread_join(th[i], NULL);

  /* 5. a cast, then { "stats" } as a gs_msg; the reply is a table */
  gs_cast_str(rt, greeter, "all threads done", 16);
  {
    gs_msg *req = gs_msg_new(), *reply = NULL;
    gs_reader r;
    gs_item t, k, v;
    gs_msg_table(req, 1, 0);   /* { "stats" }: one array value, no hash part */
    gs_msg_string(req, "stats", 5);
    rc = gs_call_msg(rt, greeter, req, &reply, 2000);
    if (rc != GS_OK) return fail("gs_call_msg", rc);
    gs_reader_init(&r, reply);
    gs_read(&r, &t);           /* the table's head: t.narr, t.nhash */
    for (size_t i = 0; i < t.narr; i++) gs_read_skip(&r);
    for (size_t i = 0; i < t.nhash; i++) {
      gs_read(&r, &k);
      gs_read(&r, &v);
      if (k.type == GS_TSTRING && v.type == GS_TINTEGER)
        printf("stats: %.*s = %lld\n", (int)k.len, k.string, (long long)v.integer);
    }
    gs_msg_free(req);
    gs_msg_free(reply);
  }

  /* 6. the host's own Lua code, on the same runtime */
  if ((rc = gs_openlibs(rt, L)) != GS_OK) return fail("gs_openlibs", rc);
  if (luaL_dostring(L, "local gs = require 'genserver'\n"
                       "local s = gs.call('greeter', { 'stats' })\n"
                       "return ('Lua sees %d calls, through pid %s'):format(s.calls,\n"
                       "  tostring(gs.whereis('greeter')))") != LUA_OK) {
    fprintf(stderr, "c_host: %s\n", lua_tostring(L, -1));
    return 1;
  }
  printf("%s\n", lua_tostring(L, -1));
  lua_settop(L, 0);

  /* 7. stop the server (terminate runs), close everything */
  if ((rc = gs_stop(rt, greeter, "normal", 2000)) != GS_OK) return fail("gs_stop", rc);
  if ((rc = gs_runtime_close(rt, 5000)) != GS_OK) return fail("gs_runtime_close", rc);
  lua_close(L); /* bound to the closed runtime: fine to close, not to use */
  printf("done\n");
  return 0;
}
