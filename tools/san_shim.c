/* Preloaded with the sanitizer runtime into the uninstrumented lua5.4 by the
 * wrapper tools/run-tests writes for `make test-tsan` / `make test-asan`
 * ($(BUILD)/san/bin/lua5.4). Built without sanitizers or fortification.
 *
 *  - gcc 12's libtsan intercepts longjmp but not __longjmp_chk, which Debian's
 *    lua5.4 and liblua5.4 (built with _FORTIFY_SOURCE) use for every error and
 *    yield: without the shim each Lua error that unwinds instrumented frames leaks
 *    TSan shadow-stack entries until TSan dies ("CHECK failed:
 *    sanitizer_stackdepot.cpp:83"); the shim's __longjmp_chk calls the
 *    intercepted longjmp (libasan intercepts __longjmp_chk itself and wins);
 *  - its constructor initialises TSan before main() (needed when a preloaded
 *    libtsan meets a program whose first setjmp runs before TSan is set up);
 *  - it restores LD_PRELOAD (saved by the wrapper in GS_SAN_PRELOAD_SAVED), so
 *    the programs the interpreter starts (sh, make, gcc, a C host) run without
 *    the runtime: an uninstrumented program under a preloaded TSan reports false
 *    races (it cannot see the program's atomics), and preloaded TSan crashes dash
 *    and bash outright.
 */
#include <setjmp.h>
#include <stdlib.h>
void __longjmp_chk(struct __jmp_buf_tag env[1], int val) __attribute__((noreturn));
void __longjmp_chk(struct __jmp_buf_tag env[1], int val) { longjmp(env, val); }
extern void __tsan_init(void) __attribute__((weak));
__attribute__((constructor)) static void gs_san_shim_init(void) {
  const char *saved = getenv("GS_SAN_PRELOAD_SAVED");
  if (__tsan_init) __tsan_init();
  if (saved == NULL) return;
  if (*saved) setenv("LD_PRELOAD", saved, 1);
  else unsetenv("LD_PRELOAD");
  unsetenv("GS_SAN_PRELOAD_SAVED");
}
