/*
** lio.c - genserver.core's io_* functions: the Lua face of the I/O layer
** (io.h). They never wait themselves: an operation that waits returns a
** ref, pending in the caller, that genserver.tcp / genserver.udp wait on
** with core.wait (which yields a process and blocks a foreign thread, and
** lets exit signals through). Nothing here raises while a command is half
** built: arguments are checked first.
*/
#include <string.h>

#include "lauxlib.h"

#include "core/ids.h"
#include "io/io.h"
#include "lgenserver.h"

static uint64_t check_sock(lua_State *L, int idx) {
  uint64_t id;
  if (!gsi_toref(L, idx, &id) || !GSI_IO_IS_SOCK(id)) luaL_typeerror(L, idx, "socket");
  return id;
}

static int is_sock(lua_State *L, int idx, uint64_t *id) {
  return gsi_toref(L, idx, id) && GSI_IO_IS_SOCK(*id);
}

/* ms >= 0, or -1 for none (nil, "infinity", math.huge) */
static int64_t opt_timeout(lua_State *L, int idx) {
  double ms;
  if (lua_isnoneornil(L, idx)) return -1;
  if (lua_type(L, idx) == LUA_TSTRING && strcmp(lua_tostring(L, idx), "infinity") == 0)
    return -1;
  ms = luaL_checknumber(L, idx);
  if (ms != ms) luaL_argerror(L, idx, "time-out is NaN");
  if (ms >= 1e13) return -1;
  return ms <= 0 ? 0 : (int64_t)ms;
}

static int check_port(lua_State *L, int idx) {
  lua_Integer port = luaL_checkinteger(L, idx);
  luaL_argcheck(L, port >= 0 && port <= 65535, idx, "port must be 0..65535");
  return (int)port;
}

/* Options table at idx (may be nil) into o. */
static void parse_opts(lua_State *L, int idx, gsi_io_opts *o) {
  memset(o, 0, sizeof *o);
  o->packet = -1;
  o->packet_size = -1;
  o->nodelay = -1;
  o->send_timeout = -1;
  o->high_watermark = -1;
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  idx = lua_absindex(L, idx);
  switch (lua_getfield(L, idx, "active")) {
  case LUA_TNIL: break;
  case LUA_TBOOLEAN:
    o->has_active = 1;
    o->active = lua_toboolean(L, -1) ? GSI_ACT_TRUE : GSI_ACT_FALSE;
    break;
  case LUA_TSTRING:
    if (strcmp(lua_tostring(L, -1), "once") != 0)
      luaL_error(L, "genserver.tcp: active must be true, false, \"once\" or a count");
    o->has_active = o->once = 1;
    o->active = 1;
    break;
  default: {
    int isint;
    lua_Integer n = lua_tointegerx(L, -1, &isint);
    if (!isint || n < 1 || n > 0x7fffffff)
      luaL_error(L, "genserver.tcp: active must be true, false, \"once\" or a count >= 1");
    o->has_active = 1;
    o->active = (int)n;
  }
  }
  lua_pop(L, 1);
  switch (lua_getfield(L, idx, "packet")) {
  case LUA_TNIL: break;
  case LUA_TSTRING: {
    const char *s = lua_tostring(L, -1);
    if (strcmp(s, "raw") == 0 || strcmp(s, "0") == 0) o->packet = GSI_PK_RAW;
    else if (strcmp(s, "line") == 0) o->packet = GSI_PK_LINE;
    else luaL_error(L, "genserver.tcp: packet must be \"raw\", \"line\", 1, 2 or 4");
    break;
  }
  default: {
    int isint;
    lua_Integer n = lua_tointegerx(L, -1, &isint);
    if (!isint || !(n == 0 || n == 1 || n == 2 || n == 4))
      luaL_error(L, "genserver.tcp: packet must be \"raw\", \"line\", 1, 2 or 4");
    o->packet = (int)n;
  }
  }
  lua_pop(L, 1);
  if (lua_getfield(L, idx, "packet_size") != LUA_TNIL) {
    int isint;
    lua_Integer n = lua_tointegerx(L, -1, &isint);
    if (!isint || n < 0) luaL_error(L, "genserver.tcp: packet_size must be bytes >= 0");
    o->packet_size = n;
  }
  lua_pop(L, 1);
  if (lua_getfield(L, idx, "nodelay") != LUA_TNIL) o->nodelay = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (lua_getfield(L, idx, "send_timeout") != LUA_TNIL) {
    int64_t t = opt_timeout(L, -1);
    o->send_timeout = t < 0 ? 0 : (t == 0 ? 1 : t);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, idx, "high_watermark") != LUA_TNIL) {
    int isint;
    lua_Integer n = lua_tointegerx(L, -1, &isint);
    if (!isint || n < 1) luaL_error(L, "genserver.tcp: high_watermark must be bytes >= 1");
    o->high_watermark = n;
  }
  lua_pop(L, 1);
  if (lua_getfield(L, idx, "backlog") != LUA_TNIL) {
    int isint;
    lua_Integer n = lua_tointegerx(L, -1, &isint);
    if (!isint || n < 1 || n > 65535) luaL_error(L, "genserver.tcp: backlog must be 1..65535");
    o->backlog = (int)n;
  }
  lua_pop(L, 1);
  if (lua_getfield(L, idx, "ip") != LUA_TNIL) {
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    if (s == NULL || n == 0 || n >= sizeof o->ip)
      luaL_error(L, "genserver.tcp: ip must be an address string");
    memcpy(o->ip, s, n + 1);
  }
  lua_pop(L, 1);
}

/* Send a command to the loop; with want_ref, register its answer's ref as
** pending first (so the answer cannot arrive before it is expected) and
** push it. Returns the ref (0 without want_ref). Raises only before
** anything is sent. */
static uint64_t command(lua_State *L, int kind, const gsi_io_args *a,
                        const void *data, size_t len, int want_ref) {
  gsi_proc *p = gsi_lua_self(L);
  gsi_rt *rt = p->rt;
  uint64_t ref = 0;
  gsi_msg *m;
  gsi_buf *b = &gsi_scratch_get()->buf;
  /* args then data, built in the thread's scratch and copied once into
  ** the command's node */
  b->len = 0;
  if (gsi_buf_reserve(b, sizeof *a + len) != 0) luaL_error(L, "genserver: out of memory");
  memcpy(b->data, a, sizeof *a);
  if (len > 0) memcpy(b->data + sizeof *a, data, len);
  b->len = sizeof *a + len;
  m = gsi_msg_new(kind, gsi_proc_pid(p), 0, b->data, b->len);
  if (b->cap > (1u << 20)) gsi_buf_free(b); /* do not keep a huge scratch */
  if (m == NULL) luaL_error(L, "genserver: out of memory");
  if (want_ref) {
    ref = gsi_new_ref(rt);
    if (gsi_pending_add(p, ref, 0) != 0) {
      gsi_msg_free(m);
      luaL_error(L, "genserver: out of memory");
    }
    m->ref = ref;
  }
  if (gsi_io_command(rt, m) != 0) {
    if (want_ref) gsi_pending_remove(p, ref, NULL);
    luaL_error(L, "genserver: cannot start the I/O loop");
  }
  return ref;
}

static int push_ref(lua_State *L, uint64_t ref) {
  gsi_pushref(L, ref);
  return 1;
}

static int fail(lua_State *L, const char *why) {
  lua_pushnil(L);
  lua_pushstring(L, why);
  return 2;
}

/* io_listen(port, opts) -> ref */
static int l_io_listen(lua_State *L) {
  gsi_io_args a;
  memset(&a, 0, sizeof a);
  a.a = check_port(L, 1);
  parse_opts(L, 2, &a.opts);
  return push_ref(L, command(L, GSI_IO_LISTEN, &a, NULL, 0, 1));
}

/* io_connect(ip, port, opts, timeout) -> ref */
static int l_io_connect(lua_State *L) {
  gsi_io_args a;
  size_t n;
  const char *ip = luaL_checklstring(L, 1, &n);
  memset(&a, 0, sizeof a);
  a.a = check_port(L, 2);
  parse_opts(L, 3, &a.opts);
  a.b = opt_timeout(L, 4);
  luaL_argcheck(L, n > 0 && n < sizeof a.opts.ip, 1, "address too long");
  memcpy(a.opts.ip, ip, n + 1);
  return push_ref(L, command(L, GSI_IO_CONNECT, &a, NULL, 0, 1));
}

/* io_accept(ls, timeout) -> ref */
static int l_io_accept(lua_State *L) {
  gsi_io_args a;
  memset(&a, 0, sizeof a);
  a.sock = check_sock(L, 1);
  a.b = opt_timeout(L, 2);
  return push_ref(L, command(L, GSI_IO_ACCEPT, &a, NULL, 0, 1));
}

/* io_recv(s, n, timeout) -> ref */
static int l_io_recv(lua_State *L) {
  gsi_io_args a;
  lua_Integer n;
  memset(&a, 0, sizeof a);
  a.sock = check_sock(L, 1);
  n = luaL_optinteger(L, 2, 0);
  luaL_argcheck(L, n >= 0, 2, "byte count must be >= 0");
  a.a = n;
  a.b = opt_timeout(L, 3);
  return push_ref(L, command(L, GSI_IO_RECV, &a, NULL, 0, 1));
}

/* io_send(s, data) -> true | ref (wait for it) | nil, reason */
static int l_io_send(lua_State *L) {
  size_t len;
  const char *data;
  gsi_io_wr w;
  gsi_proc *p = gsi_lua_self(L);
  uint64_t sock = check_sock(L, 1), ref;
  int rc;
  data = luaL_checklstring(L, 2, &len);
  /* pending before the command exists (its answer may come at once); it
  ** is forgotten again if the send does not wait */
  ref = gsi_new_ref(p->rt);
  if (gsi_pending_add(p, ref, 0) != 0) luaL_error(L, "genserver: out of memory");
  rc = gsi_io_write(p->rt, sock, gsi_proc_pid(p), ref, data, len, &w);
  if (rc == GSI_IO_W_QUEUE && w.waiting) return push_ref(L, ref);
  gsi_pending_remove(p, ref, NULL);
  switch (rc) {
  case GSI_IO_W_DONE:
  case GSI_IO_W_QUEUE: lua_pushboolean(L, 1); return 1;
  case GSI_IO_W_NOTCONN: return fail(L, "enotconn");
  case GSI_IO_W_EMSGSIZE: return fail(L, "emsgsize");
  case GSI_IO_W_NOMEM: return luaL_error(L, "genserver: out of memory");
  default: return fail(L, gsi_io_closed_reason(p->rt, sock));
  }
}

/* io_close(s) -> ref (answered once it is closed) */
static int l_io_close(lua_State *L) {
  gsi_io_args a;
  memset(&a, 0, sizeof a);
  a.sock = check_sock(L, 1);
  return push_ref(L, command(L, GSI_IO_CLOSE, &a, NULL, 0, 1));
}

/* io_shutdown(s, "write") -> true */
static int l_io_shutdown(lua_State *L) {
  gsi_io_args a;
  static const char *const how[] = {"write", NULL};
  memset(&a, 0, sizeof a);
  a.sock = check_sock(L, 1);
  luaL_checkoption(L, 2, "write", how);
  command(L, GSI_IO_SHUTDOWN, &a, NULL, 0, 0);
  lua_pushboolean(L, 1);
  return 1;
}

/* io_setopts(s, opts) -> true | nil, reason */
static int l_io_setopts(lua_State *L) {
  gsi_io_args a;
  gsi_proc *p = gsi_lua_self(L);
  memset(&a, 0, sizeof a);
  a.sock = check_sock(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  parse_opts(L, 2, &a.opts);
  if (gsi_io_peek(p->rt, a.sock, NULL, NULL) != 0) return fail(L, "closed");
  /* the mark holds for this caller's next send already */
  if (a.opts.high_watermark > 0) gsi_io_set_hwm(p->rt, a.sock, a.opts.high_watermark);
  if (a.opts.packet >= 0) gsi_io_set_packet(p->rt, a.sock, a.opts.packet);
  command(L, GSI_IO_SETOPTS, &a, NULL, 0, 0);
  lua_pushboolean(L, 1);
  return 1;
}

/* io_controlling_process(s, pid) -> true | nil, reason */
static int l_io_controlling_process(lua_State *L) {
  uint64_t sock = check_sock(L, 1), to;
  gsi_proc *p = gsi_lua_self(L);
  if (!gsi_topid(L, 2, &to)) luaL_typeerror(L, 2, "pid");
  switch (gsi_io_set_owner(p->rt, sock, gsi_proc_pid(p), to)) {
  case 0: break;
  case -2: return fail(L, "not_owner");
  default: return fail(L, "closed");
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* io_name(s, peer) -> ref */
static int l_io_name(lua_State *L) {
  gsi_io_args a;
  memset(&a, 0, sizeof a);
  a.sock = check_sock(L, 1);
  a.a = lua_toboolean(L, 2);
  return push_ref(L, command(L, GSI_IO_NAME, &a, NULL, 0, 1));
}

/* io_udp_open(port, opts) -> ref */
static int l_io_udp_open(lua_State *L) {
  gsi_io_args a;
  memset(&a, 0, sizeof a);
  a.a = check_port(L, 1);
  parse_opts(L, 2, &a.opts);
  return push_ref(L, command(L, GSI_IO_UDP_OPEN, &a, NULL, 0, 1));
}

/* io_udp_send(s, ip, port, data) -> true | nil, reason */
static int l_io_udp_send(lua_State *L) {
  gsi_io_args a;
  size_t n, len;
  const char *ip, *data;
  gsi_proc *p = gsi_lua_self(L);
  int kind;
  memset(&a, 0, sizeof a);
  a.sock = check_sock(L, 1);
  ip = luaL_checklstring(L, 2, &n);
  a.a = check_port(L, 3);
  data = luaL_checklstring(L, 4, &len);
  luaL_argcheck(L, n > 0 && n < sizeof a.opts.ip, 2, "address too long");
  if (len > 65507) return fail(L, "emsgsize");
  memcpy(a.opts.ip, ip, n + 1);
  if (gsi_io_peek(p->rt, a.sock, NULL, &kind) != 0) return fail(L, "closed");
  if (kind != GSI_SK_UDP) return fail(L, "einval");
  command(L, GSI_IO_UDP_SEND, &a, data, len, 0);
  lua_pushboolean(L, 1);
  return 1;
}

/* is_socket(v) -> boolean */
static int l_is_socket(lua_State *L) {
  uint64_t id;
  lua_pushboolean(L, is_sock(L, 1, &id));
  return 1;
}

const luaL_Reg gsi_io_funcs[] = {
    {"io_listen", l_io_listen},   {"io_connect", l_io_connect},
    {"io_accept", l_io_accept},   {"io_recv", l_io_recv},
    {"io_send", l_io_send},       {"io_close", l_io_close},
    {"io_shutdown", l_io_shutdown}, {"io_setopts", l_io_setopts},
    {"io_controlling_process", l_io_controlling_process},
    {"io_name", l_io_name},       {"io_udp_open", l_io_udp_open},
    {"io_udp_send", l_io_udp_send}, {"is_socket", l_is_socket},
    {NULL, NULL}};
