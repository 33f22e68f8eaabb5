/*
** mkseeds.c - writes the seed corpora of the fuzz targets:
**   DIR/decode/NAME     real encodings (gsi_encode) of typical messages
**   DIR/roundtrip/NAME  builder programs for roundtrip_fuzz.c
**   DIR/wire/NAME       the decode seeds again, for wire_fuzz.c
**
**   make fuzz-seeds            (rewrites fuzz/corpus/; commit the result)
**   build-fuzz/mkseeds DIR
**
** Decode seeds are made by the real encoder from the Lua expressions below,
** so they follow the wire format as it is, including what an untrusted
** decoder must refuse (functions) and what it accepts (modules by name,
** pids, refs, shared tables, cycles).
*/
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

#include "core/codec.h"
#include "core/ids.h"

static const struct { const char *name, *expr; } values[] = {
  {"nil", "nil"},
  {"true", "true"},
  {"int-small", "7"},
  {"int-neg", "-5"},
  {"int-big", "math.mininteger"},
  {"float", "2.5"},
  {"float-int", "1.0"},
  {"float-negzero", "-0.0"},
  {"float-nan", "0/0"},
  {"float-inf", "{1/0, -1/0}"},
  {"str-short", "'hello'"},
  {"str-long", "('abc'):rep(20)"},
  {"str-bytes", "'\\0\\1\\255\\128 x'"},
  {"array", "{1, 2, 3, 'x', 4.5, true, false}"},
  {"array-holes", "{1, nil, 3, nil, nil, 6}"},
  {"hash", "{a = 1, b = 'two', ['c d'] = true, [-1] = 'neg', [2.5] = 'f'}"},
  {"call-message", "{'$call', 'get', {key = 'user:42', opts = {fresh = true}}}"},
  {"nested", "{{{{{{{{'deep'}}}}}}}}"},
  {"shared", "(function() local s = {1} return {a = s, b = s, c = {s}} end)()"},
  {"cycle", "(function() local t = {} t.self = t t.list = {t} return t end)()"},
  {"table-keys", "(function() local k = {name = 'k'} return {[k] = k, "
                 "[true] = 'T', [false] = 'F'} end)()"},
  {"ids", "{p = pid(1, 5), q = pid(1, 5), r = ref(42), [pid(2, 3)] = 'pk'}"},
  {"module", "{string, table}"},
  {"cfunction", "string.format"},
  {"function", "function(x) return x + 1 end"},
  {"closure", "(function() local n = 0 return function() n = n + 1 "
              "return n end end)()"},
  {"exit-reason", "{'shutdown', reason = {'EXIT', 'normal'}}"},
  {NULL, NULL}
};

/* roundtrip_fuzz.c programs (see the format there) */
static const struct { const char *name; unsigned char b[64]; int n; } programs[] = {
  {"empty", {1}, 1},
  {"scalar-root-int", {0x10, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, 10},
  {"scalar-root-str", {0x20, 4, 5, 'h', 'e', 'l', 'l', 'o'}, 8},
  /* t1[1] = 2, t1["ab"] = 2.5 (small float 10/4), t1[true] = "x" */
  {"scalars", {1, 0, 0, 1, 0, 2, 1, 4, 2, 'a', 'b', 3, 10,
               2, 6, 1, 4, 1, 'x'}, 19},
  /* t1.k = new t2; cur = t2; t2[1] = t1 (cycle back to the root) */
  {"cycle", {1, 0, 4, 1, 'k', 8, 6, 7, 7, 0}, 10},
  /* t1[1] = new t2; t1[2] = t2 again (shared); t2[t2] = t1 (table key) */
  {"shared", {1, 0, 0, 1, 8, 0, 0, 2, 7, 1, 6, 0, 7, 1, 7, 0}, 16},
  /* a chain: t1.n = t2, cur = t2, t2.n = t3, ... */
  {"chain", {1, 0, 4, 1, 'n', 8, 6, 0, 4, 1, 'n', 8, 6, 0, 4, 1, 'n', 8, 6,
             0, 4, 1, 'n', 8, 6, 7, 7, 0}, 28},
  /* floats: NaN (as a value), -0.0, +inf, 2^63 */
  {"floats", {1, 7, 2, 0, 0, 0, 0, 0, 0, 0xf8, 0x7f,
              7, 2, 0, 0, 0, 0, 0, 0, 0, 0x80,
              7, 2, 0, 0, 0, 0, 0, 0, 0xf0, 0x7f,
              7, 2, 0, 0, 0, 0, 0, 0, 0xe0, 0x43}, 41},
  {NULL, {0}, 0}
};


static int l_pid (lua_State *L) {
  lua_Integer gen = luaL_checkinteger(L, 1), index = luaL_checkinteger(L, 2);
  gsi_pushpid(L, ((uint64_t)gen << 32) | (uint32_t)index);
  return 1;
}


static int l_ref (lua_State *L) {
  gsi_pushref(L, (uint64_t)luaL_checkinteger(L, 1));
  return 1;
}


static void mkdirs (const char *path) {
  if (mkdir(path, 0777) != 0 && errno != EEXIST) {
    perror(path);
    exit(1);
  }
}


static void writefile (const char *dir, const char *sub, const char *name,
                       const unsigned char *p, size_t n) {
  char path[4096];
  FILE *f;
  snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
  f = fopen(path, "wb");
  if (f == NULL || (n > 0 && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
    perror(path);
    exit(1);
  }
}


int main (int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "fuzz/corpus";
  char path[4096];
  lua_State *L = luaL_newstate();
  gsi_buf b;
  int i, nd = 0, nr = 0;
  luaL_openlibs(L);
  lua_register(L, "pid", l_pid);
  lua_register(L, "ref", l_ref);
  gsi_buf_init(&b);
  mkdirs(dir);
  snprintf(path, sizeof(path), "%s/decode", dir);
  mkdirs(path);
  snprintf(path, sizeof(path), "%s/roundtrip", dir);
  mkdirs(path);
  snprintf(path, sizeof(path), "%s/wire", dir);
  mkdirs(path);
  for (i = 0; values[i].name != NULL; i++) {
    char chunk[512];
    snprintf(chunk, sizeof(chunk), "return %s", values[i].expr);
    if (luaL_dostring(L, chunk) != LUA_OK) {
      fprintf(stderr, "%s: %s\n", values[i].name, lua_tostring(L, -1));
      return 1;
    }
    b.len = 0;
    if (gsi_encode(L, -1, "seed", NULL, &b) != 0) {
      fprintf(stderr, "%s: %s\n", values[i].name, lua_tostring(L, -1));
      return 1;
    }
    lua_settop(L, 0);
    writefile(dir, "decode", values[i].name, b.data, b.len);
    writefile(dir, "wire", values[i].name, b.data, b.len);
    nd++;
  }
  for (i = 0; programs[i].name != NULL; i++) {
    writefile(dir, "roundtrip", programs[i].name, programs[i].b,
              (size_t)programs[i].n);
    nr++;
  }
  gsi_buf_free(&b);
  lua_close(L);
  printf("mkseeds: %d decode seeds, %d roundtrip seeds in %s\n", nd, nr, dir);
  return 0;
}
