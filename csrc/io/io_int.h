/*
** io_int.h - what the files of the I/O layer share (io.h is its face to
** the Lua binding): the loop, its socket table, a socket's connection.
**
**   io_loop.c  the loop thread, its command queue, the hooks the core calls,
**              the functions of io.h that ask the loop or read the table
**   io_sock.c  the socket table and what every socket shares: slots,
**              answers and events, waits, opening and closing, options,
**              inbound credit, addresses
**   io_tcp.c   TCP: listen, accept, connect, reading and framing, recv,
**              writing (the loop's, and a sender's direct write)
**   io_udp.c   UDP: open, datagrams in and out
**
** Threads. Everything in an io_conn, the loop and its handles belongs to
** the loop thread alone. What other threads may read of a socket sits in
** its io_slot as atomics: the generation (a handle names a slot and a
** generation), its kind (0 once closed), the controlling process and the
** unsent byte count. The slot table is a fixed array of chunk pointers;
** only the loop thread allocates chunks and slots, and a chunk once
** published (release) is never moved or freed before the runtime is.
** Invariant: a slot's kind is set (release) after its generation and
** owner, and cleared with its generation bumped when the socket closes, so
** a reader that sees kind != 0 and the handle's generation (acquire) sees
** the owner of that socket; it is still only advice, the loop checks
** every command against the slot again.
**
** Lock order. The layer has two locks: io_mu (io_loop.c: starting a
** runtime's loop, held over its allocation and start only) and each
** slot's wlock (a spin lock, below). Neither is taken while the other is
** held, and nothing under either waits for the loop. Under wlock a sender
** writes to the descriptor, builds the rest's command (gsi_msg_new, which
** may take the node cache's leaf lock, msg.c's cache_mu) and pushes it
** (the MPSC queue and uv_async_send take no lock); the loop only ends the
** socket under it. So the one nesting is wlock -> cache_mu.
**
** Backpressure. Inbound: each message of socket data holds a unit of its
** socket's credit (io_slot.credit) until it is freed, that is, until its
** owner took it (or died); an `active = true` socket stops reading at
** IO_CREDIT such messages and the free that brings it down to IO_RESUME
** asks the loop to read again (gsi_msg_credit_hook, a GSI_IO_RESUME
** command). Other messages in the owner's mailbox do not count, so a
** selective receive waiting for socket data never stalls it; only an owner
** with a bounded mailbox also gets room kept in it (looked at every ms
** while full). `once` and `n` are bounded by their count; passive sockets
** read only while a recv waits. Outbound: gsi_io_write, GSI_IO_HIGH_WATER.
*/
#ifndef GS_IO_INT_H
#define GS_IO_INT_H

#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

#include <uv.h>

#include "io/io.h"
#include "core/internal.h"
#include "core/wire.h"

/* A socket handle has bit 62 and never the core's timer bit (io.h). */
_Static_assert(GSI_TIMER_BIT == (uint64_t)1 << 63 && !GSI_IO_IS_SOCK(GSI_TIMER_BIT) &&
                   !GSI_IO_IS_SOCK(GSI_TIMER_BIT | GSI_IO_BIT) && GSI_IO_IS_SOCK(GSI_IO_BIT),
               "socket handles and timer ids must not collide");

/* the layer's own commands (gsi_msg.kind of a command node), after the
** callers' ones (io.h) */
enum {
  GSI_IO_SEND = GSI_IO_NREQUESTS, GSI_IO_SETOPTS, GSI_IO_UDP_SEND, GSI_IO_DOWN,
  GSI_IO_STOP, GSI_IO_RESUME
};

#define IO_CHUNK_BITS 10
#define IO_CHUNK (1u << IO_CHUNK_BITS)
#define IO_NCHUNKS 1024u  /* at most 1,048,576 sockets at once */
#define IO_CREDIT 64       /* a socket's untaken messages that pause reading */
#define IO_RESUME 32       /* ... and that resume it */
#define IO_RBUF (64 * 1024)
#define IO_DRAIN_MS 10000  /* an orderly close waits this long for its writes */

typedef struct io_t io_t;
typedef struct io_conn io_conn;

typedef struct io_slot {
  _Atomic uint32_t gen;
  _Atomic int kind;          /* GSI_SK_*, 0 when free or closed */
  _Atomic uint64_t owner;    /* controlling pid */
  _Atomic int64_t unsent;    /* bytes queued by send, not yet written */
  _Atomic int64_t hwm;       /* high-water mark of unsent */
  /* Direct writes (gsi_io_write): a worker may write to the socket's fd
  ** itself, under wlock, when nothing is unsent (so libuv has no write
  ** queued and none can start: unsent only drops to 0 after libuv
  ** finished). The loop takes wlock to end the socket (kind = 0) before
  ** it closes the fd, so a writer holding it never sees the fd go. */
  _Atomic int wlock;
  _Atomic int fd;            /* TCP: the socket's descriptor */
  _Atomic int pk;            /* TCP: packet mode, for a direct write's prefix */
  /* Credit of an active socket: generation (30 bits) << 32 | its messages
  ** delivered and not yet freed. The loop adds one before each delivery;
  ** the message's free (any thread, gsi_msg_credit_hook) takes it back
  ** with a compare-and-swap that checks the generation, so a message of
  ** an earlier socket in this slot never counts for a later one. */
  _Atomic uint64_t credit;
  /* set by the loop when it paused the socket for credit; the free that
  ** brings the count down to IO_RESUME clears it and asks for a resume */
  _Atomic int want_resume;
  const char *_Atomic why;   /* reason it closed (a static string) */
  io_conn *c;                /* loop only */
  uint32_t free_next;        /* loop only */
} io_slot;

/* A caller waiting for the loop: accept, connect or recv. */
typedef struct io_wait {
  struct io_wait *next;
  io_t *io;
  io_conn *c;      /* the socket it waits on; NULL once unlinked */
  uint64_t pid, ref;
  int64_t n; /* recv: bytes wanted (raw mode), 0 = what there is */
  int timed;
  uv_timer_t tm;
} io_wait;

struct io_conn {
  union { uv_handle_t h; uv_stream_t s; uv_tcp_t tcp; uv_udp_t udp; } u;
  uv_timer_t poll; /* credit: looks at the owner's mailbox while paused */
  uv_timer_t stm;  /* send_timeout of a send waiting past the high mark */
  io_t *io;
  uint64_t id;
  uint32_t index;
  int kind;
  int active, once;
  int packet;
  size_t packet_size;
  int nodelay;
  int64_t send_timeout;
  int64_t hwm;
  int reading, paused, eof, closing, nclose, connected;
  int waiting_writes; /* sends waiting past the mark (send_timeout runs) */
  size_t queued;      /* bytes handed to uv_write, not yet written */
  int final;          /* its handles are being closed */
  gsi_buf in;     /* inbound bytes not yet delivered: [in_off, in.len) */
  size_t in_off;
  io_wait *waiters; /* listener: accept waiters; tcp: the recv waiter */
  io_wait *conn_wait;
  int ready;        /* listener: libuv holds a connection for uv_accept */
  int backlog;
  gsi_io_opts inherit; /* listener: options of accepted sockets */
  const char *why;
};

struct io_t {
  /* References: the runtime's (until io_stop) and one per message that
  ** holds credit (its free calls credit_back, which needs the slots); the
  ** slots and this struct are freed with the last one. */
  _Atomic int refs;
  /* Waking the loop: every push goes through gsi_io_wake, counted in wakers;
  ** io_stop sets stopped, waits for wakers to be 0 and only then lets the
  ** loop close its async handle, so no uv_async_send can follow. */
  _Atomic int stopped;
  _Atomic int wakers;
  gsi_rt *rt;
  uv_loop_t loop;
  uv_async_t wake;
  gsi_mpsc q;
  pthread_t th;
  _Atomic size_t nsocks;
  io_slot *_Atomic chunks[IO_NCHUNKS];
  /* loop only */
  uint32_t used, free_head; /* free_head: index + 1, 0 = none */
  int stopping;
  gsi_buf ob; /* a message being built */
  char rbuf[IO_RBUF];
};

/* A write request of the loop: TCP data, or a datagram. */
typedef struct io_wreq {
  union { uv_write_t w; uv_udp_send_t u; } req;
  io_conn *c;
  gsi_msg *m; /* the command: its payload holds the data */
  size_t len;
  uint64_t pid, ref; /* a send waiting past the high mark, else ref 0 */
  unsigned char hdr[4];
} io_wreq;

/* --------------------------------------------------- slots (any thread) */

/* rt's loop, or NULL before its first use (set once, with release) */
static inline io_t *io_of(gsi_rt *rt) {
  return atomic_load_explicit(&rt->io, memory_order_acquire);
}

static inline io_slot *slot_at(io_t *io, uint32_t i) {
  io_slot *ch;
  if (i / IO_CHUNK >= IO_NCHUNKS) return NULL;
  ch = atomic_load_explicit(&io->chunks[i / IO_CHUNK], memory_order_acquire);
  return ch != NULL ? &ch[i % IO_CHUNK] : NULL;
}

/* The slot a handle names while that socket is open (any thread). */
static inline io_slot *slot_of(io_t *io, uint64_t id) {
  io_slot *s;
  if (io == NULL || !GSI_IO_IS_SOCK(id)) return NULL;
  if ((s = slot_at(io, (uint32_t)id)) == NULL) return NULL;
  if (atomic_load_explicit(&s->kind, memory_order_acquire) == 0) return NULL;
  if ((atomic_load_explicit(&s->gen, memory_order_relaxed) & 0x3fffffffu) !=
      ((id >> 32) & 0x3fffffffu))
    return NULL;
  return s;
}

/* A slot's write lock (a spin lock: held for a few syscalls at most; see
** Lock order above). */
static inline void wlock(io_slot *s) {
  while (atomic_exchange_explicit(&s->wlock, 1, memory_order_acquire))
    sched_yield();
}

static inline void wunlock(io_slot *s) {
  atomic_store_explicit(&s->wlock, 0, memory_order_release);
}

static inline uint64_t owner_of(io_t *io, io_conn *c) {
  return atomic_load_explicit(&slot_at(io, c->index)->owner, memory_order_relaxed);
}

/* ------------------------------------------------- across the files */

/* io_loop.c */

/* Push a command and wake the loop; -1 (m freed) once io_stop began. */
GSI_FUNC int gsi_io_wake(io_t *io, gsi_msg *m);
/* Build command `kind` from self: a, then len bytes of data; push it to
** self's runtime's loop, started on first use. With ref != NULL the answer
** is wanted: *ref is pending in self before the command exists. Returns
** GSI_IO_OK, GSI_IO_ENOMEM or GSI_IO_ENOLOOP (nothing sent or pending). */
GSI_FUNC int gsi_io_push(gsi_proc *self, int kind, const gsi_io_args *a, const void *data,
                         size_t len, uint64_t *ref);

/* io_sock.c: slots, answers, waits, connections */

/* loop only: a new slot for c (kind still 0: not visible yet); -1 when
** the table is full or out of memory */
GSI_FUNC int gsi_io_slot_new(io_t *io, io_conn *c, uint64_t owner);
/* loop only: make c's slot visible to other threads as a socket of kind */
GSI_FUNC void gsi_io_slot_publish(io_t *io, io_conn *c, int kind);

/* { tag, sock = id [, k = v ...] } into b: nh more pairs follow. Nonzero
** when out of memory. */
GSI_FUNC int gsi_io_w_event(gsi_buf *b, const char *tag, uint64_t id, int nh);
/* A plain event { tag, sock [, reason] } to c's owner. */
GSI_FUNC void gsi_io_event(io_t *io, io_conn *c, const char *tag, const char *reason);
/* The answer to a waiting caller (pid, ref): a reason (a refusal), a
** socket, true, or data. 1 delivered, 0 the caller is dead (or no memory). */
GSI_FUNC int gsi_io_reply_err(io_t *io, uint64_t pid, uint64_t ref, const char *why);
GSI_FUNC int gsi_io_reply_sock(io_t *io, uint64_t pid, uint64_t ref, uint64_t id);
GSI_FUNC int gsi_io_reply_true(io_t *io, uint64_t pid, uint64_t ref);
GSI_FUNC int gsi_io_reply_data(io_t *io, uint64_t pid, uint64_t ref, const void *p, size_t n);
/* A libuv error as a POSIX-style reason: "econnrefused". */
GSI_FUNC const char *gsi_io_reason(int err);

/* A wait of (pid, ref) on c, timed out by the loop after ms (< 0: never). */
GSI_FUNC io_wait *gsi_io_wait_new(io_conn *c, uint64_t pid, uint64_t ref, int64_t ms);
GSI_FUNC void gsi_io_wait_unlink(io_wait *w);
GSI_FUNC void gsi_io_wait_free(io_wait *w);

GSI_FUNC io_conn *gsi_io_conn_new(io_t *io, int kind);
GSI_FUNC void gsi_io_conn_drop(io_conn *c);
GSI_FUNC void gsi_io_conn_final(io_conn *c);
GSI_FUNC void gsi_io_conn_close(io_conn *c, const char *why, int notify);
GSI_FUNC void gsi_io_apply_opts(io_conn *c, const gsi_io_opts *o);
GSI_FUNC void gsi_io_opts_of(const io_conn *c, gsi_io_opts *o);

/* Inbound credit (see Backpressure above). */
GSI_FUNC int gsi_io_credit_ok(io_conn *c);
GSI_FUNC int gsi_io_pause(io_conn *c, int r);
GSI_FUNC void gsi_io_unpause(io_conn *c);
GSI_FUNC void gsi_io_set_reading(io_conn *c, int on);
GSI_FUNC int gsi_io_deliver_data(io_conn *c);

GSI_FUNC int gsi_io_w_addr(gsi_buf *b, const struct sockaddr *a);
GSI_FUNC int gsi_io_parse_addr(const char *ip, int port, struct sockaddr_storage *sa);
GSI_FUNC const char *gsi_io_ip_or_default(const gsi_io_opts *o);
GSI_FUNC void gsi_io_do_name(io_t *io, io_conn *c, gsi_msg *m, const gsi_io_args *a);

/* io_tcp.c */

/* Deliver what c->in holds to whoever wants it, then read or not. */
GSI_FUNC void gsi_io_pump(io_conn *c);
GSI_FUNC void gsi_io_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);
GSI_FUNC void gsi_io_do_listen(io_t *io, gsi_msg *m, const gsi_io_args *a);
GSI_FUNC void gsi_io_do_accept(io_t *io, io_conn *ls, gsi_msg *m, const gsi_io_args *a);
GSI_FUNC void gsi_io_do_connect(io_t *io, gsi_msg *m, const gsi_io_args *a);
GSI_FUNC void gsi_io_do_recv(io_t *io, io_conn *c, gsi_msg *m, const gsi_io_args *a);
/* Takes m: it is kept until its data are written. */
GSI_FUNC void gsi_io_do_send(io_t *io, io_conn *c, gsi_msg *m, const gsi_io_args *a);
GSI_FUNC void gsi_io_do_shutdown(io_conn *c);

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

/* io_udp.c */

GSI_FUNC void gsi_io_on_udp_recv(uv_udp_t *u, ssize_t n, const uv_buf_t *buf,
                                 const struct sockaddr *addr, unsigned flags);
GSI_FUNC void gsi_io_do_udp_open(io_t *io, gsi_msg *m, const gsi_io_args *a);
/* Takes m: it is kept until the datagram is sent. */
GSI_FUNC void gsi_io_do_udp_send(io_t *io, io_conn *c, gsi_msg *m, const gsi_io_args *a);

#endif
