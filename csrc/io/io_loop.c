/*
** io_loop.c - the I/O layer's loop thread: sockets on libuv (DESIGN.md
** §1.8, the protocol in io.h).
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
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "io.h"
#include "core/wire.h"

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
  /* Waking the loop: every push goes through io_wake, counted in wakers;
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

/* rt->io is set once under io_mu and read with acquire. */
static pthread_mutex_t io_mu = PTHREAD_MUTEX_INITIALIZER;

/* ---------------------------------------------------------------- slots */

static io_slot *slot_at(io_t *io, uint32_t i) {
  io_slot *ch;
  if (i / IO_CHUNK >= IO_NCHUNKS) return NULL;
  ch = atomic_load_explicit(&io->chunks[i / IO_CHUNK], memory_order_acquire);
  return ch != NULL ? &ch[i % IO_CHUNK] : NULL;
}

static uint64_t make_id(uint32_t index, uint32_t gen) {
  return GSI_IO_BIT | ((uint64_t)(gen & 0x3fffffffu) << 32) | index;
}

/* The slot a handle names while that socket is open (any thread). */
static io_slot *slot_of(io_t *io, uint64_t id) {
  io_slot *s;
  if (io == NULL || !GSI_IO_IS_SOCK(id)) return NULL;
  if ((s = slot_at(io, (uint32_t)id)) == NULL) return NULL;
  if (atomic_load_explicit(&s->kind, memory_order_acquire) == 0) return NULL;
  if ((atomic_load_explicit(&s->gen, memory_order_relaxed) & 0x3fffffffu) !=
      ((id >> 32) & 0x3fffffffu))
    return NULL;
  return s;
}

/* loop only: a new slot for c (kind still 0: not visible yet) */
static int slot_new(io_t *io, io_conn *c, uint64_t owner) {
  uint32_t i;
  io_slot *s;
  if (io->free_head != 0) {
    i = io->free_head - 1;
    s = slot_at(io, i);
    io->free_head = s->free_next;
  } else {
    if (io->used >= IO_CHUNK * IO_NCHUNKS) return -1;
    i = io->used;
    if (i % IO_CHUNK == 0 && slot_at(io, i) == NULL) {
      io_slot *ch = calloc(IO_CHUNK, sizeof *ch);
      if (ch == NULL) return -1;
      for (uint32_t k = 0; k < IO_CHUNK; k++) atomic_init(&ch[k].gen, 1);
      atomic_store_explicit(&io->chunks[i / IO_CHUNK], ch, memory_order_release);
    }
    io->used++;
    s = slot_at(io, i);
  }
  s->c = c;
  atomic_store_explicit(&s->owner, owner, memory_order_relaxed);
  atomic_store_explicit(&s->unsent, 0, memory_order_relaxed);
  atomic_store_explicit(&s->why, NULL, memory_order_relaxed);
  atomic_store_explicit(&s->credit,
      (uint64_t)(atomic_load_explicit(&s->gen, memory_order_relaxed) & 0x3fffffffu) << 32,
      memory_order_relaxed);
  atomic_store_explicit(&s->want_resume, 0, memory_order_relaxed);
  c->index = i;
  c->id = make_id(i, atomic_load_explicit(&s->gen, memory_order_relaxed));
  return 0;
}

static void wlock(io_slot *s) {
  while (atomic_exchange_explicit(&s->wlock, 1, memory_order_acquire))
    sched_yield();
}

static void wunlock(io_slot *s) {
  atomic_store_explicit(&s->wlock, 0, memory_order_release);
}

static void slot_publish(io_t *io, io_conn *c, int kind) {
  io_slot *s = slot_at(io, c->index);
  uv_os_fd_t fd = -1;
  if (s == NULL) return; /* cannot be: c->index came from slot_new */
  atomic_store_explicit(&s->hwm, c->hwm, memory_order_relaxed);
  if (kind != GSI_SK_TCP || uv_fileno(&c->u.h, &fd) != 0) fd = -1;
  atomic_store_explicit(&s->fd, fd, memory_order_relaxed);
  atomic_store_explicit(&s->pk, c->packet, memory_order_relaxed);
  atomic_store_explicit(&s->kind, kind, memory_order_release);
  atomic_fetch_add(&io->nsocks, 1);
}

/* loop only: the socket is gone; its handle goes stale at once */
static void slot_end(io_t *io, io_conn *c, const char *why) {
  io_slot *s = slot_at(io, c->index);
  if (atomic_load_explicit(&s->kind, memory_order_relaxed) != 0)
    atomic_fetch_sub(&io->nsocks, 1);
  atomic_store_explicit(&s->why, why, memory_order_relaxed);
  wlock(s); /* no direct write is under way once this returns */
  atomic_store_explicit(&s->kind, 0, memory_order_release);
  atomic_store_explicit(&s->fd, -1, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->gen, 1, memory_order_relaxed);
  wunlock(s);
  s->c = NULL;
  s->free_next = io->free_head;
  io->free_head = c->index + 1;
}

static uint64_t owner_of(io_t *io, io_conn *c) {
  return atomic_load_explicit(&slot_at(io, c->index)->owner, memory_order_relaxed);
}

/* ------------------------------------------------------ building messages */

/* Inbound messages are written in the codec's wire format by wire.h. */

/* { tag, sock = id [, k = v ...] }: nh more pairs follow */
static int w_event(gsi_buf *b, const char *tag, uint64_t id, int nh) {
  b->len = 0;
  return gsi_wire_byte(b, GSI_WIRE_MAGIC) || gsi_wire_tagvar(b, GSI_T_TABLE, 1) ||
         gsi_wire_varint(b, (uint64_t)(nh + 1)) || gsi_wire_cstr(b, tag) ||
         gsi_wire_cstr(b, "sock") || gsi_wire_tagvar(b, GSI_T_IDREF, id);
}

/* Deliver the message in io->ob to pid as a plain message: 1 delivered,
** 0 the pid is dead (or no memory). */
static int deliver_ob(io_t *io, uint64_t pid, int kind, uint64_t ref, int flags) {
  gsi_msg *m = gsi_msg_new(kind, 0, ref, io->ob.data, io->ob.len);
  if (io->ob.cap > IO_RBUF * 4) gsi_buf_free(&io->ob);
  if (m == NULL) return 0;
  m->flags = (uint8_t)flags;
  return gsi_deliver(io->rt, pid, m, 0) == 1;
}

/* The answer to a waiting caller: a value (in io->ob) or a reason. */
static int reply_ob(io_t *io, uint64_t pid, uint64_t ref) {
  return deliver_ob(io, pid, GSI_M_REPLY, ref, 0);
}

static int reply_err(io_t *io, uint64_t pid, uint64_t ref, const char *why) {
  io->ob.len = 0;
  if (gsi_wire_byte(&io->ob, GSI_WIRE_MAGIC) || gsi_wire_cstr(&io->ob, why)) return 0;
  return deliver_ob(io, pid, GSI_M_DOWN, ref, GSI_REFUSED);
}

static int reply_sock(io_t *io, uint64_t pid, uint64_t ref, uint64_t id) {
  io->ob.len = 0;
  if (gsi_wire_byte(&io->ob, GSI_WIRE_MAGIC) || gsi_wire_tagvar(&io->ob, GSI_T_IDREF, id)) return 0;
  return reply_ob(io, pid, ref);
}

static int reply_true(io_t *io, uint64_t pid, uint64_t ref) {
  io->ob.len = 0;
  if (gsi_wire_byte(&io->ob, GSI_WIRE_MAGIC) || gsi_wire_byte(&io->ob, GSI_T_TRUE)) return 0;
  return reply_ob(io, pid, ref);
}

static int reply_data(io_t *io, uint64_t pid, uint64_t ref, const void *p, size_t n) {
  io->ob.len = 0;
  if (gsi_wire_byte(&io->ob, GSI_WIRE_MAGIC) || gsi_wire_str(&io->ob, p, n)) return 0;
  return reply_ob(io, pid, ref);
}

/* A libuv error as a POSIX-style reason: "econnrefused". */
static const char *reason_of(int err) {
  static const struct { int e; const char *s; } names[] = {
    {UV_ECONNREFUSED, "econnrefused"}, {UV_EADDRINUSE, "eaddrinuse"},
    {UV_ECONNRESET, "econnreset"}, {UV_EPIPE, "closed"},
    {UV_ETIMEDOUT, "etimedout"}, {UV_EADDRNOTAVAIL, "eaddrnotavail"},
    {UV_EACCES, "eacces"}, {UV_EINVAL, "einval"}, {UV_ENOMEM, "enomem"},
    {UV_EHOSTUNREACH, "ehostunreach"}, {UV_ENETUNREACH, "enetunreach"},
    {UV_ECONNABORTED, "econnaborted"}, {UV_EMFILE, "emfile"},
    {UV_ENFILE, "enfile"}, {UV_EOF, "closed"}, {UV_ECANCELED, "closed"},
    {UV_EAFNOSUPPORT, "eafnosupport"}, {UV_EMSGSIZE, "emsgsize"},
    {UV_ENOBUFS, "enobufs"}, {UV_EPERM, "eperm"}, {UV_ENOTCONN, "enotconn"}};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (names[i].e == err) return names[i].s;
  return "eio";
}

/* --------------------------------------------------------------- waits */

static void wait_closed_cb(uv_handle_t *h) { free(h->data); }

static void wait_free(io_wait *w) {
  if (w->timed) {
    uv_timer_stop(&w->tm);
    w->tm.data = w;
    uv_close((uv_handle_t *)&w->tm, wait_closed_cb);
  } else {
    free(w);
  }
}

static void wait_unlink(io_wait *w) {
  io_conn *c = w->c;
  if (c == NULL) return;
  if (c->conn_wait == w) c->conn_wait = NULL;
  for (io_wait **pp = &c->waiters; *pp; pp = &(*pp)->next)
    if (*pp == w) {
      *pp = w->next;
      break;
    }
  w->c = NULL;
}

static void conn_close(io_conn *c, const char *why, int notify);

static void wait_timeout_cb(uv_timer_t *t) {
  io_wait *w = t->data;
  io_conn *c = w->c;
  int connecting = c != NULL && c->conn_wait == w;
  wait_unlink(w);
  reply_err(w->io, w->pid, w->ref, "timeout");
  wait_free(w);
  if (connecting) conn_close(c, "timeout", 0);
}

static io_wait *wait_new(io_conn *c, uint64_t pid, uint64_t ref, int64_t ms) {
  io_wait *w = calloc(1, sizeof *w);
  if (w == NULL) return NULL;
  w->io = c->io;
  w->c = c;
  w->pid = pid;
  w->ref = ref;
  if (ms >= 0) {
    w->timed = 1;
    uv_timer_init(&c->io->loop, &w->tm);
    w->tm.data = w;
    uv_timer_start(&w->tm, wait_timeout_cb, (uint64_t)ms, 0);
  }
  return w;
}

/* ----------------------------------------------------------- connections */

static void conn_handle_closed(uv_handle_t *h) {
  io_conn *c = h->data;
  if (--c->nclose == 0) {
    gsi_buf_free(&c->in);
    free(c);
  }
}

static io_conn *conn_new(io_t *io, int kind) {
  io_conn *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  c->io = io;
  c->kind = kind;
  c->active = GSI_ACT_TRUE;
  c->nodelay = 1;
  c->hwm = GSI_IO_HIGH_WATER;
  c->why = "closed";
  gsi_buf_init(&c->in);
  uv_timer_init(&io->loop, &c->poll);
  uv_timer_init(&io->loop, &c->stm);
  c->poll.data = c->stm.data = c;
  c->nclose = 2;
  return c;
}

/* A connection that has no handle yet (its init failed). */
static void conn_drop(io_conn *c) {
  c->closing = 1;
  uv_close((uv_handle_t *)&c->poll, conn_handle_closed);
  uv_close((uv_handle_t *)&c->stm, conn_handle_closed);
}

static void event_simple(io_t *io, io_conn *c, const char *tag, const char *reason) {
  uint64_t owner = owner_of(io, c);
  if (w_event(&io->ob, tag, c->id, reason ? 1 : 0)) return;
  if (reason && (gsi_wire_cstr(&io->ob, "reason") || gsi_wire_cstr(&io->ob, reason))) return;
  deliver_ob(io, owner, GSI_M_USER, 0, 0);
}

/* Close c's handles; it is freed once the last one is closed. */
static void conn_final(io_conn *c) {
  if (c->final) return;
  c->final = 1;
  uv_timer_stop(&c->stm);
  c->nclose = 3;
  c->u.h.data = c;
  uv_close(&c->u.h, conn_handle_closed);
  uv_close((uv_handle_t *)&c->poll, conn_handle_closed);
  uv_close((uv_handle_t *)&c->stm, conn_handle_closed);
}

static void on_drained(uv_shutdown_t *r, int status) {
  io_conn *c = r->data;
  (void)status;
  free(r);
  conn_final(c);
}

static void drain_timeout_cb(uv_timer_t *t) { conn_final(t->data); }

/* Close c: its handle goes stale at once, waiters get "closed" (or why),
** and with notify the owner gets tcp_error (unless why is "closed") and
** tcp_closed. */
static void conn_close(io_conn *c, const char *why, int notify) {
  io_t *io = c->io;
  if (c->closing) return;
  c->closing = 1;
  c->why = why;
  if (notify && c->kind == GSI_SK_TCP) {
    if (strcmp(why, "closed") != 0) event_simple(io, c, "tcp_error", why);
    event_simple(io, c, "tcp_closed", NULL);
  }
  slot_end(io, c, why);
  while (c->waiters != NULL) {
    io_wait *w = c->waiters;
    c->waiters = w->next;
    w->c = NULL;
    reply_err(io, w->pid, w->ref, strcmp(why, "timeout") == 0 ? "closed" : why);
    wait_free(w);
  }
  if (c->conn_wait != NULL) {
    io_wait *w = c->conn_wait;
    c->conn_wait = NULL;
    w->c = NULL;
    if (strcmp(why, "timeout") != 0) reply_err(io, w->pid, w->ref, why);
    wait_free(w);
  }
  uv_timer_stop(&c->poll);
  uv_timer_stop(&c->stm);
  /* an orderly close (tcp.close, the owner's death) first writes what
  ** send queued: shutdown waits for the pending writes, then sends FIN;
  ** bounded, in case the peer never reads */
  if (strcmp(why, "closed") == 0 && c->kind == GSI_SK_TCP && c->connected &&
      c->queued > 0 && !io->stopping) {
    uv_shutdown_t *r = malloc(sizeof *r);
    uv_read_stop(&c->u.s);
    if (r != NULL && uv_shutdown(r, &c->u.s, on_drained) == 0) {
      r->data = c;
      uv_timer_start(&c->stm, drain_timeout_cb, IO_DRAIN_MS, 0);
      return;
    }
    free(r);
  }
  conn_final(c);
}

static void apply_opts(io_conn *c, const gsi_io_opts *o) {
  if (o->has_active) {
    c->active = o->active;
    c->once = o->once;
  }
  if (o->packet >= 0) {
    io_slot *s = slot_at(c->io, c->index);
    c->packet = o->packet;
    if (s != NULL && s->c == c) atomic_store_explicit(&s->pk, c->packet, memory_order_relaxed);
  }
  if (o->packet_size >= 0) c->packet_size = (size_t)o->packet_size;
  if (o->nodelay >= 0) {
    c->nodelay = o->nodelay;
    if (c->kind == GSI_SK_TCP && c->connected) uv_tcp_nodelay(&c->u.tcp, c->nodelay);
  }
  if (o->send_timeout >= 0) c->send_timeout = o->send_timeout;
  if (o->high_watermark >= 0) {
    io_slot *s = slot_at(c->io, c->index);
    c->hwm = o->high_watermark;
    if (s != NULL && s->c == c) atomic_store_explicit(&s->hwm, c->hwm, memory_order_relaxed);
  }
}

static void opts_of(const io_conn *c, gsi_io_opts *o) {
  memset(o, 0, sizeof *o);
  o->has_active = 1;
  o->active = c->active;
  o->once = c->once;
  o->packet = c->packet;
  o->packet_size = (int64_t)c->packet_size;
  o->nodelay = c->nodelay;
  o->send_timeout = c->send_timeout;
  o->high_watermark = c->hwm;
}

/* ------------------------------------------------------------- reading */

static size_t max_packet(io_conn *c) {
  size_t lim = gsi_rt_limits(c->io->rt)->max_size;
  if (lim > 64) lim -= 64; /* room for the message's own table */
  return c->packet_size != 0 && c->packet_size < lim ? c->packet_size : lim;
}

/* The next frame in c->in: 1 and (*off, *len, *skip) when complete, 0 when
** more bytes are needed, -1 when it is larger than packet_size. want: a
** raw recv's byte count (0: what there is). */
static int next_frame(io_conn *c, size_t want, size_t *off, size_t *len, size_t *skip) {
  const unsigned char *p = c->in.data + c->in_off;
  size_t have = c->in.len - c->in_off, max = max_packet(c), hl, n;
  if (have == 0) return 0;
  switch (c->packet) {
  case GSI_PK_RAW:
    if (want > 0) {
      if (have < want) return c->eof ? (*off = 0, *len = *skip = have, 1) : 0;
      have = want;
    }
    *off = 0;
    *len = *skip = have;
    return 1;
  case GSI_PK_LINE: {
    const unsigned char *nl = memchr(p, '\n', have);
    if (nl == NULL) {
      if (have > max) return -1;
      if (!c->eof) return 0;
      *off = 0;
      *len = *skip = have; /* the last line, unterminated */
      return 1;
    }
    n = (size_t)(nl - p) + 1;
    if (n > max) return -1;
    *off = 0;
    *len = *skip = n;
    return 1;
  }
  default:
    hl = (size_t)c->packet;
    if (have < hl) return 0;
    n = 0;
    for (size_t i = 0; i < hl; i++) n = (n << 8) | p[i];
    if (n > max) return -1;
    if (have < hl + n) return 0;
    *off = hl;
    *len = n;
    *skip = hl + n;
    return 1;
  }
}

static void consume_in(io_conn *c, size_t n) {
  c->in_off += n;
  if (c->in_off == c->in.len) {
    c->in_off = c->in.len = 0;
  } else if (c->in_off > c->in.len / 2 && c->in_off > 4096) {
    memmove(c->in.data, c->in.data + c->in_off, c->in.len - c->in_off);
    c->in.len -= c->in_off;
    c->in_off = 0;
  }
}

/* May an active=true socket deliver one more message? 1: yes; 0: not
** before some of its messages are taken (wait for a resume); -1: not
** before its owner's bounded mailbox has room (look again every ms: other
** messages fill it, whose frees tell us nothing). */
static int credit_ok(io_conn *c) {
  io_t *io = c->io;
  io_slot *s = slot_at(io, c->index);
  gsi_proc *p;
  int ok = 1;
  if ((uint32_t)atomic_load_explicit(&s->credit, memory_order_relaxed) >= IO_CREDIT) return 0;
  if ((p = gsi_pin(io->rt, owner_of(io, c))) == NULL) return 1; /* dead: delivery fails */
  if (p->mbox_limit != 0) {
    uint64_t in = atomic_load_explicit(&p->msgs_in, memory_order_relaxed);
    uint64_t out = atomic_load_explicit(&p->drained_pub, memory_order_relaxed);
    uint64_t q = (in > out ? in - out : 0) +
                 atomic_load_explicit(&p->svlen_pub, memory_order_relaxed);
    uint64_t lim = p->mbox_limit / 2 > 0 ? p->mbox_limit / 2 : 1;
    if (q >= lim) ok = -1;
  }
  gsi_unpin(p);
  return ok;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  io_conn *c = h->data;
  (void)hint;
  *buf = uv_buf_init(c->io->rbuf, IO_RBUF);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);
static void on_udp_recv(uv_udp_t *u, ssize_t n, const uv_buf_t *buf,
                        const struct sockaddr *addr, unsigned flags);

static void set_reading(io_conn *c, int on) {
  if (c->closing || c->reading == on) return;
  if (c->kind == GSI_SK_UDP) {
    if (on) uv_udp_recv_start(&c->u.udp, on_alloc, on_udp_recv);
    else uv_udp_recv_stop(&c->u.udp);
  } else if (c->kind == GSI_SK_TCP) {
    if (c->eof) return;
    if (on) uv_read_start(&c->u.s, on_alloc, on_read);
    else uv_read_stop(&c->u.s);
  }
  c->reading = on;
}

static void poll_cb(uv_timer_t *t);

/* Stop reading until credit comes back (how: credit_ok's r). Returns 1
** when it came back meanwhile: the caller carries on. */
static int pause_reading(io_conn *c, int r) {
  io_slot *s = slot_at(c->io, c->index);
  int one = 1;
  c->paused = 1;
  set_reading(c, 0);
  if (r < 0) {
    uv_timer_start(&c->poll, poll_cb, 1, 1);
    return 0;
  }
  atomic_store(&s->want_resume, 1);
  /* frees between credit_ok and the store above did not see want_resume */
  if ((uint32_t)atomic_load(&s->credit) <= IO_RESUME &&
      atomic_compare_exchange_strong(&s->want_resume, &one, 0)) {
    c->paused = 0;
    return 1;
  }
  return 0;
}

/* Deliver the message in io->ob to c's owner as socket data: it holds a
** unit of c's credit and a reference on io until it is freed. */
static int deliver_data(io_conn *c) {
  io_t *io = c->io;
  io_slot *s = slot_at(io, c->index);
  gsi_msg *m = gsi_msg_new(GSI_M_USER, (uint64_t)(uintptr_t)io, c->id, io->ob.data, io->ob.len);
  if (io->ob.cap > IO_RBUF * 4) gsi_buf_free(&io->ob);
  if (m == NULL) return 0;
  m->flags = GSI_MF_CREDIT;
  /* counted before it is visible: its free may come at once */
  atomic_fetch_add(&io->refs, 1);
  atomic_fetch_add(&s->credit, 1);
  return gsi_deliver(io->rt, owner_of(io, c), m, 0) == 1;
}

/* Deliver what c->in holds to whoever wants it, then read or not. */
static void pump(io_conn *c) {
  io_t *io = c->io;
  for (;;) {
    size_t off, len, skip;
    io_wait *w = c->waiters;
    int r;
    if (c->closing) return;
    if (w == NULL && c->active == GSI_ACT_FALSE) break;
    if (w == NULL && c->active == GSI_ACT_TRUE && (r = credit_ok(c)) <= 0) {
      if (pause_reading(c, r)) continue;
      return;
    }
    r = next_frame(c, w != NULL ? (size_t)w->n : 0, &off, &len, &skip);
    if (r < 0) {
      if (w != NULL) {
        wait_unlink(w);
        reply_err(io, w->pid, w->ref, "emsgsize");
        wait_free(w);
      }
      conn_close(c, "emsgsize", w == NULL);
      return;
    }
    if (r == 0) break;
    if (w != NULL) {
      wait_unlink(w);
      reply_data(io, w->pid, w->ref, c->in.data + c->in_off + off, len);
      wait_free(w);
      consume_in(c, skip);
      continue;
    }
    if (w_event(&io->ob, "tcp", c->id, 1) || gsi_wire_cstr(&io->ob, "data") ||
        gsi_wire_str(&io->ob, (const char *)c->in.data + c->in_off + off, len)) {
      conn_close(c, "enomem", 1);
      return;
    }
    consume_in(c, skip);
    if (!deliver_data(c)) {
      conn_close(c, "closed", 0); /* the owner is dead */
      return;
    }
    if (c->active > 0 && --c->active == 0) {
      if (!c->once) event_simple(io, c, "tcp_passive", NULL);
      c->once = 0;
    }
  }
  if (c->eof) {
    /* nothing more will come: a passive reader learns it now, an active
    ** owner once everything buffered is out */
    io_wait *w = c->waiters;
    if (w != NULL) {
      wait_unlink(w);
      reply_err(io, w->pid, w->ref, "closed");
      wait_free(w);
    } else if (c->active != GSI_ACT_FALSE && c->in.len == c->in_off) {
      conn_close(c, "closed", 1);
    }
    return;
  }
  set_reading(c, !c->paused && (c->waiters != NULL || c->active != GSI_ACT_FALSE));
}

/* Credit is back (a resume, or the poll saw room): read again. */
static void unpause(io_conn *c) {
  if (c->closing || !c->paused) return;
  uv_timer_stop(&c->poll);
  c->paused = 0;
  if (c->kind == GSI_SK_UDP) set_reading(c, 1);
  else pump(c);
}

static void poll_cb(uv_timer_t *t) {
  io_conn *c = t->data;
  if (c->closing || credit_ok(c) < 0) return;
  unpause(c); /* reading may pause again, now for the socket's own credit */
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  io_conn *c = s->data;
  if (n == 0) return;
  if (n < 0) {
    c->reading = 0;
    if (n == UV_EOF) {
      uv_read_stop(s);
      c->eof = 1;
      pump(c);
    } else {
      io_wait *w = c->waiters;
      if (w != NULL) {
        wait_unlink(w);
        reply_err(c->io, w->pid, w->ref, reason_of((int)n));
        wait_free(w);
      }
      conn_close(c, reason_of((int)n), c->active != GSI_ACT_FALSE);
    }
    return;
  }
  if (gsi_wire_bytes(&c->in, buf->base, (size_t)n) != 0) {
    conn_close(c, "enomem", 1);
    return;
  }
  pump(c);
}

/* ----------------------------------------------------------------- UDP */

static int w_addr(gsi_buf *b, const struct sockaddr *a) {
  char ip[64] = "";
  int port = 0;
  if (a->sa_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)a;
    uv_ip6_name(s6, ip, sizeof ip);
    port = ntohs(s6->sin6_port);
  } else if (a->sa_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)a;
    uv_ip4_name(s4, ip, sizeof ip);
    port = ntohs(s4->sin_port);
  }
  return gsi_wire_cstr(b, "ip") || gsi_wire_cstr(b, ip) || gsi_wire_cstr(b, "port") ||
         gsi_wire_int(b, port);
}

static void on_udp_recv(uv_udp_t *u, ssize_t n, const uv_buf_t *buf,
                        const struct sockaddr *addr, unsigned flags) {
  io_conn *c = u->data;
  io_t *io = c->io;
  (void)flags;
  if (n < 0 || addr == NULL || c->closing) return;
  if (w_event(&io->ob, "udp", c->id, 3) || w_addr(&io->ob, addr) ||
      gsi_wire_cstr(&io->ob, "data") || gsi_wire_str(&io->ob, buf->base, (size_t)n))
    return;
  if (!deliver_data(c)) {
    conn_close(c, "closed", 0);
    return;
  }
  {
    int r = credit_ok(c);
    /* UDP: while paused the kernel drops what does not fit */
    if (r <= 0 && pause_reading(c, r)) set_reading(c, 1);
  }
}

/* ---------------------------------------------------------------- writing */

typedef struct io_wreq {
  union { uv_write_t w; uv_udp_send_t u; } req;
  io_conn *c;
  gsi_msg *m; /* the command: its payload holds the data */
  size_t len;
  uint64_t pid, ref; /* a send waiting past the high mark, else ref 0 */
  unsigned char hdr[4];
} io_wreq;

static void stm_cb(uv_timer_t *t) {
  conn_close(t->data, "timeout", 1);
}

static void on_written(uv_write_t *r, int status) {
  io_wreq *q = r->data;
  io_conn *c = q->c;
  io_t *io = c->io;
  io_slot *s = slot_at(io, c->index);
  if (!c->closing) atomic_fetch_sub(&s->unsent, (int64_t)q->len);
  c->queued -= q->len;
  if (q->ref != 0) {
    if (status == 0) reply_true(io, q->pid, q->ref);
    else reply_err(io, q->pid, q->ref, c->closing ? c->why : reason_of(status));
    /* while closing, stm bounds the drain instead */
    if (--c->waiting_writes == 0 && !c->closing) uv_timer_stop(&c->stm);
  }
  gsi_msg_free(q->m);
  free(q);
  if (status < 0 && !c->closing) conn_close(c, reason_of(status), 1);
}

static void do_send(io_t *io, io_conn *c, gsi_msg *m, const gsi_io_args *a) {
  const char *data = (const char *)GSI_MSG_DATA(m) + sizeof *a;
  size_t len = m->len - sizeof *a;
  io_wreq *q;
  uv_buf_t bufs[2];
  int nb = 0, rc;
  if (c == NULL || c->kind != GSI_SK_TCP || c->closing) {
    if (m->ref) reply_err(io, m->from, m->ref, c != NULL && c->closing ? c->why : "closed");
    gsi_msg_free(m);
    return;
  }
  int framed = a->a == 0; /* else: the rest of a direct write, framed already */
  if (framed && c->packet >= 1 && c->packet <= 4 &&
      (c->packet == 4 ? len > 0xffffffffu : len >> (8 * c->packet) != 0)) {
    atomic_fetch_sub(&slot_at(io, c->index)->unsent, (int64_t)len);
    if (m->ref) reply_err(io, m->from, m->ref, "emsgsize");
    gsi_msg_free(m);
    return;
  }
  if ((q = calloc(1, sizeof *q)) == NULL) {
    if (m->ref) reply_err(io, m->from, m->ref, "enomem");
    gsi_msg_free(m);
    conn_close(c, "enomem", 1);
    return;
  }
  q->c = c;
  q->m = m;
  q->len = len;
  q->pid = m->from;
  q->ref = m->ref;
  if (framed && c->packet >= 1 && c->packet <= 4) {
    for (int i = 0; i < c->packet; i++)
      q->hdr[i] = (unsigned char)(len >> (8 * (c->packet - 1 - i)));
    bufs[nb++] = uv_buf_init((char *)q->hdr, (unsigned)c->packet);
  }
  bufs[nb++] = uv_buf_init((char *)data, (unsigned)len);
  q->req.w.data = q;
  if (q->ref != 0 && c->waiting_writes++ == 0 && c->send_timeout > 0)
    uv_timer_start(&c->stm, stm_cb, (uint64_t)c->send_timeout, 0);
  rc = uv_write(&q->req.w, &c->u.s, bufs, (unsigned)nb, on_written);
  if (rc == 0) c->queued += len;
  if (rc < 0) {
    if (q->ref && --c->waiting_writes == 0) uv_timer_stop(&c->stm);
    if (q->ref) reply_err(io, q->pid, q->ref, reason_of(rc));
    gsi_msg_free(m);
    free(q);
    conn_close(c, reason_of(rc), 1);
  }
}

static void on_udp_sent(uv_udp_send_t *r, int status) {
  io_wreq *q = r->data;
  (void)status;
  gsi_msg_free(q->m);
  free(q);
}

/* --------------------------------------------------------------- commands */

static int parse_addr(const char *ip, int port, struct sockaddr_storage *sa) {
  if (strchr(ip, ':') != NULL)
    return uv_ip6_addr(ip, port, (struct sockaddr_in6 *)sa);
  return uv_ip4_addr(ip, port, (struct sockaddr_in *)sa);
}

static const char *ip_or_default(const gsi_io_opts *o) {
  return o->ip[0] ? o->ip : "127.0.0.1";
}

static void on_connection(uv_stream_t *server, int status);

static void do_listen(io_t *io, gsi_msg *m, const gsi_io_args *a) {
  struct sockaddr_storage sa;
  io_conn *c = conn_new(io, GSI_SK_LISTEN);
  int rc;
  if (c == NULL) {
    reply_err(io, m->from, m->ref, "enomem");
    return;
  }
  if ((rc = parse_addr(ip_or_default(&a->opts), (int)a->a, &sa)) != 0 ||
      (rc = uv_tcp_init(&io->loop, &c->u.tcp)) != 0) {
    reply_err(io, m->from, m->ref, rc == UV_EINVAL ? "einval" : reason_of(rc));
    conn_drop(c);
    return;
  }
  c->u.h.data = c;
  apply_opts(c, &a->opts);
  opts_of(c, &c->inherit);
  if (slot_new(io, c, m->from) != 0) {
    reply_err(io, m->from, m->ref, "emfile");
    c->closing = 1;
    conn_final(c);
    return;
  }
  slot_publish(io, c, GSI_SK_LISTEN);
  if ((rc = uv_tcp_bind(&c->u.tcp, (struct sockaddr *)&sa, 0)) != 0 ||
      (rc = uv_listen(&c->u.s, a->opts.backlog > 0 ? a->opts.backlog : 128,
                      on_connection)) != 0) {
    reply_err(io, m->from, m->ref, reason_of(rc));
    conn_close(c, "closed", 0);
    return;
  }
  if (!reply_sock(io, m->from, m->ref, c->id)) conn_close(c, "closed", 0);
}

/* Hand connections libuv holds to processes waiting in accept. */
static void serve_accepts(io_conn *ls) {
  io_t *io = ls->io;
  while (ls->ready && ls->waiters != NULL && !ls->closing) {
    io_wait *w = ls->waiters;
    io_conn *c = conn_new(io, GSI_SK_TCP);
    int rc;
    if (c == NULL) return;
    uv_tcp_init(&io->loop, &c->u.tcp);
    c->u.h.data = c;
    rc = uv_accept(&ls->u.s, &c->u.s);
    ls->ready = 0;
    if (rc != 0 || slot_new(io, c, w->pid) != 0) {
      c->closing = 1;
      conn_final(c);
      continue;
    }
    apply_opts(c, &ls->inherit);
    c->connected = 1;
    uv_tcp_nodelay(&c->u.tcp, c->nodelay);
    slot_publish(io, c, GSI_SK_TCP);
    wait_unlink(w);
    if (!reply_sock(io, w->pid, w->ref, c->id)) {
      conn_close(c, "closed", 0); /* the waiter died meanwhile */
    } else {
      pump(c);
    }
    wait_free(w);
  }
}

static void on_connection(uv_stream_t *server, int status) {
  io_conn *ls = server->data;
  if (status < 0) return;
  ls->ready = 1;
  serve_accepts(ls);
}

static void do_accept(io_t *io, io_conn *ls, gsi_msg *m, const gsi_io_args *a) {
  io_wait *w, **pp;
  if (ls == NULL || ls->kind != GSI_SK_LISTEN || ls->closing) {
    reply_err(io, m->from, m->ref, "closed");
    return;
  }
  if ((w = wait_new(ls, m->from, m->ref, a->b)) == NULL) {
    reply_err(io, m->from, m->ref, "enomem");
    return;
  }
  for (pp = &ls->waiters; *pp; pp = &(*pp)->next) {
  }
  *pp = w;
  serve_accepts(ls);
}

static void on_connect(uv_connect_t *r, int status) {
  io_conn *c = r->data;
  io_t *io = c->io;
  io_wait *w = c->conn_wait;
  free(r);
  if (c->closing) return; /* timed out or the runtime stops */
  c->conn_wait = NULL;
  if (w) w->c = NULL;
  if (status < 0) {
    if (w) reply_err(io, w->pid, w->ref, reason_of(status));
    conn_close(c, reason_of(status), 0);
  } else {
    c->connected = 1;
    uv_tcp_nodelay(&c->u.tcp, c->nodelay);
    slot_publish(io, c, GSI_SK_TCP);
    if (w == NULL || !reply_sock(io, w->pid, w->ref, c->id)) conn_close(c, "closed", 0);
    else pump(c);
  }
  if (w) wait_free(w);
}

static void do_connect(io_t *io, gsi_msg *m, const gsi_io_args *a) {
  struct sockaddr_storage sa;
  io_conn *c;
  uv_connect_t *r;
  int rc;
  if (parse_addr(a->opts.ip, (int)a->a, &sa) != 0) {
    reply_err(io, m->from, m->ref, "einval");
    return;
  }
  if ((c = conn_new(io, GSI_SK_TCP)) == NULL || (r = malloc(sizeof *r)) == NULL) {
    if (c) conn_drop(c);
    reply_err(io, m->from, m->ref, "enomem");
    return;
  }
  uv_tcp_init(&io->loop, &c->u.tcp);
  c->u.h.data = c;
  apply_opts(c, &a->opts);
  if (slot_new(io, c, m->from) != 0) {
    free(r);
    reply_err(io, m->from, m->ref, "emfile");
    c->closing = 1;
    conn_final(c);
    return;
  }
  c->conn_wait = wait_new(c, m->from, m->ref, a->b);
  r->data = c;
  rc = uv_tcp_connect(r, &c->u.tcp, (struct sockaddr *)&sa, on_connect);
  if (rc != 0) {
    free(r);
    reply_err(io, m->from, m->ref, reason_of(rc));
    if (c->conn_wait) {
      c->conn_wait->c = NULL;
      wait_free(c->conn_wait);
      c->conn_wait = NULL;
    }
    conn_close(c, "closed", 0);
  }
}

static void do_recv(io_t *io, io_conn *c, gsi_msg *m, const gsi_io_args *a) {
  io_wait *w;
  if (c == NULL || c->kind != GSI_SK_TCP || c->closing) {
    reply_err(io, m->from, m->ref, "closed");
    return;
  }
  if (owner_of(io, c) != m->from) {
    reply_err(io, m->from, m->ref, "not_owner");
    return;
  }
  if (c->active != GSI_ACT_FALSE) {
    reply_err(io, m->from, m->ref, "einval");
    return;
  }
  if (c->waiters != NULL) {
    reply_err(io, m->from, m->ref, "ealready");
    return;
  }
  if (c->packet == GSI_PK_RAW && a->a > 0 && (size_t)a->a > max_packet(c)) {
    reply_err(io, m->from, m->ref, "emsgsize");
    return;
  }
  if ((w = wait_new(c, m->from, m->ref, a->b)) == NULL) {
    reply_err(io, m->from, m->ref, "enomem");
    return;
  }
  w->n = c->packet == GSI_PK_RAW ? a->a : 0;
  c->waiters = w;
  pump(c);
}

static void do_name(io_t *io, io_conn *c, gsi_msg *m, const gsi_io_args *a) {
  struct sockaddr_storage sa;
  int len = sizeof sa, rc;
  if (c == NULL || c->closing) {
    reply_err(io, m->from, m->ref, "closed");
    return;
  }
  if (c->kind == GSI_SK_UDP) {
    rc = a->a ? UV_ENOTCONN : uv_udp_getsockname(&c->u.udp, (struct sockaddr *)&sa, &len);
  } else {
    rc = a->a ? uv_tcp_getpeername(&c->u.tcp, (struct sockaddr *)&sa, &len)
              : uv_tcp_getsockname(&c->u.tcp, (struct sockaddr *)&sa, &len);
  }
  if (rc != 0) {
    reply_err(io, m->from, m->ref, reason_of(rc));
    return;
  }
  io->ob.len = 0;
  if (gsi_wire_byte(&io->ob, GSI_WIRE_MAGIC) || gsi_wire_tagvar(&io->ob, GSI_T_TABLE, 0) ||
      gsi_wire_tagvar(&io->ob, -1, 2) || w_addr(&io->ob, (struct sockaddr *)&sa))
    return;
  reply_ob(io, m->from, m->ref);
}

static void do_udp_open(io_t *io, gsi_msg *m, const gsi_io_args *a) {
  struct sockaddr_storage sa;
  io_conn *c = conn_new(io, GSI_SK_UDP);
  int rc;
  if (c == NULL) {
    reply_err(io, m->from, m->ref, "enomem");
    return;
  }
  if ((rc = parse_addr(ip_or_default(&a->opts), (int)a->a, &sa)) != 0 ||
      (rc = uv_udp_init(&io->loop, &c->u.udp)) != 0) {
    reply_err(io, m->from, m->ref, reason_of(rc));
    conn_drop(c);
    return;
  }
  c->u.h.data = c;
  if (slot_new(io, c, m->from) != 0) {
    reply_err(io, m->from, m->ref, "emfile");
    c->closing = 1;
    conn_final(c);
    return;
  }
  slot_publish(io, c, GSI_SK_UDP);
  if ((rc = uv_udp_bind(&c->u.udp, (struct sockaddr *)&sa, 0)) != 0) {
    reply_err(io, m->from, m->ref, reason_of(rc));
    conn_close(c, "closed", 0);
    return;
  }
  set_reading(c, 1);
  if (!reply_sock(io, m->from, m->ref, c->id)) conn_close(c, "closed", 0);
}

static void do_udp_send(io_t *io, io_conn *c, gsi_msg *m, const gsi_io_args *a) {
  struct sockaddr_storage sa;
  io_wreq *q;
  uv_buf_t buf;
  (void)io;
  if (c == NULL || c->kind != GSI_SK_UDP || c->closing ||
      parse_addr(a->opts.ip, (int)a->a, &sa) != 0 || (q = calloc(1, sizeof *q)) == NULL) {
    gsi_msg_free(m);
    return;
  }
  q->c = c;
  q->m = m;
  q->req.u.data = q;
  buf = uv_buf_init((char *)GSI_MSG_DATA(m) + sizeof *a, (unsigned)(m->len - sizeof *a));
  if (uv_udp_send(&q->req.u, &c->u.udp, &buf, 1, (struct sockaddr *)&sa, on_udp_sent) != 0) {
    gsi_msg_free(m);
    free(q);
  }
}

static void on_shutdown(uv_shutdown_t *r, int status) {
  (void)status;
  free(r);
}

static void stop_all(io_t *io) {
  io->stopping = 1;
  for (uint32_t i = 0; i < io->used; i++) {
    io_slot *s = slot_at(io, i);
    if (s->c != NULL) conn_close(s->c, "closed", 0);
  }
  uv_close((uv_handle_t *)&io->wake, NULL);
}

static void run_command(io_t *io, gsi_msg *m) {
  gsi_io_args a;
  io_slot *s = NULL;
  io_conn *c = NULL;
  if (m->kind != GSI_IO_DOWN && m->kind != GSI_IO_STOP) {
    memcpy(&a, GSI_MSG_DATA(m), sizeof a);
    if ((s = slot_of(io, a.sock)) != NULL) c = s->c;
  }
  if (io->stopping && m->kind != GSI_IO_STOP) {
    if (m->ref) reply_err(io, m->from, m->ref, "closed");
    gsi_msg_free(m);
    return;
  }
  switch (m->kind) {
  case GSI_IO_LISTEN: do_listen(io, m, &a); break;
  case GSI_IO_CONNECT: do_connect(io, m, &a); break;
  case GSI_IO_ACCEPT: do_accept(io, c, m, &a); break;
  case GSI_IO_RECV: do_recv(io, c, m, &a); break;
  case GSI_IO_SEND: do_send(io, c, m, &a); return; /* m kept until written */
  case GSI_IO_UDP_SEND: do_udp_send(io, c, m, &a); return;
  case GSI_IO_NAME: do_name(io, c, m, &a); break;
  case GSI_IO_UDP_OPEN: do_udp_open(io, m, &a); break;
  case GSI_IO_CLOSE:
    if (c != NULL) conn_close(c, "closed", 0);
    if (m->ref) reply_true(io, m->from, m->ref);
    break;
  case GSI_IO_SHUTDOWN:
    if (c != NULL && c->kind == GSI_SK_TCP && !c->closing) {
      uv_shutdown_t *r = malloc(sizeof *r);
      if (r != NULL && uv_shutdown(r, &c->u.s, on_shutdown) != 0) free(r);
    }
    break;
  case GSI_IO_SETOPTS:
    if (c != NULL && !c->closing) {
      apply_opts(c, &a.opts);
      if (c->kind == GSI_SK_LISTEN) opts_of(c, &c->inherit);
      else if (c->kind == GSI_SK_TCP && c->connected) pump(c);
    }
    break;
  case GSI_IO_DOWN:
    /* close what the dead process owned; forget its waits elsewhere (an
    ** accept on another's listener must not take a connection for it) */
    for (uint32_t i = 0; i < io->used; i++) {
      io_slot *x = slot_at(io, i);
      if (x->c == NULL) continue;
      if (atomic_load_explicit(&x->owner, memory_order_relaxed) == m->from) {
        conn_close(x->c, "closed", 0);
        continue;
      }
      for (io_wait **pp = &x->c->waiters; *pp != NULL;) {
        io_wait *w = *pp;
        if (w->pid == m->from) {
          *pp = w->next;
          w->c = NULL;
          wait_free(w);
        } else {
          pp = &w->next;
        }
      }
    }
    break;
  case GSI_IO_STOP: stop_all(io); break;
  case GSI_IO_RESUME:
    if (c != NULL) unpause(c);
    break;
  }
  gsi_msg_free(m);
}

static void on_wake(uv_async_t *h) {
  io_t *io = h->data;
  gsi_msg *m;
  /* a push in progress makes pop return NULL: its producer wakes us again */
  while ((m = gsi_mpsc_pop(&io->q)) != NULL) run_command(io, m);
}

static void *loop_main(void *arg) {
  io_t *io = arg;
  sigset_t set;
  /* A write to a socket the peer has closed raises SIGPIPE, whose default
  ** action ends the program. Blocked in this thread (where libuv writes),
  ** the write fails with EPIPE instead; the program's own disposition is
  ** left alone. Workers' direct writes use MSG_NOSIGNAL. */
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  uv_run(&io->loop, UV_RUN_DEFAULT);
  return NULL;
}

/* ----------------------------------------------------------------- hooks */

/* Push a command and wake the loop; -1 (m freed) once io_stop began. The
** Dekker pair (wakers up, then stopped read; io_stop: stopped set, then
** wakers read; all seq_cst) means io_stop sees every push that saw
** stopped == 0, and waits for it before the loop closes its async handle. */
/* Wake the loop after a push. libuv 1.44's uv_async_send first reads the
** handle's pending flag with a plain load and returns if it is set; on
** x86 that load may pass the push's last store (the link of the node), so
** the loop could clear the flag, run on_wake, find the node not linked
** yet (gsi_mpsc_pop's NULL), and nobody would wake it again: a command
** lost until the next one (seen as a recv that never returned). A full
** fence orders the link before the flag's read: either we see the flag
** cleared and signal, or the loop's clearing (a full barrier) comes after
** our link and its pop sees the node. */
static void kick(io_t *io) {
  atomic_thread_fence(memory_order_seq_cst);
  uv_async_send(&io->wake);
}

static int io_wake(io_t *io, gsi_msg *m) {
  int ok;
  atomic_fetch_add(&io->wakers, 1);
  ok = !atomic_load(&io->stopped);
  if (ok) {
    gsi_mpsc_push(&io->q, m);
    kick(io);
  }
  atomic_fetch_sub(&io->wakers, 1);
  if (!ok) gsi_msg_free(m);
  return ok ? 0 : -1;
}

static void io_unref(io_t *io) {
  if (atomic_fetch_sub(&io->refs, 1) != 1) return;
  for (uint32_t i = 0; i < IO_NCHUNKS; i++) free(atomic_load(&io->chunks[i]));
  gsi_buf_free(&io->ob);
  free(io);
}

/* gsi_msg_credit_hook: socket data was taken (freed), on any thread. */
static void credit_back(gsi_msg *m) {
  io_t *io = (io_t *)(uintptr_t)m->from; /* kept alive by m's reference */
  uint64_t id = m->ref, gen = (id >> 32) & 0x3fffffffu, w;
  io_slot *s = slot_at(io, (uint32_t)id);
  int one = 1, took = 0;
  if (s != NULL) {
    w = atomic_load(&s->credit);
    while ((w >> 32) == gen && (uint32_t)w > 0) {
      if (atomic_compare_exchange_weak(&s->credit, &w, w - 1)) {
        took = 1;
        break;
      }
    }
    if (took && (uint32_t)(w - 1) <= IO_RESUME && atomic_load(&s->want_resume) &&
        atomic_compare_exchange_strong(&s->want_resume, &one, 0)) {
      gsi_io_args a;
      gsi_msg *r;
      memset(&a, 0, sizeof a);
      a.sock = id;
      if ((r = gsi_msg_new(GSI_IO_RESUME, 0, 0, &a, sizeof a)) != NULL) io_wake(io, r);
    }
  }
  io_unref(io);
}


static void io_down(gsi_rt *rt, uint64_t pid) {
  io_t *io = atomic_load_explicit(&rt->io, memory_order_acquire);
  gsi_msg *m;
  if (io == NULL || atomic_load(&io->nsocks) == 0) return;
  if ((m = gsi_msg_new(GSI_IO_DOWN, pid, 0, NULL, 0)) == NULL) return;
  io_wake(io, m);
}

static void io_stop(gsi_rt *rt) {
  io_t *io = atomic_load_explicit(&rt->io, memory_order_acquire);
  gsi_msg *m;
  if (io == NULL) return;
  atomic_store(&rt->io_down, NULL);
  /* no push after this (see io_wake) but the STOP below */
  atomic_store(&io->stopped, 1);
  while (atomic_load(&io->wakers) != 0) sched_yield();
  if ((m = gsi_msg_new(GSI_IO_STOP, 0, 0, NULL, 0)) != NULL) {
    gsi_mpsc_push(&io->q, m);
    kick(io);
  } else {
    /* no memory for the command: stop from here, the loop sees it */
    uv_stop(&io->loop);
    kick(io);
  }
  pthread_join(io->th, NULL);
  while ((m = gsi_mpsc_pop(&io->q)) != NULL) gsi_msg_free(m);
  uv_loop_close(&io->loop);
  atomic_store(&rt->io, NULL);
  io_unref(io); /* the slots stay until the last message holding credit goes */
}

static io_t *io_get(gsi_rt *rt) {
  io_t *io = atomic_load_explicit(&rt->io, memory_order_acquire);
  if (io != NULL) return io;
  pthread_mutex_lock(&io_mu);
  if ((io = atomic_load(&rt->io)) == NULL && !atomic_load(&rt->closed) &&
      (io = calloc(1, sizeof *io)) != NULL) {
    io->rt = rt;
    atomic_init(&io->refs, 1);
    gsi_mpsc_init(&io->q);
    gsi_buf_init(&io->ob);
    if (uv_loop_init(&io->loop) != 0) {
      free(io);
      io = NULL;
    } else if (uv_async_init(&io->loop, &io->wake, on_wake) != 0 ||
               pthread_create(&io->th, NULL, loop_main, io) != 0) {
      uv_loop_close(&io->loop);
      free(io);
      io = NULL;
    } else {
      io->wake.data = io;
      atomic_store(&gsi_msg_credit_hook, credit_back);
      atomic_store(&rt->io_stop, io_stop);
      atomic_store(&rt->io_down, io_down);
      atomic_store_explicit(&rt->io, io, memory_order_release);
    }
  }
  pthread_mutex_unlock(&io_mu);
  return io;
}

/* ------------------------------------------------------------- interface */

int gsi_io_command(gsi_rt *rt, gsi_msg *m) {
  io_t *io = io_get(rt);
  if (io == NULL) {
    gsi_msg_free(m);
    return -1;
  }
  return io_wake(io, m);
}

int gsi_io_peek(gsi_rt *rt, uint64_t sock, uint64_t *owner, int *kind) {
  io_slot *s = slot_of(atomic_load_explicit(&rt->io, memory_order_acquire), sock);
  if (s == NULL) return -1;
  if (owner) *owner = atomic_load_explicit(&s->owner, memory_order_relaxed);
  if (kind) *kind = atomic_load_explicit(&s->kind, memory_order_relaxed);
  return 0;
}

int gsi_io_write(gsi_rt *rt, uint64_t sock, uint64_t from, uint64_t ref,
                 const char *data, size_t len, gsi_io_wr *w) {
  io_t *io = atomic_load_explicit(&rt->io, memory_order_acquire);
  io_slot *s = slot_of(io, sock);
  int pk, fd;
  size_t n = 0, total, hlen = 0, queued, dskip;
  unsigned char hdr[4];
  gsi_io_args a;
  gsi_buf *b;
  gsi_msg *m;
  if (s == NULL) return GSI_IO_W_CLOSED;
  if (atomic_load_explicit(&s->kind, memory_order_relaxed) != GSI_SK_TCP)
    return GSI_IO_W_NOTCONN;
  pk = atomic_load_explicit(&s->pk, memory_order_relaxed);
  if (pk >= 1 && pk <= 4) {
    if (pk < 4 ? (len >> (8 * pk)) != 0 : len > 0xffffffffu) return GSI_IO_W_EMSGSIZE;
    hlen = (size_t)pk;
    for (size_t i = 0; i < hlen; i++) hdr[i] = (unsigned char)(len >> (8 * (hlen - 1 - i)));
  }
  total = hlen + len;
  w->waiting = 0;
  wlock(s);
  /* again under the lock: the socket may have ended meanwhile */
  if (atomic_load_explicit(&s->kind, memory_order_relaxed) != GSI_SK_TCP ||
      (atomic_load_explicit(&s->gen, memory_order_relaxed) & 0x3fffffffu) !=
          ((sock >> 32) & 0x3fffffffu)) {
    wunlock(s);
    return GSI_IO_W_CLOSED;
  }
  fd = atomic_load_explicit(&s->fd, memory_order_relaxed);
  if (atomic_load_explicit(&s->unsent, memory_order_relaxed) == 0 && fd >= 0) {
    while (n < total) {
      struct iovec iov[2];
      struct msghdr mh;
      size_t k = 0, d = n > hlen ? n - hlen : 0;
      ssize_t r;
      if (n < hlen) iov[k++] = (struct iovec){hdr + n, hlen - n};
      iov[k++] = (struct iovec){(char *)data + d, len - d};
      memset(&mh, 0, sizeof mh);
      mh.msg_iov = iov;
      mh.msg_iovlen = k;
      r = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break; /* full, or an error that the loop meets and reports */
      n += (size_t)r;
    }
    if (n == total) {
      wunlock(s);
      return GSI_IO_W_DONE;
    }
  }
  /* The loop writes the rest: the whole packet, which it frames (args.a =
  ** 0), or what is left of a direct write, framed already (args.a = 1).
  ** Pushed under the lock, so that no other send comes in between. */
  memset(&a, 0, sizeof a);
  a.sock = sock;
  a.a = n > 0;
  dskip = n > hlen ? n - hlen : 0;
  queued = n == 0 ? len : total - n;
  b = &gsi_scratch_get()->buf;
  b->len = 0;
  if (gsi_buf_reserve(b, sizeof a + hlen + len) != 0) {
    wunlock(s);
    return GSI_IO_W_NOMEM;
  }
  memcpy(b->data, &a, sizeof a);
  b->len = sizeof a;
  if (n > 0 && n < hlen) {
    memcpy(b->data + b->len, hdr + n, hlen - n);
    b->len += hlen - n;
  }
  memcpy(b->data + b->len, data + dskip, len - dskip);
  b->len += len - dskip;
  w->unsent = atomic_load_explicit(&s->unsent, memory_order_relaxed) + (int64_t)queued;
  w->waiting = ref != 0 && w->unsent > atomic_load_explicit(&s->hwm, memory_order_relaxed);
  m = gsi_msg_new(GSI_IO_SEND, from, w->waiting ? ref : 0, b->data, b->len);
  if (b->cap > (1u << 20)) gsi_buf_free(b);
  if (m == NULL) {
    wunlock(s);
    w->waiting = 0;
    return GSI_IO_W_NOMEM;
  }
  atomic_fetch_add(&s->unsent, (int64_t)queued);
  if (io_wake(io, m) != 0) { /* the runtime is stopping */
    atomic_fetch_sub(&s->unsent, (int64_t)queued);
    wunlock(s);
    w->waiting = 0;
    return GSI_IO_W_CLOSED;
  }
  wunlock(s);
  return GSI_IO_W_QUEUE;
}

void gsi_io_set_hwm(gsi_rt *rt, uint64_t sock, int64_t hwm) {
  io_slot *s = slot_of(atomic_load_explicit(&rt->io, memory_order_acquire), sock);
  if (s != NULL) atomic_store_explicit(&s->hwm, hwm, memory_order_relaxed);
}

void gsi_io_set_packet(gsi_rt *rt, uint64_t sock, int packet) {
  io_slot *s = slot_of(atomic_load_explicit(&rt->io, memory_order_acquire), sock);
  if (s != NULL) atomic_store_explicit(&s->pk, packet, memory_order_relaxed);
}

int gsi_io_set_owner(gsi_rt *rt, uint64_t sock, uint64_t from, uint64_t to) {
  io_slot *s = slot_of(atomic_load_explicit(&rt->io, memory_order_acquire), sock);
  uint64_t cur = from;
  if (s == NULL) return -1;
  if (!atomic_compare_exchange_strong(&s->owner, &cur, to)) return -2;
  return 0;
}

const char *gsi_io_closed_reason(gsi_rt *rt, uint64_t sock) {
  io_t *io = atomic_load_explicit(&rt->io, memory_order_acquire);
  io_slot *s;
  const char *why;
  if (io == NULL || !GSI_IO_IS_SOCK(sock) || (s = slot_at(io, (uint32_t)sock)) == NULL)
    return "closed";
  /* only if no later socket took the slot since */
  why = atomic_load_explicit(&s->why, memory_order_relaxed);
  if ((atomic_load_explicit(&s->gen, memory_order_relaxed) & 0x3fffffffu) !=
      (((sock >> 32) + 1) & 0x3fffffffu))
    return "closed";
  return why != NULL ? why : "closed";
}
