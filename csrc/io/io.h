/*
** io.h - the I/O layer (DESIGN.md §1.8): one libuv loop thread per runtime
** that owns every socket and never runs Lua.
**
** Workers (and foreign threads) talk to the loop only through commands:
** gsi_msg nodes pushed on the loop's MPSC queue, then uv_async_send. An
** operation that waits (listen, accept, connect, recv, sockname, a send
** past the high-water mark) is a command carrying a ref that the caller
** registered as a pending request (gsi_pending_add); the loop answers it
** with a GSI_M_REPLY (the value) or a GSI_M_DOWN flagged GSI_REFUSED (the
** reason string), which core.wait reads as true, value | false, reason.
** Time-outs of those waits are kept by the loop itself, so an answer is
** never lost to an abandoned wait (data read for a recv that timed out in
** the caller would be). Inbound data reach the controlling process as
** ordinary messages built as codec bytes here.
**
** A socket is a handle, never a pointer: index | generation << 32 | GSI_IO_BIT,
** carried in Lua as a reference value (so it is interned, compares with ==,
** and crosses messages as any ref does).
**
** The core knows nothing of this file: the runtime holds two hooks that
** the layer installs on first use (gsi_rt.io_down, gsi_rt.io_stop).
*/
#ifndef GS_IO_H
#define GS_IO_H

#include <stdint.h>

#include "lauxlib.h"

#include "core/internal.h"

/* A refusal answer: a GSI_M_DOWN with this flag reads as false, reason in
** core.wait (lgenserver.c's answer_k defines the same value). */
#ifndef GSI_REFUSED
#define GSI_REFUSED 1
#endif

/* Refs from make_ref are a counter, timer ids have bit 63: sockets bit 62. */
#define GSI_IO_BIT ((uint64_t)1 << 62)
#define GSI_IO_IS_SOCK(id) (((id) & (GSI_TIMER_BIT | GSI_IO_BIT)) == GSI_IO_BIT)

/* commands (gsi_msg.kind of a command node) */
enum {
  GSI_IO_LISTEN = 1, GSI_IO_CONNECT, GSI_IO_ACCEPT, GSI_IO_RECV, GSI_IO_SEND,
  GSI_IO_CLOSE, GSI_IO_SHUTDOWN, GSI_IO_SETOPTS, GSI_IO_NAME, GSI_IO_UDP_OPEN,
  GSI_IO_UDP_SEND, GSI_IO_DOWN, GSI_IO_STOP, GSI_IO_RESUME
};

/* packet modes */
enum { GSI_PK_RAW = 0, GSI_PK_1 = 1, GSI_PK_2 = 2, GSI_PK_4 = 4, GSI_PK_LINE = 10 };
/* active modes: > 0 is a count ("once" is 1 without tcp_passive) */
#define GSI_ACT_FALSE 0
#define GSI_ACT_TRUE (-1)

/* Socket options; a field < 0 (or set == 0 for a flag) means "unchanged". */
typedef struct gsi_io_opts {
  int has_active, active, once; /* once: active = "once" */
  int packet;                   /* -1 unchanged */
  int64_t packet_size;          /* -1 unchanged */
  int nodelay;                  /* -1 unchanged */
  int64_t send_timeout;         /* ms, -1 unchanged, 0 none */
  int64_t high_watermark;       /* bytes, -1 unchanged */
  int backlog;                  /* listen only */
  char ip[64];                  /* listen/connect/udp: bind or peer address */
} gsi_io_opts;

/* Arguments of a command, at the start of its payload (memcpy'd); bytes
** (data, address) follow. */
typedef struct gsi_io_args {
  uint64_t sock;
  int64_t a, b;      /* port / n / timeout ms (< 0: none) / how */
  gsi_io_opts opts;
} gsi_io_args;

/* Push a command for rt's loop (started on first use). Takes m. Returns
** 0, or -1 when the loop cannot be started (m freed). */
GSI_FUNC int gsi_io_command(gsi_rt *rt, gsi_msg *m);

/* What a worker may read of a socket without asking the loop (advisory:
** the loop checks again). Returns 0 if the handle names an open socket of
** rt, and sets what is asked for. */
GSI_FUNC int gsi_io_peek(gsi_rt *rt, uint64_t sock, uint64_t *owner, int *kind);
/* send from a worker: gsi_io_write's results */
enum { GSI_IO_W_DONE = 0, GSI_IO_W_QUEUE, GSI_IO_W_CLOSED, GSI_IO_W_NOTCONN,
       GSI_IO_W_EMSGSIZE, GSI_IO_W_NOMEM };
typedef struct gsi_io_wr {
  int64_t unsent; /* unsent bytes after this send (QUEUE) */
  int waiting;    /* ref was given to the command: the loop answers it
                     once these data are written (past the high-water mark) */
} gsi_io_wr;
/* Send data on a TCP socket from any thread, framed by its packet mode:
** written straight into its descriptor when nothing else is unsent (as
** much as the kernel takes without waiting: GSI_IO_W_DONE when that is
** all), the rest handed to the loop (GSI_IO_W_QUEUE). ref (pending in the
** caller, or 0) is attached when the send goes past the high-water mark
** (w->waiting); the caller then waits for its answer, else forgets it. */
GSI_FUNC int gsi_io_write(gsi_rt *rt, uint64_t sock, uint64_t from, uint64_t ref,
                          const char *data, size_t len, gsi_io_wr *w);
/* Set a socket's packet mode for direct writes at once (setopts). */
GSI_FUNC void gsi_io_set_packet(gsi_rt *rt, uint64_t sock, int packet);
/* Set a socket's high-water mark at once (setopts also tells the loop). */
GSI_FUNC void gsi_io_set_hwm(gsi_rt *rt, uint64_t sock, int64_t hwm);
/* Set the controlling process if `from` is it: 0, -1 closed, -2 not owner. */
GSI_FUNC int gsi_io_set_owner(gsi_rt *rt, uint64_t sock, uint64_t from, uint64_t to);
/* The reason a socket ended with (for send on a closed socket). */
GSI_FUNC const char *gsi_io_closed_reason(gsi_rt *rt, uint64_t sock);

/* socket kinds */
enum { GSI_SK_NONE = 0, GSI_SK_LISTEN, GSI_SK_TCP, GSI_SK_UDP };

/* Unsent bytes above which send waits until its data are written (the
** default of the high_watermark option). */
#define GSI_IO_HIGH_WATER ((int64_t)1 << 20)

/* Binding (lio.c): genserver.core's io_* functions, registered with the
** core's own (same upvalues). */
GSI_FUNC const luaL_Reg gsi_io_funcs[];

#endif
