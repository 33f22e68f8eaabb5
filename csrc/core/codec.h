/*
** codec.h - copy Lua values between lua_States as bytes.
**
** Every message between processes goes through here: the sender encodes
** into a gsi_buf, the receiver decodes into its own state. See DESIGN.md
** section 1.4 for what crosses; the wire format is described in wire.h, which reads and writes it
** without Lua.
*/
#ifndef GS_CODEC_H
#define GS_CODEC_H

#include <stddef.h>

#include "lua.h"
#include "wire.h"   /* gsi_buf, the wire format, gsi_putvarint */

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
  ** with 2 free stack slots. NULL = none.
  ** Asked with field NULL (lf 0) for a module sent by name and not loaded
  ** yet: the state's own `require` for it (a process state, whose package
  ** library opens lazily), or NULL for the global `require`. */
  lua_CFunction (*builtin)(lua_State *L, const char *module, size_t lm,
                           const char *field, size_t lf);
} gsi_codec_limits;

enum { GSI_FN_NONE = 0, GSI_FN_ALL = 1, GSI_FN_NAMES = 2 };

extern const gsi_codec_limits gsi_codec_default_limits;  /* 200, 64 MiB, 1 */

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

/* Encode the string s as a whole message (no Lua state needed): for
** reasons the runtime makes up itself, e.g. "mailbox_full". Returns 0, or
** -1 when out of memory. */
int gsi_encode_cstring (gsi_buf *b, const char *s);

/* Encode { [k] = v } the same way (e.g. { max_heap = bytes }). */
int gsi_encode_field_int (gsi_buf *b, const char *k, lua_Integer v);

/* A sandboxed state keeps a true value in its registry under this key's
** address: its encoder then refuses every function sent by value, whatever
** the limits say (no function leaves a sandbox, DESIGN §5). Code in the
** state cannot reach its registry (a sandbox has no debug library). */
extern const char gsi_codec_sandbox_key;

/* Mark this state's loaded-module reverse cache stale (call after
** `require` loaded something new). Never raises. */
void gsi_codec_invalidate(lua_State *L);

#endif
