/*
** fuzz_common.h - shared by the libFuzzer targets in fuzz/ (see
** docs/reliability.md, "Fuzzing").
**
** Each target defines LLVMFuzzerTestOneInput. Built with
** `clang -fsanitize=fuzzer,...` (make fuzz) libFuzzer supplies main();
** built with -DGS_FUZZ_STANDALONE (any compiler, e.g. under valgrind) the
** main() below replays the files named on the command line instead:
**   fuzz-standalone FILE...   runs every file once, prints one line each.
*/
#ifndef GS_FUZZ_COMMON_H
#define GS_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

/* Stop with a message on stderr: libFuzzer (or the standalone driver's
** caller) sees the abort and keeps the input as a crash artifact. */
#define FUZZ_FAIL(...) \
  do { \
    fprintf(stderr, "fuzz: FAILED at %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); \
    fprintf(stderr, "\n"); \
    abort(); \
  } while (0)

/* The Lua allocator of the states under test. It refuses (and reports)
** any single allocation bigger than `cap`: the decoder must never turn a
** few input bytes into a huge allocation (a length field it did not check
** against the input size). */
typedef struct fuzz_alloc {
  size_t cap;
  size_t biggest;
} fuzz_alloc;

static void *fuzz_lalloc (void *ud, void *ptr, size_t osize, size_t nsize) {
  fuzz_alloc *a = (fuzz_alloc *)ud;
  (void)osize;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  if (nsize > a->biggest)
    a->biggest = nsize;
  if (nsize > a->cap)
    FUZZ_FAIL("a single allocation of %zu bytes (cap %zu)", nsize, a->cap);
  return realloc(ptr, nsize);
}

static lua_State *fuzz_newstate (fuzz_alloc *a) {
  lua_State *L = lua_newstate(fuzz_lalloc, a);
  if (L == NULL)
    FUZZ_FAIL("cannot create a Lua state");
  luaL_openlibs(L);
  return L;
}

#ifdef GS_FUZZ_STANDALONE
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int main (int argc, char **argv) {
  int i;
  for (i = 1; i < argc; i++) {
    FILE *f = fopen(argv[i], "rb");
    unsigned char *buf = NULL;
    size_t n = 0, cap = 0;
    if (f == NULL) {
      perror(argv[i]);
      return 2;
    }
    for (;;) {
      size_t got;
      if (n == cap) {
        unsigned char *nb;
        cap = cap ? cap * 2 : 4096;
        nb = (unsigned char *)realloc(buf, cap);
        if (nb == NULL) {
          fprintf(stderr, "out of memory\n");
          return 2;
        }
        buf = nb;
      }
      got = fread(buf + n, 1, cap - n, f);
      if (got == 0)
        break;
      n += got;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    printf("replayed %s (%zu bytes)\n", argv[i], n);
  }
  return 0;
}
#endif

#endif
