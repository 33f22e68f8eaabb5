/*
** foreign.c - foreign processes: an OS thread outside the workers (a C
** host's thread, the main Lua script) that sends, calls and receives gets
** a process slot of its own, with no Lua state; it blocks its thread where
** a Lua process would yield (gsi_foreign_wait, sched.c).
*/
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"

/* A thread's foreign processes, one per runtime it uses. An entry names
** its runtime by address AND serial: a runtime closed and freed while the
** thread still had an entry may be followed by a new one at the same
** address, and the stale entry must then not be touched (its slot memory
** is gone). A thread using more runtimes at once than FG_MAX gets no more
** foreign processes (gsi_foreign_self returns NULL). */
#define FG_MAX 8

typedef struct fg_entry {
  gsi_rt *rt;
  uint64_t serial;
  gsi_proc *p;
  uint64_t pid;
} fg_entry;

static _Thread_local fg_entry tls_fg[FG_MAX];
/* The entry gsi_foreign_self returned last: a thread that calls into one
** runtime finds it without a search (initial-exec TLS, core.h) */
static _Thread_local fg_entry *tls_fg_last GSI_TLS_FAST;

static fg_entry *fg_find(gsi_rt *rt) {
  for (int i = 0; i < FG_MAX; i++)
    if (tls_fg[i].rt == rt) {
      if (tls_fg[i].serial == rt->serial) return &tls_fg[i];
      tls_fg[i].rt = NULL; /* a closed runtime's: forget it, touch nothing */
    }
  return NULL;
}

static fg_entry *fg_free_entry(void) {
  for (int i = 0; i < FG_MAX; i++)
    if (tls_fg[i].rt == NULL) return &tls_fg[i];
  return NULL;
}

static gsi_proc *new_foreign(gsi_rt *rt) {
  pthread_condattr_t ca;
  gsi_proc *p = gsi_proc_alloc(rt);
  if (p == NULL) return NULL;
  p->fg = calloc(1, sizeof *p->fg);
  if (p->fg == NULL) {
    gsi_proc_release(p);
    return NULL;
  }
  pthread_mutex_init(&p->fg->mu, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&p->fg->cv, &ca);
  pthread_condattr_destroy(&ca);
  snprintf(p->module, sizeof p->module, "(foreign thread)");
  atomic_fetch_add(&rt->nforeign, 1);
  atomic_store(&p->sched, GSI_RUNNING);
  atomic_store(&p->alive, 1);
  return p;
}

/* As fg_find, then: its process, still the same (not ended). An ended
** one's entry was cleared (gsi_foreign_exit) or its slot has another pid. */
gsi_proc *gsi_foreign_last(gsi_rt *rt) {
  fg_entry *e = tls_fg_last;
  if (e != NULL && e->rt == rt && e->serial == rt->serial && gsi_proc_pid(e->p) == e->pid)
    return e->p;
  return NULL;
}

gsi_proc *gsi_foreign_self(gsi_rt *rt) {
  fg_entry *e;
  gsi_proc *p;
  if ((p = gsi_foreign_last(rt)) != NULL) return p;
  e = fg_find(rt);
  if (e != NULL && gsi_proc_pid(e->p) == e->pid) {
    tls_fg_last = e;
    return e->p;
  }
  if (e == NULL && (e = fg_free_entry()) == NULL) return NULL;
  if ((p = new_foreign(rt)) == NULL) return NULL;
  e->rt = rt;
  e->serial = rt->serial;
  e->p = p;
  e->pid = gsi_proc_pid(p);
  tls_fg_last = e;
  return p;
}

/* The foreign process of this thread ends (killed by a signal, or the
** thread leaves): run the death protocol; the next use makes a new one. */
void gsi_foreign_exit(gsi_proc *p, const void *reason, size_t len, int normal);
void gsi_foreign_exit(gsi_proc *p, const void *reason, size_t len,
                      int normal) {
  gsi_foreign *fg = p->fg;
  fg_entry *e = fg_find(p->rt);
  if (e != NULL && e->p == p) e->rt = NULL;
  /* before the slot goes: live - nforeign must never dip below zero */
  atomic_fetch_sub(&p->rt->nforeign, 1);
  gsi_msg_free(p->held); /* an answer whose decoding raised (gen/bif.c) */
  p->held = NULL;
  gsi_proc_exit(p, reason, len, normal); /* no notifier touches fg after */
  pthread_mutex_destroy(&fg->mu);
  pthread_cond_destroy(&fg->cv);
  free(fg);
}

/* Forget this thread's foreign process in rt (the runtime is going). */
void gsi_foreign_reset(gsi_rt *rt) {
  fg_entry *e = fg_find(rt);
  if (e != NULL) e->rt = NULL;
}

