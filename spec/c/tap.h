/*
** tap.h - the C tests' TAP lines: check(ok, fmt, ...) prints "ok N - ..."
** or "not ok N - ..." (printf-style message, one line) and counts the
** tests in ntest and the failures in nfail. For checks made on one thread
** at a time; api_test.c has its own, locked, that adds the thread's
** gs_errmsg to a failure.
*/
#ifndef GS_SPEC_TAP_H
#define GS_SPEC_TAP_H

#include <stdarg.h>
#include <stdio.h>

static int ntest, nfail;

static int check(int ok, const char *fmt, ...) {
  va_list ap;
  printf("%sok %d - ", ok ? "" : "not ", ++ntest);
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
  fflush(stdout);
  if (!ok) nfail++;
  return ok;
}

#endif
