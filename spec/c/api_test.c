/*
** api_test.c - the public C API (csrc/genserver.h, csrc/api/api.c): runtime
** life cycle, the state hook, start/call/cast/send/stop/whereis through a
** host lua_State, gs_msg and C strings, calls from many threads at once,
** every error code path, bound host states (gs_openlibs), and opening and
** closing runtimes many times in one process. Prints TAP; exits 0 iff every
** check passed.
**
** `make test CTESTS=spec/c/api_test.c` builds and runs it (with LUA_PATH
** pointing at the in-tree lua/ directory). By hand, from the repository
** root, after `make`:
**   gcc -std=c11 -D_GNU_SOURCE -g -Icsrc -I/usr/include/lua5.4 -o /tmp/api_test \
**       spec/c/api_test.c build/libgenserver.a -llua5.4 -lpthread -lm
**   LUA_PATH='lua/?.lua;lua/?/init.lua;;' /tmp/api_test
**   LUA_PATH='lua/?.lua;lua/?/init.lua;;' API_TEST_CYCLES=10 \
**       valgrind --leak-check=full --error-exitcode=1 /tmp/api_test
**
** The servers it starts are Lua modules embedded below, which the state
** hook puts into each new state's package.preload: the hook is under test
** too, and the test needs no files.
*/
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

#include "genserver.h"

/* ------------------------------------------------------------- TAP */

static int ntest, nfail;
static pthread_mutex_t tap_mu = PTHREAD_MUTEX_INITIALIZER;

static int check(int ok, const char *fmt, ...) {
  char msg[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  for (char *q = msg; *q; q++) /* one TAP line, whatever the message */
    if (*q == '\n' || *q == '\t') *q = ' ';
  pthread_mutex_lock(&tap_mu);
  printf("%sok %d - %s\n", ok ? "" : "not ", ++ntest, msg);
  if (!ok) {
    nfail++;
    printf("#   gs_errmsg on this thread: %s\n", gs_errmsg());
  }
  fflush(stdout);
  pthread_mutex_unlock(&tap_mu);
  return ok;
}

static void diag(const char *fmt, ...) {
  va_list ap;
  printf("# ");
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
  fflush(stdout);
}

/* check that rc == want, naming both */
#define CHECK_RC(rc, want, ...) \
  check_rc((rc), (want), #want, __VA_ARGS__)

static int check_rc(int rc, int want, const char *wname, const char *fmt, ...) {
  char what[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  if (rc == want) return check(1, "%s: %s", what, wname);
  return check(0, "%s: %s expected, got %d (%s)", what, wname, rc, gs_strerror(rc));
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* ------------------------------------------------- the test's servers */

/* A server that does a bit of everything the tests need. init(arg):
** "ignore" | "stop" | "crash" | { sleep = ms } | anything (kept as
** state.start). */
static const char SRV_LUA[] =
  "local process = require 'genserver.process'\n"
  "local gs = require 'genserver'\n"
  "local M = {}\n"
  "function M.init(arg)\n"
  "  if arg == 'ignore' then return 'ignore' end\n"
  "  if arg == 'stop' then return 'stop', 'bad_init' end\n"
  "  if arg == 'crash' then error('init boom') end\n"
  "  if type(arg) == 'table' and arg.sleep then process.sleep(arg.sleep) end\n"
  "  return 'ok', { count = 0, casts = 0, infos = 0, start = arg }\n"
  "end\n"
  "function M.handle_call(req, from, s)\n"
  "  if req == 'ping' then return 'reply', 'pong', s end\n"
  "  if req == 'get' then return 'reply', s.count, s end\n"
  "  if req == 'start' then return 'reply', s.start, s end\n"
  "  if req == 'casts' then return 'reply', s.casts, s end\n"
  "  if req == 'infos' then return 'reply', s.infos, s end\n"
  "  if req == 'half' then return 'reply', 2.5, s end\n"
  "  if req == 'yes' then return 'reply', true, s end\n"
  "  if req == 'nothing' then return 'reply', nil, s end\n"
  "  if req == 'table' then return 'reply', { 1, 'two', x = 'y', n = { true } }, s end\n"
  "  if req == 'module' then return 'reply', M, s end\n"
  "  if req == 'crash' then error('call boom') end\n"
  "  if req == 'hook' then return 'reply', host.add(2, 3) .. ':' .. host.tag, s end\n"
  "  if req == 'cyclic' then\n"
  "    local a = s.start\n"
  "    return 'reply', type(a) == 'table' and a.self == a and a.list[2] == a.list[1], s\n"
  "  end\n"
  "  if type(req) == 'table' then\n"
  "    if req[1] == 'add' then s.count = s.count + req[2]; return 'reply', s.count, s end\n"
  "    if req[1] == 'echo' then return 'reply', req[2], s end\n"
  "    if req[1] == 'sleep' then process.sleep(req[2]); return 'reply', 'slept', s end\n"
  "    if req[1] == 'c_call' then return 'reply', host.c_call(req[2]), s end\n"
  "    if req[1] == 'c_cast' then return 'reply', host.c_cast(req[2]), s end\n"
  "    if req[1] == 'block' then host.block(); return 'reply', 'unblocked', s end\n"
  "  end\n"
  "  return 'reply', nil, s\n"
  "end\n"
  "function M.handle_cast(msg, s)\n"
  "  if type(msg) == 'table' and msg[1] == 'add' then s.count = s.count + msg[2]\n"
  "  elseif type(msg) == 'table' and msg[1] == 'nap' then process.sleep(msg[2])\n"
  "  elseif type(msg) == 'table' and msg[1] == 'kill' then process.exit(msg[2], msg[3])\n"
  "  else s.casts = s.casts + 1 end\n"
  "  return 'noreply', s\n"
  "end\n"
  "function M.handle_info(msg, s)\n"
  "  s.infos = s.infos + 1\n"
  "  return 'noreply', s\n"
  "end\n"
  "function M.terminate(reason, s)\n"
  "  if s.start == 'bad_terminate' then error('terminate boom') end\n"
  "end\n"
  "return M\n";

/* ----------------------------------------------------------- the hook */

typedef struct hook_ctx {
  const char *tag;
  gs_runtime *rt;           /* set after open */
  _Atomic int calls;
  _Atomic int fail;         /* make the hook raise */
  pthread_mutex_t mu;       /* host.block() waits here until released */
  pthread_cond_t cv;
  int blocked, released;
} hook_ctx;

static int h_add(lua_State *L) {
  lua_pushinteger(L, luaL_checkinteger(L, 1) + luaL_checkinteger(L, 2));
  return 1;
}

static hook_ctx *ctx_of(lua_State *L) { return lua_touserdata(L, lua_upvalueindex(1)); }

/* host.c_call(pid): a waiting call from a worker thread: GS_ECONTEXT */
static int h_c_call(lua_State *L) {
  hook_ctx *c = ctx_of(L);
  char *reply = NULL;
  int rc = gs_call_str(c->rt, (gs_pid)luaL_checkinteger(L, 1), "ping", 4, &reply, NULL, 100);
  gs_free(reply);
  lua_pushinteger(L, rc);
  return 1;
}

/* host.c_cast(pid): a cast from a worker thread: fine */
static int h_c_cast(lua_State *L) {
  hook_ctx *c = ctx_of(L);
  lua_pushinteger(L, gs_cast_str(c->rt, (gs_pid)luaL_checkinteger(L, 1), "x", 1));
  return 1;
}

/* host.block(): wait until the test releases it (a process stuck in C) */
static int h_block(lua_State *L) {
  hook_ctx *c = ctx_of(L);
  pthread_mutex_lock(&c->mu);
  c->blocked = 1;
  pthread_cond_broadcast(&c->cv);
  while (!c->released) pthread_cond_wait(&c->cv, &c->mu);
  pthread_mutex_unlock(&c->mu);
  return 0;
}

static void test_hook(lua_State *L, void *ud) {
  hook_ctx *c = ud;
  static const luaL_Reg fns[] = {{"add", h_add}, {"c_call", h_c_call},
                                 {"c_cast", h_c_cast}, {"block", h_block},
                                 {NULL, NULL}};
  atomic_fetch_add(&c->calls, 1);
  if (atomic_load(&c->fail)) luaL_error(L, "hook says no");
  luaL_newlibtable(L, fns);
  lua_pushlightuserdata(L, c);
  luaL_setfuncs(L, fns, 1);
  lua_pushstring(L, c->tag);
  lua_setfield(L, -2, "tag");
  lua_setglobal(L, "host");
  /* the test's server module, by name */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  if (luaL_loadbuffer(L, SRV_LUA, sizeof SRV_LUA - 1, "=api_srv") != LUA_OK) lua_error(L);
  lua_setfield(L, -2, "api_srv");
  lua_pop(L, 1);
}

static void ctx_init(hook_ctx *c, const char *tag) {
  memset(c, 0, sizeof *c);
  c->tag = tag;
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
}

static void ctx_free(hook_ctx *c) {
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
}

static int open_rt(gs_runtime **rt, hook_ctx *c, int workers) {
  gs_config cfg;
  int rc;
  gs_config_init(&cfg);
  cfg.workers = workers;
  cfg.state_hook = test_hook;
  cfg.state_hook_ud = c;
  rc = gs_runtime_open(rt, &cfg);
  if (rc == 0) c->rt = *rt;
  return rc;
}

/* Run a chunk in L, leaving its results (a failure is a failed check). */
static void lua_do(lua_State *L, const char *chunk) {
  if (luaL_dostring(L, chunk) != LUA_OK) {
    check(0, "Lua chunk failed: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

/* A host state with the standard libraries. */
static lua_State *host_state(void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  return L;
}

/* gs_call_str with a zero-terminated request; returns the reply (caller
** frees) or NULL, *rc set. */
static char *call_s(gs_runtime *rt, gs_pid pid, const char *req, int *rc, int ms) {
  char *reply = NULL;
  *rc = gs_call_str(rt, pid, req, strlen(req), &reply, NULL, ms);
  return reply;
}

static int reply_is(gs_runtime *rt, gs_pid pid, const char *req, const char *want) {
  int rc;
  char *r = call_s(rt, pid, req, &rc, 5000);
  int ok = rc == 0 && r != NULL && strcmp(r, want) == 0;
  if (!ok) diag("call %s -> rc %d (%s), reply %s", req, rc, gs_strerror(rc), r ? r : "NULL");
  gs_free(r);
  return ok;
}

static gs_pid start_srv(gs_runtime *rt, const char *name) {
  gs_start_opts o = {0};
  gs_pid pid = 0;
  int rc;
  o.name = name;
  rc = gs_start_msg(rt, "api_srv", NULL, &o, &pid, NULL);
  if (rc != 0) diag("start_srv: %d %s (%s)", rc, gs_strerror(rc), gs_errmsg());
  return pid;
}

__attribute__((unused)) static size_t foreign_count(gs_runtime *rt) {
  gs_stats st;
  gs_runtime_stats(rt, &st);
  return st.foreign;
}

/* --------------------------------------------------- 1. basics, config */

static void t_basics(void) {
  int distinct = 1;
  check(gs_version() == GS_VERSION_NUM, "gs_version() matches the header (%d)", gs_version());
  for (int a = -1; a >= -17; a--) {
    if (strcmp(gs_strerror(a), "unknown error code") == 0) distinct = 0;
    for (int b = a - 1; b >= -17; b--)
      if (strcmp(gs_strerror(a), gs_strerror(b)) == 0) distinct = 0;
  }
  check(distinct, "gs_strerror explains every code, each differently");
  check(strcmp(gs_strerror(-99), "unknown error code") == 0, "gs_strerror of an unknown code");
  check(strcmp(gs_strerror(GS_OK), "success") == 0, "gs_strerror(GS_OK)");
  {
    char buf[GS_PID_STRLEN];
    gs_pid big = ((gs_pid)UINT32_MAX << 32) | UINT32_MAX;
    check(gs_pid_format(((gs_pid)7 << 32) | 2, buf, sizeof buf) == 7 &&
          strcmp(buf, "<0.2.7>") == 0, "gs_pid_format: <0.INDEX.GEN> (%s)", buf);
    check(gs_pid_format(big, buf, sizeof buf) == 25 &&
          strcmp(buf, "<0.4294967295.4294967295>") == 0, "GS_PID_STRLEN holds the longest pid");
    check(gs_pid_format(0, buf, sizeof buf) == GS_EINVAL, "gs_pid_format(0) is GS_EINVAL");
    check(gs_pid_format(2, NULL, 8) == GS_EINVAL, "gs_pid_format(pid, NULL, 8) is GS_EINVAL");
  }
}

static void t_config(void) {
  gs_config cfg;
  gs_runtime *rt = (gs_runtime *)&cfg; /* must be reset to NULL on failure */
  gs_config_init(&cfg);
  check(cfg.workers == 0 && cfg.max_depth == 200 && cfg.budget == 64 &&
            cfg.max_message_size == (size_t)64 << 20 && cfg.path == NULL &&
            cfg.state_hook == NULL,
        "gs_config_init fills the defaults");
  cfg.workers = 5000;
  CHECK_RC(gs_runtime_open(&rt, &cfg), GS_EINVAL, "open with workers = 5000");
  check(rt == NULL, "a failed open leaves *rt NULL");
  gs_config_init(&cfg);
  cfg.max_depth = 5000;
  CHECK_RC(gs_runtime_open(&rt, &cfg), GS_EINVAL, "open with max_depth = 5000");
  gs_config_init(&cfg);
  cfg.max_message_size = 3;
  CHECK_RC(gs_runtime_open(&rt, &cfg), GS_EINVAL, "open with max_message_size = 3");
  gs_config_init(&cfg);
  cfg.workers = -1;
  CHECK_RC(gs_runtime_open(&rt, &cfg), GS_EINVAL, "open with workers = -1");
  CHECK_RC(gs_runtime_open(NULL, NULL), GS_EINVAL, "open with no result pointer");
  CHECK_RC(gs_runtime_open(&rt, NULL), GS_OK, "open with the defaults (cfg NULL)");
  CHECK_RC(gs_runtime_close(rt, 1000), GS_OK, "close a runtime that never started");
  CHECK_RC(gs_runtime_close(NULL, 1000), GS_EINVAL, "close(NULL)");
  CHECK_RC(gs_runtime_stop(NULL, 1000), GS_EINVAL, "stop(NULL)");
}

/* Settings of an open runtime: 0 fields stay; workers and max_processes
** only before the threads start. */
static void t_configure(void) {
  gs_runtime *rt;
  gs_config cfg;
  gs_stats st;
  gs_msg *deep = gs_msg_new();
  gs_pid me, pid;
  hook_ctx c;
  ctx_init(&c, "configure");
  if (!check(open_rt(&rt, &c, 0) == GS_OK, "open a runtime to configure")) return;
  memset(&cfg, 0, sizeof cfg);
  cfg.workers = 2;
  cfg.max_depth = 5;
  CHECK_RC(gs_runtime_configure(rt, &cfg), GS_OK, "configure workers and max_depth");
  gs_runtime_stats(rt, &st);
  check(st.workers == 2 && !st.started, "stats: 2 workers, not started");
  for (int i = 0; i < 8; i++) gs_msg_table(deep, 1, 0);
  gs_msg_nil(deep);
  gs_self(rt, &me);
  CHECK_RC(gs_send_msg(rt, me, deep), GS_EENCODE, "a message deeper than max_depth 5");
  memset(&cfg, 0, sizeof cfg);
  cfg.max_depth = 50;
  CHECK_RC(gs_runtime_configure(rt, &cfg), GS_OK, "configure max_depth 50 alone");
  CHECK_RC(gs_send_msg(rt, me, deep), GS_OK, "... the message goes now");
  gs_runtime_stats(rt, &st);
  check(st.workers == 2 && st.messages == 1, "... workers as they were, 1 message (got %llu)",
        (unsigned long long)st.messages);
  memset(&cfg, 0, sizeof cfg);
  cfg.path = "./?.lua";
  CHECK_RC(gs_runtime_configure(rt, &cfg), GS_EINVAL, "the path is fixed at open");
  memset(&cfg, 0, sizeof cfg);
  cfg.max_processes = 1u << 30;
  CHECK_RC(gs_runtime_configure(rt, &cfg), GS_EINVAL, "max_processes past the table");
  CHECK_RC(gs_runtime_configure(rt, NULL), GS_EINVAL, "configure(NULL config)");
  CHECK_RC(gs_start_msg(rt, "api_srv", NULL, NULL, &pid, NULL), GS_OK, "start a server");
  memset(&cfg, 0, sizeof cfg);
  cfg.workers = 3;
  CHECK_RC(gs_runtime_configure(rt, &cfg), GS_EBUSY, "workers once the threads run");
  memset(&cfg, 0, sizeof cfg);
  cfg.max_processes = 10;
  CHECK_RC(gs_runtime_configure(rt, &cfg), GS_EBUSY, "max_processes once the threads run");
  memset(&cfg, 0, sizeof cfg);
  cfg.budget = 10;
  cfg.max_message_size = 1 << 20;
  CHECK_RC(gs_runtime_configure(rt, &cfg), GS_OK, "budget and max_message_size at any time");
  gs_runtime_stats(rt, &st);
  check(st.workers == 2, "still 2 workers");
  gs_msg_free(deep);
  gs_runtime_close(rt, 2000);
  ctx_free(&c);
  CHECK_RC(gs_runtime_configure(NULL, &cfg), GS_EINVAL, "configure(NULL runtime)");
}

/* ----------------------------------------------------- 2. gs_msg values */

static void t_msg(void) {
  gs_msg *m = gs_msg_new(), *back = NULL;
  gs_reader r;
  gs_item it;
  char *d;
  lua_State *L = host_state();
  check(m != NULL && !gs_msg_complete(m), "a new gs_msg is empty");
  gs_msg_table(m, 2, 2);
  gs_msg_string(m, "add", 3);
  gs_msg_integer(m, 5);
  gs_msg_string(m, "from", 4);
  gs_msg_string(m, "host", 4);
  CHECK_RC(gs_msg_nil(m), GS_EINVAL, "nil as a table key is refused");
  CHECK_RC(gs_msg_number(m, 0.0 / 0.0), GS_EINVAL, "NaN as a table key is refused");
  gs_msg_string(m, "list", 4);
  check(!gs_msg_complete(m), "a table is not whole before its last value");
  gs_msg_table(m, 3, 0);
  gs_msg_number(m, 1.5);
  gs_msg_boolean(m, 0);
  gs_msg_integer(m, -1000000);
  check(gs_msg_complete(m), "the table is whole after its last value");
  CHECK_RC(gs_msg_integer(m, 1), GS_EINVAL, "appending to a whole value");
  d = gs_msg_describe(m);
  check(d && strcmp(d, "{\"add\", 5, from = \"host\", list = {1.5, false, -1000000}}") == 0,
        "gs_msg_describe: %s", d ? d : "NULL");
  gs_free(d);
  gs_reader_init(&r, m);
  check(gs_read(&r, &it) == 0 && it.type == GS_TTABLE && it.narr == 2 && it.nhash == 2,
        "gs_read: the table head");
  check(gs_read(&r, &it) == 0 && it.type == GS_TSTRING && it.len == 3 &&
            memcmp(it.string, "add", 3) == 0, "gs_read: a string");
  check(gs_read(&r, &it) == 0 && it.type == GS_TINTEGER && it.integer == 5, "gs_read: an integer");
  check(gs_read_skip(&r) == 0 && gs_read_skip(&r) == 0, "gs_read_skip: a key and its value");
  check(gs_read(&r, &it) == 0 && it.type == GS_TSTRING, "gs_read: the next key");
  check(gs_read_skip(&r) == 0, "gs_read_skip: a whole nested table");
  CHECK_RC(gs_read(&r, &it), GS_EDECODE, "gs_read past the end");
  /* Lua round trip */
  CHECK_RC(gs_msg_push(NULL, L, m), GS_OK, "gs_msg_push into a plain state");
  check(lua_type(L, -1) == LUA_TTABLE && (lua_getfield(L, -1, "from"), 1) &&
            strcmp(lua_tostring(L, -1), "host") == 0, "the pushed table has its fields");
  lua_settop(L, 0);
  lua_do(L, "local t = { 'a' }; t.self = t; t[2] = t; return t");
  CHECK_RC(gs_msg_from_lua(NULL, L, -1, &back), GS_OK, "gs_msg_from_lua: a cyclic table");
  check(lua_gettop(L) == 1, "gs_msg_from_lua leaves the stack as it was");
  d = gs_msg_describe(back);
  check(d && strcmp(d, "{\"a\", {...}, self = {...}}") == 0, "a cycle describes as {...}: %s",
        d ? d : "NULL");
  gs_free(d);
  gs_reader_init(&r, back);
  gs_read(&r, &it);
  gs_read(&r, &it);
  check(gs_read(&r, &it) == 0 && it.type == GS_TBACKREF && it.object == 1,
        "gs_read: a back-reference to the table itself");
  gs_msg_free(back);
  lua_settop(L, 0);
  lua_newuserdatauv(L, 8, 0);
  CHECK_RC(gs_msg_from_lua(NULL, L, -1, &back), GS_EENCODE, "gs_msg_from_lua: a userdata");
  check(back == NULL && lua_gettop(L) == 1 && strstr(gs_errmsg(), "userdata"),
        "... with the codec's message: %s", gs_errmsg());
  lua_settop(L, 0);
  /* a long path (each key is quoted whole up to 64 bytes) */
  lua_do(L, "local t = { io.stdout } for _ = 1, 6 do t = { [string.rep('k', 60)] = t } end "
            "return t");
  CHECK_RC(gs_msg_from_lua(NULL, L, -1, &back), GS_EENCODE, "a userdata under a long key");
  {
    const char *e = gs_errmsg();
    size_t n = strlen(e);
    const char *tail = "cannot send a userdata";
    check(n > 300 && strcmp(e + n - strlen(tail), tail) == 0 &&
              strncmp(e, "value.kkk", 9) == 0,
          "gs_errmsg keeps a long message whole (%zu bytes)", n);
  }
  gs_msg_reset(m);
  check(!gs_msg_complete(m) && gs_msg_string(m, "x", 1) == 0 && gs_msg_complete(m),
        "gs_msg_reset: build another value");
  gs_msg_free(m);
  gs_msg_free(NULL);
  lua_close(L);
}

/* -------------------------------------------- 3. start, in every flavour */

static void t_start(gs_runtime *rt, hook_ctx *c) {
  lua_State *L = host_state();
  gs_start_opts o = {0};
  gs_pid pid = 0, pid2 = 0, holder = 0;
  gs_msg *arg = gs_msg_new(), *reason = NULL;
  char *d;
  int before = atomic_load(&c->calls), rc;

  lua_pushinteger(L, 42);
  rc = gs_start(rt, "api_srv", L, NULL, &pid);
  CHECK_RC(rc, GS_OK, "gs_start with the init argument from a host state");
  check(pid != 0 && lua_gettop(L) == 1 && luaL_testudata(L, 1, "genserver.pid") != NULL,
        "the argument was replaced by the pid");
  check(reply_is(rt, pid, "start", "42"), "init got the argument");
  check(atomic_load(&c->calls) > before, "the state hook ran for the new server");
  lua_settop(L, 0);

  CHECK_RC(gs_start(rt, "api_srv", NULL, NULL, &pid2), GS_OK, "gs_start with L = NULL");
  {
    char *r = NULL;
    size_t n = 7;
    rc = gs_call_str(rt, pid2, "start", 5, &r, &n, 1000);
    check(rc == 0 && r == NULL && n == 0, "gs_call_str: a nil reply is NULL, length 0");
  }

  /* names */
  gs_msg_string(arg, "named", 5);
  o.name = "api_named";
  CHECK_RC(gs_start_msg(rt, "api_srv", arg, &o, &pid, &reason), GS_OK, "gs_start_msg with a name");
  check(reason == NULL, "no reason on success");
  {
    gs_pid w = 0;
    CHECK_RC(gs_whereis(rt, "api_named", &w), GS_OK, "gs_whereis finds it");
    check(w == pid, "... the same pid");
  }
  CHECK_RC(gs_start_msg(rt, "api_srv", arg, &o, &holder, &reason), GS_EALREADY,
           "gs_start with a name already taken");
  check(holder == pid, "GS_EALREADY gives the holder's pid");
  d = gs_msg_describe(reason);
  check(d && strncmp(d, "{already_started = <0.", 22) == 0, "... and the reason %s", d ? d : "NULL");
  gs_free(d);
  gs_msg_free(reason);
  lua_pushliteral(L, "again");
  CHECK_RC(gs_start(rt, "api_srv", L, &o, &holder), GS_EALREADY, "the same through a host state");
  check(lua_gettop(L) == 1 && lua_type(L, 1) == LUA_TTABLE, "... pushes the reason table");
  lua_settop(L, 0);

  /* init's other outcomes */
  lua_pushliteral(L, "ignore");
  CHECK_RC(gs_start(rt, "api_srv", L, NULL, &pid2), GS_EIGNORE, "init returns \"ignore\"");
  check(pid2 == 0 && lua_gettop(L) == 1 && lua_isnil(L, 1), "... no pid, nil pushed");
  lua_settop(L, 0);
  lua_pushliteral(L, "stop");
  CHECK_RC(gs_start(rt, "api_srv", L, NULL, &pid2), GS_EEXIT, "init returns \"stop\"");
  check(lua_type(L, 1) == LUA_TSTRING && strcmp(lua_tostring(L, 1), "bad_init") == 0,
        "... the reason is pushed: %s", lua_tostring(L, 1));
  lua_settop(L, 0);
  gs_msg_reset(arg);
  gs_msg_string(arg, "crash", 5);
  CHECK_RC(gs_start_msg(rt, "api_srv", arg, NULL, &pid2, &reason), GS_EEXIT, "init crashes");
  d = gs_msg_describe(reason);
  check(d && strstr(d, "init boom") && strstr(d, "traceback"), "... reason { error, traceback }");
  gs_free(d);
  gs_msg_free(reason);
  check(strstr(gs_errmsg(), "init boom") != NULL, "... gs_errmsg has the error: %s", gs_errmsg());
  CHECK_RC(gs_start_msg(rt, "no.such.module", NULL, NULL, &pid2, &reason), GS_EEXIT,
           "a module that does not exist");
  d = gs_msg_describe(reason);
  check(d && strstr(d, "no.such.module"), "... the reason names it");
  gs_free(d);
  gs_msg_free(reason);

  /* init too slow: killed, its name released before gs_start returns */
  gs_msg_reset(arg);
  gs_msg_table(arg, 0, 1);
  gs_msg_string(arg, "sleep", 5);
  gs_msg_integer(arg, 2000);
  o.name = "api_slow";
  o.timeout_ms = 50;
  CHECK_RC(gs_start_msg(rt, "api_srv", arg, &o, &pid2, NULL), GS_ETIMEDOUT,
           "init longer than opts.timeout_ms");
  CHECK_RC(gs_whereis(rt, "api_slow", &pid2), GS_ENOPROC, "... its name is free at once");

  /* bad arguments */
  o.name = "";
  CHECK_RC(gs_start_msg(rt, "api_srv", NULL, &o, &pid2, NULL), GS_EINVAL, "an empty name");
  {
    char big[300];
    memset(big, 'n', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    o.name = big;
    CHECK_RC(gs_start_msg(rt, "api_srv", NULL, &o, &pid2, NULL), GS_EINVAL, "a 299-byte name");
  }
  o.name = NULL;
  o.overflow = 7;
  CHECK_RC(gs_start_msg(rt, "api_srv", NULL, &o, &pid2, NULL), GS_EINVAL, "a bad overflow policy");
  o.overflow = 0;
  o.timeout_ms = -3;
  CHECK_RC(gs_start_msg(rt, "api_srv", NULL, &o, &pid2, NULL), GS_EINVAL, "timeout_ms = -3");
  CHECK_RC(gs_start_msg(rt, NULL, NULL, NULL, &pid2, NULL), GS_EINVAL, "no module name");
  CHECK_RC(gs_start_msg(NULL, "api_srv", NULL, NULL, &pid2, NULL), GS_EINVAL, "no runtime");
  CHECK_RC(gs_start(rt, "api_srv", L, NULL, &pid2), GS_EINVAL, "an empty host stack");
  gs_msg_reset(arg);
  gs_msg_table(arg, 1, 0);
  CHECK_RC(gs_start_msg(rt, "api_srv", arg, NULL, &pid2, NULL), GS_EINVAL,
           "an incomplete gs_msg as the argument");
  lua_pushthread(L);
  CHECK_RC(gs_start(rt, "api_srv", L, NULL, &pid2), GS_EENCODE, "a coroutine as the argument");
  check(lua_gettop(L) == 1 && lua_isnil(L, 1) && strstr(gs_errmsg(), "init argument"),
        "... nil pushed, gs_errmsg names it: %s", gs_errmsg());
  lua_settop(L, 0);

  /* an argument with shared tables crosses with its shape */
  lua_do(L, "local t = { list = {} }; t.self = t; t.list[1] = {}; t.list[2] = t.list[1]; return t");
  CHECK_RC(gs_start(rt, "api_srv", L, NULL, &pid2), GS_OK, "a cyclic table as the argument");
  check(reply_is(rt, pid2, "cyclic", "true"), "... keeps its cycles and shared parts");
  lua_settop(L, 0);
  {
    gs_msg *cyc = NULL;
    lua_do(L, "local t = { list = {} }; t.self = t; t.list[1] = {}; t.list[2] = t.list[1]; return t");
    gs_msg_from_lua(rt, L, -1, &cyc);
    CHECK_RC(gs_start_msg(rt, "api_srv", cyc, NULL, &pid2, NULL), GS_OK,
             "the same as a gs_msg (back-references renumbered)");
    check(reply_is(rt, pid2, "cyclic", "true"), "... keeps its cycles and shared parts");
    gs_msg_free(cyc);
    lua_settop(L, 0);
  }
  gs_msg_free(arg);
  lua_close(L);
}

/* ------------------------------------------------------------ 4. calls */

static void t_call(gs_runtime *rt) {
  lua_State *L = host_state();
  gs_pid pid = start_srv(rt, NULL), me = 0, dead;
  gs_msg *req = gs_msg_new(), *rep = NULL;
  gs_reader r;
  gs_item it;
  char *s = NULL;
  size_t n = 0;
  int rc;

  lua_pushliteral(L, "ping");
  CHECK_RC(gs_call(rt, pid, L, 1000), GS_OK, "gs_call through a host state");
  check(lua_gettop(L) == 1 && strcmp(lua_tostring(L, 1), "pong") == 0,
        "the request was replaced by the reply");
  lua_settop(L, 0);
  lua_pushliteral(L, "table");
  gs_call(rt, pid, L, 1000);
  check(lua_type(L, 1) == LUA_TTABLE && (lua_rawgeti(L, 1, 2), 1) &&
            strcmp(lua_tostring(L, -1), "two") == 0, "a table reply");
  lua_settop(L, 0);

  gs_msg_table(req, 2, 0);
  gs_msg_string(req, "add", 3);
  gs_msg_integer(req, 5);
  CHECK_RC(gs_call_msg(rt, pid, req, &rep, 1000), GS_OK, "gs_call_msg");
  gs_reader_init(&r, rep);
  check(gs_read(&r, &it) == 0 && it.type == GS_TINTEGER && it.integer == 5, "... reply 5");
  gs_msg_free(rep);
  CHECK_RC(gs_call_msg(rt, pid, req, NULL, 1000), GS_EINVAL, "gs_call_msg without a reply pointer");
  gs_msg_reset(req);
  gs_msg_string(req, "table", 5);
  gs_call_msg(rt, pid, req, &rep, 1000);
  s = gs_msg_describe(rep);
  check((s && strcmp(s, "{1, \"two\", n = {true}, x = \"y\"}") == 0) ||
            (s && strcmp(s, "{1, \"two\", x = \"y\", n = {true}}") == 0),
        "gs_call_msg: a table reply reads back: %s", s ? s : "NULL");
  gs_free(s);
  gs_msg_free(rep);
  gs_msg_reset(req);
  gs_msg_table(req, 1, 0);
  CHECK_RC(gs_call_msg(rt, pid, req, &rep, 1000), GS_EINVAL, "an incomplete request");
  check(rep == NULL, "... *reply NULL");

  rc = gs_call_str(rt, pid, "ping", 4, &s, &n, 1000);
  check(rc == 0 && n == 4 && strcmp(s, "pong") == 0, "gs_call_str: \"pong\"");
  gs_free(s);
  check(reply_is(rt, pid, "get", "5"), "gs_call_str: an integer reply as text");
  check(reply_is(rt, pid, "half", "2.5"), "gs_call_str: a float reply as text");
  check(reply_is(rt, pid, "yes", "true"), "gs_call_str: a boolean reply as text");
  s = call_s(rt, pid, "table", &rc, 1000);
  CHECK_RC(rc, GS_ETYPE, "gs_call_str: a table reply");
  check(s == NULL && strstr(gs_errmsg(), "two"), "... described in gs_errmsg: %s", gs_errmsg());
  CHECK_RC(gs_call_str(rt, pid, "ping", 4, NULL, NULL, 1000), GS_EINVAL, "gs_call_str without reply");
  {
    char bin[3] = {'a', '\0', 'b'};
    gs_msg *e = gs_msg_new();
    gs_msg_table(e, 2, 0);
    gs_msg_string(e, "echo", 4);
    gs_msg_string(e, bin, 3);
    gs_call_msg(rt, pid, e, &rep, 1000);
    gs_reader_init(&r, rep);
    check(gs_read(&r, &it) == 0 && it.type == GS_TSTRING && it.len == 3 &&
              memcmp(it.string, bin, 3) == 0, "strings are binary safe");
    gs_msg_free(rep);
    gs_msg_free(e);
  }

  /* time-outs: the late reply is dropped, the next call gets its own */
  lua_settop(L, 0);
  lua_do(L, "return { 'sleep', 300 }");
  CHECK_RC(gs_call(rt, pid, L, 30), GS_ETIMEDOUT, "a call that times out");
  check(lua_gettop(L) == 1 && lua_isnil(L, 1), "... nil pushed");
  check(reply_is(rt, pid, "ping", "pong"), "the next call gets its own reply, not the late one");
  lua_settop(L, 0);
  check(reply_is(rt, pid, "get", "5"), "... and the server is fine");
  s = call_s(rt, pid, "ping", &rc, 0);
  check(rc == 0 || rc == GS_ETIMEDOUT, "a zero time-out returns at once (%d)", rc);
  gs_free(s);

  /* errors */
  gs_self(rt, &me);
  CHECK_RC(gs_call_str(rt, me, "x", 1, &s, NULL, 100), GS_ECALLSELF, "calling one's own pid");
  CHECK_RC(gs_call_str(rt, 0, "x", 1, &s, NULL, 100), GS_ENOPROC, "calling pid 0");
  CHECK_RC(gs_call_str(NULL, pid, "x", 1, &s, NULL, 100), GS_EINVAL, "calling with no runtime");
  CHECK_RC(gs_call_str(rt, pid, "x", 1, &s, NULL, -7), GS_EINVAL, "a negative time-out");
  CHECK_RC(gs_call(rt, pid, L, 100), GS_EINVAL, "gs_call with nothing on the host stack");
  CHECK_RC(gs_call(rt, pid, NULL, 100), GS_EINVAL, "gs_call with L = NULL");
  lua_newuserdatauv(L, 4, 0);
  CHECK_RC(gs_call(rt, pid, L, 100), GS_EENCODE, "a userdata request");
  check(lua_gettop(L) == 1 && lua_isnil(L, 1) && strstr(gs_errmsg(), "request") &&
            strstr(gs_errmsg(), "userdata"), "... nil pushed; gs_errmsg: %s", gs_errmsg());
  lua_settop(L, 0);
  lua_pushliteral(L, "module");
  CHECK_RC(gs_call(rt, pid, L, 1000), GS_EDECODE,
           "a reply this host state cannot decode (a module it cannot load)");
  check(lua_gettop(L) == 1 && lua_isnil(L, 1), "... nil pushed; gs_errmsg: %s", gs_errmsg());
  lua_settop(L, 0);

  /* the server dies in the call: its reason comes back */
  lua_pushliteral(L, "crash");
  CHECK_RC(gs_call(rt, pid, L, 1000), GS_EEXIT, "the server crashes during the call");
  check(lua_type(L, 1) == LUA_TTABLE && (lua_getfield(L, 1, "error"), 1) &&
            strstr(lua_tostring(L, -1), "call boom"), "... its exit reason is pushed");
  lua_settop(L, 0);
  dead = pid;
  s = call_s(rt, dead, "ping", &rc, 1000);
  CHECK_RC(rc, GS_ENOPROC, "calling a dead pid");
  pid = start_srv(rt, NULL);
  s = call_s(rt, pid, "crash", &rc, 1000);
  CHECK_RC(rc, GS_EEXIT, "gs_call_str to a crashing server");
  check(s && strstr(s, "call boom") && !strstr(s, "traceback"),
        "... *reply is the crash's error message: %s", s ? s : "NULL");
  gs_free(s);
  gs_msg_free(req);
  lua_close(L);
}

/* --------------------------------------------------- 5. cast, send, stop */

static void t_cast_send_stop(gs_runtime *rt) {
  lua_State *L = host_state();
  gs_pid pid = start_srv(rt, "api_cs"), dead, me = 0;
  gs_msg *m = gs_msg_new();
  int rc, full = 0;

  lua_do(L, "return { 'add', 2 }");
  CHECK_RC(gs_cast(rt, pid, L), GS_OK, "gs_cast through a host state");
  check(lua_gettop(L) == 0, "... the message was consumed");
  gs_msg_table(m, 2, 0);
  gs_msg_string(m, "add", 3);
  gs_msg_integer(m, 3);
  CHECK_RC(gs_cast_msg(rt, pid, m), GS_OK, "gs_cast_msg");
  CHECK_RC(gs_cast_str(rt, pid, "x", 1), GS_OK, "gs_cast_str");
  lua_pushliteral(L, "hello");
  CHECK_RC(gs_send(rt, pid, L), GS_OK, "gs_send through a host state");
  CHECK_RC(gs_send_msg(rt, pid, m), GS_OK, "gs_send_msg");
  CHECK_RC(gs_send_str(rt, pid, "hi", 2), GS_OK, "gs_send_str");
  check(reply_is(rt, pid, "get", "5"), "casts were handled before the call (in order)");
  check(reply_is(rt, pid, "casts", "1") && reply_is(rt, pid, "infos", "3"),
        "sends went to handle_info");
  CHECK_RC(gs_cast_msg(rt, pid, NULL), GS_EINVAL, "gs_cast_msg(NULL)");
  CHECK_RC(gs_cast(rt, pid, L), GS_EINVAL, "gs_cast with nothing on the host stack");
  CHECK_RC(gs_send_str(rt, pid, NULL, 3), GS_EINVAL, "gs_send_str(NULL, 3)");
  CHECK_RC(gs_cast_str(rt, 0, "x", 1), GS_ENOPROC, "a cast to pid 0");
  lua_pushcfunction(L, h_add);
  CHECK_RC(gs_send(rt, pid, L), GS_EENCODE, "sending a C function nobody knows by name");
  check(lua_gettop(L) == 0, "... consumed all the same");

  /* stop */
  CHECK_RC(gs_stop(rt, pid, NULL, 1000), GS_OK, "gs_stop");
  CHECK_RC(gs_whereis(rt, "api_cs", &dead), GS_ENOPROC, "its name is gone");
  dead = pid;
  CHECK_RC(gs_stop(rt, dead, NULL, 1000), GS_ENOPROC, "gs_stop of a dead pid");
  CHECK_RC(gs_cast_str(rt, dead, "x", 1), GS_ENOPROC, "a cast to a dead pid");
  CHECK_RC(gs_send_str(rt, dead, "x", 1), GS_ENOPROC, "a send to a dead pid");
  pid = start_srv(rt, NULL);
  CHECK_RC(gs_stop(rt, pid, "shutdown", 1000), GS_OK, "gs_stop with reason \"shutdown\"");
  gs_self(rt, &me);
  CHECK_RC(gs_stop(rt, me, NULL, 1000), GS_ECALLSELF, "stopping oneself");
  CHECK_RC(gs_stop(rt, 0, NULL, 1000), GS_ENOPROC, "stopping pid 0");
  CHECK_RC(gs_stop(rt, pid, NULL, -2), GS_EINVAL, "gs_stop with a negative time-out");
  gs_msg_reset(m);
  gs_msg_string(m, "bad_terminate", 13);
  gs_start_msg(rt, "api_srv", m, NULL, &pid, NULL);
  CHECK_RC(gs_stop(rt, pid, NULL, 1000), GS_EEXIT, "gs_stop: terminate crashes");
  check(strstr(gs_errmsg(), "terminate boom") != NULL, "... gs_errmsg: %s", gs_errmsg());
  pid = start_srv(rt, NULL);
  lua_do(L, "return { 'nap', 300 }");
  gs_cast(rt, pid, L);
  CHECK_RC(gs_stop(rt, pid, NULL, 30), GS_ETIMEDOUT, "gs_stop of a busy server times out");
  CHECK_RC(gs_stop(rt, pid, NULL, GS_INFINITY), GS_OK, "... and works when given time");

  /* a bounded mailbox that rejects */
  {
    gs_start_opts o = {0};
    o.mailbox_limit = 1;
    o.overflow = GS_OVERFLOW_REJECT;
    CHECK_RC(gs_start_msg(rt, "api_srv", NULL, &o, &pid, NULL), GS_OK,
             "a server with mailbox_limit 1, overflow reject");
    lua_do(L, "return { 'nap', 200 }");
    gs_cast(rt, pid, L);
    for (int i = 0; i < 4; i++)
      if ((rc = gs_cast_str(rt, pid, "x", 1)) == GS_EFULL) full++;
    check(full >= 1, "casts past the limit: GS_EFULL (%d of 4)", full);
    {
      char *s = call_s(rt, pid, "ping", &rc, 1000);
      check(rc == GS_EFULL || rc == 0, "a call to a full mailbox: GS_EFULL or served (%d)", rc);
      gs_free(s);
    }
    gs_stop(rt, pid, NULL, GS_INFINITY);
  }
  gs_msg_free(m);
  lua_close(L);
}

/* --------------------------------------------- 6. hook, signals, context */

/* Ask server to send victim an exit signal with reason (api_srv's
** cast { "kill", victim, reason }). */
static void ask_kill(gs_runtime *rt, gs_pid server, gs_pid victim, const char *reason) {
  gs_msg *k = gs_msg_new();
  gs_msg_table(k, 3, 0);
  gs_msg_string(k, "kill", 4);
  gs_msg_pid(k, victim);
  gs_msg_string(k, reason, strlen(reason));
  gs_cast_msg(rt, server, k);
  gs_msg_free(k);
}

static void t_hook_context(gs_runtime *rt, hook_ctx *c) {
  lua_State *L = host_state();
  gs_pid pid = start_srv(rt, NULL), other = start_srv(rt, NULL), me = 0, me2 = 0;
  gs_msg *reason = NULL;
  char req[64];
  char *d;
  int rc;

  check(reply_is(rt, pid, "hook", "5:tagvalue"), "a server calls the host's C functions");
  atomic_store(&c->fail, 1);
  CHECK_RC(gs_start_msg(rt, "api_srv", NULL, NULL, &me2, &reason), GS_EEXIT,
           "a state hook that raises: the server cannot start");
  d = gs_msg_describe(reason);
  check(d && strstr(d, "state hook failed") && strstr(d, "hook says no"),
        "... its reason carries the hook's error");
  gs_free(d);
  gs_msg_free(reason);
  atomic_store(&c->fail, 0);

  /* from a worker thread: waiting calls are refused, casts go */
  snprintf(req, sizeof req, "return { 'c_call', %llu }", (unsigned long long)other);
  lua_do(L, req);
  gs_call(rt, pid, L, 2000);
  check(lua_tointeger(L, -1) == GS_ECONTEXT, "gs_call_str on a worker thread: GS_ECONTEXT (%d)",
        (int)lua_tointeger(L, -1));
  lua_settop(L, 0);
  snprintf(req, sizeof req, "return { 'c_cast', %llu }", (unsigned long long)other);
  lua_do(L, req);
  gs_call(rt, pid, L, 2000);
  check(lua_tointeger(L, -1) == 0, "gs_cast_str on a worker thread works");
  check(reply_is(rt, other, "casts", "1"), "... the cast arrived");
  lua_settop(L, 0);

  /* an exit signal kills this thread's foreign process */
  gs_self(rt, &me);
  ask_kill(rt, pid, me, "boom");
  sleep_ms(100); /* let the signal arrive: it is noticed at the next call */
  lua_pushliteral(L, "ping");
  rc = gs_call(rt, pid, L, 1000);
  CHECK_RC(rc, GS_EKILLED, "the next call of a killed host thread");
  check(lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "boom") == 0,
        "... pushes the exit reason");
  lua_settop(L, 0);
  gs_self(rt, &me2);
  check(me2 != 0 && me2 != me, "the thread goes on with a new pid");
  check(reply_is(rt, pid, "ping", "pong"), "... and calls as before");
  {
    ask_kill(rt, pid, me2, "kill");
    sleep_ms(100);
    d = call_s(rt, pid, "ping", &rc, 1000);
    CHECK_RC(rc, GS_EKILLED, "killed with \"kill\"");
    check(d && strcmp(d, "killed") == 0, "... the reason is \"killed\"");
    gs_free(d);
  }
  { /* a cast has no place for the reason: gs_killed_reason keeps it */
    gs_msg *why;
    gs_item it;
    gs_reader r;
    gs_self(rt, &me);
    ask_kill(rt, pid, me, "late");
    sleep_ms(100);
    CHECK_RC(gs_cast_str(rt, pid, "x", 1), GS_EKILLED, "a killed host thread's next cast");
    why = gs_killed_reason();
    gs_reader_init(&r, why);
    check(why != NULL && gs_read(&r, &it) == 0 && it.type == GS_TSTRING && it.len == 4 &&
              memcmp(it.string, "late", 4) == 0,
          "gs_killed_reason gives its exit reason");
    gs_msg_free(why);
    check(gs_killed_reason() == NULL, "... once (taken)");
  }
  gs_stop(rt, pid, NULL, 1000);
  gs_stop(rt, other, NULL, 1000);
  lua_close(L);
}

/* ----------------------------------------------- 7. many threads at once */

#define NTHREADS 8
#define NCALLS 200

typedef struct worker_arg {
  gs_runtime *rt;
  gs_pid pid;
  int id, bad, mode; /* mode 0: C strings, 1: host state, 2: bound state */
  gs_pid self_before, self_after;
} worker_arg;

static void *client(void *v) {
  worker_arg *a = v;
  char want[64];
  lua_State *L = a->mode ? host_state() : NULL;
  if (a->mode == 2 && gs_openlibs(a->rt, L) != 0) a->bad++;
  for (int i = 0; i < NCALLS; i++) {
    int rc;
    snprintf(want, sizeof want, "t%d-%d", a->id, i);
    if (a->mode == 0) {
      char *r = NULL;
      gs_msg *m = gs_msg_new();
      gs_msg_table(m, 2, 0);
      gs_msg_string(m, "echo", 4);
      gs_msg_string(m, want, strlen(want));
      rc = gs_call_msg(a->rt, a->pid, m, NULL, 0); /* GS_EINVAL: no reply ptr */
      if (rc != GS_EINVAL) a->bad++;
      gs_msg_free(m);
      rc = gs_call_str(a->rt, a->pid, "ping", 4, &r, NULL, 5000);
      if (rc != 0 || strcmp(r, "pong") != 0) a->bad++;
      gs_free(r);
      if (gs_cast_str(a->rt, a->pid, "x", 1) != 0) a->bad++;
    } else if (a->mode == 1) {
      lua_createtable(L, 2, 0);
      lua_pushliteral(L, "echo");
      lua_rawseti(L, -2, 1);
      lua_pushstring(L, want);
      lua_rawseti(L, -2, 2);
      rc = gs_call(a->rt, a->pid, L, 5000);
      if (rc != 0 || strcmp(lua_tostring(L, -1), want) != 0) a->bad++;
      lua_settop(L, 0);
      lua_pushliteral(L, "x");
      if (gs_cast(a->rt, a->pid, L) != 0) a->bad++;
    } else {
      lua_getglobal(L, "require");
      lua_pushliteral(L, "genserver");
      lua_call(L, 1, 1);
      lua_getfield(L, -1, "call");
      lua_pushinteger(L, 0); /* replaced below by the pid, via whereis */
      lua_pop(L, 1);
      lua_getfield(L, -2, "whereis");
      lua_pushliteral(L, "api_threads");
      lua_call(L, 1, 1);
      lua_createtable(L, 2, 0);
      lua_pushliteral(L, "echo");
      lua_rawseti(L, -2, 1);
      lua_pushstring(L, want);
      lua_rawseti(L, -2, 2);
      if (lua_pcall(L, 2, 1, 0) != LUA_OK || lua_type(L, -1) != LUA_TSTRING ||
          strcmp(lua_tostring(L, -1), want) != 0)
        a->bad++;
      lua_settop(L, 0);
      lua_getglobal(L, "require");
      lua_pushliteral(L, "genserver");
      lua_call(L, 1, 1);
      lua_getfield(L, -1, "cast");
      lua_getfield(L, -2, "whereis");
      lua_pushliteral(L, "api_threads");
      lua_call(L, 1, 1);
      lua_pushliteral(L, "x");
      lua_call(L, 2, 0);
      lua_settop(L, 0);
    }
  }
  gs_self(a->rt, &a->self_before);
  if (a->id == 0) { /* one thread detaches by hand, and carries on */
    gs_thread_detach(a->rt);
    gs_self(a->rt, &a->self_after);
  }
  if (a->mode == 2) gs_thread_detach(a->rt); /* used a bound state */
  if (L) lua_close(L);
  return NULL;
}

static void t_threads(gs_runtime *rt) {
  pthread_t th[NTHREADS];
  worker_arg a[NTHREADS];
  gs_pid pid = start_srv(rt, "api_threads");
  size_t fg0 = foreign_count(rt);
  int bad = 0, distinct = 1;
  char want[32];
  for (int i = 0; i < NTHREADS; i++) {
    memset(&a[i], 0, sizeof a[i]);
    a[i].rt = rt;
    a[i].pid = pid;
    a[i].id = i;
    a[i].mode = i % 3;
    pthread_create(&th[i], NULL, client, &a[i]);
  }
  for (int i = 0; i < NTHREADS; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < NTHREADS; i++) {
    bad += a[i].bad;
    for (int j = 0; j < i; j++)
      if (a[i].self_before == a[j].self_before) distinct = 0;
  }
  check(bad == 0, "%d threads x %d calls and casts each, at once (%d bad)", NTHREADS, NCALLS, bad);
  check(distinct, "each host thread had its own pid");
  check(a[0].self_after != 0 && a[0].self_after != a[0].self_before,
        "after gs_thread_detach a thread gets a new pid");
  snprintf(want, sizeof want, "%d", NTHREADS * NCALLS);
  check(reply_is(rt, pid, "casts", want), "every cast arrived (%s)", want);
  check(foreign_count(rt) == fg0, "threads that exited left no foreign process (%zu, was %zu)",
        foreign_count(rt), fg0);
  gs_stop(rt, pid, NULL, 1000);
}

/* ------------------------------------------------ 8. bound host states */

static void t_openlibs(gs_runtime *rt) {
  lua_State *L = host_state(), *D = host_state();
  gs_pid pid;
  int rc;
  lua_pushliteral(L, "from C");
  gs_start_opts o = {0};
  o.name = "api_bound";
  CHECK_RC(gs_start(rt, "api_srv", L, &o, &pid), GS_OK, "start a named server from C");
  lua_setglobal(L, "cpid"); /* the pid gs_start pushed */
  CHECK_RC(gs_openlibs(rt, L), GS_OK, "gs_openlibs");
  CHECK_RC(gs_openlibs(rt, L), GS_OK, "gs_openlibs again: nothing to do");
  CHECK_RC(gs_openlibs(rt, NULL), GS_EINVAL, "gs_openlibs(rt, NULL)");
  rc = luaL_dostring(L,
    "local gs = require 'genserver'\n"
    "assert(gs.whereis('api_bound') == cpid, 'the same runtime, the same interned pid')\n"
    "assert(gs.call('api_bound', 'start') == 'from C')\n"
    "local p = assert(gs.start('api_srv', 7))\n"
    "assert(gs.call(p, 'start') == 7)\n"
    "gs.stop(p)\n"
    "local ok, err = pcall(require('genserver.runtime').shutdown)\n"
    "assert(not ok and tostring(err):find('belongs to the C host'), tostring(err))\n"
    "return gs.self()");
  check(rc == LUA_OK, "require 'genserver' in a bound state uses the host's runtime%s%s",
        rc ? ": " : "", rc ? lua_tostring(L, -1) : "");
  if (rc == LUA_OK) {
    gs_pid me = 0;
    gs_self(rt, &me);
    check(lua_type(L, -1) == LUA_TUSERDATA && luaL_testudata(L, -1, "genserver.pid"),
          "genserver.self() in a bound state is a pid");
    { /* gs_pid_format prints a pid as Lua's tostring does */
      char buf[GS_PID_STRLEN], small[4];
      const char *s = luaL_tolstring(L, -1, NULL);
      int n = gs_pid_format(me, buf, sizeof buf);
      check(n > 0 && strcmp(buf, s) == 0, "gs_pid_format(gs_self) is tostring(genserver.self()): %s, %s",
            buf, s);
      check(gs_pid_format(me, small, sizeof small) == n && strlen(small) == 3 &&
            strncmp(small, s, 3) == 0, "gs_pid_format cuts to the buffer and returns the full length");
      check(gs_pid_format(me, NULL, 0) == n, "gs_pid_format(pid, NULL, 0) gives the length");
      lua_pop(L, 1);
    }
    { /* the binding asks the API for the thread's process: one pid */
      gs_msg *m = NULL;
      gs_reader r;
      gs_item it;
      check(gs_msg_from_lua(rt, L, -1, &m) == GS_OK, "gs_msg_from_lua: self()");
      if (m != NULL) {
        gs_reader_init(&r, m);
        check(gs_read(&r, &it) == GS_OK && it.type == GS_TPID && it.id == me,
              "genserver.self() in a bound state is the thread's gs_self()");
      }
      gs_msg_free(m);
    }
    lua_pushliteral(L, "ping");
    check(gs_call(rt, pid, L, 1000) == 0 && strcmp(lua_tostring(L, -1), "pong") == 0,
          "C calls and Lua calls mix in one state");
  }
  lua_settop(L, 0);

  /* a state that loads genserver without binding: the default runtime
  ** (the same luaopen_genserver_core, taken from L's preload) */
  {
    lua_CFunction open = NULL;
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_getfield(L, -1, "genserver.core");
    open = lua_tocfunction(L, -1);
    lua_settop(L, 0);
    luaL_getsubtable(D, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(D, open);
    lua_setfield(D, -2, "genserver.core");
    lua_settop(D, 0);
  }
  rc = luaL_dostring(D, "return require('genserver').whereis('api_bound') == nil");
  check(rc == LUA_OK && lua_toboolean(D, -1),
        "an unbound state uses the default runtime (another registry)");
  lua_settop(D, 0);
  CHECK_RC(gs_openlibs(rt, D), GS_EINVAL, "gs_openlibs on a state already on the default runtime");
  lua_close(D); /* its runtime shuts down with it */
  gs_stop(rt, pid, NULL, 1000);
  lua_close(L);
}

/* --------------------------------------------- 9. stop, ECLOSED, close */

static void t_stop_closed(void) {
  gs_runtime *rt;
  hook_ctx c;
  gs_pid pid, pid2;
  char *s = NULL;
  lua_State *L = host_state();
  ctx_init(&c, "stop");
  open_rt(&rt, &c, 1);
  pid = start_srv(rt, "api_blocked");
  /* the server gets stuck in a host C function (host.block()) */
  lua_do(L, "return { 'block' }");
  CHECK_RC(gs_call(rt, pid, L, 50), GS_ETIMEDOUT, "a server stuck in a host C function");
  lua_settop(L, 0);
  pthread_mutex_lock(&c.mu);
  while (!c.blocked) pthread_cond_wait(&c.cv, &c.mu);
  pthread_mutex_unlock(&c.mu);
  CHECK_RC(gs_runtime_stop(rt, 100), GS_ETIMEDOUT, "gs_runtime_stop: a process that will not die");
  CHECK_RC(gs_call_str(rt, pid, "ping", 4, &s, NULL, 100), GS_ECLOSED, "calls on a stopping runtime");
  CHECK_RC(gs_cast_str(rt, pid, "x", 1), GS_ECLOSED, "casts on a stopping runtime");
  CHECK_RC(gs_start_msg(rt, "api_srv", NULL, NULL, &pid2, NULL), GS_ECLOSED,
           "starts on a stopping runtime");
  CHECK_RC(gs_whereis(rt, "api_blocked", &pid2), GS_ECLOSED, "gs_whereis on a stopping runtime");
  lua_pushliteral(L, "x");
  CHECK_RC(gs_send(rt, pid, L), GS_ECLOSED, "gs_send on a stopping runtime");
  check(lua_gettop(L) == 0, "... consumes its value all the same");
  pthread_mutex_lock(&c.mu);
  c.released = 1;
  pthread_cond_broadcast(&c.cv);
  pthread_mutex_unlock(&c.mu);
  CHECK_RC(gs_runtime_stop(rt, 5000), GS_OK, "gs_runtime_stop again, once it can");
  CHECK_RC(gs_runtime_stop(rt, 5000), GS_OK, "gs_runtime_stop is idempotent");
  CHECK_RC(gs_call_str(rt, pid, "ping", 4, &s, NULL, 100), GS_ECLOSED, "calls on a stopped runtime");
  CHECK_RC(gs_self(rt, &pid2), GS_ECLOSED, "gs_self on a stopped runtime");
  CHECK_RC(gs_openlibs(rt, L), GS_ECLOSED, "gs_openlibs on a stopped runtime");
  {
    gs_stats st;
    gs_runtime_stats(rt, &st);
    check(st.processes == 0 && st.started == 1 && st.workers == 1,
          "gs_runtime_stats after the stop: no process, 1 worker");
  }
  CHECK_RC(gs_runtime_close(rt, 1000), GS_OK, "gs_runtime_close after gs_runtime_stop");
  ctx_free(&c);
  lua_close(L);
}

/* -------------------------------------------- 10. limits of one runtime */

static void t_limits(void) {
  gs_runtime *rt;
  hook_ctx c;
  gs_config cfg;
  gs_pid p1 = 0, p2 = 0, p3 = 0;
  gs_msg *m = gs_msg_new();
  char big[100];
  ctx_init(&c, "limits");
  gs_config_init(&cfg);
  cfg.max_processes = 3; /* this thread + 2 servers */
  cfg.max_depth = 5;
  cfg.max_message_size = 64;
  cfg.workers = 1;
  cfg.state_hook = test_hook;
  cfg.state_hook_ud = &c;
  CHECK_RC(gs_runtime_open(&rt, &cfg), GS_OK, "open with max_processes 3, max_depth 5");
  c.rt = rt;
  CHECK_RC(gs_start_msg(rt, "api_srv", NULL, NULL, &p1, NULL), GS_OK, "1st server");
  CHECK_RC(gs_start_msg(rt, "api_srv", NULL, NULL, &p2, NULL), GS_OK, "2nd server");
  CHECK_RC(gs_start_msg(rt, "api_srv", NULL, NULL, &p3, NULL), GS_ELIMIT, "3rd server: the limit");
  for (int i = 0; i < 8; i++) gs_msg_table(m, 1, 0);
  gs_msg_nil(m);
  CHECK_RC(gs_cast_msg(rt, p1, m), GS_EENCODE, "a message deeper than max_depth");
  memset(big, 'b', sizeof big);
  CHECK_RC(gs_cast_str(rt, p1, big, sizeof big), GS_EENCODE, "a message larger than max_message_size");
  check(reply_is(rt, p1, "ping", "pong"), "small ones still go");
  gs_msg_free(m);
  CHECK_RC(gs_runtime_close(rt, 2000), GS_OK, "close");
  ctx_free(&c);
}

/* ------------------------------------ 11. open and close, many times */

static void *short_client(void *v) {
  worker_arg *a = v;
  char *r = NULL;
  if (gs_call_str(a->rt, a->pid, "ping", 4, &r, NULL, 5000) != 0) a->bad++;
  gs_free(r);
  return NULL;
}

static void t_cycles(void) {
  const char *env = getenv("API_TEST_CYCLES");
  int n = env ? atoi(env) : 30, bad = 0;
  for (int i = 0; i < n; i++) {
    gs_runtime *rt;
    hook_ctx c;
    gs_pid a, b;
    pthread_t th;
    worker_arg w;
    lua_State *L = host_state();
    ctx_init(&c, "cycle");
    if (open_rt(&rt, &c, 1 + i % 3) != 0) {
      bad++;
      continue;
    }
    a = start_srv(rt, "api_cycle");
    b = start_srv(rt, NULL);
    if (!reply_is(rt, a, "ping", "pong")) bad++;
    if (gs_cast_str(rt, b, "x", 1) != 0) bad++;
    memset(&w, 0, sizeof w);
    w.rt = rt;
    w.pid = b;
    pthread_create(&th, NULL, short_client, &w);
    pthread_join(th, NULL);
    bad += w.bad;
    if (gs_openlibs(rt, L) != 0 ||
        luaL_dostring(L, "return require('genserver').call('api_cycle', 'ping')") != 0)
      bad++;
    if (i % 2 == 0) gs_stop(rt, b, NULL, 1000);
    if (gs_runtime_close(rt, 5000) != 0) bad++; /* a is still running */
    lua_close(L);
    ctx_free(&c);
  }
  check(bad == 0, "%d runtimes opened, used from 2 threads and a bound state, closed (%d bad)",
        n, bad);
}

/* One thread using two runtimes keeps one foreign process in each: using
** b must not make the thread forget (and so leak) its process in a. */
static void t_two_runtimes(void) {
  gs_runtime *a, *b;
  gs_pid a1 = 0, a2 = 0, b1 = 0;
  gs_stats st;
  if (!check(gs_runtime_open(&a, NULL) == 0 && gs_runtime_open(&b, NULL) == 0,
             "two runtimes open at once"))
    return;
  gs_self(a, &a1);
  gs_self(b, &b1);
  gs_self(a, &a2);
  check(a1 != 0 && a1 == a2, "a thread keeps its pid in runtime a after using b");
  gs_runtime_stats(a, &st);
  check(st.foreign == 1, "and has one foreign process there, not two (got %zu)",
        (size_t)st.foreign);
  gs_runtime_close(a, 1000);
  gs_runtime_close(b, 1000);
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  gs_runtime *rt;
  hook_ctx c;
  t_basics();
  t_config();
  t_msg();
  t_configure();
  ctx_init(&c, "tagvalue");
  if (!check(open_rt(&rt, &c, 0) == 0, "open a runtime with the test hook")) return 1;
  t_start(rt, &c);
  t_call(rt);
  t_cast_send_stop(rt);
  t_hook_context(rt, &c);
  t_threads(rt);
  t_openlibs(rt);
  CHECK_RC(gs_runtime_close(rt, 5000), GS_OK, "close the runtime with servers running");
  ctx_free(&c);
  t_stop_closed();
  t_limits();
  t_cycles();
  t_two_runtimes();
  printf("1..%d\n", ntest);
  return nfail != 0;
}
