/*
** proc.c - the process table: slots, pids, pinning and delivery.
**
** Slots live in chunks that are allocated on demand and never freed before
** the runtime closes, so a slot address stays valid; only its generation
** says which process currently owns it. Other threads never keep slot
** pointers: they keep pids and pin the slot for the length of one push.
*/
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static gsi_proc *new_chunk(gsi_rt *rt, uint32_t c) {
  /* aligned to a cache line, so that the slot's lines are lines (proc.h) */
  gsi_proc *chunk = aligned_alloc(GSI_LINE, GSI_CHUNK * sizeof(gsi_proc));
  if (chunk == NULL) return NULL;
  memset(chunk, 0, GSI_CHUNK * sizeof(gsi_proc));
  for (uint32_t i = 0; i < GSI_CHUNK; i++) {
    gsi_proc *p = &chunk[i];
    p->index = c * GSI_CHUNK + i;
    p->rt = rt;
    atomic_store_explicit(&p->gen, 1, memory_order_relaxed);
    pthread_mutex_init(&p->lk, NULL);
    gsi_mpsc_init(&p->mbox);
  }
  /* release: a thread that loads the chunk pointer sees initialised slots */
  atomic_store_explicit(&rt->chunks[c], chunk, memory_order_release);
  return chunk;
}

gsi_proc *gsi_proc_at(gsi_rt *rt, uint32_t index) {
  uint32_t c = index >> GSI_CHUNK_BITS;
  gsi_proc *chunk;
  if (c >= rt->nchunks_max) return NULL;
  chunk = atomic_load_explicit(&rt->chunks[c], memory_order_acquire);
  return chunk ? &chunk[index & (GSI_CHUNK - 1)] : NULL;
}

uint64_t gsi_proc_pid(gsi_proc *p) {
  return GSI_PID(p->index, atomic_load_explicit(&p->gen, memory_order_relaxed));
}

/* Every per-process field a new process starts with, set on the slot it
** is given, fresh or reused: the one place a slot is made ready for a
** process (as Lua's preinit_thread). The exit path (gsi_proc_reap) frees
** what the last process owned and resets the counters that are read
** without a pin; everything else starts here. The slot is not alive yet,
** so nobody can pin it and no lock is needed: the spawner's publication
** (alive = 1, seq_cst) makes these writes visible to whoever pins it. */
static void preinit_proc(gsi_proc *p) {
  p->free_next = NULL;
  p->mbox_limit = 0;
  p->overflow = 0;
  p->max_heap = 0;
  p->sandbox = 0;
  p->fail_at = 0;
  p->heap_refused = p->heap_exceeded = p->unwind = 0;
  p->from_tab = NULL;
  p->from_pid = p->from_ref = 0;
  p->parent = p->start_ref = p->wait_timer = p->deadline = 0;
  p->want = p->trap_exit = p->dying = p->timed_out = p->in_match = 0;
  p->relay = 0;
  p->module[0] = '\0';
  p->vsn_n = 0;
  p->server = 0;
  p->sflags = 0;
  p->stop_order = GSI_STOP_NORMAL;
  atomic_store_explicit(&p->stop_sent, 0, memory_order_relaxed);
  atomic_store_explicit(&p->msgs_out, 0, memory_order_relaxed);
  atomic_store_explicit(&p->reductions, 0, memory_order_relaxed);
  atomic_store_explicit(&p->current, GSI_CB_NONE, memory_order_relaxed);
  atomic_store_explicit(&p->overflowed, 0, memory_order_relaxed);
}

/* Take a free slot. Index 0 is never used, so no pid is 0. The slot comes
** back with alive = 0, preinit_proc'ed; the caller sets what its spawn
** asks for and then publishes it. */
gsi_proc *gsi_proc_alloc(gsi_rt *rt) {
  gsi_proc *p = NULL;
  pthread_mutex_lock(&rt->tbl_mu);
  if (rt->free_head != NULL) {
    p = rt->free_head;
    rt->free_head = p->free_next;
  } else if (rt->used + 1 < rt->max_procs) {
    uint32_t index = ++rt->used;
    p = gsi_proc_at(rt, index);
    if (p == NULL) p = new_chunk(rt, index >> GSI_CHUNK_BITS)
                         ? gsi_proc_at(rt, index) : NULL;
    if (p == NULL) rt->used--;
  }
  if (p != NULL) p->born = ++rt->births;
  pthread_mutex_unlock(&rt->tbl_mu);
  if (p != NULL) {
    preinit_proc(p);
    atomic_fetch_add_explicit(&rt->live, 1, memory_order_relaxed);
  }
  return p;
}

/* The slot is empty (no state, no messages, no pins): new generation, then
** back on the free list. */
void gsi_proc_release(gsi_proc *p) {
  gsi_rt *rt = p->rt;
  uint32_t g = atomic_load_explicit(&p->gen, memory_order_relaxed) + 1;
  if (g == 0) g = 1;
  atomic_store_explicit(&p->gen, g, memory_order_release);
  pthread_mutex_lock(&rt->tbl_mu);
  p->free_next = rt->free_head;
  rt->free_head = p;
  pthread_mutex_unlock(&rt->tbl_mu);
  if (atomic_fetch_sub_explicit(&rt->live, 1, memory_order_acq_rel) == 1) {
    pthread_mutex_lock(&rt->life_mu);
    pthread_cond_broadcast(&rt->life_cv);
    pthread_mutex_unlock(&rt->life_mu);
  }
}

/* Pinning protocol (a Dekker pair, hence seq_cst on both sides):
**   sender: pins++ ; then check alive && gen
**   exit:   alive = 0 ; then wait for pins == 0
** Either the sender sees alive == 0 and backs off, or the exit path sees
** its pin and waits; so after the wait no push can reach the mailbox and
** the exit path may drain it for good. */
gsi_proc *gsi_pin(gsi_rt *rt, uint64_t pid) {
  gsi_proc *p = gsi_proc_at(rt, GSI_PID_INDEX(pid));
  if (p == NULL || GSI_PID_INDEX(pid) == 0) return NULL;
  atomic_fetch_add(&p->pins, 1);
  if (atomic_load(&p->alive) &&
      atomic_load(&p->gen) == GSI_PID_GEN(pid))
    return p;
  atomic_fetch_sub(&p->pins, 1);
  return NULL;
}

void gsi_unpin(gsi_proc *p) {
  atomic_fetch_sub_explicit(&p->pins, 1, memory_order_release);
}

/* Messages a bounded mailbox may refuse: never replies, signals, DOWNs,
** time-outs or system messages, which the runtime itself relies on. */
static int limited(const gsi_msg *m) {
  return m->kind == GSI_M_USER || m->kind == GSI_M_CAST || m->kind == GSI_M_CALL;
}

/* Messages in p's mailbox, as far as a sender can tell (relaxed reads of
** counters the owner publishes): pushed - drained + saved. */
static uint64_t queued(gsi_proc *p) {
  uint64_t in = atomic_load_explicit(&p->msgs_in, memory_order_relaxed);
  uint64_t out = atomic_load_explicit(&p->drained_pub, memory_order_relaxed);
  return (in > out ? in - out : 0) +
         atomic_load_explicit(&p->svlen_pub, memory_order_relaxed);
}

/* The limit refuses m (freed here). "kill" ends the receiver with
** "mailbox_full", an exit signal it cannot trap. */
static int overflow(gsi_rt *rt, gsi_proc *p, uint64_t pid, gsi_msg *m) {
  int policy = p->overflow;
  gsi_msg_free(m);
  atomic_fetch_add_explicit(&p->overflowed, 1, memory_order_relaxed);
  gsi_unpin(p);
  if (policy == GSI_OVF_REJECT) return GSI_EFULL;
  if (policy == GSI_OVF_KILL) {
    gsi_buf b;
    gsi_buf_init(&b);
    if (gsi_encode_cstring(&b, "mailbox_full") == 0)
      gsi_exit_signal(rt, 0, pid, b.data, b.len, GSI_XF_UNTRAP);
    gsi_buf_free(&b);
  }
  return GSI_OK;
}

int gsi_deliver(gsi_rt *rt, uint64_t pid, gsi_msg *m, int handoff) {
  gsi_proc *p = gsi_pin(rt, pid);
  if (p == NULL) {
    gsi_msg_free(m);
    return GSI_ENOPROC;
  }
  if (p->mbox_limit != 0 && limited(m) && queued(p) >= p->mbox_limit)
    return overflow(rt, p, pid, m);
  int is_signal = m->kind == GSI_M_EXIT;
  int m_flags = m->flags;
  /* after the push m belongs to the receiver: read nothing from it */
  gsi_mpsc_push(&p->mbox, m);
  if (is_signal) {
    uint64_t none = 0;
    atomic_store(&p->sigpend, 1);
    if (m_flags & (GSI_XF_KILL | GSI_XF_UNTRAP))
      atomic_compare_exchange_strong(&p->kill_at, &none, gsi_now_ns());
  }
  atomic_fetch_add_explicit(&p->msgs_in, 1, memory_order_relaxed);
  gsi_notify(p, handoff);
  gsi_unpin(p);
  return GSI_OK;
}

int gsi_pid_sandboxed(gsi_rt *rt, uint64_t pid) {
  gsi_proc *p = gsi_pin(rt, pid);
  int sandbox;
  if (p == NULL) return 0;
  sandbox = p->sandbox;
  gsi_unpin(p);
  return sandbox;
}
