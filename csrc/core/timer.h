/*
** timer.h - the clock and the runtime's timers (timer.c).
*/
#ifndef GS_TIMER_H
#define GS_TIMER_H

#include <stdint.h>

#include "core.h"

GSI_FUNC uint64_t gsi_now_ns(void);
GSI_FUNC int gsi_timer_start(gsi_rt *rt);
GSI_FUNC void gsi_timer_stop(gsi_rt *rt);
/* Arm a timer: after ms, deliver m to pid (or to the pid registered under
** name if name != NULL). Returns the timer id (GSI_TIMER_BIT set), 0 when
** out of memory. A GSI_M_TIMEOUT message gets its ref set to the timer id;
** m == NULL arms a wait time-out: that GSI_M_TIMEOUT is made only if the
** timer fires (a wait time-out is nearly always cancelled first). */
GSI_FUNC uint64_t gsi_timer_arm(gsi_rt *rt, uint64_t ms, uint64_t pid,
                                const char *name, gsi_msg *m);
/* A wait time-out of pid at an absolute deadline (ns, CLOCK_MONOTONIC, as
** gsi_now_ns): gsi_timer_arm with m == NULL, for a caller that has the
** deadline already (no clock read, no rounding to ms). */
GSI_FUNC uint64_t gsi_timer_arm_at(gsi_rt *rt, uint64_t deadline, uint64_t pid);
/* A repeating timer: every ms (>= 1) a copy of m goes to pid (or name),
** until cancelled or the destination is gone (a dead pid, a name nobody
** holds). m != NULL. Returns the timer id, 0 when out of memory. */
GSI_FUNC uint64_t gsi_timer_arm_every(gsi_rt *rt, uint64_t ms, uint64_t pid,
                                      const char *name, gsi_msg *m);
/* Cancel: returns ms left (>= 0) or -1 if the timer already fired or is
** unknown. */
GSI_FUNC int64_t gsi_timer_cancel(gsi_rt *rt, uint64_t id);
/* Cancel, when the time left is not wanted (no clock read). */
GSI_FUNC void gsi_timer_drop(gsi_rt *rt, uint64_t id);

#endif
