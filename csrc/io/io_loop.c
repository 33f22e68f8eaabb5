/*
** io_loop.c - the I/O layer's loop thread (io_int.h says who does what):
** started on a runtime's first use of a socket, it runs libuv and every
** command, which callers push on its MPSC queue and wake it for; the two
** hooks the core calls (a process ends: io_down; the runtime closes:
** io_stop, which joins the thread) and the credit hook of gsi_msg_free;
** the functions of io.h that build a command or read the socket table.
*/
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "io/io_int.h"

/* Serialises starting a runtime's loop (see io_get). */
static pthread_mutex_t io_mu = PTHREAD_MUTEX_INITIALIZER;

/* ------------------------------------------------------- the loop thread */

static void stop_all(io_t *io) {
  io->stopping = 1;
  for (uint32_t i = 0; i < io->used; i++) {
    io_slot *s = slot_at(io, i);
    if (s->c != NULL) gsi_io_conn_close(s->c, "closed", 0);
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
    if (m->ref) gsi_io_reply_err(io, m->from, m->ref, "closed");
    gsi_msg_free(m);
    return;
  }
  switch (m->kind) {
  case GSI_IO_LISTEN: gsi_io_do_listen(io, m, &a); break;
  case GSI_IO_CONNECT: gsi_io_do_connect(io, m, &a); break;
  case GSI_IO_ACCEPT: gsi_io_do_accept(io, c, m, &a); break;
  case GSI_IO_RECV: gsi_io_do_recv(io, c, m, &a); break;
  case GSI_IO_SEND: gsi_io_do_send(io, c, m, &a); return; /* m kept until written */
  case GSI_IO_UDP_SEND: gsi_io_do_udp_send(io, c, m, &a); return;
  case GSI_IO_NAME: gsi_io_do_name(io, c, m, &a); break;
  case GSI_IO_UDP_OPEN: gsi_io_do_udp_open(io, m, &a); break;
  case GSI_IO_CLOSE:
    if (c != NULL) gsi_io_conn_close(c, "closed", 0);
    if (m->ref) gsi_io_reply_true(io, m->from, m->ref);
    break;
  case GSI_IO_SHUTDOWN: gsi_io_do_shutdown(c); break;
  case GSI_IO_SETOPTS:
    if (c != NULL && !c->closing) {
      gsi_io_apply_opts(c, &a.opts);
      if (c->kind == GSI_SK_LISTEN) gsi_io_opts_of(c, &c->inherit);
      else if (c->kind == GSI_SK_TCP && c->connected) gsi_io_pump(c);
    }
    break;
  case GSI_IO_DOWN:
    /* close what the dead process owned; forget its waits elsewhere (an
    ** accept on another's listener must not take a connection for it) */
    for (uint32_t i = 0; i < io->used; i++) {
      io_slot *x = slot_at(io, i);
      if (x->c == NULL) continue;
      if (atomic_load_explicit(&x->owner, memory_order_relaxed) == m->from) {
        gsi_io_conn_close(x->c, "closed", 0);
        continue;
      }
      for (io_wait **pp = &x->c->waiters; *pp != NULL;) {
        io_wait *w = *pp;
        if (w->pid == m->from) {
          *pp = w->next;
          w->c = NULL;
          gsi_io_wait_free(w);
        } else {
          pp = &w->next;
        }
      }
    }
    break;
  case GSI_IO_STOP: stop_all(io); break;
  case GSI_IO_RESUME:
    if (c != NULL) gsi_io_unpause(c);
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

/* ---------------------------------------------------------- the queue */

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

/* Push a command and wake the loop; -1 (m freed) once io_stop began. The
** Dekker pair (wakers up, then stopped read; io_stop: stopped set, then
** wakers read; all seq_cst) means io_stop sees every push that saw
** stopped == 0, and waits for it before the loop closes its async handle. */
int gsi_io_wake(io_t *io, gsi_msg *m) {
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

/* ----------------------------------------------------------------- hooks */

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
      if ((r = gsi_msg_new(GSI_IO_RESUME, 0, 0, &a, sizeof a)) != NULL) gsi_io_wake(io, r);
    }
  }
  io_unref(io);
}

static void io_down(gsi_rt *rt, uint64_t pid) {
  io_t *io = io_of(rt);
  gsi_msg *m;
  if (io == NULL || atomic_load(&io->nsocks) == 0) return;
  if ((m = gsi_msg_new(GSI_IO_DOWN, pid, 0, NULL, 0)) == NULL) return;
  gsi_io_wake(io, m);
}

static void io_stop(gsi_rt *rt) {
  io_t *io = io_of(rt);
  gsi_msg *m;
  if (io == NULL) return;
  atomic_store(&rt->io_down, NULL);
  /* no push after this (see gsi_io_wake) but the STOP below */
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

/* rt's loop, started on its first use (NULL once the runtime is closed, or
** when it cannot start). rt->io is set once under io_mu and read with
** acquire. */
static io_t *io_get(gsi_rt *rt) {
  io_t *io = io_of(rt);
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

/* Push a command for rt's loop (started on first use). Takes m. Returns
** 0, or -1 when the loop cannot be started (m freed). */
static int command(gsi_rt *rt, gsi_msg *m) {
  io_t *io = io_get(rt);
  if (io == NULL) {
    gsi_msg_free(m);
    return -1;
  }
  return gsi_io_wake(io, m);
}

int gsi_io_push(gsi_proc *self, int kind, const gsi_io_args *a, const void *data,
                size_t len, uint64_t *ref) {
  gsi_rt *rt = self->rt;
  uint64_t r = 0;
  gsi_msg *m;
  gsi_buf *b = &gsi_scratch_get()->buf;
  /* args then data, built in the thread's scratch and copied once into
  ** the command's node */
  b->len = 0;
  if (gsi_buf_reserve(b, sizeof *a + len) != 0) return GSI_IO_ENOMEM;
  memcpy(b->data, a, sizeof *a);
  if (len > 0) memcpy(b->data + sizeof *a, data, len);
  b->len = sizeof *a + len;
  m = gsi_msg_new(kind, gsi_proc_pid(self), 0, b->data, b->len);
  if (b->cap > (1u << 20)) gsi_buf_free(b); /* do not keep a huge scratch */
  if (m == NULL) return GSI_IO_ENOMEM;
  if (ref != NULL) {
    /* pending before the command is pushed: its answer cannot arrive
    ** before it is expected */
    r = gsi_new_ref(rt);
    if (gsi_pending_add(self, r, 0) != 0) {
      gsi_msg_free(m);
      return GSI_IO_ENOMEM;
    }
    m->ref = r;
  }
  if (command(rt, m) != 0) {
    if (ref != NULL) gsi_pending_remove(self, r, NULL);
    return GSI_IO_ENOLOOP;
  }
  if (ref != NULL) *ref = r;
  return GSI_IO_OK;
}

int gsi_io_request(gsi_proc *self, int kind, const gsi_io_args *a, uint64_t *ref) {
  if (kind < GSI_IO_LISTEN || kind >= GSI_IO_NREQUESTS) return GSI_IO_EINVAL;
  return gsi_io_push(self, kind, a, NULL, 0, ref);
}

int gsi_io_setopts(gsi_proc *self, uint64_t sock, const gsi_io_opts *o) {
  io_slot *s = slot_of(io_of(self->rt), sock);
  gsi_io_args a;
  if (s == NULL) return GSI_IO_ECLOSED;
  /* the mark and the packet mode hold for the caller's next send already
  ** (the loop sets them again when it applies the options) */
  if (o->high_watermark > 0)
    atomic_store_explicit(&s->hwm, o->high_watermark, memory_order_relaxed);
  if (o->packet >= 0) atomic_store_explicit(&s->pk, o->packet, memory_order_relaxed);
  memset(&a, 0, sizeof a);
  a.sock = sock;
  a.opts = *o;
  return gsi_io_push(self, GSI_IO_SETOPTS, &a, NULL, 0, NULL);
}

int gsi_io_set_owner(gsi_proc *self, uint64_t sock, uint64_t to) {
  io_slot *s = slot_of(io_of(self->rt), sock);
  uint64_t cur = gsi_proc_pid(self);
  if (s == NULL) return GSI_IO_ECLOSED;
  if (!atomic_compare_exchange_strong(&s->owner, &cur, to)) return GSI_IO_ENOTOWNER;
  return GSI_IO_OK;
}

const char *gsi_io_closed_reason(gsi_proc *self, uint64_t sock) {
  io_t *io = io_of(self->rt);
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
