/*
** lio.c - genserver.core's io_* functions: the Lua face of the I/O layer
** (io/io.h). They never wait themselves: an operation that waits returns a
** ref, pending in the caller, that genserver.tcp / genserver.udp wait on
** with core.wait (which yields a process and blocks a foreign thread, and
** lets exit signals through). Nothing here raises while a command is half
** built: arguments are checked first, then the layer builds and sends the
** command, and its result becomes Lua values (result).
*/
#include <string.h>

#include "lauxlib.h"

#include "io/io.h"
#include "lgenserver.h"
#include "lio.h"

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

/* The start of an io_* function: its arguments zeroed and, with sidx > 0,
** the socket at sidx checked into them. */
static gsi_io_args *args_of(lua_State *L, gsi_io_args *a, int sidx) {
  memset(a, 0, sizeof *a);
  if (sidx > 0) a->sock = check_sock(L, sidx);
  return a;
}

/* An I/O result (io.h) as Lua values: the ref to wait on (ref != 0) or
** true; nil, reason; out of memory and a loop that cannot start raise. */
static int result(lua_State *L, int rc, uint64_t ref) {
  const char *why;
  switch (rc) {
  case GSI_IO_OK:
    if (ref != 0) gsi_pushref(L, ref);
    else lua_pushboolean(L, 1);
    return 1;
  case GSI_IO_ENOMEM: return luaL_error(L, "genserver: out of memory");
  case GSI_IO_ENOLOOP: return luaL_error(L, "genserver: cannot start the I/O loop");
  case GSI_IO_ENOTCONN: why = "enotconn"; break;
  case GSI_IO_EMSGSIZE: why = "emsgsize"; break;
  case GSI_IO_EINVAL: why = "einval"; break;
  case GSI_IO_ENOTOWNER: why = "not_owner"; break;
  default: why = "closed"; break;
  }
  lua_pushnil(L);
  lua_pushstring(L, why);
  return 2;
}

/* Send command `kind` with arguments a for the caller: with want_ref,
** return the ref its answer comes with (pending in the caller), else
** true. */
static int request(lua_State *L, int kind, const gsi_io_args *a, int want_ref) {
  uint64_t ref = 0;
  int rc = gsi_io_request(gsi_lua_self(L), kind, a, want_ref ? &ref : NULL);
  return result(L, rc, ref);
}

/* io_listen(port, opts) -> ref */
static int l_io_listen(lua_State *L) {
  gsi_io_args a;
  args_of(L, &a, 0);
  a.a = check_port(L, 1);
  parse_opts(L, 2, &a.opts);
  return request(L, GSI_IO_LISTEN, &a, 1);
}

/* io_connect(ip, port, opts, timeout) -> ref */
static int l_io_connect(lua_State *L) {
  gsi_io_args a;
  size_t n;
  const char *ip = luaL_checklstring(L, 1, &n);
  args_of(L, &a, 0);
  a.a = check_port(L, 2);
  parse_opts(L, 3, &a.opts);
  a.b = opt_timeout(L, 4);
  luaL_argcheck(L, n > 0 && n < sizeof a.opts.ip, 1, "address too long");
  memcpy(a.opts.ip, ip, n + 1);
  return request(L, GSI_IO_CONNECT, &a, 1);
}

/* io_accept(ls, timeout) -> ref */
static int l_io_accept(lua_State *L) {
  gsi_io_args a;
  args_of(L, &a, 1);
  a.b = opt_timeout(L, 2);
  return request(L, GSI_IO_ACCEPT, &a, 1);
}

/* io_recv(s, n, timeout) -> ref */
static int l_io_recv(lua_State *L) {
  gsi_io_args a;
  lua_Integer n;
  args_of(L, &a, 1);
  n = luaL_optinteger(L, 2, 0);
  luaL_argcheck(L, n >= 0, 2, "byte count must be >= 0");
  a.a = n;
  a.b = opt_timeout(L, 3);
  return request(L, GSI_IO_RECV, &a, 1);
}

/* io_send(s, data) -> true | ref (wait for it) | nil, reason */
static int l_io_send(lua_State *L) {
  size_t len;
  uint64_t sock = check_sock(L, 1), ref;
  const char *data = luaL_checklstring(L, 2, &len);
  gsi_proc *p = gsi_lua_self(L);
  int rc = gsi_io_send(p, sock, data, len, &ref);
  if (rc == GSI_IO_ECLOSED) { /* the reason it ended with */
    lua_pushnil(L);
    lua_pushstring(L, gsi_io_closed_reason(p, sock));
    return 2;
  }
  return result(L, rc, ref);
}

/* io_close(s) -> ref (answered once it is closed) */
static int l_io_close(lua_State *L) {
  gsi_io_args a;
  return request(L, GSI_IO_CLOSE, args_of(L, &a, 1), 1);
}

/* io_shutdown(s, "write") -> true */
static int l_io_shutdown(lua_State *L) {
  gsi_io_args a;
  static const char *const how[] = {"write", NULL};
  args_of(L, &a, 1);
  luaL_checkoption(L, 2, "write", how);
  return request(L, GSI_IO_SHUTDOWN, &a, 0);
}

/* io_setopts(s, opts) -> true | nil, reason */
static int l_io_setopts(lua_State *L) {
  gsi_io_args a;
  args_of(L, &a, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  parse_opts(L, 2, &a.opts);
  return result(L, gsi_io_setopts(gsi_lua_self(L), a.sock, &a.opts), 0);
}

/* io_controlling_process(s, pid) -> true | nil, reason */
static int l_io_controlling_process(lua_State *L) {
  uint64_t sock = check_sock(L, 1), to;
  if (!gsi_topid(L, 2, &to)) luaL_typeerror(L, 2, "pid");
  return result(L, gsi_io_set_owner(gsi_lua_self(L), sock, to), 0);
}

/* io_name(s, peer) -> ref */
static int l_io_name(lua_State *L) {
  gsi_io_args a;
  args_of(L, &a, 1);
  a.a = lua_toboolean(L, 2);
  return request(L, GSI_IO_NAME, &a, 1);
}

/* io_udp_open(port, opts) -> ref */
static int l_io_udp_open(lua_State *L) {
  gsi_io_args a;
  args_of(L, &a, 0);
  a.a = check_port(L, 1);
  parse_opts(L, 2, &a.opts);
  return request(L, GSI_IO_UDP_OPEN, &a, 1);
}

/* io_udp_send(s, ip, port, data) -> true | nil, reason */
static int l_io_udp_send(lua_State *L) {
  size_t n, len;
  uint64_t sock = check_sock(L, 1);
  const char *ip = luaL_checklstring(L, 2, &n);
  int port = check_port(L, 3);
  const char *data = luaL_checklstring(L, 4, &len);
  luaL_argcheck(L, n > 0 && n < GSI_IO_IPLEN, 2, "address too long");
  return result(L, gsi_io_udp_send(gsi_lua_self(L), sock, ip, port, data, len), 0);
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
