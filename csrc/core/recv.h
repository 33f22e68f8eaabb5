/*
** recv.h - the owner's side of a mailbox: draining, the saved list,
** pending requests and their answers (recv.c).
*/
#ifndef GS_RECV_H
#define GS_RECV_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "proc.h"

/* Owner-side mailbox (recv.c). */
GSI_FUNC size_t gsi_drain(gsi_proc *p);
/* For a receive that takes the oldest message: drain only while nothing
** is saved, a batch at a time; afterwards either a message is saved or the
** mailbox was empty. Leaves sigpend alone (the caller's self_of drained
** everything when a signal was pending). */
GSI_FUNC void gsi_drain_front(gsi_proc *p);
GSI_FUNC void gsi_sv_unlink(gsi_proc *p, gsi_msg *m);
GSI_FUNC gsi_pending *gsi_pending_find(gsi_proc *p, uint64_t ref);
/* GSI_OK or GSI_ENOMEM (nothing added). */
GSI_FUNC int gsi_pending_add(gsi_proc *p, uint64_t ref, uint64_t target);
/* Forget a pending request (demonitor); its arrived answer is handed to
** *take if take != NULL, else freed. */
GSI_FUNC void gsi_pending_remove(gsi_proc *p, uint64_t ref, gsi_msg **take);
GSI_FUNC void gsi_sv_append(gsi_proc *p, gsi_msg *m);

/* Requests (call, send_request, stop, start's acknowledgement), shared by
** the Lua binding (which yields while it waits) and the C API (which
** blocks). gsi_request sends `len` bytes as a message of `kind` to server
** under a new pending ref, monitored so that the server's death answers
** it. Returns GSI_OK, GSI_ENOPROC (server already dead: the request is
** not pending), GSI_EFULL (a bounded mailbox refused it: not pending) or
** GSI_ENOMEM (not pending). */
GSI_FUNC int gsi_request(gsi_proc *self, uint64_t server, int kind,
                         const void *data, size_t len, int handoff,
                         uint64_t *ref);
/* One look for the answer to ref (drains the mailbox first): GSI_OK (*ans
** taken, the request forgotten), GSI_AGAIN (no answer yet), GSI_EKILLED
** (an exit signal ended the caller), GSI_EINVAL (ref is not pending). */
GSI_FUNC int gsi_answer(gsi_proc *p, uint64_t ref, gsi_msg **ans);

#endif
