/*
** io.h - the I/O layer (DESIGN.md §1.8) as the Lua binding sees it: one
** libuv loop thread per runtime that owns every socket and never runs Lua.
**
** Callers (processes on workers, or foreign threads' processes) talk to
** the loop only through commands pushed on its queue. An operation that
** waits (listen, accept, connect, recv, sockname, a send past the
** high-water mark) is a command carrying a ref that this layer registers
** as a pending request of the caller before the command exists; the loop
** answers it with a reply (the value) or a refusal (the reason string),
** which core.wait reads as true, value | false, reason. Time-outs of those
** waits are kept by the loop itself, so an answer is never lost to an
** abandoned wait (data read for a recv that timed out in the caller would
** be). Inbound data reach the controlling process as ordinary messages
** built as codec bytes.
**
** A socket is a handle, never a pointer: index | generation << 32 |
** GSI_IO_BIT, carried in Lua as a reference value (core/ids.h: so it is
** interned, compares with ==, and crosses messages as any ref does).
**
** This header names no core structure: a process is an opaque gsi_proc,
** the caller of each function below. The layer's own declarations are in
** io/io_int.h; the core knows nothing of either (it holds two hooks the
** layer installs on first use: gsi_rt.io_down, gsi_rt.io_stop).
*/
#ifndef GS_IO_H
#define GS_IO_H

#include <stddef.h>
#include <stdint.h>

#include "core/ids.h"

#ifndef GSI_FUNC
#define GSI_FUNC __attribute__((visibility("hidden"))) extern
#endif

typedef struct gsi_proc gsi_proc;

/* Refs from make_ref are a counter, timer ids have bit 63 (core), sockets
** bit 62 (and not bit 63). */
#define GSI_IO_BIT ((uint64_t)1 << 62)
#define GSI_IO_IS_SOCK(id) (((uint64_t)(id) >> 62) == 1)

/* Commands a caller sends with gsi_io_request. */
enum {
  GSI_IO_LISTEN = 1, GSI_IO_CONNECT, GSI_IO_ACCEPT, GSI_IO_RECV, GSI_IO_CLOSE,
  GSI_IO_SHUTDOWN, GSI_IO_NAME, GSI_IO_UDP_OPEN,
  GSI_IO_NREQUESTS /* the layer's own commands follow (io_int.h) */
};

/* packet modes */
enum { GSI_PK_RAW = 0, GSI_PK_1 = 1, GSI_PK_2 = 2, GSI_PK_4 = 4, GSI_PK_LINE = 10 };
/* active modes: > 0 is a count ("once" is 1 without tcp_passive) */
#define GSI_ACT_FALSE 0
#define GSI_ACT_TRUE (-1)

/* socket kinds */
enum { GSI_SK_NONE = 0, GSI_SK_LISTEN, GSI_SK_TCP, GSI_SK_UDP };

/* bytes of an address string, its NUL included */
#define GSI_IO_IPLEN 64

/* Socket options; a field < 0 (or set == 0 for a flag) means "unchanged". */
typedef struct gsi_io_opts {
  int has_active, active, once; /* once: active = "once" */
  int packet;                   /* -1 unchanged */
  int64_t packet_size;          /* -1 unchanged */
  int nodelay;                  /* -1 unchanged */
  int64_t send_timeout;         /* ms, -1 unchanged, 0 none */
  int64_t high_watermark;       /* bytes, -1 unchanged */
  int backlog;                  /* listen only */
  char ip[GSI_IO_IPLEN];        /* listen/connect/udp: bind or peer address */
} gsi_io_opts;

/* Arguments of a command, at the start of its payload (memcpy'd); bytes
** (data, address) follow. */
typedef struct gsi_io_args {
  uint64_t sock;
  int64_t a, b;      /* port / n / timeout ms (< 0: none) / how */
  gsi_io_opts opts;
} gsi_io_args;

/* Results of the functions below: 0, or why not. */
enum {
  GSI_IO_OK = 0,
  GSI_IO_ECLOSED,   /* the socket is closed (or never was one) */
  GSI_IO_ENOTCONN,  /* send on a socket that is not a connected TCP one */
  GSI_IO_EMSGSIZE,  /* too large for the socket's packet mode, or a datagram */
  GSI_IO_EINVAL,    /* the wrong kind of socket */
  GSI_IO_ENOTOWNER, /* the caller is not the controlling process */
  GSI_IO_ENOMEM,
  GSI_IO_ENOLOOP    /* the loop cannot be started (the runtime is closing) */
};

/* Unsent bytes above which send waits until its data are written (the
** default of the high_watermark option). */
#define GSI_IO_HIGH_WATER ((int64_t)1 << 20)

/* Send command `kind` (GSI_IO_LISTEN .. GSI_IO_UDP_OPEN) with arguments a
** from self to the loop (started on first use). With ref != NULL the
** answer is wanted: *ref, pending in self, is what to wait on. Returns
** GSI_IO_OK, GSI_IO_ENOMEM or GSI_IO_ENOLOOP (nothing sent, nothing left
** pending). */
GSI_FUNC int gsi_io_request(gsi_proc *self, int kind, const gsi_io_args *a, uint64_t *ref);

/* Send data on a TCP socket, framed by its packet mode: written straight
** into its descriptor on this thread when nothing else is unsent (as much
** as the kernel takes without waiting), the rest handed to the loop. Sets
** *ref to 0, or, when the send went past the socket's high-water mark, to
** a ref pending in self that the loop answers once these data are written:
** the caller waits for it. Returns GSI_IO_OK, GSI_IO_ECLOSED (reason:
** gsi_io_closed_reason), GSI_IO_ENOTCONN, GSI_IO_EMSGSIZE or GSI_IO_ENOMEM. */
GSI_FUNC int gsi_io_send(gsi_proc *self, uint64_t sock, const char *data, size_t len,
                         uint64_t *ref);

/* Change a socket's options; the high-water mark and the packet mode hold
** for the next send already. GSI_IO_OK, GSI_IO_ECLOSED, GSI_IO_ENOMEM or
** GSI_IO_ENOLOOP. */
GSI_FUNC int gsi_io_setopts(gsi_proc *self, uint64_t sock, const gsi_io_opts *o);

/* Make `to` the controlling process, if self is it now: GSI_IO_OK,
** GSI_IO_ECLOSED or GSI_IO_ENOTOWNER. */
GSI_FUNC int gsi_io_set_owner(gsi_proc *self, uint64_t sock, uint64_t to);

/* Send a datagram (at most 65,507 bytes) to ip (a NUL-terminated address
** shorter than GSI_IO_IPLEN), port from a UDP socket: GSI_IO_OK,
** GSI_IO_EMSGSIZE, GSI_IO_ECLOSED, GSI_IO_EINVAL (not a UDP socket),
** GSI_IO_ENOMEM or GSI_IO_ENOLOOP. */
GSI_FUNC int gsi_io_udp_send(gsi_proc *self, uint64_t sock, const char *ip, int port,
                             const char *data, size_t len);

/* The reason a socket ended with ("closed" when unknown). */
GSI_FUNC const char *gsi_io_closed_reason(gsi_proc *self, uint64_t sock);

#endif
