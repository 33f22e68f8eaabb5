/*
** recv.c - the owner's side of a mailbox: draining the MPSC queue into the
** saved list, the runtime's own filtering on the way, and pending requests.
**
** Everything here runs on the thread that currently runs the process, so
** nothing here is shared except what the exit-signal rules read under lk.
**
** Draining applies, once per message:
**   - a time-out for the current wait sets timed_out; stale ones vanish;
**   - a reply or DOWN whose ref is pending becomes that request's answer;
**     a reply nobody waits for any more (late) is dropped here, so it never
**     reaches a mailbox the user can see; a DOWN for a monitor that was
**     removed is dropped the same way;
**   - exit signals follow Erlang's rules (see on_exit_signal);
**   - everything else is appended to the saved list, in arrival order.
** A wait for one reply therefore looks only at messages that arrived since
** it last looked, and finds its answer in O(pending), not O(mailbox).
*/
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void gsi_sv_append(gsi_proc *p, gsi_msg *m) {
  m->prev = p->sv_tail;
  atomic_store_explicit(&m->next, NULL, memory_order_relaxed);
  if (p->sv_tail) atomic_store_explicit(&p->sv_tail->next, m, memory_order_relaxed);
  else p->sv_head = m;
  p->sv_tail = m;
  p->sv_len++;
  atomic_store_explicit(&p->svlen_pub, p->sv_len, memory_order_relaxed);
}

void gsi_sv_unlink(gsi_proc *p, gsi_msg *m) {
  gsi_msg *next = atomic_load_explicit(&m->next, memory_order_relaxed);
  if (m->prev) atomic_store_explicit(&m->prev->next, next, memory_order_relaxed);
  else p->sv_head = next;
  if (next) next->prev = m->prev;
  else p->sv_tail = m->prev;
  m->prev = NULL;
  atomic_store_explicit(&m->next, NULL, memory_order_relaxed);
  p->sv_len--;
  atomic_store_explicit(&p->svlen_pub, p->sv_len, memory_order_relaxed);
}

/* ------------------------------------------------------------- pending */

gsi_pending *gsi_pending_find(gsi_proc *p, uint64_t ref) {
  for (size_t i = p->npend; i-- > 0;)
    if (p->pend[i].ref == ref) return &p->pend[i];
  return NULL;
}

int gsi_pending_add(gsi_proc *p, uint64_t ref, uint64_t target) {
  if (p->npend == p->cappend) {
    size_t ncap = p->cappend ? p->cappend * 2 : 4;
    gsi_pending *np = realloc(p->pend, ncap * sizeof *np);
    if (np == NULL) return GSI_ENOMEM;
    p->pend = np;
    p->cappend = ncap;
  }
  p->pend[p->npend].ref = ref;
  p->pend[p->npend].target = target;
  p->pend[p->npend].answer = NULL;
  p->npend++;
  return GSI_OK;
}

/* Forget a pending request: demonitor its target, and drop an answer that
** already arrived unless the caller took it (take != NULL). */
void gsi_pending_remove(gsi_proc *p, uint64_t ref, gsi_msg **take) {
  gsi_pending *e = gsi_pending_find(p, ref);
  if (take) *take = NULL;
  if (e == NULL) return;
  gsi_demonitor(p, ref);
  if (e->answer != NULL) {
    gsi_sv_unlink(p, e->answer);
    if (take) *take = e->answer;
    else gsi_msg_free(e->answer);
  }
  *e = p->pend[--p->npend];
}

/* ------------------------------------------------------- exit signals */

/* Returns 1 when the signal kills p (p->dying set, p->exit_msg = m). */
static int on_exit_signal(gsi_proc *p, gsi_msg *m) {
  if (m->flags & GSI_XF_LINK) {
    int linked;
    pthread_mutex_lock(&p->lk);
    linked = gsi_idvec_remove(&p->links, m->from);
    pthread_mutex_unlock(&p->lk);
    if (!linked) { /* unlinked meanwhile: the signal is void */
      gsi_msg_free(m);
      return 0;
    }
  }
  if (!(m->flags & (GSI_XF_KILL | GSI_XF_UNTRAP)) && p->trap_exit) {
    gsi_sv_append(p, m);
    return 0;
  }
  if ((m->flags & GSI_XF_NORMAL) && m->from != gsi_proc_pid(p)) {
    gsi_msg_free(m);
    return 0;
  }
  if (!p->dying) {
    p->dying = 1;
    p->exit_msg = m;
    gsi_unwind_arm(p); /* it may be inside a C call that never waits */
  } else {
    gsi_msg_free(m);
  }
  return 1;
}

static void on_answer(gsi_proc *p, gsi_msg *m) {
  gsi_pending *e = gsi_pending_find(p, m->ref);
  if (e != NULL && e->answer == NULL) {
    if (m->kind == GSI_M_DOWN) gsi_idvec_remove_pair(&p->mon_out, m->ref);
    e->answer = m;
    gsi_sv_append(p, m);
  } else if (m->kind == GSI_M_DOWN && e == NULL &&
             gsi_idvec_remove_pair(&p->mon_out, m->ref)) {
    gsi_mon_user_remove(p, m->ref);
    gsi_sv_append(p, m); /* an ordinary monitor fired */
  } else {
    gsi_msg_free(m); /* late reply, or DOWN after demonitor */
  }
}

static size_t drain_some(gsi_proc *p, size_t max);

/* Drain the mailbox. Returns the number of messages moved to the saved
** list or consumed as answers. */
size_t gsi_drain(gsi_proc *p) {
  /* cleared only when set: a store on every drain would take the cache
  ** line that senders use (see gsi_proc) away from them */
  if (atomic_load_explicit(&p->sigpend, memory_order_relaxed))
    atomic_store_explicit(&p->sigpend, 0, memory_order_relaxed);
  return drain_some(p, SIZE_MAX);
}

/* A long mailbox goes to the saved list a batch at a time, each batch
** taken while it is still in the cache (draining 100,000 messages at once
** would read each node from memory twice). */
#define DRAIN_BATCH 64

void gsi_drain_front(gsi_proc *p) {
  while (p->sv_head == NULL && drain_some(p, DRAIN_BATCH) == DRAIN_BATCH) {
  }
}

/* At most max messages; sigpend stays as it is (a signal may be among the
** messages left). */
static size_t drain_some(gsi_proc *p, size_t max) {
  gsi_msg *m;
  size_t n = 0;
  while (n < max && (m = gsi_mpsc_pop(&p->mbox)) != NULL) {
    n++;
    switch (m->kind) {
    case GSI_M_TIMEOUT:
      if (m->ref == p->wait_timer && p->wait_timer != 0) {
        p->timed_out = 1;
        p->wait_timer = 0;
      }
      gsi_msg_free(m);
      break;
    case GSI_M_REPLY:
    case GSI_M_DOWN:
      on_answer(p, m);
      break;
    case GSI_M_EXIT:
      on_exit_signal(p, m);
      break;
    default:
      gsi_sv_append(p, m);
    }
  }
  if (n) {
    uint64_t d = atomic_load_explicit(&p->drained_pub, memory_order_relaxed);
    atomic_store_explicit(&p->drained_pub, d + n, memory_order_relaxed);
  }
  return n;
}

/* ------------------------------------------------------------ requests */

int gsi_request(gsi_proc *self, uint64_t server, int kind, const void *data,
                size_t len, int handoff, uint64_t *ref) {
  gsi_rt *rt = self->rt;
  gsi_msg *m;
  int rc;
  *ref = gsi_new_ref(rt);
  if ((m = gsi_msg_new(kind, gsi_proc_pid(self), *ref, data, len)) == NULL)
    return GSI_ENOMEM;
  if (gsi_pending_add(self, *ref, server) != GSI_OK) {
    gsi_msg_free(m);
    return GSI_ENOMEM;
  }
  rc = server == 0 ? GSI_ENOPROC : gsi_monitor(self, server, *ref);
  if (rc != GSI_OK) {
    gsi_pending_remove(self, *ref, NULL);
    gsi_msg_free(m);
    return rc;
  }
  if (gsi_deliver(rt, server, m, handoff) == GSI_EFULL) {
    gsi_pending_remove(self, *ref, NULL);
    return GSI_EFULL;
  }
  return GSI_OK; /* if it died meanwhile, its DOWN answers the request */
}

int gsi_answer(gsi_proc *p, uint64_t ref, gsi_msg **ans) {
  gsi_pending *e;
  *ans = NULL;
  gsi_drain(p);
  if (p->dying) return GSI_EKILLED;
  if ((e = gsi_pending_find(p, ref)) == NULL) return GSI_EINVAL;
  if (e->answer == NULL) return GSI_AGAIN;
  gsi_pending_remove(p, ref, ans);
  return GSI_OK;
}
