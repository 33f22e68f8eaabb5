/*
** codec.h - copy Lua values between lua_States as bytes.
**
** Every message between processes goes through here: the sender encodes
** into a gsi_buf, the receiver decodes into its own state. See DESIGN.md
** section 1.4 for what crosses; the wire format is described below so that
** tests (and a future network transport) can build frames by hand.
*/
#ifndef GS_CODEC_H
#define GS_CODEC_H

#include <stddef.h>

#include "lua.h"

/* A growable byte buffer (malloc/realloc/free, never the Lua allocator,
** so it may outlive the state that filled it). Reusable: set len = 0. */
typedef struct gsi_buf { unsigned char *data; size_t len, cap; } gsi_buf;

void gsi_buf_init(gsi_buf *b);
void gsi_buf_free(gsi_buf *b);
/* Make room for n more bytes; returns 0 on success, -1 when out of memory
** (the buffer is then unchanged). */
int gsi_buf_reserve(gsi_buf *b, size_t n);

typedef struct gsi_codec_limits {
  int max_depth;        /* nesting of tables/functions; default 200; 0 means
                           the default; values above 1000 count as 1000
                           (the codec recurses on the C stack) */
  size_t max_size;      /* max encoded bytes; default 64 MiB; 0 = default */
  int allow_functions;  /* encode: GSI_FN_NAMES refuses functions sent by
                           value (the receiver is sandboxed); any other
                           value sends them.
                           decode: how far the peer is trusted.
                           GSI_FN_ALL (1): a state of this runtime: Lua
                           bytecode, C functions by name, and `require` of
                           modules not loaded yet.
                           GSI_FN_NAMES (2): a sandboxed state: as 1 but no
                           bytecode (text chunks only).
                           GSI_FN_NONE (0): untrusted input, fuzzing: any
                           function is refused and modules are only looked
                           up in package.loaded. */
  /* decode: C functions a state has built in, found without loading their
  ** module (e.g. genserver.core's in a process state, whose table would
  ** otherwise be opened in every server). Returns the function, or NULL to
  ** look the module up as usual (the hook may first put the field where
  ** that lookup finds it). Runs protected, like the rest of the decoding,
  ** with 2 free stack slots. NULL = none. */
  lua_CFunction (*builtin)(lua_State *L, const char *module, size_t lm,
                           const char *field, size_t lf);
} gsi_codec_limits;

enum { GSI_FN_NONE = 0, GSI_FN_ALL = 1, GSI_FN_NAMES = 2 };

extern const gsi_codec_limits gsi_codec_default_limits;  /* 200, 64 MiB, 1 */

#define GSI_CODEC_MAXDEPTH 1000

/* Encode the value at stack index idx of L, appending to b (b->len is not
** reset: the caller sets it). `what` names the root in error paths
** ("message", "argument 2"; NULL means "value"). lim may be NULL (defaults).
** Returns 0 on success. On failure returns -1, leaves b->len as it was and
** pushes one error string ("message.items[3].cb: cannot send a userdata").
** Never raises, never runs metamethods. Stack balanced except for the
** error string. (Only if the Lua stack cannot grow by 3 slots at all does
** it return -1 without pushing anything.) */
int gsi_encode(lua_State *L, int idx, const char *what,
               const gsi_codec_limits *lim, gsi_buf *b);

/* Decode len bytes at p into L. On success pushes exactly one value and
** returns 0; on failure pushes an error string ("malformed message: ...",
** "message too deep (more than 200 levels)") and returns -1. Never raises,
** never runs metamethods, fails cleanly on any byte string. (Same caveat
** about an exhausted Lua stack as gsi_encode.) Modules required by name
** run their own code, as `require` does. */
int gsi_decode(lua_State *L, const unsigned char *p, size_t len,
               const gsi_codec_limits *lim);

/* As gsi_decode, but plain data (no functions but the binding's own C
** functions, no modules or shared tables) is decoded without a protected
** call, so a memory error raises
** from here as from any API function. For callers that run in a Lua C
** function of the receiving state and would raise that error anyway;
** every other failure returns -1 with an error string, as gsi_decode. */
int gsi_decode_raw(lua_State *L, const unsigned char *p, size_t len,
                   const gsi_codec_limits *lim);

/* Wire primitives for code that writes frames without a Lua state (the C
** API's value builder): an unsigned LEB128 varint into p (at most 10
** bytes; returns the count), and zigzag for signed integers. */
size_t gsi_putvarint (unsigned char *p, uint64_t v);
uint64_t gsi_zigzag (int64_t i);

/* Encode the string s as a whole message (no Lua state needed): for
** reasons the runtime makes up itself, e.g. "mailbox_full". Returns 0, or
** -1 when out of memory. */
int gsi_encode_cstring (gsi_buf *b, const char *s);

/* Encode { [k] = v } the same way (e.g. { max_heap = bytes }). */
int gsi_encode_field_int (gsi_buf *b, const char *k, lua_Integer v);

/* A state may keep its own `require` in the registry under this key's
** address (a process state whose package library is opened lazily); the
** decoder then uses it instead of the global `require`. */
extern const char gsi_codec_require_key;

/* A sandboxed state keeps a true value in its registry under this key's
** address: its encoder then refuses every function sent by value, whatever
** the limits say (no function leaves a sandbox, DESIGN §5). Code in the
** state cannot reach its registry (a sandbox has no debug library). */
extern const char gsi_codec_sandbox_key;

/* Mark this state's loaded-module reverse cache stale (call after
** `require` loaded something new). Never raises. */
void gsi_codec_invalidate(lua_State *L);


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

enum {
  GSI_T_FIXSTR = 0x80,  /* 0x80 | length */
  GSI_T_NIL = 0xc0, GSI_T_FALSE, GSI_T_TRUE,
  GSI_T_INT, GSI_T_FLOAT, GSI_T_STR, GSI_T_TABLE, GSI_T_REF,
  GSI_T_PID, GSI_T_IDREF, GSI_T_MODULE, GSI_T_CFUNC, GSI_T_FUNC,
  GSI_T_UPJOIN, GSI_T_ENV,
  GSI_T_NEGINT = 0xe0   /* 0xe0 + (n + 32) for n in -32..-1 */
};

#endif
