/*
** wire.h - the codec's wire format read and written without Lua.
**
** The codec (codec.h) turns Lua values into these bytes and back; this
** module is for code that builds or inspects messages with no Lua state
** at hand: the C API's value builder and reader (api.c), the I/O layer's
** inbound socket messages (io_loop.c), and the wire fuzz target
** (fuzz/wire_fuzz.c). It includes no Lua header. The format itself is described below.
*/
#ifndef GS_WIRE_H
#define GS_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define GSI_WIRE_FN __attribute__((visibility("hidden"))) extern

/* A growable byte buffer (malloc/realloc/free, never the Lua allocator,
** so it may outlive the state that filled it). Reusable: set len = 0. */
typedef struct gsi_buf { unsigned char *data; size_t len, cap; } gsi_buf;

GSI_WIRE_FN void gsi_buf_init(gsi_buf *b);
GSI_WIRE_FN void gsi_buf_free(gsi_buf *b);
/* Make room for n more bytes; returns 0 on success, -1 when out of memory
** (the buffer is then unchanged). */
GSI_WIRE_FN int gsi_buf_reserve(gsi_buf *b, size_t n);

/*
** Wire format. A message is one header byte then one value.
**   header: GSI_WIRE_MAGIC | flags; flag GSI_WIRE_REFS is set when the
**   value contains a back-reference (GSI_T_REF) or an upvalue join
**   (GSI_T_UPJOIN), so only then must the decoder remember objects;
**   GSI_WIRE_CODE when it contains a function sent by value (GSI_T_FUNC),
**   so that a sender can tell, without decoding, that a sandboxed
**   receiver would refuse it.
** varint = unsigned LEB128, at most 10 bytes (padding 0x80 bytes allowed).
** Objects (tables and Lua functions sent by value) are numbered 1, 2, ...
** in the order their tags appear; GSI_T_REF n stands for object n again.
**   0x00-0x7f              integer 0..127
**   0xe0-0xff              integer -32..-1
**   0x80-0x9f              string of length 0..31, bytes follow
**   GSI_T_NIL/FALSE/TRUE
**   GSI_T_INT    varint    zigzag-coded integer
**   GSI_T_FLOAT  8 bytes   IEEE double, little-endian
**   GSI_T_STR    varint n, n bytes
**   GSI_T_TABLE  varint na, varint nh, na values (keys 1..na; nil allowed),
**                then nh key/value pairs (keys neither nil nor NaN)
**   GSI_T_REF    varint n  object n (already started)
**   GSI_T_PID, GSI_T_IDREF   varint id
**   GSI_T_MODULE varint n, name      package.loaded[name] / require(name)
**   GSI_T_CFUNC  varint n, module name, varint m, field name
**   GSI_T_FUNC   varint n, n bytes of lua_dump output, varint nup, then per
**                upvalue either a value or GSI_T_UPJOIN varint obj,
**                varint k: "share upvalue k of function object obj"
**   GSI_T_ENV    then a GSI_T_TABLE: a function's _ENV that was an
**                environment in the sender (DESIGN §1.4): the table
**                arrives with a metatable whose __index is the receiver's
**                globals
*/
#define GSI_WIRE_MAGIC 0xb0
#define GSI_WIRE_REFS  0x01
#define GSI_WIRE_CODE  0x02   /* the value holds Lua bytecode (GSI_T_FUNC) */
#define GSI_WIRE_FLAGS (GSI_WIRE_REFS | GSI_WIRE_CODE)

/* Nesting (tables, functions) any reader or writer of this format accepts:
** the codec recurses on the C stack. */
#define GSI_CODEC_MAXDEPTH 1000

enum {
  GSI_T_FIXSTR = 0x80,  /* 0x80 | length */
  GSI_T_NIL = 0xc0, GSI_T_FALSE, GSI_T_TRUE,
  GSI_T_INT, GSI_T_FLOAT, GSI_T_STR, GSI_T_TABLE, GSI_T_REF,
  GSI_T_PID, GSI_T_IDREF, GSI_T_MODULE, GSI_T_CFUNC, GSI_T_FUNC,
  GSI_T_UPJOIN, GSI_T_ENV,
  GSI_T_NEGINT = 0xe0   /* 0xe0 + (n + 32) for n in -32..-1 */
};

/* --------------------------------------------------------------- writing
** Each writer appends to b and returns 0, or -1 when out of memory (the
** buffer then holds whatever was appended before the failing part). */

/* An unsigned LEB128 varint into p (at most 10 bytes; returns the count),
** and zigzag for signed integers. Inline: the codec's encoder writes
** every varint through here. */
static inline size_t gsi_putvarint(unsigned char *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (unsigned char)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (unsigned char)v;
  return n;
}

/* zigzag keeps small negative numbers short */
static inline uint64_t gsi_zigzag(int64_t i) {
  uint64_t u = (uint64_t)i;
  return i < 0 ? ~(u << 1) : u << 1;
}

/* and back, without implementation-defined unsigned->signed conversion */
static inline int64_t gsi_unzigzag(uint64_t v) {
  uint64_t u = (v >> 1) ^ (0 - (v & 1));
  return u <= (uint64_t)INT64_MAX ? (int64_t)u : -(int64_t)(~u) - 1;
}

GSI_WIRE_FN int gsi_wire_bytes(gsi_buf *b, const void *s, size_t n);
GSI_WIRE_FN int gsi_wire_byte(gsi_buf *b, int c);
/* tag (unless negative) then varint v */
GSI_WIRE_FN int gsi_wire_tagvar(gsi_buf *b, int tag, uint64_t v);
GSI_WIRE_FN int gsi_wire_varint(gsi_buf *b, uint64_t v);
GSI_WIRE_FN int gsi_wire_int(gsi_buf *b, int64_t i);
GSI_WIRE_FN int gsi_wire_float(gsi_buf *b, double x);
GSI_WIRE_FN int gsi_wire_str(gsi_buf *b, const char *s, size_t len);
GSI_WIRE_FN int gsi_wire_cstr(gsi_buf *b, const char *s);
/* A whole message (header included) holding one string. */
GSI_WIRE_FN int gsi_wire_msg_cstr(gsi_buf *b, const char *s);

/* --------------------------------------------------------------- reading */

/* What gsi_wire_read yields; the kinds and fields match the public gs_item
** (genserver.h), which api.c fills from it. */
enum {
  GSI_WV_NIL, GSI_WV_BOOLEAN, GSI_WV_INTEGER, GSI_WV_NUMBER, GSI_WV_STRING,
  GSI_WV_TABLE, GSI_WV_PID, GSI_WV_REF, GSI_WV_FUNCTION, GSI_WV_MODULE,
  GSI_WV_BACKREF
};

typedef struct gsi_wire_item {
  int type;             /* GSI_WV_* */
  int boolean;
  int64_t integer;
  double number;
  const char *string;   /* STRING, MODULE (and FUNCTION by name: its module
                           name): points into the input, len bytes */
  size_t len;
  uint64_t id;          /* PID, REF */
  size_t narr, nhash;   /* TABLE: narr values then nhash key/value pairs
                           follow as the next items */
  size_t object;        /* TABLE, FUNCTION: its number; BACKREF: which one */
} gsi_wire_item;

/* A cursor over the bytes of one value (after the header byte). nobj
** counts the objects started so far, for checking back-references. */
typedef struct gsi_wire_rd {
  const unsigned char *p, *end;
  size_t nobj;
} gsi_wire_rd;

/* One item: a scalar, or the head of a table (its contents follow as the
** next items). A function is skipped whole (its upvalues are values too).
** depth counts the enclosing tables. Returns 0, or -1 when malformed (the
** cursor is then somewhere inside the item). */
GSI_WIRE_FN int gsi_wire_read(gsi_wire_rd *r, gsi_wire_item *it, int depth);
/* One whole value, a table with all it holds. 0 or -1 as above. */
GSI_WIRE_FN int gsi_wire_skip(gsi_wire_rd *r, int depth);
/* Copy one whole value from r to b, renumbering back-references by delta
** (the value moves into, or out of, an enclosing table). 0, or -1 when
** malformed or out of memory. */
GSI_WIRE_FN int gsi_wire_copy(gsi_wire_rd *r, gsi_buf *b, long delta, int depth);

#endif
