/*
** signal.h - links, monitors, exit signals and the death protocol
** (signal.c).
*/
#ifndef GS_SIGNAL_H
#define GS_SIGNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

/* GSI_OK, GSI_ENOPROC (the target is dead) or GSI_ENOMEM (no link made). */
GSI_FUNC int gsi_link(gsi_proc *self, uint64_t pid);
GSI_FUNC void gsi_unlink(gsi_proc *self, uint64_t pid);
/* Add monitor ref on pid for self: GSI_OK, GSI_ENOPROC if pid is dead (the
** caller delivers DOWN noproc itself), or GSI_ENOMEM (no monitor made). */
GSI_FUNC int gsi_monitor(gsi_proc *self, uint64_t pid, uint64_t ref);
GSI_FUNC void gsi_demonitor(gsi_proc *self, uint64_t ref);
/* Send an exit signal carrying an encoded reason. */
GSI_FUNC void gsi_exit_signal(gsi_rt *rt, uint64_t from, uint64_t to,
                              const void *reason, size_t len, int flags);
/* The death protocol: links, monitors, name, mailbox; frees the slot.
** `normal`: the reason is "normal" (linked processes live on). It is
** gsi_proc_die (what others see: name, links, monitors; once, any thread)
** then gsi_proc_reap (owner data, the slot; after the state is closed). */
GSI_FUNC void gsi_proc_exit(gsi_proc *p, const void *reason, size_t len,
                            int normal);
GSI_FUNC void gsi_proc_die(gsi_proc *p, const void *reason, size_t len,
                           int normal);
GSI_FUNC void gsi_proc_reap(gsi_proc *p);

#endif
