/*
** wire_fuzz.c - libFuzzer target: the Lua-free wire reader and writer
** (csrc/core/wire.h) on any bytes.
**
** The input is taken as a whole message (header byte, then one value), as
** a C host's gs_reader sees it. Checked for every input:
**   - the reader (gsi_wire_read, gsi_wire_skip) returns 0 or -1, never
**     crashes, never reads outside the input (ASan), and stays inside it;
**     item by item it ends where gsi_wire_skip ends;
**   - agreement with the codec: whatever gsi_decode accepts (as untrusted
**     input, GSI_FN_NONE) the reader accepts too, up to the last byte, and
**     reads as the same scalars (see match);
**   - round trip: a value the reader accepts is written again, item by
**     item, with the writers (gsi_wire_int, gsi_wire_str, ...; a function
**     is copied as it came); reading that back gives the same items, and
**     writing it again gives the same bytes (the writers are canonical).
**     gsi_wire_copy of the value gives the same items too, and if the codec
**     decoded the input it decodes the rewritten message as well.
**
**   make fuzz FUZZ_TIME=60                    (with the other targets)
**   build-fuzz/wire_fuzz CRASH_FILE           reproduce one input
*/
#include "fuzz_common.h"

#include "core/codec.h"
#include "core/wire.h"

/* Inputs above this are cut (libFuzzer is also run with -max_len). */
#define FUZZ_MAX_INPUT (64 * 1024)

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static void check_inside (const gsi_wire_rd *r, const unsigned char *lo,
                          const char *what) {
  if (r->p < lo || r->p > r->end)
    FUZZ_FAIL("%s left the cursor outside the input", what);
}

/* Write the value at r to b with the writers; -1 when r is malformed. A
** function item is copied raw (the reader skips it whole). */
static int rewrite (gsi_wire_rd *r, gsi_buf *b, int depth) {
  const unsigned char *start = r->p;
  gsi_wire_item it;
  int w = 0;
  if (gsi_wire_read(r, &it, depth) != 0)
    return -1;
  check_inside(r, start, "gsi_wire_read");
  switch (it.type) {
    case GSI_WV_NIL: w = gsi_wire_byte(b, GSI_T_NIL); break;
    case GSI_WV_BOOLEAN:
      w = gsi_wire_byte(b, it.boolean ? GSI_T_TRUE : GSI_T_FALSE);
      break;
    case GSI_WV_INTEGER: w = gsi_wire_int(b, it.integer); break;
    case GSI_WV_NUMBER: w = gsi_wire_float(b, it.number); break;
    case GSI_WV_STRING: w = gsi_wire_str(b, it.string, it.len); break;
    case GSI_WV_PID: w = gsi_wire_tagvar(b, GSI_T_PID, it.id); break;
    case GSI_WV_REF: w = gsi_wire_tagvar(b, GSI_T_IDREF, it.id); break;
    case GSI_WV_BACKREF: w = gsi_wire_tagvar(b, GSI_T_REF, it.object); break;
    case GSI_WV_MODULE:
      w = gsi_wire_tagvar(b, GSI_T_MODULE, it.len) ||
          gsi_wire_bytes(b, it.string, it.len);
      break;
    case GSI_WV_FUNCTION:
      w = gsi_wire_bytes(b, start, (size_t)(r->p - start));
      break;
    case GSI_WV_TABLE:
      if (gsi_wire_tagvar(b, GSI_T_TABLE, it.narr) ||
          gsi_wire_varint(b, it.nhash))
        FUZZ_FAIL("out of memory");
      for (size_t i = 0; i < it.narr + 2 * it.nhash; i++)
        if (rewrite(r, b, depth + 1) != 0)
          return -1;
      break;
    default:
      FUZZ_FAIL("gsi_wire_read gave an unknown kind %d", it.type);
  }
  if (w != 0)
    FUZZ_FAIL("out of memory");
  return 0;
}

static int same_item (const gsi_wire_item *x, const gsi_wire_item *y) {
  if (x->type != y->type)
    return 0;
  switch (x->type) {
    case GSI_WV_BOOLEAN: return x->boolean == y->boolean;
    case GSI_WV_INTEGER: return x->integer == y->integer;
    case GSI_WV_NUMBER: return memcmp(&x->number, &y->number, sizeof x->number) == 0;
    case GSI_WV_STRING:
    case GSI_WV_MODULE:
      return x->len == y->len && memcmp(x->string, y->string, x->len) == 0;
    case GSI_WV_PID: case GSI_WV_REF: return x->id == y->id;
    case GSI_WV_BACKREF: return x->object == y->object;
    case GSI_WV_TABLE:
      return x->narr == y->narr && x->nhash == y->nhash && x->object == y->object;
    case GSI_WV_FUNCTION: return x->object == y->object;
    default: return 1;
  }
}

/* Read one value from each cursor in step; both must be well formed and
** give the same items. */
static void compare (gsi_wire_rd *a, gsi_wire_rd *b, int depth,
                     const char *what) {
  gsi_wire_item x, y;
  if (gsi_wire_read(a, &x, depth) != 0)
    FUZZ_FAIL("%s: the original no longer reads", what);
  if (gsi_wire_read(b, &y, depth) != 0)
    FUZZ_FAIL("%s: the written value does not read", what);
  if (!same_item(&x, &y))
    FUZZ_FAIL("%s: items differ (kinds %d and %d)", what, x.type, y.type);
  if (x.type == GSI_WV_TABLE)
    for (size_t i = 0; i < x.narr + 2 * x.nhash; i++)
      compare(a, b, depth + 1, what);
}

static void compare_msg (const uint8_t *data, size_t size, const gsi_buf *w,
                         const char *what) {
  gsi_wire_rd a = {data + 1, data + size, 0};
  gsi_wire_rd b = {w->data + 1, w->data + w->len, 0};
  compare(&a, &b, 0, what);
  if (b.p != b.end)
    FUZZ_FAIL("%s: %zu bytes after the written value", what,
              (size_t)(b.end - b.p));
}

/* Does the value at r mean what the codec decoded (at idx of L)? Scalars
** are compared exactly (integers vs floats, bit patterns, bytes); a table
** must be a table, and when it has no hash part (which could overwrite
** array slots) its array values are compared too. */
static void match (lua_State *L, int idx, gsi_wire_rd *r, int depth) {
  gsi_wire_item it;
  int t = lua_type(L, idx);
  if (gsi_wire_read(r, &it, depth) != 0)
    FUZZ_FAIL("the wire reader refuses a value the codec decoded");
  switch (it.type) {
    case GSI_WV_NIL:
      if (t != LUA_TNIL) FUZZ_FAIL("nil read as a %s", lua_typename(L, t));
      break;
    case GSI_WV_BOOLEAN:
      if (t != LUA_TBOOLEAN || lua_toboolean(L, idx) != it.boolean)
        FUZZ_FAIL("boolean %d read differently", it.boolean);
      break;
    case GSI_WV_INTEGER:
      if (!lua_isinteger(L, idx) || lua_tointeger(L, idx) != it.integer)
        FUZZ_FAIL("integer %lld read differently", (long long)it.integer);
      break;
    case GSI_WV_NUMBER: {
      lua_Number x = lua_tonumber(L, idx);
      if (t != LUA_TNUMBER || lua_isinteger(L, idx) ||
          memcmp(&x, &it.number, sizeof x) != 0)
        FUZZ_FAIL("float %a read differently", it.number);
      break;
    }
    case GSI_WV_STRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      if (t != LUA_TSTRING || n != it.len || memcmp(s, it.string, n) != 0)
        FUZZ_FAIL("a string of %zu bytes read differently", it.len);
      break;
    }
    case GSI_WV_TABLE:
      if (t != LUA_TTABLE) FUZZ_FAIL("a table read as a %s", lua_typename(L, t));
      if (it.nhash == 0) {
        for (size_t i = 0; i < it.narr; i++) {
          lua_rawgeti(L, idx, (lua_Integer)i + 1);
          match(L, lua_gettop(L), r, depth + 1);
          lua_pop(L, 1);
        }
      } else {
        for (size_t i = 0; i < it.narr + 2 * it.nhash; i++)
          if (gsi_wire_skip(r, depth + 1) != 0)
            FUZZ_FAIL("the wire reader refuses a value the codec decoded");
      }
      break;
    default: /* pids, references, modules, back-references: not compared */
      break;
  }
}

/* Does the codec decode these bytes as untrusted input? If it does, what
** it decoded must match the wire reader's reading (see match). */
static int codec_accepts (const unsigned char *p, size_t n) {
  fuzz_alloc a;
  gsi_codec_limits lim = gsi_codec_default_limits;
  lua_State *L;
  int r;
  a.cap = ((size_t)1 << 20) + 64 * n;
  a.biggest = 0;
  L = fuzz_newstate(&a);
  lim.allow_functions = GSI_FN_NONE;
  r = gsi_decode(L, p, n, &lim);
  if (r == 0) {
    gsi_wire_rd w = {p + 1, p + n, 0};
    lua_checkstack(L, GSI_CODEC_MAXDEPTH + 10);
    match(L, lua_gettop(L), &w, 0);
    if (w.p != w.end)
      FUZZ_FAIL("the wire reader ends before the codec");
  }
  lua_close(L);
  return r == 0;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  gsi_wire_rd r, s;
  gsi_buf w1, w2, cp;
  int skip_ok, decoded;
  if (size > FUZZ_MAX_INPUT)
    size = FUZZ_MAX_INPUT;
  decoded = codec_accepts(data, size);
  if (size < 1 || (data[0] & ~GSI_WIRE_FLAGS) != GSI_WIRE_MAGIC) {
    if (decoded)
      FUZZ_FAIL("the codec decoded a message without a header");
    return 0;
  }
  r = (gsi_wire_rd){data + 1, data + size, 0};
  skip_ok = gsi_wire_skip(&r, 0);
  if (skip_ok != 0 && skip_ok != -1)
    FUZZ_FAIL("gsi_wire_skip returned %d", skip_ok);
  check_inside(&r, data + 1, "gsi_wire_skip");
  if (decoded && (skip_ok != 0 || r.p != r.end))
    FUZZ_FAIL("the codec decodes what the wire reader refuses");
  gsi_buf_init(&w1);
  gsi_buf_init(&w2);
  gsi_buf_init(&cp);
  s = (gsi_wire_rd){data + 1, data + size, 0};
  if (gsi_wire_byte(&w1, data[0]) != 0)
    FUZZ_FAIL("out of memory");
  if (rewrite(&s, &w1, 0) != 0) {
    if (skip_ok == 0)
      FUZZ_FAIL("gsi_wire_skip accepts what item by item reading refuses");
  } else {
    if (skip_ok != 0 || s.p != r.p)
      FUZZ_FAIL("gsi_wire_skip and item by item reading end apart");
    if (s.p == s.end) { /* the whole input is one value */
      compare_msg(data, size, &w1, "rewrite");
      /* canonical: writing the rewritten value gives the same bytes */
      s = (gsi_wire_rd){w1.data + 1, w1.data + w1.len, 0};
      if (gsi_wire_byte(&w2, w1.data[0]) != 0 || rewrite(&s, &w2, 0) != 0)
        FUZZ_FAIL("the rewritten value does not rewrite");
      if (w2.len != w1.len || memcmp(w2.data, w1.data, w1.len) != 0)
        FUZZ_FAIL("writing is not canonical");
      s = (gsi_wire_rd){data + 1, data + size, 0};
      if (gsi_wire_byte(&cp, data[0]) != 0)
        FUZZ_FAIL("out of memory");
      if (gsi_wire_copy(&s, &cp, 0, 0) == 0)
        compare_msg(data, size, &cp, "gsi_wire_copy");
      else if (decoded)
        FUZZ_FAIL("gsi_wire_copy refuses what the codec decodes");
      if (decoded && !codec_accepts(w1.data, w1.len))
        FUZZ_FAIL("the codec refuses the rewritten message");
    }
  }
  gsi_buf_free(&w1);
  gsi_buf_free(&w2);
  gsi_buf_free(&cp);
  return 0;
}
