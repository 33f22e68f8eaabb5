/*
** decode_fuzz.c - libFuzzer target: gsi_decode on any bytes.
**
** The decoder's contract (csrc/core/codec.h): on any byte string it either
** returns 0 with exactly one value pushed, or -1 with one error string
** pushed; it never raises, never crashes, never leaks, and never allocates
** far more than the input could describe. Input is untrusted
** (allow_functions = 0): functions are refused and modules are
** only looked up in package.loaded.
**
** Each input is decoded into a fresh state (so a crash reproduces from the
** input alone). A decoded value must also survive the trip back: encoding
** it must succeed (whatever the decoder builds is sendable) and decoding
** that encoding must succeed again.
**
**   make fuzz FUZZ_TIME=60                    (with the round-trip target)
**   build-fuzz/decode_fuzz CRASH_FILE         reproduce one input
*/
#include "fuzz_common.h"

#include "core/codec.h"

/* Inputs above this are cut (libFuzzer is also run with -max_len). */
#define FUZZ_MAX_INPUT (64 * 1024)

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  fuzz_alloc a;
  gsi_codec_limits lim = gsi_codec_default_limits;
  lua_State *L;
  gsi_buf b;
  int top, r;
  if (size > FUZZ_MAX_INPUT)
    size = FUZZ_MAX_INPUT;
  /* a value never needs much more memory than 64 bytes per input byte
  ** (a table slot per element byte) plus what a fresh state allocates */
  a.cap = ((size_t)1 << 20) + 64 * size;
  a.biggest = 0;
  L = fuzz_newstate(&a);
  lim.allow_functions = 0; /* untrusted (GSI_FN_NONE) */
  top = lua_gettop(L);
  r = gsi_decode(L, data, size, &lim);
  if (r != 0 && r != -1)
    FUZZ_FAIL("gsi_decode returned %d", r);
  if (lua_gettop(L) != top + 1)
    FUZZ_FAIL("gsi_decode returned %d and pushed %d values", r,
              lua_gettop(L) - top);
  if (r == -1) {
    if (lua_type(L, -1) != LUA_TSTRING)
      FUZZ_FAIL("gsi_decode failed without an error string (a %s)",
                luaL_typename(L, -1));
  }
  else {
    /* what was decoded can be sent on */
    gsi_buf_init(&b);
    if (gsi_encode(L, -1, "decoded", &lim, &b) != 0)
      FUZZ_FAIL("a decoded value does not encode again: %s",
                lua_tostring(L, -1));
    if (gsi_decode(L, b.data, b.len, &lim) != 0)
      FUZZ_FAIL("the re-encoding of a decoded value does not decode: %s",
                lua_tostring(L, -1));
    gsi_buf_free(&b);
    if (lua_gettop(L) != top + 2)
      FUZZ_FAIL("stack not balanced after the second trip");
  }
  lua_close(L);
  return 0;
}
