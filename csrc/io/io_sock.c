/*
** io_sock.c - the I/O layer's socket table and what every kind of socket
** shares (io_int.h says who does what): slots (a handle's slot and
** generation, what other threads may read), the answers and events the
** loop delivers as codec bytes, waits with their time-outs, opening and
** closing a connection, its options, inbound credit (pausing and resuming
** reading), addresses. Loop thread only, but for what io_int.h's slot
** accessors and the credit fields say.
*/
#include <stdlib.h>
#include <string.h>

#include "io/io_int.h"

/* ---------------------------------------------------------------- slots */

static uint64_t make_id(uint32_t index, uint32_t gen) {
  return GSI_IO_BIT | ((uint64_t)(gen & 0x3fffffffu) << 32) | index;
}

/* loop only: a new slot for c (kind still 0: not visible yet) */
int gsi_io_slot_new(io_t *io, io_conn *c, uint64_t owner) {
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

void gsi_io_slot_publish(io_t *io, io_conn *c, int kind) {
  io_slot *s = slot_at(io, c->index);
  uv_os_fd_t fd = -1;
  if (s == NULL) return; /* cannot be: c->index came from gsi_io_slot_new */
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

/* ------------------------------------------------------ building messages */

/* Inbound messages are written in the codec's wire format by wire.h. */

/* { tag, sock = id [, k = v ...] }: nh more pairs follow */
int gsi_io_w_event(gsi_buf *b, const char *tag, uint64_t id, int nh) {
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
  return gsi_deliver(io->rt, pid, m, 0) == GSI_OK;
}

/* The answer to a waiting caller: a value (in io->ob) or a reason. */
static int reply_ob(io_t *io, uint64_t pid, uint64_t ref) {
  return deliver_ob(io, pid, GSI_M_REPLY, ref, 0);
}

int gsi_io_reply_err(io_t *io, uint64_t pid, uint64_t ref, const char *why) {
  io->ob.len = 0;
  if (gsi_wire_byte(&io->ob, GSI_WIRE_MAGIC) || gsi_wire_cstr(&io->ob, why)) return 0;
  return deliver_ob(io, pid, GSI_M_DOWN, ref, GSI_MF_REFUSED);
}

int gsi_io_reply_sock(io_t *io, uint64_t pid, uint64_t ref, uint64_t id) {
  io->ob.len = 0;
  if (gsi_wire_byte(&io->ob, GSI_WIRE_MAGIC) || gsi_wire_tagvar(&io->ob, GSI_T_IDREF, id)) return 0;
  return reply_ob(io, pid, ref);
}

int gsi_io_reply_true(io_t *io, uint64_t pid, uint64_t ref) {
  io->ob.len = 0;
  if (gsi_wire_byte(&io->ob, GSI_WIRE_MAGIC) || gsi_wire_byte(&io->ob, GSI_T_TRUE)) return 0;
  return reply_ob(io, pid, ref);
}

int gsi_io_reply_data(io_t *io, uint64_t pid, uint64_t ref, const void *p, size_t n) {
  io->ob.len = 0;
  if (gsi_wire_byte(&io->ob, GSI_WIRE_MAGIC) || gsi_wire_str(&io->ob, p, n)) return 0;
  return reply_ob(io, pid, ref);
}

/* A libuv error as a POSIX-style reason: "econnrefused". */
const char *gsi_io_reason(int err) {
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

void gsi_io_wait_free(io_wait *w) {
  if (w->timed) {
    uv_timer_stop(&w->tm);
    w->tm.data = w;
    uv_close((uv_handle_t *)&w->tm, wait_closed_cb);
  } else {
    free(w);
  }
}

void gsi_io_wait_unlink(io_wait *w) {
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

static void wait_timeout_cb(uv_timer_t *t) {
  io_wait *w = t->data;
  io_conn *c = w->c;
  int connecting = c != NULL && c->conn_wait == w;
  gsi_io_wait_unlink(w);
  gsi_io_reply_err(w->io, w->pid, w->ref, "timeout");
  gsi_io_wait_free(w);
  if (connecting) gsi_io_conn_close(c, "timeout", 0);
}

io_wait *gsi_io_wait_new(io_conn *c, uint64_t pid, uint64_t ref, int64_t ms) {
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

io_conn *gsi_io_conn_new(io_t *io, int kind) {
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
void gsi_io_conn_drop(io_conn *c) {
  c->closing = 1;
  uv_close((uv_handle_t *)&c->poll, conn_handle_closed);
  uv_close((uv_handle_t *)&c->stm, conn_handle_closed);
}

void gsi_io_event(io_t *io, io_conn *c, const char *tag, const char *reason) {
  uint64_t owner = owner_of(io, c);
  if (gsi_io_w_event(&io->ob, tag, c->id, reason ? 1 : 0)) return;
  if (reason && (gsi_wire_cstr(&io->ob, "reason") || gsi_wire_cstr(&io->ob, reason))) return;
  deliver_ob(io, owner, GSI_M_USER, 0, 0);
}

/* Close c's handles; it is freed once the last one is closed. */
void gsi_io_conn_final(io_conn *c) {
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
  gsi_io_conn_final(c);
}

static void drain_timeout_cb(uv_timer_t *t) { gsi_io_conn_final(t->data); }

/* Close c: its handle goes stale at once, waiters get "closed" (or why),
** and with notify the owner gets tcp_error (unless why is "closed") and
** tcp_closed. */
void gsi_io_conn_close(io_conn *c, const char *why, int notify) {
  io_t *io = c->io;
  if (c->closing) return;
  c->closing = 1;
  c->why = why;
  if (notify && c->kind == GSI_SK_TCP) {
    if (strcmp(why, "closed") != 0) gsi_io_event(io, c, "tcp_error", why);
    gsi_io_event(io, c, "tcp_closed", NULL);
  }
  slot_end(io, c, why);
  while (c->waiters != NULL) {
    io_wait *w = c->waiters;
    c->waiters = w->next;
    w->c = NULL;
    gsi_io_reply_err(io, w->pid, w->ref, strcmp(why, "timeout") == 0 ? "closed" : why);
    gsi_io_wait_free(w);
  }
  if (c->conn_wait != NULL) {
    io_wait *w = c->conn_wait;
    c->conn_wait = NULL;
    w->c = NULL;
    if (strcmp(why, "timeout") != 0) gsi_io_reply_err(io, w->pid, w->ref, why);
    gsi_io_wait_free(w);
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
  gsi_io_conn_final(c);
}

void gsi_io_apply_opts(io_conn *c, const gsi_io_opts *o) {
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

void gsi_io_opts_of(const io_conn *c, gsi_io_opts *o) {
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

/* ----------------------------------------------------------- credit */

/* May an active=true socket deliver one more message? 1: yes; 0: not
** before some of its messages are taken (wait for a resume); -1: not
** before its owner's bounded mailbox has room (look again every ms: other
** messages fill it, whose frees tell us nothing). */
int gsi_io_credit_ok(io_conn *c) {
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

void gsi_io_set_reading(io_conn *c, int on) {
  if (c->closing || c->reading == on) return;
  if (c->kind == GSI_SK_UDP) {
    if (on) uv_udp_recv_start(&c->u.udp, on_alloc, gsi_io_on_udp_recv);
    else uv_udp_recv_stop(&c->u.udp);
  } else if (c->kind == GSI_SK_TCP) {
    if (c->eof) return;
    if (on) uv_read_start(&c->u.s, on_alloc, gsi_io_on_read);
    else uv_read_stop(&c->u.s);
  }
  c->reading = on;
}

static void poll_cb(uv_timer_t *t);

/* Stop reading until credit comes back (how: gsi_io_credit_ok's r).
** Returns 1 when it came back meanwhile: the caller carries on. */
int gsi_io_pause(io_conn *c, int r) {
  io_slot *s = slot_at(c->io, c->index);
  int one = 1;
  c->paused = 1;
  gsi_io_set_reading(c, 0);
  if (r < 0) {
    uv_timer_start(&c->poll, poll_cb, 1, 1);
    return 0;
  }
  atomic_store(&s->want_resume, 1);
  /* frees between gsi_io_credit_ok and the store above did not see
  ** want_resume */
  if ((uint32_t)atomic_load(&s->credit) <= IO_RESUME &&
      atomic_compare_exchange_strong(&s->want_resume, &one, 0)) {
    c->paused = 0;
    return 1;
  }
  return 0;
}

/* Deliver the message in io->ob to c's owner as socket data: it holds a
** unit of c's credit and a reference on io until it is freed. */
int gsi_io_deliver_data(io_conn *c) {
  io_t *io = c->io;
  io_slot *s = slot_at(io, c->index);
  gsi_msg *m = gsi_msg_new(GSI_M_USER, (uint64_t)(uintptr_t)io, c->id, io->ob.data, io->ob.len);
  if (io->ob.cap > IO_RBUF * 4) gsi_buf_free(&io->ob);
  if (m == NULL) return 0;
  m->flags = GSI_MF_CREDIT;
  /* counted before it is visible: its free may come at once */
  atomic_fetch_add(&io->refs, 1);
  atomic_fetch_add(&s->credit, 1);
  return gsi_deliver(io->rt, owner_of(io, c), m, 0) == GSI_OK;
}

/* Credit is back (a resume, or the poll saw room): read again. */
void gsi_io_unpause(io_conn *c) {
  if (c->closing || !c->paused) return;
  uv_timer_stop(&c->poll);
  c->paused = 0;
  if (c->kind == GSI_SK_UDP) gsi_io_set_reading(c, 1);
  else gsi_io_pump(c);
}

static void poll_cb(uv_timer_t *t) {
  io_conn *c = t->data;
  if (c->closing || gsi_io_credit_ok(c) < 0) return;
  gsi_io_unpause(c); /* reading may pause again, for the socket's own credit */
}

/* ---------------------------------------------------------- addresses */

/* ip = "a.b.c.d", port = n (two pairs of a table) */
int gsi_io_w_addr(gsi_buf *b, const struct sockaddr *a) {
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

int gsi_io_parse_addr(const char *ip, int port, struct sockaddr_storage *sa) {
  if (strchr(ip, ':') != NULL)
    return uv_ip6_addr(ip, port, (struct sockaddr_in6 *)sa);
  return uv_ip4_addr(ip, port, (struct sockaddr_in *)sa);
}

const char *gsi_io_ip_or_default(const gsi_io_opts *o) {
  return o->ip[0] ? o->ip : "127.0.0.1";
}

/* The answer to io_name: { ip =, port = } of the socket or its peer. */
void gsi_io_do_name(io_t *io, io_conn *c, gsi_msg *m, const gsi_io_args *a) {
  struct sockaddr_storage sa;
  int len = sizeof sa, rc;
  if (c == NULL || c->closing) {
    gsi_io_reply_err(io, m->from, m->ref, "closed");
    return;
  }
  if (c->kind == GSI_SK_UDP) {
    rc = a->a ? UV_ENOTCONN : uv_udp_getsockname(&c->u.udp, (struct sockaddr *)&sa, &len);
  } else {
    rc = a->a ? uv_tcp_getpeername(&c->u.tcp, (struct sockaddr *)&sa, &len)
              : uv_tcp_getsockname(&c->u.tcp, (struct sockaddr *)&sa, &len);
  }
  if (rc != 0) {
    gsi_io_reply_err(io, m->from, m->ref, gsi_io_reason(rc));
    return;
  }
  io->ob.len = 0;
  if (gsi_wire_byte(&io->ob, GSI_WIRE_MAGIC) || gsi_wire_tagvar(&io->ob, GSI_T_TABLE, 0) ||
      gsi_wire_tagvar(&io->ob, -1, 2) || gsi_io_w_addr(&io->ob, (struct sockaddr *)&sa))
    return;
  reply_ob(io, m->from, m->ref);
}

