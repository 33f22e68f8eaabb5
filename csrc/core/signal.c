/*
** signal.c - links, monitors, exit signals and the death protocol.
**
** Both ends of a link keep the other's pid in `links`; a monitor lives in
** the target's `monitors` as (ref, watcher) and in the watcher's owner-only
** `mon_out` as (ref, target). Lists on a process are guarded by its `lk`.
** A process that starts dying sets `exiting` under `lk` and takes its
** lists: after that nobody can add to them, which is what makes "names
** released, links broken and monitors fired" one atomic step as seen from
** outside. This file holds one process's lk at a time and takes no other
** lock under it (the lock order: rt.h, at struct gsi_rt).
*/
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int gsi_link(gsi_proc *self, uint64_t pid) {
  uint64_t me = gsi_proc_pid(self);
  gsi_proc *t;
  int rc = GSI_OK;
  if (pid == me) return GSI_OK;
  t = gsi_pin(self->rt, pid);
  if (t == NULL) return GSI_ENOPROC;
  pthread_mutex_lock(&t->lk);
  if (t->exiting) rc = GSI_ENOPROC;
  else if (!gsi_idvec_has(&t->links, me)) rc = gsi_idvec_push(&t->links, me);
  pthread_mutex_unlock(&t->lk);
  gsi_unpin(t);
  if (rc != GSI_OK) return rc;
  pthread_mutex_lock(&self->lk);
  if (!gsi_idvec_has(&self->links, pid)) rc = gsi_idvec_push(&self->links, pid);
  pthread_mutex_unlock(&self->lk);
  if (rc != GSI_OK) gsi_unlink(self, pid); /* half a link: take it back */
  return rc;
}

void gsi_unlink(gsi_proc *self, uint64_t pid) {
  uint64_t me = gsi_proc_pid(self);
  gsi_proc *t;
  /* ours first: an EXIT from pid still in our mailbox is then ignored */
  pthread_mutex_lock(&self->lk);
  gsi_idvec_remove(&self->links, pid);
  pthread_mutex_unlock(&self->lk);
  t = gsi_pin(self->rt, pid);
  if (t == NULL) return;
  pthread_mutex_lock(&t->lk);
  gsi_idvec_remove(&t->links, me);
  pthread_mutex_unlock(&t->lk);
  gsi_unpin(t);
}

int gsi_monitor(gsi_proc *self, uint64_t pid, uint64_t ref) {
  gsi_proc *t = gsi_pin(self->rt, pid);
  int rc = GSI_OK;
  if (t == NULL) return GSI_ENOPROC;
  /* the owner's half first (owner data, nothing to undo for others) */
  if (gsi_idvec_push_pair(&self->mon_out, ref, pid) != GSI_OK) {
    gsi_unpin(t);
    return GSI_ENOMEM;
  }
  pthread_mutex_lock(&t->lk);
  if (t->exiting) rc = GSI_ENOPROC;
  else rc = gsi_idvec_push_pair(&t->monitors, ref, gsi_proc_pid(self));
  pthread_mutex_unlock(&t->lk);
  gsi_unpin(t);
  if (rc != GSI_OK) gsi_idvec_remove_pair(&self->mon_out, ref);
  return rc;
}

static uint64_t mon_out_target(gsi_proc *self, uint64_t ref) {
  for (size_t i = 0; i + 1 < self->mon_out.n; i += 2)
    if (self->mon_out.v[i] == ref) return self->mon_out.v[i + 1];
  return 0;
}

static void drop_remote_monitor(gsi_rt *rt, uint64_t target, uint64_t ref) {
  gsi_proc *t = gsi_pin(rt, target);
  if (t == NULL) return;
  pthread_mutex_lock(&t->lk);
  gsi_idvec_remove_pair(&t->monitors, ref);
  pthread_mutex_unlock(&t->lk);
  gsi_unpin(t);
}

/* Out of memory, a monitor just goes unlisted (info() only). */
void gsi_mon_user_add(gsi_proc *p, uint64_t ref, uint64_t target) {
  gsi_idvec *v = p->mon_user;
  if (v == NULL && (v = calloc(1, sizeof *v)) == NULL) return;
  pthread_mutex_lock(&p->lk);
  p->mon_user = v;
  gsi_idvec_push_pair(v, ref, target);
  pthread_mutex_unlock(&p->lk);
}

void gsi_mon_user_remove(gsi_proc *p, uint64_t ref) {
  /* the owner is the only writer: it may read the list unlocked */
  if (p->mon_user == NULL || p->mon_user->n == 0) return;
  pthread_mutex_lock(&p->lk);
  gsi_idvec_remove_pair(p->mon_user, ref);
  pthread_mutex_unlock(&p->lk);
}

void gsi_proc_introspection_free(gsi_proc *p) {
  if (p->mon_user != NULL) {
    gsi_idvec_free(p->mon_user);
    free(p->mon_user);
    p->mon_user = NULL;
  }
  free(p->vsn);
  p->vsn = NULL;
}

void gsi_demonitor(gsi_proc *self, uint64_t ref) {
  uint64_t target = mon_out_target(self, ref);
  if (target == 0) return;
  gsi_idvec_remove_pair(&self->mon_out, ref);
  drop_remote_monitor(self->rt, target, ref);
}

void gsi_exit_signal(gsi_rt *rt, uint64_t from, uint64_t to,
                     const void *reason, size_t len, int flags) {
  gsi_msg *m = gsi_msg_new(GSI_M_EXIT, from, 0, reason, len);
  if (m == NULL) return;
  m->flags = (uint8_t)flags;
  gsi_deliver(rt, to, m, 0);
}

static void free_list(gsi_msg *m) {
  while (m != NULL) {
    gsi_msg *next = atomic_load_explicit(&m->next, memory_order_relaxed);
    gsi_msg_free(m);
    m = next;
  }
}

/* Death, seen from outside: DOWN to monitors, exit signals to links.
** `normal` tells linked processes that the reason is "normal" (they live
** on). */
static void fire(gsi_proc *p, uint64_t me, gsi_idvec *links,
                 gsi_idvec *mons, const void *reason, size_t len,
                 int normal) {
  gsi_rt *rt = p->rt;
  for (size_t i = 0; i + 1 < mons->n; i += 2) {
    gsi_msg *m = gsi_msg_new(GSI_M_DOWN, me, mons->v[i], reason, len);
    if (m != NULL) gsi_deliver(rt, mons->v[i + 1], m, 0);
  }
  for (size_t i = 0; i < links->n; i++)
    gsi_exit_signal(rt, me, links->v[i], reason, len,
                    GSI_XF_LINK | (normal ? GSI_XF_NORMAL : 0));
}

static void drain_all(gsi_proc *p) {
  gsi_msg *m;
  while ((m = gsi_mpsc_pop(&p->mbox)) != NULL) gsi_msg_free(m);
  free_list(p->sv_head);
  p->sv_head = p->sv_tail = NULL;
  p->sv_len = 0;
}

/* The first half of death, before the process's state is closed (its
** finalizers may never end, DESIGN §1.2): from here on the pid is dead to
** everyone. Any thread may run it, exactly once per process: the owner,
** or the watchdog for a process it abandons (preempt.c); `died` decides.
** Touches only what is shared or locked. */
void gsi_proc_die(gsi_proc *p, const void *reason, size_t len, int normal) {
  uint64_t me = gsi_proc_pid(p);
  gsi_idvec links, mons;
  int no = 0;
  void (*io_down)(gsi_rt *, uint64_t);
  if (!atomic_compare_exchange_strong(&p->died, &no, 1)) return;
  /* the I/O layer's hook, once it runs: close the sockets p controls */
  io_down = atomic_load_explicit(&p->rt->io_down, memory_order_acquire);
  if (io_down != NULL) io_down(p->rt, me);
  pthread_mutex_lock(&p->lk);
  p->exiting = 1;
  links = p->links;
  mons = p->monitors;
  memset(&p->links, 0, sizeof p->links);
  memset(&p->monitors, 0, sizeof p->monitors);
  pthread_mutex_unlock(&p->lk);
  atomic_store(&p->alive, 0);
  gsi_reg_release(p->rt, p);
  fire(p, me, &links, &mons, reason, len, normal);
  gsi_idvec_free(&links);
  gsi_idvec_free(&mons);
  /* see gsi_pin: after this no sender can reach the mailbox */
  while (atomic_load(&p->pins) != 0) sched_yield();
}

/* The second half, on the thread that ran the process, once its state is
** closed: the owner's data, then the slot goes back. */
void gsi_proc_reap(gsi_proc *p) {
  for (size_t i = 0; i + 1 < p->mon_out.n; i += 2)
    drop_remote_monitor(p->rt, p->mon_out.v[i + 1], p->mon_out.v[i]);
  drain_all(p);
  gsi_idvec_free(&p->mon_out);
  pthread_mutex_lock(&p->lk); /* added by the state's last code, if any */
  gsi_idvec_free(&p->links);
  gsi_idvec_free(&p->monitors);
  gsi_proc_introspection_free(p);
  pthread_mutex_unlock(&p->lk);
  free(p->pend);
  p->pend = NULL;
  p->npend = p->cappend = 0;
  gsi_msg_free(p->spawn_msg);
  gsi_msg_free(p->exit_msg);
  p->spawn_msg = p->exit_msg = NULL;
  p->L = NULL;
  p->fg = NULL;
  p->mem = 0;
  atomic_store(&p->mem_pub, 0);
  atomic_fetch_add(&p->rt->msgs_dead, atomic_load(&p->msgs_in));
  atomic_store(&p->msgs_in, 0);
  atomic_store(&p->drained_pub, 0);
  atomic_store(&p->svlen_pub, 0);
  atomic_store(&p->sigpend, 0);
  atomic_store(&p->kill_at, 0);
  atomic_store(&p->sched, GSI_IDLE);
  /* the rest of the slot is made ready by the next gsi_proc_alloc
  ** (preinit_proc, proc.c) */
  pthread_mutex_lock(&p->lk);
  p->exiting = 0;
  pthread_mutex_unlock(&p->lk);
  atomic_store(&p->died, 0);
  gsi_proc_release(p);
}

void gsi_proc_exit(gsi_proc *p, const void *reason, size_t len, int normal) {
  gsi_proc_die(p, reason, len, normal);
  gsi_proc_reap(p);
}
