/*
** io_host_test.c - genserver.tcp / genserver.udp from a C host's bound Lua
** state (gs_openlibs): the host thread's waits block it, a process spawned
** from there owns its own sockets, and gs_runtime_close with sockets still
** open closes them and joins the I/O loop thread. Prints TAP; exits 0 iff
** every check passed.
**
** `make test CTESTS=spec/c/io_host_test.c` builds and runs it.
*/
#include <stdio.h>
#include <string.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"

#include "genserver.h"

static int ntest, nfail;

static void check(int ok, const char *what, const char *detail) {
  printf("%sok %d - %s%s%s\n", ok ? "" : "not ", ++ntest, what, detail ? ": " : "",
         detail ? detail : "");
  if (!ok) nfail++;
}

static void run(lua_State *L, const char *what, const char *chunk) {
  int rc = luaL_dostring(L, chunk);
  check(rc == LUA_OK, what, rc == LUA_OK ? NULL : lua_tostring(L, -1));
  lua_settop(L, 0);
}

int main(void) {
  gs_runtime *rt = NULL;
  lua_State *L;
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (gs_runtime_open(&rt, NULL) != GS_OK) {
    printf("not ok 1 - gs_runtime_open\n1..1\n");
    return 1;
  }
  L = luaL_newstate();
  luaL_openlibs(L);
  check(gs_openlibs(rt, L) == GS_OK, "gs_openlibs", NULL);

  run(L, "listen, connect, accept, send and recv from the host's thread",
      "local tcp = require 'genserver.tcp'\n"
      "local ls = assert(tcp.listen(0, { active = false, packet = 'line' }))\n"
      "local port = tcp.sockname(ls).port\n"
      "local c = assert(tcp.connect('127.0.0.1', port, { packet = 'line', active = false }, 5000))\n"
      "local s = assert(tcp.accept(ls, 5000))\n"
      "assert(tcp.send(c, 'from the host\\n'))\n"
      "assert(tcp.recv(s, 0, 5000) == 'from the host\\n')\n"
      "local d, err = tcp.recv(s, 0, 10)\n"
      "assert(d == nil and err == 'timeout', tostring(err))\n"
      "listener, client, server = ls, c, s");

  run(L, "a process spawned from the host owns its socket and echoes",
      "local tcp = require 'genserver.tcp'\n"
      "local process = require 'genserver.process'\n"
      "local port = tcp.sockname(listener).port\n"
      "process.spawn(function(port)\n"
      "  local tcp = require 'genserver.tcp'\n"
      "  local process = require 'genserver.process'\n"
      "  local c = assert(tcp.connect('127.0.0.1', port, { packet = 'line' }, 5000))\n"
      "  local m = process.receive(function(m) return type(m) == 'table' and m[1] == 'tcp' end, 5000)\n"
      "  tcp.send(c, 'echo:' .. m.data)\n"
      "  process.receive(60000)\n"
      "end, port)\n"
      "local s = assert(tcp.accept(listener, 5000))\n"
      "assert(tcp.send(s, 'hi\\n'))\n"
      "assert(tcp.recv(s, 0, 5000) == 'echo:hi\\n')");

  run(L, "udp from the host's thread",
      "local udp = require 'genserver.udp'\n"
      "local process = require 'genserver.process'\n"
      "local a, b = assert(udp.open(0)), assert(udp.open(0))\n"
      "assert(udp.send(a, '127.0.0.1', udp.sockname(b).port, 'dgram'))\n"
      "local m = process.receive(function(m) return type(m) == 'table' and m[1] == 'udp' end, 5000)\n"
      "assert(m and m.data == 'dgram' and m.sock == b)");

  /* sockets (and a process holding one) still open: close them all */
  check(gs_runtime_close(rt, 5000) == GS_OK,
        "gs_runtime_close with sockets open closes them and joins the loop thread", NULL);
  lua_close(L);
  printf("1..%d\n", ntest);
  return nfail != 0;
}
