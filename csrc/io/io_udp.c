/*
** io_udp.c - UDP in the I/O layer (io_int.h says who does what): a socket
** bound at open that reads at once, each datagram delivered to its owner
** as a message (with inbound credit, as TCP data); datagrams out, sent by
** the loop and never answered.
*/
#include <stdlib.h>
#include <string.h>

#include "io/io_int.h"

/* A datagram arrived: { "udp", sock =, ip =, port =, data = } to the owner,
** holding a unit of credit like TCP data. */
void gsi_io_on_udp_recv(uv_udp_t *u, ssize_t n, const uv_buf_t *buf,
                        const struct sockaddr *addr, unsigned flags) {
  io_conn *c = u->data;
  io_t *io = c->io;
  (void)flags;
  if (n < 0 || addr == NULL || c->closing) return;
  if (gsi_io_w_event(&io->ob, "udp", c->id, 3) || gsi_io_w_addr(&io->ob, addr) ||
      gsi_wire_cstr(&io->ob, "data") || gsi_wire_str(&io->ob, buf->base, (size_t)n))
    return;
  if (!gsi_io_deliver_data(c)) {
    gsi_io_conn_close(c, "closed", 0);
    return;
  }
  {
    int r = gsi_io_credit_ok(c);
    /* UDP: while paused the kernel drops what does not fit */
    if (r <= 0 && gsi_io_pause(c, r)) gsi_io_set_reading(c, 1);
  }
}

static void on_udp_sent(uv_udp_send_t *r, int status) {
  io_wreq *q = r->data;
  (void)status;
  gsi_msg_free(q->m);
  free(q);
}

/* io_udp_open: bind and read at once (active, the only mode of UDP). */
void gsi_io_do_udp_open(io_t *io, gsi_msg *m, const gsi_io_args *a) {
  struct sockaddr_storage sa;
  io_conn *c = gsi_io_conn_new(io, GSI_SK_UDP);
  int rc;
  if (c == NULL) {
    gsi_io_reply_err(io, m->from, m->ref, "enomem");
    return;
  }
  if ((rc = gsi_io_parse_addr(gsi_io_ip_or_default(&a->opts), (int)a->a, &sa)) != 0 ||
      (rc = uv_udp_init(&io->loop, &c->u.udp)) != 0) {
    gsi_io_reply_err(io, m->from, m->ref, gsi_io_reason(rc));
    gsi_io_conn_drop(c);
    return;
  }
  c->u.h.data = c;
  if (gsi_io_slot_new(io, c, m->from) != 0) {
    gsi_io_reply_err(io, m->from, m->ref, "emfile");
    c->closing = 1;
    gsi_io_conn_final(c);
    return;
  }
  gsi_io_slot_publish(io, c, GSI_SK_UDP);
  if ((rc = uv_udp_bind(&c->u.udp, (struct sockaddr *)&sa, 0)) != 0) {
    gsi_io_reply_err(io, m->from, m->ref, gsi_io_reason(rc));
    gsi_io_conn_close(c, "closed", 0);
    return;
  }
  gsi_io_set_reading(c, 1);
  if (!gsi_io_reply_sock(io, m->from, m->ref, c->id)) gsi_io_conn_close(c, "closed", 0);
}

/* A datagram out; nothing answers (errors are dropped, as UDP drops). */
void gsi_io_do_udp_send(io_t *io, io_conn *c, gsi_msg *m, const gsi_io_args *a) {
  struct sockaddr_storage sa;
  io_wreq *q;
  uv_buf_t buf;
  (void)io;
  if (c == NULL || c->kind != GSI_SK_UDP || c->closing ||
      gsi_io_parse_addr(a->opts.ip, (int)a->a, &sa) != 0 ||
      (q = calloc(1, sizeof *q)) == NULL) {
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


/* ------------------------------------------------------------ a sender */

int gsi_io_udp_send(gsi_proc *self, uint64_t sock, const char *ip, int port,
                    const char *data, size_t len) {
  gsi_io_args a;
  io_slot *s;
  size_t n = strlen(ip);
  if (len > 65507) return GSI_IO_EMSGSIZE;
  if ((s = slot_of(io_of(self->rt), sock)) == NULL) return GSI_IO_ECLOSED;
  if (atomic_load_explicit(&s->kind, memory_order_relaxed) != GSI_SK_UDP) return GSI_IO_EINVAL;
  memset(&a, 0, sizeof a);
  a.sock = sock;
  a.a = port;
  if (n >= sizeof a.opts.ip) return GSI_IO_EINVAL;
  memcpy(a.opts.ip, ip, n + 1);
  return gsi_io_push(self, GSI_IO_UDP_SEND, &a, data, len, NULL);
}
