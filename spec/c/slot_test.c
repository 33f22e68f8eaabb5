/*
** slot_test.c - the process slot (csrc/core/proc.h) and its allocator
** (csrc/core/palloc.c): its size, its cache lines, and fault injection.
** Prints TAP; exits 0 iff every check passed.
**
** A million idle servers pay for every byte of the slot, and every message
** pays for a cache line that two threads write: the slot is laid out in
** lines (what senders write on line 0, what the owner writes on every
** message on the lines after the queue) and kept at 640 bytes. The layout
** is also checked at compile time (proc.h); here it is checked on real
** slots of a runtime's table, whose chunks must be line-aligned for the
** lines to be lines.
**
**   make test CTESTS=spec/c/slot_test.c
*/
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua.h"

#include "core/internal.h"

#include "tap.h"

#define LINE_OF(f) (offsetof(struct gsi_proc, f) / GSI_LINE)
#define LAST_LINE_OF(f) \
  ((offsetof(struct gsi_proc, f) + sizeof(((struct gsi_proc *)0)->f) - 1) / GSI_LINE)

static void t_layout(void) {
  size_t head = offsetof(struct gsi_proc, mbox) + offsetof(gsi_mpsc, head);
  size_t tail = offsetof(struct gsi_proc, mbox) + offsetof(gsi_mpsc, tail);
  check(sizeof(gsi_proc) <= 640, "the slot is at most 640 bytes (%zu; it was 800)",
        sizeof(gsi_proc));
  check(sizeof(gsi_proc) % GSI_LINE == 0, "the slot is a whole number of lines");
  /* what every sender writes: pins, msgs_in, the queue's head, sched */
  check(LAST_LINE_OF(pins) == 0 && LAST_LINE_OF(msgs_in) == 0 &&
        head / GSI_LINE == 0 && LAST_LINE_OF(sched) == 0,
        "the senders' atomics and mbox.head are on line 0");
  /* and what it reads to deliver */
  check(LAST_LINE_OF(gen) == 0 && LAST_LINE_OF(alive) == 0 && LAST_LINE_OF(rt) == 0 &&
        LAST_LINE_OF(fg) == 0 && LAST_LINE_OF(mbox_limit) == 0,
        "what a sender reads to deliver is on line 0 too");
  /* what the owner writes on every message */
  check(tail / GSI_LINE >= 1 && LINE_OF(mem_pub) >= 1 && LINE_OF(drained_pub) >= 1 &&
        LINE_OF(svlen_pub) >= 1 && LINE_OF(sv_head) >= 1 && LINE_OF(mem) >= 1,
        "what the owner writes on every message is off line 0");
  /* callers take lk and write monitors on every call */
  check(LINE_OF(lk) > LAST_LINE_OF(from_ref) && LINE_OF(lk) > LAST_LINE_OF(budget) &&
        LINE_OF(monitors) > LAST_LINE_OF(reductions),
        "lk and monitors (callers write them) are past the owner's hot lines");
}

static void t_chunks(void) {
  gsi_rt_config cfg;
  gsi_rt *rt;
  gsi_proc *p[3];
  int aligned = 1;
  memset(&cfg, 0, sizeof cfg);
  cfg.workers = 1;
  rt = gsi_rt_new(&cfg);
  if (!check(rt != NULL, "a runtime")) return;
  for (int i = 0; i < 3; i++) {
    p[i] = gsi_proc_alloc(rt);
    if (p[i] == NULL || (uintptr_t)p[i] % GSI_LINE != 0) aligned = 0;
  }
  check(aligned, "slots from the table start on a cache line");
  for (int i = 0; i < 3; i++)
    if (p[i] != NULL) gsi_proc_release(p[i]);
  gsi_rt_free(rt);
  gsi_rt_destroy(rt);
}

/* opts.fail_alloc: growth allocation number F fails, and so does the next
** (Lua's retry after its emergency collection); the ones around succeed. */
static void t_fail_at(void) {
  gsi_rt_config cfg;
  gsi_rt *rt;
  gsi_proc *p;
  lua_State *L;
  memset(&cfg, 0, sizeof cfg);
  cfg.workers = 1;
  rt = gsi_rt_new(&cfg);
  if (!check(rt != NULL, "a runtime")) return;
  p = gsi_proc_alloc(rt);
  if (!check(p != NULL, "a slot")) goto out;
  p->fail_at = 0;
  L = gsi_heap_newstate(p);
  if (check(L != NULL, "a state without injection")) {
    void *b[6];
    int got[6];
    p->fail_at = 3 + 1; /* as gsi_heap_newstate leaves a spawner's 3 */
    for (int i = 0; i < 6; i++) {
      b[i] = gsi_palloc(p, NULL, LUA_TTABLE, 32);
      got[i] = b[i] != NULL;
    }
    check(got[0] && got[1] && !got[2] && !got[3] && got[4] && got[5],
          "allocations 3 and 4 fail, 1, 2, 5 and 6 succeed (%d%d%d%d%d%d)",
          got[0], got[1], got[2], got[3], got[4], got[5]);
    check(p->fail_at == 0, "then injection is off");
    for (int i = 0; i < 6; i++)
      if (b[i] != NULL) gsi_palloc(p, b[i], 32, 0);
    lua_close(L);
  }
  gsi_heap_free(p);
  gsi_proc_release(p);
out:
  gsi_rt_free(rt);
  gsi_rt_destroy(rt);
}

int main(void) {
  t_layout();
  t_chunks();
  t_fail_at();
  printf("1..%d\n", ntest);
  return nfail == 0 ? 0 : 1;
}
