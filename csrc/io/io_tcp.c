/*
** io_tcp.c - TCP in the I/O layer (io_int.h says who does what): listen,
** accept and connect; reading, framed by the socket's packet mode (raw,
** line, 1/2/4-byte length prefixes) within its size limit, delivered as
** messages (active) or to a waiting recv (passive); writing, by the loop
** (uv_write, a send waiting past the high-water mark, send_timeout) and by
** the sender itself (gsi_io_write: straight into the descriptor while
** nothing is unsent, under the slot's wlock).
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "io/io_int.h"

/* ------------------------------------------------- reading and framing */

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

/* Deliver what c->in holds to whoever wants it, then read or not. */
void gsi_io_pump(io_conn *c) {
  io_t *io = c->io;
  for (;;) {
    size_t off, len, skip;
    io_wait *w = c->waiters;
    int r;
    if (c->closing) return;
    if (w == NULL && c->active == GSI_ACT_FALSE) break;
    if (w == NULL && c->active == GSI_ACT_TRUE && (r = gsi_io_credit_ok(c)) <= 0) {
      if (gsi_io_pause(c, r)) continue;
      return;
    }
    r = next_frame(c, w != NULL ? (size_t)w->n : 0, &off, &len, &skip);
    if (r < 0) {
      if (w != NULL) {
        gsi_io_wait_unlink(w);
        gsi_io_reply_err(io, w->pid, w->ref, "emsgsize");
        gsi_io_wait_free(w);
      }
      gsi_io_conn_close(c, "emsgsize", w == NULL);
      return;
    }
    if (r == 0) break;
    if (w != NULL) {
      gsi_io_wait_unlink(w);
      gsi_io_reply_data(io, w->pid, w->ref, c->in.data + c->in_off + off, len);
      gsi_io_wait_free(w);
      consume_in(c, skip);
      continue;
    }
    if (gsi_io_w_event(&io->ob, "tcp", c->id, 1) || gsi_wire_cstr(&io->ob, "data") ||
        gsi_wire_str(&io->ob, (const char *)c->in.data + c->in_off + off, len)) {
      gsi_io_conn_close(c, "enomem", 1);
      return;
    }
    consume_in(c, skip);
    if (!gsi_io_deliver_data(c)) {
      gsi_io_conn_close(c, "closed", 0); /* the owner is dead */
      return;
    }
    if (c->active > 0 && --c->active == 0) {
      if (!c->once) gsi_io_event(io, c, "tcp_passive", NULL);
      c->once = 0;
    }
  }
  if (c->eof) {
    /* nothing more will come: a passive reader learns it now, an active
    ** owner once everything buffered is out */
    io_wait *w = c->waiters;
    if (w != NULL) {
      gsi_io_wait_unlink(w);
      gsi_io_reply_err(io, w->pid, w->ref, "closed");
      gsi_io_wait_free(w);
    } else if (c->active != GSI_ACT_FALSE && c->in.len == c->in_off) {
      gsi_io_conn_close(c, "closed", 1);
    }
    return;
  }
  gsi_io_set_reading(c, !c->paused && (c->waiters != NULL || c->active != GSI_ACT_FALSE));
}

void gsi_io_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  io_conn *c = s->data;
  if (n == 0) return;
  if (n < 0) {
    c->reading = 0;
    if (n == UV_EOF) {
      uv_read_stop(s);
      c->eof = 1;
      gsi_io_pump(c);
    } else {
      io_wait *w = c->waiters;
      if (w != NULL) {
        gsi_io_wait_unlink(w);
        gsi_io_reply_err(c->io, w->pid, w->ref, gsi_io_reason((int)n));
        gsi_io_wait_free(w);
      }
      gsi_io_conn_close(c, gsi_io_reason((int)n), c->active != GSI_ACT_FALSE);
    }
    return;
  }
  if (gsi_wire_bytes(&c->in, buf->base, (size_t)n) != 0) {
    gsi_io_conn_close(c, "enomem", 1);
    return;
  }
  gsi_io_pump(c);
}

/* ----------------------------------------------------- the loop's writes */

static void stm_cb(uv_timer_t *t) {
  gsi_io_conn_close(t->data, "timeout", 1);
}

static void on_written(uv_write_t *r, int status) {
  io_wreq *q = r->data;
  io_conn *c = q->c;
  io_t *io = c->io;
  io_slot *s = slot_at(io, c->index);
  if (!c->closing) atomic_fetch_sub(&s->unsent, (int64_t)q->len);
  c->queued -= q->len;
  if (q->ref != 0) {
    if (status == 0) gsi_io_reply_true(io, q->pid, q->ref);
    else gsi_io_reply_err(io, q->pid, q->ref, c->closing ? c->why : gsi_io_reason(status));
    /* while closing, stm bounds the drain instead */
    if (--c->waiting_writes == 0 && !c->closing) uv_timer_stop(&c->stm);
  }
  gsi_msg_free(q->m);
  free(q);
  if (status < 0 && !c->closing) gsi_io_conn_close(c, gsi_io_reason(status), 1);
}

void gsi_io_do_send(io_t *io, io_conn *c, gsi_msg *m, const gsi_io_args *a) {
  const char *data = (const char *)GSI_MSG_DATA(m) + sizeof *a;
  size_t len = m->len - sizeof *a;
  io_wreq *q;
  uv_buf_t bufs[2];
  int nb = 0, rc;
  if (c == NULL || c->kind != GSI_SK_TCP || c->closing) {
    if (m->ref)
      gsi_io_reply_err(io, m->from, m->ref, c != NULL && c->closing ? c->why : "closed");
    gsi_msg_free(m);
    return;
  }
  int framed = a->a == 0; /* else: the rest of a direct write, framed already */
  if (framed && c->packet >= 1 && c->packet <= 4 &&
      (c->packet == 4 ? len > 0xffffffffu : len >> (8 * c->packet) != 0)) {
    atomic_fetch_sub(&slot_at(io, c->index)->unsent, (int64_t)len);
    if (m->ref) gsi_io_reply_err(io, m->from, m->ref, "emsgsize");
    gsi_msg_free(m);
    return;
  }
  if ((q = calloc(1, sizeof *q)) == NULL) {
    if (m->ref) gsi_io_reply_err(io, m->from, m->ref, "enomem");
    gsi_msg_free(m);
    gsi_io_conn_close(c, "enomem", 1);
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
    if (q->ref) gsi_io_reply_err(io, q->pid, q->ref, gsi_io_reason(rc));
    gsi_msg_free(m);
    free(q);
    gsi_io_conn_close(c, gsi_io_reason(rc), 1);
  }
}

/* ------------------------------------------------------------- commands */

static void on_connection(uv_stream_t *server, int status);

void gsi_io_do_listen(io_t *io, gsi_msg *m, const gsi_io_args *a) {
  struct sockaddr_storage sa;
  io_conn *c = gsi_io_conn_new(io, GSI_SK_LISTEN);
  int rc;
  if (c == NULL) {
    gsi_io_reply_err(io, m->from, m->ref, "enomem");
    return;
  }
  if ((rc = gsi_io_parse_addr(gsi_io_ip_or_default(&a->opts), (int)a->a, &sa)) != 0 ||
      (rc = uv_tcp_init(&io->loop, &c->u.tcp)) != 0) {
    gsi_io_reply_err(io, m->from, m->ref, rc == UV_EINVAL ? "einval" : gsi_io_reason(rc));
    gsi_io_conn_drop(c);
    return;
  }
  c->u.h.data = c;
  gsi_io_apply_opts(c, &a->opts);
  gsi_io_opts_of(c, &c->inherit);
  if (gsi_io_slot_new(io, c, m->from) != 0) {
    gsi_io_reply_err(io, m->from, m->ref, "emfile");
    c->closing = 1;
    gsi_io_conn_final(c);
    return;
  }
  gsi_io_slot_publish(io, c, GSI_SK_LISTEN);
  if ((rc = uv_tcp_bind(&c->u.tcp, (struct sockaddr *)&sa, 0)) != 0 ||
      (rc = uv_listen(&c->u.s, a->opts.backlog > 0 ? a->opts.backlog : 128,
                      on_connection)) != 0) {
    gsi_io_reply_err(io, m->from, m->ref, gsi_io_reason(rc));
    gsi_io_conn_close(c, "closed", 0);
    return;
  }
  if (!gsi_io_reply_sock(io, m->from, m->ref, c->id)) gsi_io_conn_close(c, "closed", 0);
}

/* Hand connections libuv holds to processes waiting in accept. */
static void serve_accepts(io_conn *ls) {
  io_t *io = ls->io;
  while (ls->ready && ls->waiters != NULL && !ls->closing) {
    io_wait *w = ls->waiters;
    io_conn *c = gsi_io_conn_new(io, GSI_SK_TCP);
    int rc;
    if (c == NULL) return;
    uv_tcp_init(&io->loop, &c->u.tcp);
    c->u.h.data = c;
    rc = uv_accept(&ls->u.s, &c->u.s);
    ls->ready = 0;
    if (rc != 0 || gsi_io_slot_new(io, c, w->pid) != 0) {
      c->closing = 1;
      gsi_io_conn_final(c);
      continue;
    }
    gsi_io_apply_opts(c, &ls->inherit);
    c->connected = 1;
    uv_tcp_nodelay(&c->u.tcp, c->nodelay);
    gsi_io_slot_publish(io, c, GSI_SK_TCP);
    gsi_io_wait_unlink(w);
    if (!gsi_io_reply_sock(io, w->pid, w->ref, c->id)) {
      gsi_io_conn_close(c, "closed", 0); /* the waiter died meanwhile */
    } else {
      gsi_io_pump(c);
    }
    gsi_io_wait_free(w);
  }
}

static void on_connection(uv_stream_t *server, int status) {
  io_conn *ls = server->data;
  if (status < 0) return;
  ls->ready = 1;
  serve_accepts(ls);
}

void gsi_io_do_accept(io_t *io, io_conn *ls, gsi_msg *m, const gsi_io_args *a) {
  io_wait *w, **pp;
  if (ls == NULL || ls->kind != GSI_SK_LISTEN || ls->closing) {
    gsi_io_reply_err(io, m->from, m->ref, "closed");
    return;
  }
  if ((w = gsi_io_wait_new(ls, m->from, m->ref, a->b)) == NULL) {
    gsi_io_reply_err(io, m->from, m->ref, "enomem");
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
    if (w) gsi_io_reply_err(io, w->pid, w->ref, gsi_io_reason(status));
    gsi_io_conn_close(c, gsi_io_reason(status), 0);
  } else {
    c->connected = 1;
    uv_tcp_nodelay(&c->u.tcp, c->nodelay);
    gsi_io_slot_publish(io, c, GSI_SK_TCP);
    if (w == NULL || !gsi_io_reply_sock(io, w->pid, w->ref, c->id))
      gsi_io_conn_close(c, "closed", 0);
    else
      gsi_io_pump(c);
  }
  if (w) gsi_io_wait_free(w);
}

void gsi_io_do_connect(io_t *io, gsi_msg *m, const gsi_io_args *a) {
  struct sockaddr_storage sa;
  io_conn *c;
  uv_connect_t *r;
  int rc;
  if (gsi_io_parse_addr(a->opts.ip, (int)a->a, &sa) != 0) {
    gsi_io_reply_err(io, m->from, m->ref, "einval");
    return;
  }
  if ((c = gsi_io_conn_new(io, GSI_SK_TCP)) == NULL || (r = malloc(sizeof *r)) == NULL) {
    if (c) gsi_io_conn_drop(c);
    gsi_io_reply_err(io, m->from, m->ref, "enomem");
    return;
  }
  uv_tcp_init(&io->loop, &c->u.tcp);
  c->u.h.data = c;
  gsi_io_apply_opts(c, &a->opts);
  if (gsi_io_slot_new(io, c, m->from) != 0) {
    free(r);
    gsi_io_reply_err(io, m->from, m->ref, "emfile");
    c->closing = 1;
    gsi_io_conn_final(c);
    return;
  }
  c->conn_wait = gsi_io_wait_new(c, m->from, m->ref, a->b);
  r->data = c;
  rc = uv_tcp_connect(r, &c->u.tcp, (struct sockaddr *)&sa, on_connect);
  if (rc != 0) {
    free(r);
    gsi_io_reply_err(io, m->from, m->ref, gsi_io_reason(rc));
    if (c->conn_wait) {
      c->conn_wait->c = NULL;
      gsi_io_wait_free(c->conn_wait);
      c->conn_wait = NULL;
    }
    gsi_io_conn_close(c, "closed", 0);
  }
}

void gsi_io_do_recv(io_t *io, io_conn *c, gsi_msg *m, const gsi_io_args *a) {
  io_wait *w;
  if (c == NULL || c->kind != GSI_SK_TCP || c->closing) {
    gsi_io_reply_err(io, m->from, m->ref, "closed");
    return;
  }
  if (owner_of(io, c) != m->from) {
    gsi_io_reply_err(io, m->from, m->ref, "not_owner");
    return;
  }
  if (c->active != GSI_ACT_FALSE) {
    gsi_io_reply_err(io, m->from, m->ref, "einval");
    return;
  }
  if (c->waiters != NULL) {
    gsi_io_reply_err(io, m->from, m->ref, "ealready");
    return;
  }
  if (c->packet == GSI_PK_RAW && a->a > 0 && (size_t)a->a > max_packet(c)) {
    gsi_io_reply_err(io, m->from, m->ref, "emsgsize");
    return;
  }
  if ((w = gsi_io_wait_new(c, m->from, m->ref, a->b)) == NULL) {
    gsi_io_reply_err(io, m->from, m->ref, "enomem");
    return;
  }
  w->n = c->packet == GSI_PK_RAW ? a->a : 0;
  c->waiters = w;
  gsi_io_pump(c);
}

static void on_shutdown(uv_shutdown_t *r, int status) {
  (void)status;
  free(r);
}

/* shutdown(s, "write"): FIN after the queued writes */
void gsi_io_do_shutdown(io_conn *c) {
  if (c != NULL && c->kind == GSI_SK_TCP && !c->closing) {
    uv_shutdown_t *r = malloc(sizeof *r);
    if (r != NULL && uv_shutdown(r, &c->u.s, on_shutdown) != 0) free(r);
  }
}

/* ------------------------------------------------------- a sender's write */

int gsi_io_write(gsi_rt *rt, uint64_t sock, uint64_t from, uint64_t ref,
                 const char *data, size_t len, gsi_io_wr *w) {
  io_t *io = io_of(rt);
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
  if (gsi_io_wake(io, m) != 0) { /* the runtime is stopping */
    atomic_fetch_sub(&s->unsent, (int64_t)queued);
    wunlock(s);
    w->waiting = 0;
    return GSI_IO_W_CLOSED;
  }
  wunlock(s);
  return GSI_IO_W_QUEUE;
}

int gsi_io_send(gsi_proc *self, uint64_t sock, const char *data, size_t len,
                uint64_t *ref) {
  gsi_io_wr w;
  uint64_t r = gsi_new_ref(self->rt);
  int rc;
  *ref = 0;
  /* pending before the command exists (its answer may come at once); it
  ** is forgotten again if the send does not wait */
  if (gsi_pending_add(self, r, 0) != 0) return GSI_IO_ENOMEM;
  rc = gsi_io_write(self->rt, sock, gsi_proc_pid(self), r, data, len, &w);
  if (rc == GSI_IO_W_QUEUE && w.waiting) {
    *ref = r;
    return GSI_IO_OK;
  }
  gsi_pending_remove(self, r, NULL);
  switch (rc) {
  case GSI_IO_W_DONE:
  case GSI_IO_W_QUEUE: return GSI_IO_OK;
  case GSI_IO_W_NOTCONN: return GSI_IO_ENOTCONN;
  case GSI_IO_W_EMSGSIZE: return GSI_IO_EMSGSIZE;
  case GSI_IO_W_NOMEM: return GSI_IO_ENOMEM;
  default: return GSI_IO_ECLOSED;
  }
}
