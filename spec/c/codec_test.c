/*
** codec_test.c - the value codec (csrc/core/codec*.c) and ids (csrc/core/ids.c).
** Prints TAP; exits 0 iff every check passed.
**
** Build and run from the repository root:
**   gcc -std=c11 -Wall -Wextra -Werror -O2 -I/usr/include/lua5.4 -Icsrc \
**       -o /tmp/codec_test spec/c/codec_test.c csrc/core/codec.c \
**       csrc/core/codec_fast.c csrc/core/codec_enc.c csrc/core/codec_env.c \
**       csrc/core/codec_dec.c csrc/core/ids.c csrc/core/wire.c \
**       -llua5.4 -lm && /tmp/codec_test
** Sanitizers: the same with -O1 -g -fsanitize=address,undefined
**   -fno-omit-frame-pointer instead of -O2. Under valgrind:
**   valgrind --leak-check=full --error-exitcode=1 /tmp/codec_test
** (`make test CTESTS=spec/c/codec_test.c` builds it with the core objects.)
**
** Two separate states, A and B, play sender and receiver; values are made
** and checked by small Lua chunks, so each check reads like the Lua it
** is about.
*/
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

#include "core/codec.h"
#include "core/ids.h"

#include "tap.h"


static void diag (const char *fmt, ...) {
  va_list ap;
  printf("# ");
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
}


/* ------------------------------------------------ states and helpers */

/* Counting allocator: lets the huge-length tests see that nothing big
** was asked for. */
typedef struct counter {
  size_t maxreq;
  int track;
} counter;

static counter counta, countb;


static void *countalloc (void *ud, void *ptr, size_t osize, size_t nsize) {
  counter *c = (counter *)ud;
  (void)osize;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  if (c->track && nsize > c->maxreq)
    c->maxreq = nsize;
  return realloc(ptr, nsize);
}


static int l_pid (lua_State *L) {
  lua_Integer gen = luaL_checkinteger(L, 1), index = luaL_checkinteger(L, 2);
  gsi_pushpid(L, ((uint64_t)gen << 32) | (uint32_t)index);
  return 1;
}


static int l_ref (lua_State *L) {
  gsi_pushref(L, (uint64_t)luaL_checkinteger(L, 1));
  return 1;
}


static int l_newud (lua_State *L) {
  lua_newuserdatauv(L, 8, 0);
  return 1;
}


static int l_lightud (lua_State *L) {
  static char x;
  lua_pushlightuserdata(L, &x);
  return 1;
}


static int l_secretfn (lua_State *L) {
  lua_pushliteral(L, "secret");
  return 1;
}


/* returns a C function that is in no loaded module */
static int l_getsecret (lua_State *L) {
  lua_pushcfunction(L, l_secretfn);
  return 1;
}


/* another one, which the module-cache test puts in a module */
static int l_latefn (lua_State *L) {
  lua_pushliteral(L, "late");
  return 1;
}


static int l_getlate (lua_State *L) {
  lua_pushcfunction(L, l_latefn);
  return 1;
}


static int l_invalidate (lua_State *L) {
  gsi_codec_invalidate(L);
  return 0;
}


static const char prelude[] =
  "function deq(a, b, seen)\n"
  "  if type(a) ~= type(b) then return false end\n"
  "  if type(a) == 'number' then\n"
  "    if math.type(a) ~= math.type(b) then return false end\n"
  "    if a ~= a then return b ~= b end\n"
  "    if a == 0 and math.type(a) == 'float' then return 1/a == 1/b end\n"
  "    return a == b\n"
  "  end\n"
  "  if type(a) ~= 'table' then return a == b end\n"
  "  seen = seen or {}\n"
  "  if seen[a] then return seen[a] == b end\n"
  "  seen[a] = b\n"
  "  local n = 0\n"
  "  for k, v in next, a do\n"
  "    n = n + 1\n"
  "    if not deq(v, rawget(b, k), seen) then return false end\n"
  "  end\n"
  "  for _ in next, b do n = n - 1 end\n"
  "  return n == 0\n"
  "end\n"
  "function nest(n)\n"
  "  local t = {}\n"
  "  local c = t\n"
  "  for i = 2, n do c.x = {} c = c.x end\n"
  "  c.v = 'bottom'\n"
  "  return t\n"
  "end\n"
  "package.preload.mymod = function()\n"
  "  return {hello = function() return 'hi from ' .. MARK end}\n"
  "end\n";


static lua_State *newstate (counter *c, const char *mark) {
  lua_State *L = lua_newstate(countalloc, c);
  if (L == NULL) {
    fprintf(stderr, "cannot create a state\n");
    exit(2);
  }
  luaL_openlibs(L);
  lua_register(L, "pid", l_pid);
  lua_register(L, "ref", l_ref);
  lua_register(L, "newud", l_newud);
  lua_register(L, "lightud", l_lightud);
  lua_register(L, "getsecret", l_getsecret);
  lua_register(L, "getlate", l_getlate);
  lua_register(L, "invalidate", l_invalidate);
  lua_pushstring(L, mark);
  lua_setglobal(L, "MARK");
  if (luaL_dostring(L, prelude) != LUA_OK) {
    fprintf(stderr, "prelude: %s\n", lua_tostring(L, -1));
    exit(2);
  }
  return L;
}


static lua_State *A, *B;
static gsi_buf buf;


/* Run chunk `code` in L, leaving its first result on the stack. */
static int eval (lua_State *L, const char *code, const char *chunkname) {
  if (luaL_loadbuffer(L, code, strlen(code), chunkname) != LUA_OK ||
      lua_pcall(L, 0, 1, 0) != LUA_OK) {
    diag("lua error: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}


/* Encode make's result in A into buf (len reset); 1 on success. */
static int encode_in_a (const char *make, const gsi_codec_limits *lim) {
  int top = lua_gettop(A), r;
  if (!eval(A, make, "=make"))
    return 0;
  buf.len = 0;
  r = gsi_encode(A, -1, "message", lim, &buf);
  if (r != 0) {
    diag("encode failed: %s", lua_tostring(A, -1));
    lua_pop(A, 1);
  }
  lua_pop(A, 1);
  if (lua_gettop(A) != top) {
    diag("encode: stack not balanced");
    return 0;
  }
  return r == 0;
}


/* Decode buf in L and call chunk `test` with the value; 1 if it returns
** true with the stack balanced. */
static int decode_and_test (lua_State *L, const char *test) {
  int top = lua_gettop(L), ok;
  if (gsi_decode(L, buf.data, buf.len, NULL) != 0) {
    diag("decode failed: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return 0;
  }
  if (lua_gettop(L) != top + 1) {
    diag("decode pushed %d values", lua_gettop(L) - top);
    return 0;
  }
  if (luaL_loadbuffer(L, test, strlen(test), "=test") != LUA_OK) {
    diag("bad test chunk: %s", lua_tostring(L, -1));
    lua_settop(L, top);
    return 0;
  }
  lua_insert(L, -2);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    diag("test raised: %s", lua_tostring(L, -1));
    lua_settop(L, top);
    return 0;
  }
  ok = lua_toboolean(L, -1);
  lua_settop(L, top);
  return ok;
}


/* make's value must pass test after a trip within A and from A to B */
static void roundtrip (const char *name, const char *make, const char *test) {
  int ok = encode_in_a(make, NULL) && decode_and_test(A, test);
  check(ok, "%s (same state)", name);
  ok = encode_in_a(make, NULL) && decode_and_test(B, test);
  check(ok, "%s (across states)", name);
}


/* roundtrip of an expression, compared with deq to a fresh evaluation */
static void rtexpr (const char *name, const char *expr) {
  char make[1024], test[1024];
  snprintf(make, sizeof(make), "return %s", expr);
  snprintf(test, sizeof(test), "return deq(..., %s)", expr);
  roundtrip(name, make, test);
}


/* make's value must be refused with exactly `want`, buffer untouched */
static void refusal (const char *name, const char *make, const char *what,
                     const char *want) {
  int top = lua_gettop(A), r, ok = 0;
  if (!eval(A, make, "=make")) {
    check(0, "refuses %s", name);
    return;
  }
  buf.len = 0;
  gsi_buf_reserve(&buf, 8);
  memcpy(buf.data, "prefix", 6);
  buf.len = 6;
  r = gsi_encode(A, -1, what, NULL, &buf);
  if (r == -1 && lua_gettop(A) == top + 2 && lua_type(A, -1) == LUA_TSTRING) {
    const char *msg = lua_tostring(A, -1);
    ok = strcmp(msg, want) == 0;
    if (!ok)
      diag("got '%s', want '%s'", msg, want);
    if (buf.len != 6 || memcmp(buf.data, "prefix", 6) != 0) {
      diag("buffer changed by a failed encode");
      ok = 0;
    }
  }
  else
    diag("encode returned %d, stack %+d", r, lua_gettop(A) - top);
  lua_settop(A, top);
  check(ok, "refuses %s", name);
}


/* ----------------------------------------------------------- the tests */

static void test_scalars (void) {
  rtexpr("nil", "nil");
  rtexpr("true", "true");
  rtexpr("false", "false");
  rtexpr("small integers", "{0, 1, 127, 128, -1, -32, -33, 255, 256, -1000}");
  rtexpr("big integers", "{math.mininteger, math.maxinteger, "
                         "math.mininteger + 1, 1 << 40, -(1 << 40)}");
  rtexpr("top-level mininteger", "math.mininteger");
  roundtrip("1.0 stays a float", "return 1.0",
            "local v = ... return math.type(v) == 'float' and v == 1");
  roundtrip("-0.0 keeps its sign", "return -0.0",
            "local v = ... return math.type(v) == 'float' and 1/v == -1/0");
  roundtrip("inf and -inf", "return {1/0, -1/0}",
            "local v = ... return v[1] == 1/0 and v[2] == -1/0");
  roundtrip("NaN", "return 0/0", "local v = ... return v ~= v");
  rtexpr("floats", "{0.5, -2.25, 1e300, 5e-324, 3.141592653589793, 2^63}");
  rtexpr("strings with zeros", "{'', 'a', 'a\\0b\\0', ('x\\0'):rep(1000)}");
  rtexpr("all 256 byte values",
         "(function() local t = {} for i = 0, 255 do t[#t + 1] = "
         "string.char(i) end return table.concat(t) end)()");
  rtexpr("string lengths around 31/32", "{('s'):rep(31), ('s'):rep(32), "
         "('s'):rep(127), ('s'):rep(128), ('s'):rep(16384)}");
}


static void test_tables (void) {
  rtexpr("empty table", "{}");
  rtexpr("array", "{1, 2, 3, 'x', 4.5, true}");
  rtexpr("hash", "{a = 1, b = 'two', ['c d'] = true, [''] = 0}");
  rtexpr("mixed", "{1, 2, 3, x = 1, [10] = 10, [-1] = 'neg', [2.5] = 'f', "
         "[0] = 'zero'}");
  rtexpr("array with holes", "{1, nil, 3, nil, nil, 6}");
  rtexpr("nested tables", "{'inc', 1, {user = 'alice', n = 7}}");
  rtexpr("big array and hash", "(function() local t = {} for i = 1, 3000 "
         "do t[i] = i; t['k' .. i] = {i} end return t end)()");
  roundtrip("nested 100 deep", "return nest(100)",
            "local c, n = ..., 1 while c.x do c = c.x n = n + 1 end "
            "return n == 100 and c.v == 'bottom'");
  roundtrip("shared subtable keeps identity",
            "local s = {1} return {a = s, b = s, c = {s}}",
            "local v = ... return v.a == v.b and v.c[1] == v.a and "
            "v.a[1] == 1");
  roundtrip("cycle", "local t = {} t.self = t t.list = {t} return t",
            "local v = ... return v.self == v and v.list[1] == v");
  roundtrip("table keys that are tables, booleans, floats",
            "local k = {name = 'k'} return {[k] = 'tk', [true] = 'T', "
            "[false] = 'F', [1.5] = 'f', [-0.5] = 'm'}",
            "local v, found = ... for kk, vv in pairs(v) do "
            "if type(kk) == 'table' then found = kk.name == 'k' and "
            "vv == 'tk' end end return found and v[true] == 'T' and "
            "v[false] == 'F' and v[1.5] == 'f' and v[-0.5] == 'm'");
  roundtrip("a key table that is also a value",
            "local k = {} return {[k] = k, other = k}",
            "local v = ... local n = 0 for kk, vv in pairs(v) do "
            "n = n + 1 if type(kk) == 'table' and kk ~= vv then "
            "return false end end return n == 2 and next(v.other) == nil "
            "and v[v.other] == v.other");
  roundtrip("metatables are neither sent nor run",
            "return setmetatable({a = 1, 2}, {__index = error, "
            "__pairs = error, __len = error, __newindex = error})",
            "local v = ... return getmetatable(v) == nil and v.a == 1 "
            "and v[1] == 2");
}


/* The encoder's fast path (no protected call) and its full path write
** the same bytes. A table root takes the full path while A has no module
** cache (just invalidated; the full path builds it) and the fast path
** the time after, unless the value needs the full path anyway. */
static void test_fast_path (void) {
  static const char *const exprs[] = {
    "{'inc', 1, {user = 'alice', n = 7}}",
    "{}",
    "{1, 2, nil, 4, x = 1.5, [2.5] = true, [false] = 'f'}",
    "{[{}] = {1}, [{2}] = 'k'}",
    "(function() local t = {} for i = 1, 300 do t['k' .. i] = i end "
    "return t end)()",
    "(function() local t = {} for i = 1, 200 do t[i] = i * 1000 end "
    "t[1000] = 'far' return t end)()",
    "{('s'):rep(31), ('s'):rep(32), ('s'):rep(200), -33, -32, 1 << 40, "
    "math.mininteger, 0.5, -0.0, 1/0}",
    "{pid(1, 2), ref(3), {pid(7, 9)}}",
    "(function() local t = {} t[3] = 3 t.x = 'x' t[2] = 2 t[1] = 1 "
    "t.y = 'y' return t end)()",
    "(function() local t = {1, 2, 3, 4} t[3] = nil t[6] = 6 "
    "return t end)()",
    "nest(15)", "nest(40)",
    "{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}}",
    "{string, {x = string}}",
    "(function() local s = {} return {s, s} end)()",
    "{print}", "{function() end}",
    /* C functions of loaded modules: the fast path takes their bytes from
    ** the full path's cache, once the full path built it */
    "string.rep", "{print, print, t = {math.floor}}",
    "{table.insert, function() end}",
  };
  size_t i;
  for (i = 0; i < sizeof(exprs) / sizeof(exprs[0]); i++) {
    char make[512];
    unsigned char *full = NULL;
    size_t nfull = 0;
    int ok = 0;
    /* one value, encoded twice: the same traversal order */
    snprintf(make, sizeof(make), "invalidate() V = %s return V", exprs[i]);
    if (encode_in_a(make, NULL) && (full = malloc(buf.len + 1)) != NULL) {
      memcpy(full, buf.data, buf.len);
      nfull = buf.len;
      ok = encode_in_a("return V", NULL) && buf.len == nfull &&
           memcmp(buf.data, full, nfull) == 0;
    }
    free(full);
    check(ok, "fast and full encoder agree on %.40s", exprs[i]);
  }
}


static void test_ids (void) {
  uint64_t id = 0;
  int ok, top;
  roundtrip("pids and refs",
            "return {p = pid(1, 5), q = pid(1, 5), r = ref(42), "
            "[pid(2, 3)] = 'pk', [ref(7)] = 'rk', big = ref(-2), "
            "g = pid(0xffffffff, 0xffffffff)}",
            "local v = ... return v.p == v.q and rawequal(v.p, v.q) and "
            "rawequal(v.p, pid(1, 5)) and tostring(v.p) == '<0.5.1>' and "
            "tostring(v.r) == '#Ref<0.42>' and v[pid(2, 3)] == 'pk' and "
            "v[ref(7)] == 'rk' and rawequal(v.big, ref(-2)) and "
            "tostring(v.big) == '#Ref<0.18446744073709551614>' and "
            "tostring(v.g) == '<0.4294967295.4294967295>'");
  /* interning: two decodes of the same message give the same userdata */
  top = lua_gettop(B);
  ok = encode_in_a("return pid(3, 9)", NULL) &&
       gsi_decode(B, buf.data, buf.len, NULL) == 0 &&
       gsi_decode(B, buf.data, buf.len, NULL) == 0 &&
       lua_rawequal(B, -1, -2) && gsi_topid(B, -1, &id) &&
       id == (((uint64_t)3 << 32) | 9) && !gsi_toref(B, -1, &id) &&
       gsi_isid(B, -1) == GSI_ID_PID;
  lua_settop(B, top);
  check(ok, "decoding a pid twice gives the same userdata");
  lua_pushinteger(B, 5);
  lua_newuserdatauv(B, 8, 0);
  ok = !gsi_topid(B, -1, &id) && !gsi_topid(B, -2, &id) &&
       gsi_isid(B, -1) == GSI_ID_NONE;
  lua_settop(B, top);
  check(ok, "gsi_topid refuses other values");
  lua_State *C = luaL_newstate();  /* a state that never pushed an id */
  lua_newuserdatauv(C, 8, 0);
  ok = !gsi_topid(C, -1, &id) && !gsi_toref(C, -1, &id);
  lua_close(C);
  check(ok, "gsi_topid in a state without ids");
  top = lua_gettop(A);
  ok = eval(A, "return pid(1, 2) < pid(1, 3) and pid(2, 0) > pid(1, 9) "
               "and ref(1) <= ref(1) and not (ref(2) <= ref(1)) and "
               "not pcall(function() return pid(1, 1) < ref(1) end) and "
               "not pcall(function() return pid(1, 1) < 3 end) and "
               "pid(1, 2) ~= pid(2, 1)", "=ids") &&
       lua_toboolean(A, -1);
  lua_settop(A, top);
  check(ok, "pids and refs compare");
}


static void test_functions (void) {
  roundtrip("function with upvalues",
            "local a, b = 10, 'x' return function(n) return a + n, b end",
            "local r, s = (...)(5) return r == 15 and s == 'x'");
  roundtrip("recursive local function",
            "local function fact(n) if n <= 1 then return 1 end "
            "return n * fact(n - 1) end return fact",
            "return (...)(10) == 3628800");
  roundtrip("two closures sharing an upvalue",
            "local n = 0 return {inc = function() n = n + 1 return n end, "
            "get = function() return n end}",
            "local t = ... t.inc() t.inc() return t.get() == 2");
  roundtrip("shared upvalue whose value holds the other closure",
            "local n local function a() return n end "
            "n = {set = function() n = 5 end} return a",
            "local f = ... f().set() return f() == 5");
  roundtrip("function sent twice keeps identity",
            "local f = function() return 1 end return {f, f, g = f}",
            "local v = ... return v[1] == v[2] and v.g == v[1] and "
            "v[1]() == 1");
  roundtrip("cycle through an upvalue",
            "local t = {} t.f = function() return t end return t",
            "local v = ... return v.f() == v");
  roundtrip("string.format through an upvalue",
            "local fmt = string.format return function(x) "
            "return fmt('<%d>', x) end",
            "return (...)(5) == '<5>'");
  roundtrip("globals (_ENV) are the receiver's",
            "return function() return MARK, math.floor(2.5) end",
            "local m, f = (...)() return m == MARK and f == 2");
  roundtrip("debug info is kept",
            "return function()\n\n  error('boom')\nend",
            "local f = ... local ok, err = pcall(f) "
            "return not ok and err:find('make:3: boom', 1, true) ~= nil "
            "and debug.getinfo(f, 'S').linedefined == 1");
  roundtrip("module table crosses by name", "return string",
            "return (...) == string");
  roundtrip("_G crosses by name", "return {g = _G}",
            "return (...).g == _G");
  roundtrip("C function table.insert by name", "return table.insert",
            "return rawequal(..., table.insert)");
  roundtrip("C functions print and string.format by name",
            "return {print, string.format}",
            "local v = ... return v[1] == print and v[2] == string.format");
  roundtrip("user module required on the receiving side",
            "local m = require 'mymod' invalidate() "
            "return function() return m.hello() end",
            "local f = ... return f() == 'hi from ' .. MARK and "
            "select(2, debug.getupvalue(f, 1)) == package.loaded.mymod");
}


static void test_module_cache (void) {
  int top = lua_gettop(A), ok;
  /* a C function in a module loaded after the cache was built: the
  ** encoder rebuilds once on a miss */
  ok = encode_in_a("return {1}", NULL) &&
       encode_in_a("package.loaded.late = {fn = getlate()} "
                   "return package.loaded.late.fn", NULL) &&
       decode_and_test(A, "return rawequal(..., package.loaded.late.fn)");
  check(ok, "C function of a module loaded later is found");
  /* a table module loaded without invalidation is copied, after it by
  ** name */
  ok = encode_in_a("package.loaded.late2 = {x = 1} return late2 or "
                   "package.loaded.late2", NULL) &&
       decode_and_test(A, "local v = ... return v ~= package.loaded.late2 "
                          "and v.x == 1");
  check(ok, "module loaded without invalidation is copied");
  ok = encode_in_a("invalidate() return package.loaded.late2", NULL) &&
       decode_and_test(A, "return (...) == package.loaded.late2");
  check(ok, "after gsi_codec_invalidate it crosses by name");
  lua_settop(A, top);
}


static void test_refusals (void) {
  refusal("a userdata deep in a table",
          "return {items = {1, 2, {cb = newud()}}}", "message",
          "message.items[3].cb: cannot send a userdata");
  refusal("a coroutine", "return {co = coroutine.create(print)}", "message",
          "message.co: cannot send a thread");
  refusal("a C function in no loaded module", "return {f = getsecret()}",
          "message", "message.f: cannot send a C function "
          "(not found in any loaded module)");
  refusal("a userdata upvalue",
          "local conn = newud() return {cb = function() return conn end}",
          "message", "message.cb(upvalue 'conn'): cannot send a userdata");
  refusal("a thread as a key", "return {[coroutine.create(print)] = 1}",
          "request", "request[<thread>]: cannot send a thread as a table key");
  refusal("a userdata inside a key table", "return {[{x = newud()}] = 1}",
          "message", "message[<table>].x: cannot send a userdata");
  refusal("a light userdata at the root", "return lightud()", "argument 2",
          "argument 2: cannot send a light userdata");
  refusal("with odd keys on the path",
          "return {['a b'] = {[7] = {[2.5] = {[true] = {[pid(1, 2)] = "
          "{'ok', newud()}}}}}}", "message",
          "message[\"a b\"][7][2.5][true][<0.2.1>][2]: cannot send a userdata");
  refusal("with no root name", "return newud()", NULL,
          "value: cannot send a userdata");
  refusal("nested upvalue paths",
          "local ud = newud() local function inner() return ud end "
          "local t = {inner} return {f = function() return t end}", "message",
          "message.f(upvalue 't')[1](upvalue 'ud'): cannot send a userdata");
}


static void test_limits (void) {
  gsi_codec_limits lim = gsi_codec_default_limits;
  int top, r, ok;
  const char *msg;

  ok = encode_in_a("return nest(200)", NULL);
  check(ok, "200 levels encode with the default limit");
  top = lua_gettop(A);
  eval(A, "return nest(201)", "=make");
  buf.len = 0;
  r = gsi_encode(A, -1, "message", NULL, &buf);
  msg = lua_tostring(A, -1);
  ok = r == -1 && buf.len == 0 && msg != NULL &&
       strcmp(msg, "message: nested too deeply (more than 200 levels)") == 0;
  if (!ok)
    diag("got %s", msg ? msg : "(nothing)");
  lua_settop(A, top);
  check(ok, "201 levels are refused on encode");

  lim.max_depth = 10;
  ok = encode_in_a("return nest(10)", &lim);
  top = lua_gettop(A);
  eval(A, "return {f = function() return nest(1) end, "
          "t = nest(10)}", "=make");
  r = gsi_encode(A, -1, "message", &lim, &buf);
  ok = ok && r == -1;
  lua_settop(A, top);
  check(ok, "a custom depth limit counts tables");

  lim.max_depth = 300;
  ok = encode_in_a("return nest(201)", &lim);
  top = lua_gettop(B);
  r = gsi_decode(B, buf.data, buf.len, NULL);
  msg = lua_tostring(B, -1);
  ok = ok && r == -1 && lua_gettop(B) == top + 1 && msg != NULL &&
       strcmp(msg, "message too deep (more than 200 levels)") == 0;
  lua_settop(B, top);
  r = gsi_decode(B, buf.data, buf.len, &lim);
  ok = ok && r == 0;
  lua_settop(B, top);
  check(ok, "depth limit on decode");

  lim = gsi_codec_default_limits;
  lim.max_size = 100;
  top = lua_gettop(A);
  eval(A, "return {('x'):rep(1000)}", "=make");
  buf.len = 0;
  r = gsi_encode(A, -1, "message", &lim, &buf);
  msg = lua_tostring(A, -1);
  ok = r == -1 && buf.len == 0 && msg != NULL &&
       strcmp(msg, "message: too large (more than 100 bytes encoded)") == 0;
  if (!ok)
    diag("got %s", msg ? msg : "(nothing)");
  lua_settop(A, top);
  eval(A, "return load('return function() return \\'' .. ('x'):rep(200) .. "
          "'\\' end')()", "=make");
  r = gsi_encode(A, -1, "message", &lim, &buf);
  ok = ok && r == -1 && buf.len == 0;
  lua_settop(A, top);
  check(ok, "size limit on encode (strings, bytecode)");

  ok = encode_in_a("return {('x'):rep(1000)}", NULL);
  top = lua_gettop(B);
  r = gsi_decode(B, buf.data, buf.len, &lim);
  msg = lua_tostring(B, -1);
  ok = ok && r == -1 && msg != NULL &&
       strcmp(msg, "message too large (more than 100 bytes)") == 0;
  lua_settop(B, top);
  check(ok, "size limit on decode");

  lim = gsi_codec_default_limits;
  lim.allow_functions = 0;
  ok = encode_in_a("return {f = function() return 1 end}", NULL);
  r = gsi_decode(B, buf.data, buf.len, &lim);
  ok = ok && r == -1 && lua_type(B, -1) == LUA_TSTRING &&
       lua_gettop(B) == top + 1;
  lua_settop(B, top);
  ok = ok && encode_in_a("return table.insert", NULL) &&
       gsi_decode(B, buf.data, buf.len, &lim) == -1;
  lua_settop(B, top);
  ok = ok && encode_in_a("return {s = string}", NULL) &&
       gsi_decode(B, buf.data, buf.len, &lim) == 0;
  lua_settop(B, top);
  check(ok, "allow_functions = 0 refuses bytecode and C functions, "
            "not loaded modules");

  /* growth of a reused buffer, appending after existing bytes */
  buf.len = 0;
  eval(A, "return {('y'):rep(5000), ('z'):rep(70000)}", "=make");
  r = gsi_encode(A, -1, "message", NULL, &buf);
  ok = r == 0 && buf.len > 75000;
  {
    size_t first = buf.len;
    r = gsi_encode(A, -1, "message", NULL, &buf);
    ok = ok && r == 0 && buf.len == 2 * first &&
         memcmp(buf.data, buf.data + first, first) == 0 &&
         gsi_decode(B, buf.data + first, first, NULL) == 0 &&
         lua_rawlen(B, -1) == 2;
  }
  lua_settop(A, top);
  lua_settop(B, top);
  check(ok, "encode appends to a used buffer");
}


/* --------------------------------------------------------- bad input */

static gsi_codec_limits untrusted;

/* one decode of arbitrary bytes: 1 if it behaved */
static int safe_decode (lua_State *L, const unsigned char *p, size_t len) {
  int top = lua_gettop(L);
  int r = gsi_decode(L, p, len, &untrusted);
  int ok = lua_gettop(L) == top + 1 &&
           (r == 0 || (r == -1 && lua_type(L, -1) == LUA_TSTRING));
  lua_settop(L, top);
  return ok;
}


static const char *samples[] = {
  "return {'inc', 1, {user = 'alice', n = 7}}",
  "return {1.5, -0.0, 0/0, math.mininteger, -7, 300, true, false}",
  "local t = {} t.self = t t[t] = {t, 'x'} return t",
  "return {pid(1, 2), ref(99), [pid(4, 4)] = ref(1)}",
  "return {string, table.insert, _G, n = nil}",
  "return {('q'):rep(40), 'short', [2.5] = {}, [true] = {{}}}",
  "local n = 0 return {function() n = n + 1 end, function() return n end}",
  "return nest(30)",
};
#define NSAMPLES (sizeof(samples) / sizeof(samples[0]))

static gsi_buf enc[NSAMPLES];


static void test_malformed (void) {
  size_t s, i, len;
  int c, bad;
  unsigned char *tmp;

  for (s = 0; s < NSAMPLES; s++) {
    int ok = encode_in_a(samples[s], NULL);
    gsi_buf_init(&enc[s]);
    gsi_buf_reserve(&enc[s], buf.len);
    memcpy(enc[s].data, buf.data, buf.len);
    enc[s].len = buf.len;
    if (!ok)
      diag("sample %d did not encode", (int)s);
  }

  /* every truncation fails (the format is prefix-free) */
  for (s = 0; s < NSAMPLES; s++) {
    int top = lua_gettop(B);
    bad = 0;
    len = enc[s].len;
    for (i = 0; i < len; i++) {
      tmp = (unsigned char *)malloc(i + 1);  /* exact size, for ASan */
      memcpy(tmp, enc[s].data, i);
      if (gsi_decode(B, tmp, i, &untrusted) != -1 ||
          lua_gettop(B) != top + 1 || lua_type(B, -1) != LUA_TSTRING)
        bad++;
      lua_settop(B, top);
      free(tmp);
    }
    check(bad == 0, "every truncation of sample %d (%d bytes) fails cleanly",
          (int)s + 1, (int)len);
  }

  /* all 256 values at every position */
  for (s = 0; s < NSAMPLES; s++) {
    len = enc[s].len;
    tmp = (unsigned char *)malloc(len);
    bad = 0;
    for (i = 0; i < len; i++) {
      memcpy(tmp, enc[s].data, len);
      for (c = 0; c < 256; c++) {
        tmp[i] = (unsigned char)c;
        bad += !safe_decode(B, tmp, len);
      }
    }
    free(tmp);
    check(bad == 0, "every byte mutation of sample %d (%d decodes)",
          (int)s + 1, (int)len * 256);
  }
}


static uint64_t rngstate = UINT64_C(0x853c49e6748fea9b);

static uint64_t rnd (void) {  /* xorshift64* */
  rngstate ^= rngstate >> 12;
  rngstate ^= rngstate << 25;
  rngstate ^= rngstate >> 27;
  return rngstate * UINT64_C(0x2545f4914f6cdd1d);
}


static void test_fuzz (int rounds) {
  unsigned char *tmp = (unsigned char *)malloc(4096);
  int i, bad = 0, decoded = 0;
  size_t len, k;
  /* random bytes, usually behind a valid header, biased to tag bytes */
  for (i = 0; i < rounds; i++) {
    len = rnd() % 48;
    for (k = 0; k < len; k++) {
      uint64_t r = rnd();
      tmp[k] = (r & 0x300) ? (unsigned char)(0xc0 + (r % 14))
                           : (unsigned char)r;
      if ((r & 0x7000) == 0)
        tmp[k] = (unsigned char)(r >> 20) & 3;
    }
    if (len > 0 && (rnd() & 3))
      tmp[0] = (unsigned char)(GSI_WIRE_MAGIC | (rnd() & 1));
    if (!safe_decode(B, tmp, len))
      bad++;
  }
  check(bad == 0, "%d random byte strings decode or fail cleanly", rounds);
  /* random mutations of valid encodings */
  bad = 0;
  for (i = 0; i < rounds; i++) {
    const gsi_buf *src = &enc[rnd() % NSAMPLES];
    int m, nm = 1 + (int)(rnd() % 4);
    len = src->len;
    memcpy(tmp, src->data, len);
    for (m = 0; m < nm; m++) {
      uint64_t r = rnd();
      size_t at = (size_t)(r % len);
      switch ((r >> 32) % 4) {
        case 0: tmp[at] = (unsigned char)(r >> 40); break;
        case 1: tmp[at] ^= (unsigned char)(1u << ((r >> 40) % 8)); break;
        case 2: if (at > 0) len = at; break;
        default:
          if (len < 4000) tmp[len++] = (unsigned char)(r >> 40);
      }
    }
    {
      int top = lua_gettop(B), r2 = gsi_decode(B, tmp, len, &untrusted);
      if (lua_gettop(B) != top + 1 ||
          (r2 != 0 && (r2 != -1 || lua_type(B, -1) != LUA_TSTRING)))
        bad++;
      decoded += r2 == 0;
      lua_settop(B, top);
    }
  }
  check(bad == 0, "%d random mutations decode or fail cleanly (%d decoded)",
        rounds, decoded);
  free(tmp);
}


static void test_crafted (void) {
  /* hand-made frames: each must fail quickly without a big allocation */
  static const struct { const char *name; unsigned char b[24]; int n; } cases[] = {
    {"table claiming 2^40 elements",
     {0xb0, GSI_T_TABLE, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 0x00}, 9},
    {"table claiming 2^40 hash entries",
     {0xb0, GSI_T_TABLE, 0x00, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 0xc0, 0xc0}, 11},
    {"string claiming 2^62 bytes",
     {0xb0, GSI_T_STR, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40, 'x'}, 12},
    {"varint overflow",
     {0xb0, GSI_T_INT, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, 12},
    {"varint too long",
     {0xb0, GSI_T_INT, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, 13},
    {"back-reference without flag", {0xb0, GSI_T_REF, 0x01}, 3},
    {"back-reference to nothing", {0xb1, GSI_T_REF, 0x01}, 3},
    {"back-reference ahead",
     {0xb1, GSI_T_TABLE, 0x01, 0x00, GSI_T_REF, 0x02}, 6},
    {"nil key", {0xb0, GSI_T_TABLE, 0x00, 0x01, GSI_T_NIL, 0x01}, 6},
    {"NaN key", {0xb0, GSI_T_TABLE, 0x00, 0x01, GSI_T_FLOAT,
                 0, 0, 0, 0, 0, 0, 0xf8, 0x7f, 0x01}, 14},
    {"unknown format byte", {0xa0, 0x01}, 2},
    {"trailing bytes", {0xb0, 0x01, 0x02}, 3},
    {"upvalue join outside a function", {0xb1, GSI_T_UPJOIN, 1, 1}, 4},
    {"unknown tag", {0xb0, 0xd5}, 2},
    {"empty input", {0}, 0},
    {"module not loaded", {0xb0, GSI_T_MODULE, 3, 'n', 'o', 'p'}, 6},
  };
  size_t i;
  int top = lua_gettop(B), r;
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    clock_t t0 = clock();
    double ms;
    countb.maxreq = 0;
    countb.track = 1;
    r = gsi_decode(B, cases[i].b, (size_t)cases[i].n, &untrusted);
    countb.track = 0;
    ms = (double)(clock() - t0) * 1000.0 / CLOCKS_PER_SEC;
    check(r == -1 && lua_gettop(B) == top + 1 &&
          lua_type(B, -1) == LUA_TSTRING && countb.maxreq < 4096 && ms < 50,
          "crafted: %s fails (%s; largest allocation %zu bytes)",
          cases[i].name, lua_tostring(B, -1), countb.maxreq);
    lua_settop(B, top);
  }
  /* a frame with the refs flag but none used is still fine */
  {
    static const unsigned char ok1[] = {0xb1, GSI_T_TABLE, 0x01, 0x00, 0x05};
    r = gsi_decode(B, ok1, sizeof(ok1), &untrusted);
    check(r == 0 && lua_type(B, -1) == LUA_TTABLE, "refs flag without refs");
    lua_settop(B, top);
  }
  /* NULL with length 0 */
  r = gsi_decode(B, NULL, 0, NULL);
  check(r == -1 && lua_gettop(B) == top + 1, "NULL input fails cleanly");
  lua_settop(B, top);
}


/* Upvalue joins are checked even from a trusted sender: lua_upvaluejoin
** itself checks nothing. The frame ends with nup = 1, UPJOIN obj k. */
static void test_upjoin (void) {
  static const struct { const char *name; int at; unsigned char v; } cases[] = {
    {"upvalue joined to a table", 2, 1},
    {"upvalue joined to an unknown object", 2, 9},
    {"upvalue joined to a missing upvalue", 1, 2},
    {"upvalue joined to upvalue 0", 1, 0},
    {"wrong upvalue count", 4, 2},
  };
  size_t i, len;
  int top = lua_gettop(B), ok;
  unsigned char *tmp;
  ok = encode_in_a("local n = 0 return {function() n = n + 1 end, "
                   "function() return n end}", NULL);
  len = buf.len;
  ok = ok && len > 4 && buf.data[len - 3] == GSI_T_UPJOIN &&
       buf.data[len - 2] == 2 && buf.data[len - 1] == 1 &&
       buf.data[len - 4] == 1 && (buf.data[0] & GSI_WIRE_REFS);
  check(ok, "two closures sharing an upvalue end with an upvalue join");
  if (!ok)
    return;
  tmp = (unsigned char *)malloc(len);
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int r;
    memcpy(tmp, buf.data, len);
    tmp[len - (size_t)cases[i].at] = cases[i].v;
    r = gsi_decode(B, tmp, len, NULL);
    check(r == -1 && lua_gettop(B) == top + 1 &&
          lua_type(B, -1) == LUA_TSTRING,
          "trusted frame: %s fails (%s)", cases[i].name,
          lua_tostring(B, -1));
    lua_settop(B, top);
  }
  memcpy(tmp, buf.data, len);
  tmp[0] &= (unsigned char)~GSI_WIRE_REFS;
  ok = gsi_decode(B, tmp, len, NULL) == -1 && lua_gettop(B) == top + 1;
  lua_settop(B, top);
  check(ok, "an upvalue join without the references flag fails");
  free(tmp);
}


int main (int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 100000;
  untrusted = gsi_codec_default_limits;
  untrusted.allow_functions = 0;
  A = newstate(&counta, "A");
  B = newstate(&countb, "B");
  gsi_buf_init(&buf);
  test_scalars();
  test_tables();
  test_fast_path();
  test_ids();
  test_functions();
  test_module_cache();
  test_refusals();
  test_limits();
  test_malformed();
  test_fuzz(rounds);
  test_crafted();
  test_upjoin();
  {
    size_t s;
    for (s = 0; s < NSAMPLES; s++)
      gsi_buf_free(&enc[s]);
  }
  gsi_buf_free(&buf);
  lua_close(A);
  lua_close(B);
  printf("1..%d\n", ntest);
  if (nfail)
    printf("# %d of %d failed\n", nfail, ntest);
  return nfail ? 1 : 0;
}
