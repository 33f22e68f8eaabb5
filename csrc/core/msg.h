/*
** msg.h - messages (a header and the encoded payload in one allocation),
** the per-thread node caches they come from, the MPSC mailbox queue, and
** the per-thread scratch buffers (msg.c).
*/
#ifndef GS_MSG_H
#define GS_MSG_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "core.h"

/* flag of a GSI_M_DOWN answer to a pending request: not the server's death
** but a refusal (a full mailbox, an undecodable request, an I/O error); its
** payload is the reason. Made by gen.c (gsi_gen_refuse) and the I/O layer,
** read by gsi_gen_answer. */
#define GSI_MF_REFUSED 1

/* flag of a message that holds I/O credit (io/io_sock.c): gsi_msg_free calls
** gsi_msg_credit_hook for it, which gives the credit back to its socket */
#define GSI_MF_CREDIT 0x80
GSI_FUNC void (*_Atomic gsi_msg_credit_hook)(gsi_msg *m);

typedef struct gsi_nodecache gsi_nodecache;

/* A message: this header followed by len payload bytes (the codec's
** encoding), in one allocation. `next` is the mailbox link while queued in
** the MPSC queue and the saved-list link afterwards. */
struct gsi_msg {
  gsi_msg *_Atomic next;
  gsi_msg *prev; /* saved list only (owner) */
  uint64_t from;
  uint64_t ref;
  size_t len;
  gsi_nodecache *home; /* the node cache it goes back to, or NULL (msg.c) */
  uint8_t kind;
  uint8_t flags;
};

#define GSI_MSG_DATA(m) ((unsigned char *)((m) + 1))

/* Any thread may free a message any other thread made. */
GSI_FUNC gsi_msg *gsi_msg_new(int kind, uint64_t from, uint64_t ref,
                              const void *data, size_t len);
GSI_FUNC void gsi_msg_free(gsi_msg *m);
/* A worker thread ends: hand its node cache over to the next worker. */
GSI_FUNC void gsi_msg_thread_done(void);

/* Vyukov's intrusive MPSC queue. Producers: one atomic exchange on `head`.
** The single consumer owns `tail`. Invariant: every pushed node is
** reachable from `tail` once its producer finished the push; a push in
** progress makes pop return NULL (the producer notifies afterwards, so the
** consumer looks again). */
typedef struct gsi_mpsc {
  /* producers write head on every push, the consumer writes tail on every
  ** pop: the container puts them on different cache lines (no padding
  ** here, so that the space between them is not lost: proc.h places a
  ** process's mailbox with head as the last word of one line) */
  gsi_msg *_Atomic head;
  gsi_msg *tail;
  gsi_msg stub;
} gsi_mpsc;

GSI_FUNC void gsi_mpsc_init(gsi_mpsc *q);
GSI_FUNC void gsi_mpsc_push(gsi_mpsc *q, gsi_msg *m);
GSI_FUNC gsi_msg *gsi_mpsc_pop(gsi_mpsc *q);

/* Per-thread scratch memory (msg.c), shared by the binding and the C API:
** `buf` for encoding a message before it is copied into its node, so a
** send costs no extra allocation; `err` for gs_errmsg texts too long for
** api.c's fixed buffer; `killed` for gs_killed_reason. Only the owning
** thread touches them; gsi_scratch_release frees them (a worker or a host
** thread that leaves, a runtime closed). */
typedef struct gsi_scratch {
  gsi_buf buf;
  gsi_buf err;
  gsi_msg *killed;
} gsi_scratch;
GSI_FUNC gsi_scratch *gsi_scratch_get(void);
GSI_FUNC void gsi_scratch_release(void);

#endif
