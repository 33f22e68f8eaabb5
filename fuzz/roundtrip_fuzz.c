/*
** roundtrip_fuzz.c - libFuzzer target: decode(encode(v)) == v.
**
** The input is a small program that builds a Lua value v in state A
** (deterministically: the same bytes always build the same value): nested
** tables, tables shared between several places, cycles (a table inside
** itself or an ancestor), table keys, integers, floats (every bit pattern:
** NaN, -0.0, infinities, integral floats such as 1.0), strings (with any
** bytes) and booleans. v is encoded in A, decoded in a second state B
** (as untrusted input), and the two values are compared structurally,
** sharing included.
**
** How the comparison works: every table the builder makes carries its own
** number under the key "#id". canon(v), run in each state, lists every
** table reachable from v (through keys and values) by id, with its entries
** sorted, scalars written exactly (integers vs floats, %a for floats, the
** length and bytes of strings); it fails if two different table objects
** carry the same id. Equal canon strings and no failure in B mean: the same
** tables with the same contents, the same sharing (a table reached twice
** in A is one table in B, two tables in A are two in B) and the same
** cycles.
**
** GS_FUZZ_VERBOSE=1 in the environment prints each value's canon string
** (to see what a seed or a crash input builds).
**
** The encoder may refuse v only for being nested too deeply (the builder
** can make chains longer than the default 200 levels); anything else is a
** failure.
**
** Program format (bytes; reading past the end gives zeros):
**   byte 0: if (byte0 & 15) == 0 the root is one scalar (value kinds 0-6),
**           else the root is table 1, which always exists;
**   then ops until the input ends (at most MAX_OPS), op = byte % 8:
**     0-4  cur[key] = value          5  cur = table (1 + byte % ntables)
**     6    cur = the newest table    7  cur[#cur + 1] = value
**   key and value: kind = byte % 9, then the kind's bytes:
**     0 small integer (int8)    1 integer (8 bytes LE)
**     2 float (8 bytes LE, any bit pattern)   3 small float (int8 / 4)
**     4 short string (len byte % 32, bytes)   5 string (len 2 bytes % 1024)
**     6 boolean (byte & 1)      7 existing table (1 + byte % ntables)
**     8 new table (it gets the next id)
**   A key that is NaN or the string "#id" cancels that op.
*/
#include <math.h>

#include "fuzz_common.h"

#include "core/codec.h"

#define MAX_OPS 4096
#define MAX_TABLES 512
#define IDKEY "#id"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static const char canon_src[] =
  "local IDK = ...\n"
  "return function(root)\n"
  "  local byid, order = {}, {}\n"
  "  local function atom(v)\n"
  "    local t = type(v)\n"
  "    if t == 'table' then\n"
  "      local id = rawget(v, IDK)\n"
  "      if math.type(id) ~= 'integer' then error('a table without an id') end\n"
  "      local seen = byid[id]\n"
  "      if seen == nil then byid[id] = v; order[#order + 1] = id\n"
  "      elseif not rawequal(seen, v) then\n"
  "        error('two different tables carry id ' .. id .. ' (sharing lost)')\n"
  "      end\n"
  "      return 't' .. id\n"
  "    elseif t == 'number' then\n"
  "      if math.type(v) == 'integer' then return 'i' .. v end\n"
  "      return 'f' .. string.format('%a', v)\n"
  "    elseif t == 'string' then return 's' .. #v .. ':' .. v\n"
  "    elseif t == 'boolean' then return v and 'T' or 'F'\n"
  "    end\n"
  "    error('unexpected ' .. t)\n"
  "  end\n"
  "  local head = atom(root)\n"
  "  local out, i = {}, 1\n"
  "  while i <= #order do\n"
  "    local id = order[i]\n"
  "    local entries = {}\n"
  "    for k, v in next, byid[id] do\n"
  "      entries[#entries + 1] = atom(k) .. '=' .. atom(v)\n"
  "    end\n"
  "    table.sort(entries)\n"
  "    out[#out + 1] = 'T' .. id .. '{' .. table.concat(entries, ',') .. '}'\n"
  "    i = i + 1\n"
  "  end\n"
  "  table.sort(out)\n"
  "  return head .. '|' .. table.concat(out, ';')\n"
  "end\n";

static fuzz_alloc alloc_a, alloc_b;
static int verbose; /* GS_FUZZ_VERBOSE set: print each value's canon */
static lua_State *A, *B;
static int canon_a, canon_b; /* registry refs */
static gsi_buf buf;


typedef struct rd {
  const uint8_t *p;
  size_t n;
  int ntables;
} rd;


static unsigned getb (rd *r) {
  if (r->n == 0)
    return 0;
  r->n--;
  return *r->p++;
}


static uint64_t get8 (rd *r) {
  uint64_t u = 0;
  int k;
  for (k = 0; k < 8; k++)
    u |= (uint64_t)getb(r) << (8 * k);
  return u;
}


/* stack slot 1 of A holds the list of tables by id */
static void newtable (lua_State *L, rd *r) {
  lua_createtable(L, 0, 1);
  r->ntables++;
  lua_pushinteger(L, r->ntables);
  lua_setfield(L, -2, IDKEY);
  lua_pushvalue(L, -1);
  lua_rawseti(L, 1, r->ntables);
}


static void pushtable (lua_State *L, int id) {
  lua_rawgeti(L, 1, id);
}


/* Push one value; tables only if `tables`. */
static void pushvalue (lua_State *L, rd *r, int tables) {
  unsigned kind = getb(r) % (tables ? 9 : 7);
  switch (kind) {
    case 0: lua_pushinteger(L, (int8_t)getb(r)); break;
    case 1: lua_pushinteger(L, (lua_Integer)get8(r)); break;
    case 2: {
      uint64_t u = get8(r);
      double x;
      memcpy(&x, &u, sizeof(x));
      lua_pushnumber(L, x);
      break;
    }
    case 3: lua_pushnumber(L, (lua_Number)(int8_t)getb(r) / 4); break;
    case 4:
    case 5: {
      char s[1024];
      size_t len, i;
      if (kind == 4)
        len = getb(r) % 32;
      else {
        len = getb(r);
        len = (len | (size_t)getb(r) << 8) % 1024;
      }
      for (i = 0; i < len; i++)
        s[i] = (char)getb(r);
      lua_pushlstring(L, s, len);
      break;
    }
    case 6: lua_pushboolean(L, getb(r) & 1); break;
    case 7: pushtable(L, 1 + (int)(getb(r) % (unsigned)r->ntables)); break;
    default:
      if (r->ntables < MAX_TABLES)
        newtable(L, r);
      else
        pushtable(L, r->ntables);
  }
}


static int badkey (lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TNUMBER && !lua_isinteger(L, idx)) {
    lua_Number x = lua_tonumber(L, idx);
    return x != x; /* NaN */
  }
  if (lua_type(L, idx) == LUA_TSTRING)
    return strcmp(lua_tostring(L, idx), IDKEY) == 0;
  return 0;
}


/* Build the value described by data in A, leaving it on top of A's stack
** (above the id list at slot 1). */
static void build (lua_State *L, rd *r) {
  int cur = 1, ops = 0, scalar_root;
  lua_settop(L, 0);
  lua_newtable(L); /* slot 1: tables by id */
  newtable(L, r);  /* slot 2: table 1 */
  scalar_root = (getb(r) & 15) == 0;
  if (scalar_root) {
    lua_settop(L, 1);
    pushvalue(L, r, 0);
    return;
  }
  while (r->n > 0 && ops++ < MAX_OPS) {
    unsigned op = getb(r) % 8;
    if (op <= 4 || op == 7) {
      pushtable(L, cur);
      if (op == 7)
        lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1) + 1);
      else
        pushvalue(L, r, 1);
      pushvalue(L, r, 1);
      if (badkey(L, -2))
        lua_pop(L, 3);
      else {
        lua_rawset(L, -3);
        lua_pop(L, 1);
      }
    }
    else if (op == 5)
      cur = 1 + (int)(getb(r) % (unsigned)r->ntables);
    else
      cur = r->ntables;
  }
  lua_settop(L, 2); /* the root: table 1 */
}


/* canon(v) in L, where v is on top; returns the malloc'd string (its
** length in *len: it may hold zeros) or NULL with *err set to the (static
** copy of the) error message. */
static char *canon (lua_State *L, int ref, size_t *len, const char **err) {
  static char errbuf[512];
  const char *s;
  char *copy;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  lua_pushvalue(L, -2);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    snprintf(errbuf, sizeof(errbuf), "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    *err = errbuf;
    return NULL;
  }
  s = lua_tolstring(L, -1, len);
  copy = (char *)malloc(*len + 1);
  if (copy == NULL)
    FUZZ_FAIL("out of memory");
  memcpy(copy, s, *len + 1);
  lua_pop(L, 1);
  return copy;
}


static int loadcanon (lua_State *L) {
  if (luaL_loadstring(L, canon_src) != LUA_OK)
    FUZZ_FAIL("canon: %s", lua_tostring(L, -1));
  lua_pushliteral(L, IDKEY);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK)
    FUZZ_FAIL("canon: %s", lua_tostring(L, -1));
  return luaL_ref(L, LUA_REGISTRYINDEX);
}


static void setup (void) {
  alloc_a.cap = alloc_b.cap = (size_t)1 << 30;
  A = fuzz_newstate(&alloc_a);
  B = fuzz_newstate(&alloc_b);
  canon_a = loadcanon(A);
  canon_b = loadcanon(B);
  gsi_buf_init(&buf);
  verbose = getenv("GS_FUZZ_VERBOSE") != NULL;
}


int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  gsi_codec_limits lim = gsi_codec_default_limits;
  rd r;
  char *ca, *cb;
  size_t la, lb;
  const char *err = NULL;
  int topb;
  if (A == NULL)
    setup();
  lim.allow_functions = 0; /* B decodes it as untrusted input */
  r.p = data;
  r.n = size;
  r.ntables = 0;
  build(A, &r);
  buf.len = 0;
  if (gsi_encode(A, -1, "value", &lim, &buf) != 0) {
    const char *msg = lua_tostring(A, -1);
    if (msg == NULL || strstr(msg, "nested too deeply") == NULL)
      FUZZ_FAIL("encode refused a sendable value: %s", msg ? msg : "?");
    lua_settop(A, 0);
    return 0;
  }
  topb = lua_gettop(B);
  if (gsi_decode(B, buf.data, buf.len, &lim) != 0)
    FUZZ_FAIL("decode refused what encode made (%zu bytes): %s", buf.len,
              lua_tostring(B, -1));
  if (lua_gettop(B) != topb + 1)
    FUZZ_FAIL("decode pushed %d values", lua_gettop(B) - topb);
  ca = canon(A, canon_a, &la, &err);
  if (ca == NULL)
    FUZZ_FAIL("canon in the sender: %s", err);
  cb = canon(B, canon_b, &lb, &err);
  if (cb == NULL)
    FUZZ_FAIL("the decoded value differs: %s", err);
  if (verbose)
    fprintf(stderr, "roundtrip: %zu bytes encoded: %.*s\n", buf.len, (int)la, ca);
  if (la != lb || memcmp(ca, cb, la) != 0)
    FUZZ_FAIL("decode(encode(v)) ~= v\n  sent:     %.2000s\n  received: %.2000s",
              ca, cb);
  free(ca);
  free(cb);
  lua_settop(A, 0);
  lua_settop(B, topb);
  return 0;
}
