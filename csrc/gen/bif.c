/*
** bif.c - the process primitives a binding needs (gen/bif.h).
**
** Each function does one whole step on the core's structures for the
** binding, which sees them as opaque handles. What used to be written in
** the Lua binding against gsi_proc's fields lives here now, next to the
** rules those fields follow (core/internal.h): "owner" fields are touched
** by the calling process's own thread only, "locked" ones under p->lk,
** shared ones with atomics. None of these functions raises a Lua error
** (gsi_bif_die's unwind aside, which holds no lock), so the binding raises
** only once every lock is released and every buffer has an owner.
*/
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "gen/bif.h"
#include "gen/gen.h"

/* --------------------------------------------------------- a process */

gsi_proc *gsi_bif_state_proc(lua_State *L) { return gsi_state_proc(L); }

gsi_proc *gsi_bif_self(lua_State *L, int *dying) {
  gsi_proc *p = gsi_state_proc(L);
  if (p == NULL) return NULL;
  /* a pending exit signal is noticed at every primitive, so a process that
  ** only sends still dies (the binding's entry then yields it) */
  if (atomic_load_explicit(&p->sigpend, memory_order_relaxed)) gsi_drain(p);
  *dying = p->dying;
  return p;
}

int gsi_bif_notice(gsi_proc *p) {
  if (!atomic_load_explicit(&p->sigpend, memory_order_relaxed)) return 0;
  gsi_drain(p);
  return p->dying;
}

uint64_t gsi_bif_pid(gsi_proc *p) { return gsi_proc_pid(p); }
gsi_rt *gsi_bif_rt(gsi_proc *p) { return p->rt; }
int gsi_bif_dying(const gsi_proc *p) { return p->dying; }
int gsi_bif_foreign(const gsi_proc *p) { return p->fg != NULL; }
int gsi_bif_sandboxed(const gsi_proc *p) { return p->sandbox; }
uint64_t gsi_bif_parent(const gsi_proc *p) { return p->parent; }
const gsi_codec_limits *gsi_bif_limits(gsi_proc *p) { return gsi_limits_of(p); }
const gsi_codec_limits *gsi_bif_rt_limits(gsi_rt *rt) { return gsi_rt_limits(rt); }

gsi_rt *gsi_bif_live_rt(lua_State *L, gsi_rt *rt) {
  if (rt == NULL) rt = gsi_state_proc(L)->rt;
  return atomic_load_explicit(&rt->closed, memory_order_relaxed) ? NULL : rt;
}

int gsi_bif_outside_sandbox(gsi_proc *self, uint64_t pid) {
  gsi_proc *q;
  int out;
  if (!self->sandbox || pid == 0) return 0;
  if ((q = gsi_pin(self->rt, pid)) == NULL) return 0; /* dead: nothing to end */
  out = !q->sandbox; /* set before it was published, read-only since */
  gsi_unpin(q);
  return out;
}

/* ------------------------------------------------------------ messages */

void gsi_bif_msgv(const gsi_msg *m, gsi_msgv *v) {
  v->data = GSI_MSG_DATA(m);
  v->len = m->len;
  v->from = m->from;
  v->ref = m->ref;
  v->kind = m->kind;
  v->flags = m->flags;
  v->lim = NULL;
}

gsi_buf *gsi_bif_scratch(void) { return &gsi_scratch_get()->buf; }
void gsi_bif_scratch_release(void) { gsi_scratch_release(); }

void gsi_bif_scratch_trim(gsi_buf *b) {
  if (b->cap > (1u << 20)) gsi_buf_free(b); /* do not keep a huge scratch */
}

/* gsi_bif_encode_buf, inlined in the whole steps that send (cast, reply) */
static inline gsi_buf *encode_buf(lua_State *L, int idx, const char *what,
                                  gsi_rt *rt, uint64_t to) {
  gsi_buf *b = &gsi_scratch_get()->buf;
  idx = lua_absindex(L, idx);
  b->len = 0;
  if (gsi_encode(L, idx, what, gsi_rt_limits(rt), b) != 0 ||
      (to != 0 && gsi_check_code_to(L, idx, what, rt, to, b) != 0))
    return NULL;
  return b;
}

gsi_buf *gsi_bif_encode_buf(lua_State *L, int idx, const char *what, gsi_rt *rt,
                            uint64_t to) {
  return encode_buf(L, idx, what, rt, to);
}

gsi_msg *gsi_bif_encode(lua_State *L, int idx, const char *what, gsi_rt *rt,
                        int kind, uint64_t from, uint64_t ref, uint64_t to,
                        int *err) {
  gsi_buf *b = encode_buf(L, idx, what, rt, to);
  gsi_msg *m;
  if (b == NULL) {
    *err = GSI_EENCODE;
    return NULL;
  }
  m = gsi_msg_new(kind, from, ref, b->data, b->len);
  gsi_bif_scratch_trim(b);
  if (m == NULL) *err = GSI_ENOMEM;
  return m;
}

void gsi_bif_msg_free(gsi_msg *m) { gsi_msg_free(m); }

int gsi_bif_decode_answer(lua_State *L, gsi_proc *p, gsi_msg *m) {
  int rc;
  if (m->len == 0) return GSI_AGAIN;
  gsi_msg_free(p->held); /* owner field: p's thread only */
  p->held = m;
  rc = gsi_decode_raw(L, GSI_MSG_DATA(m), m->len, gsi_limits_of(p));
  p->held = NULL;
  return rc;
}

void gsi_bif_consume(gsi_proc *p, gsi_msg *m) {
  gsi_pending *e;
  if ((m->kind == GSI_M_REPLY || m->kind == GSI_M_DOWN) &&
      (e = gsi_pending_find(p, m->ref)) != NULL && e->answer == m) {
    gsi_msg *taken;
    gsi_pending_remove(p, m->ref, &taken);
  } else {
    gsi_sv_unlink(p, m);
  }
  gsi_msg_free(m);
}

gsi_msg *gsi_bif_saved(gsi_proc *p) { return p->sv_head; }

gsi_msg *gsi_bif_saved_next(gsi_msg *m) {
  return atomic_load_explicit(&m->next, memory_order_relaxed);
}

int gsi_bif_drain(gsi_proc *p, int all) {
  if (all) gsi_drain(p);
  else gsi_drain_front(p);
  return p->dying;
}

/* A message made by the runtime itself (a DOWN or EXIT "noproc") goes to
** p's own mailbox: GSI_OK, or GSI_ENOMEM. */
static int self_notice(gsi_proc *p, int kind, uint64_t from, uint64_t ref,
                       const char *reason) {
  gsi_buf b;
  gsi_msg *m = NULL;
  gsi_buf_init(&b);
  if (gsi_encode_cstring(&b, reason) == 0)
    m = gsi_msg_new(kind, from, ref, b.data, b.len);
  gsi_buf_free(&b);
  if (m == NULL) return GSI_ENOMEM;
  gsi_deliver(p->rt, gsi_proc_pid(p), m, 0);
  return GSI_OK;
}

/* ---------------------------------------------------------------- waits */

void gsi_bif_end_wait(gsi_proc *p) {
  if (p->wait_timer != 0) {
    gsi_timer_drop(p->rt, p->wait_timer);
    p->wait_timer = 0;
  }
  p->timed_out = 0;
  p->deadline = 0;
}

int gsi_bif_begin_wait(gsi_proc *p, uint64_t deadline) {
  if (p->in_match) return GSI_ECONTEXT;
  gsi_bif_end_wait(p);
  p->deadline = deadline;
  return GSI_OK;
}

void gsi_bif_match(gsi_proc *p, int d) { p->in_match += d; }
int gsi_bif_timed_out(const gsi_proc *p) { return p->timed_out; }

int gsi_bif_wait_more(gsi_proc *p, lua_State *L) {
  if (p->deadline != 0 && !p->timed_out && gsi_now_ns() >= p->deadline)
    p->timed_out = 1; /* else the timer below fires at the deadline */
  if (p->timed_out) return GSI_WAIT_AGAIN;
  if (p->fg != NULL) {
    if (gsi_foreign_wait(p, p->deadline) == 1) p->timed_out = 1;
    return GSI_WAIT_AGAIN;
  }
  if (L != p->L || !lua_isyieldable(L)) return GSI_ECONTEXT;
  if (p->deadline != 0 && p->wait_timer == 0) {
    /* the worker wakes p with a GSI_M_TIMEOUT at the deadline (made by
    ** the timer only if it fires: most waits end before) */
    p->wait_timer = gsi_timer_arm_at(p->rt, p->deadline, gsi_proc_pid(p));
    if (p->wait_timer == 0) return GSI_ENOMEM;
  }
  p->want = GSI_W_WAIT;
  return GSI_WAIT_YIELD;
}

int gsi_bif_over_budget(gsi_proc *p, lua_State *L) {
  if (p->fg != NULL || --p->budget > 0) return 0;
  p->budget = atomic_load_explicit(&p->rt->budget, memory_order_relaxed);
  if (!gsi_runq_busy(p->rt) || L != p->L || !lua_isyieldable(L)) return 0;
  p->want = GSI_W_YIELD;
  return 1;
}

int gsi_bif_next_begin(gsi_proc *p, lua_State *L, uint64_t deadline, int nest_max) {
  if (gsi_bif_begin_wait(p, deadline) != GSI_OK) return GSI_ECONTEXT;
  if (gsi_bif_over_budget(p, L)) return 1;
  if (p->fg != NULL || ++p->nest < nest_max) return 0;
  p->nest = 0;
  if (L != p->L || !lua_isyieldable(L)) return 0;
  p->want = GSI_W_YIELD;
  return 1;
}

int gsi_bif_die(gsi_proc *p, lua_State *L) {
  gsi_bif_end_wait(p);
  if (p->fg != NULL) return GSI_DIE_FOREIGN;
  p->want = GSI_W_EXIT;
  if (L == p->L && lua_isyieldable(L)) return GSI_DIE_YIELD;
  gsi_unwind(L, p); /* inside a C call: an error pcall cannot keep */
  return 0;
}

void gsi_bif_exit_self(gsi_proc *p, gsi_msg *m, int flags) {
  m->flags = (uint8_t)flags;
  gsi_msg_free(p->exit_msg);
  p->exit_msg = m;
  p->dying = 1;
}

int gsi_bif_next(gsi_proc *p, int system_only, gsi_msg **mp, gsi_msgv *v) {
  gsi_msg *m;
  if (system_only) {
    /* suspended (sys): only system messages and the parent's or the
    ** runtime's EXIT; the rest stays queued in order */
    gsi_drain(p);
    for (m = p->sv_head; m != NULL;
         m = atomic_load_explicit(&m->next, memory_order_relaxed))
      if (m->kind == GSI_M_SYSTEM ||
          (m->kind == GSI_M_EXIT &&
           (m->from == 0 || (p->parent != 0 && m->from == p->parent))))
        break;
  } else {
    gsi_drain_front(p);
    m = p->sv_head;
  }
  if (p->dying) return GSI_NEXT_DYING;
  if (m != NULL) {
    gsi_bif_end_wait(p);
    *mp = m;
    gsi_bif_msgv(m, v);
    /* decoded into p's own state: no protected call for plain data */
    if (p->fg == NULL) v->lim = gsi_limits_of(p);
    return GSI_NEXT_MSG;
  }
  if (p->timed_out) {
    gsi_bif_end_wait(p);
    p->sflags &= (uint8_t)~GSI_SF_DEADLINE;
    return GSI_NEXT_TIMEOUT;
  }
  return GSI_NEXT_EMPTY;
}

void gsi_bif_took(gsi_proc *p, gsi_msg *m, const void *from_tab) {
  /* the loop handles a message: its idle time-out is over, a new wait
  ** comes next (a system message leaves it running) */
  if (m->kind != GSI_M_SYSTEM) p->sflags &= (uint8_t)~GSI_SF_DEADLINE;
  if (m->kind == GSI_M_CALL || m->kind == GSI_M_SYSTEM) {
    if (from_tab != NULL) {
      /* for the loop's reply (gsi_bif_reply_from): this table stands for
      ** (from, ref) */
      p->from_tab = from_tab;
      p->from_pid = m->from;
      p->from_ref = m->ref;
    }
  } else if (m->kind == GSI_M_CAST) {
    p->from_tab = NULL; /* the loop's reply: only the call being handled */
  }
  gsi_bif_consume(p, m);
}

int gsi_bif_request(lua_State *L, gsi_proc *p, int idx, const char *what,
                    uint64_t pid, int kind, int handoff, uint64_t *ref) {
  gsi_buf *b;
  if (atomic_load_explicit(&p->rt->closed, memory_order_relaxed)) return GSI_ECLOSED;
  if ((b = encode_buf(L, idx, what, p->rt, pid)) == NULL) return GSI_EENCODE;
  return gsi_gen_request(p, pid, kind, b->data, b->len, handoff, NULL, ref);
}

int gsi_bif_send(lua_State *L, gsi_proc *p, int idx, uint64_t pid, int kind) {
  gsi_buf *b;
  gsi_msg *m;
  if (atomic_load_explicit(&p->rt->closed, memory_order_relaxed)) return GSI_ECLOSED;
  if ((b = encode_buf(L, idx, "message", p->rt, pid)) == NULL) return GSI_EENCODE;
  if (pid == 0) return GSI_ENOPROC;
  m = gsi_msg_new(kind, gsi_proc_pid(p), 0, b->data, b->len);
  gsi_bif_scratch_trim(b);
  if (m == NULL) return GSI_ENOMEM;
  return gsi_deliver(p->rt, pid, m, 0);
}

int gsi_bif_reply_from(lua_State *L, int fidx, int idx) {
  gsi_proc *p = gsi_state_proc(L);
  gsi_buf *b;
  int rc;
  if (p == NULL || p->from_tab == NULL || lua_topointer(L, fidx) != p->from_tab)
    return 0;
  if ((b = encode_buf(L, idx, "reply", p->rt, p->from_pid)) == NULL) {
    lua_pop(L, 1); /* the error: core.reply makes it again, placed */
    return 0;
  }
  rc = gsi_gen_reply(p, p->from_pid, p->from_ref, b->data, b->len);
  gsi_bif_scratch_trim(b);
  return rc == GSI_OK ? 1 : rc;
}

/* --------------------------------------------------------------- sends */

#define SEND_BUDGET 256

int gsi_bif_sent(gsi_proc *p, lua_State *L) {
  gsi_count(&p->msgs_out);
  if (p->fg != NULL || --p->send_budget > 0) return 0;
  p->send_budget = SEND_BUDGET;
  if (!gsi_runq_busy(p->rt) || L != p->L || !lua_isyieldable(L)) return 0;
  p->want = GSI_W_YIELD;
  return 1;
}

int gsi_bif_signal(gsi_proc *p, uint64_t pid, gsi_msg *m, int flags) {
  m->flags = (uint8_t)flags;
  gsi_deliver(p->rt, pid, m, 0);
  if (pid != gsi_proc_pid(p)) return 0;
  gsi_drain(p);
  return p->dying;
}

/* ---------------------------------------------------- links, monitors */

uint64_t gsi_bif_monitor(gsi_proc *p, uint64_t pid) {
  uint64_t ref = gsi_new_ref(p->rt);
  int rc = pid == 0 ? GSI_ENOPROC : gsi_monitor(p, pid, ref);
  if (rc == GSI_OK) {
    gsi_mon_user_add(p, ref, pid);
    return ref;
  }
  if (rc == GSI_ENOMEM) return 0;
  /* so the DOWN is accepted when it is drained */
  if (gsi_idvec_push_pair(&p->mon_out, ref, pid) != GSI_OK) return 0;
  return self_notice(p, GSI_M_DOWN, pid, ref, "noproc") == GSI_OK ? ref : 0;
}

int gsi_bif_demonitor(gsi_proc *p, uint64_t ref, int flush) {
  if (p->in_match) return GSI_ECONTEXT;
  /* as Erlang: a DOWN already delivered stays (unless flushed), none comes
  ** later. Draining first keeps the delivered ones (the monitor is still
  ** known); any DOWN arriving after this is dropped when drained. */
  gsi_drain(p);
  gsi_demonitor(p, ref);
  gsi_mon_user_remove(p, ref);
  if (flush) {
    gsi_msg *m = p->sv_head;
    while (m != NULL) {
      gsi_msg *next = atomic_load_explicit(&m->next, memory_order_relaxed);
      if (m->kind == GSI_M_DOWN && m->ref == ref && gsi_pending_find(p, ref) == NULL) {
        gsi_sv_unlink(p, m);
        gsi_msg_free(m);
      }
      m = next;
    }
  }
  return GSI_OK;
}

int gsi_bif_link(gsi_proc *p, uint64_t pid) {
  int rc = gsi_link(p, pid);
  if (rc != GSI_ENOPROC) return rc;
  /* as Erlang's link/1: a process that traps exits gets {"EXIT", pid,
  ** "noproc"}; one that does not gets a catchable error (it lives on) */
  if (!p->trap_exit) return GSI_ENOPROC;
  return self_notice(p, GSI_M_EXIT, pid, 0, "noproc");
}

void gsi_bif_unlink(gsi_proc *p, uint64_t pid) { gsi_unlink(p, pid); }

int gsi_bif_trap_exit(gsi_proc *p, int on) {
  int old = p->trap_exit;
  if (on >= 0) { /* the owner reads it freely; info() under lk */
    pthread_mutex_lock(&p->lk);
    p->trap_exit = on;
    pthread_mutex_unlock(&p->lk);
  }
  return old;
}

/* --------------------------------------------------------------- names */

int gsi_bif_register(gsi_rt *rt, const char *name, uint64_t pid, uint64_t *holder) {
  return gsi_reg_register(rt, name, pid, holder);
}

int gsi_bif_unregister(gsi_rt *rt, const char *name) {
  return gsi_reg_unregister(rt, name) == GSI_OK;
}

typedef struct names_acc {
  char **v;
  size_t n, cap;
} names_acc;

/* Under the registry lock: copies only, no Lua. */
static void collect_name(void *ud, const char *name, uint64_t pid) {
  names_acc *a = ud;
  (void)pid;
  if (a->n == a->cap) {
    size_t ncap = a->cap ? a->cap * 2 : 16;
    char **nv = realloc(a->v, ncap * sizeof *nv);
    if (nv == NULL) return;
    a->v = nv;
    a->cap = ncap;
  }
  if ((a->v[a->n] = strdup(name)) != NULL) a->n++;
}

char **gsi_bif_names(gsi_rt *rt, size_t *n) {
  names_acc a = {NULL, 0, 0};
  gsi_reg_each(rt, collect_name, &a);
  *n = a.n;
  return a.v;
}

void gsi_bif_names_free(char **v, size_t n) {
  for (size_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

/* -------------------------------------------------------------- timers */

uint64_t gsi_bif_now_ns(void) { return gsi_now_ns(); }
int gsi_bif_ensure_started(gsi_rt *rt) { return gsi_rt_ensure_started(rt); }

uint64_t gsi_bif_send_after(gsi_rt *rt, uint64_t ms, uint64_t pid, const char *name,
                            gsi_msg *m, int every) {
  /* "never" is a timer that outlives the program: it can still be cancelled */
  uint64_t id = every ? gsi_timer_arm_every(rt, ms, pid, name, m)
                      : gsi_timer_arm(rt, ms, pid, name, m);
  if (id == 0) gsi_msg_free(m);
  return id;
}

int64_t gsi_bif_cancel_timer(gsi_rt *rt, uint64_t id) { return gsi_timer_cancel(rt, id); }

/* ---------------------------------------------------------- inspection */

uint64_t gsi_bif_make_ref(gsi_rt *rt) { return gsi_new_ref(rt); }

int gsi_bif_alive(gsi_rt *rt, uint64_t pid) {
  gsi_proc *t = gsi_pin(rt, pid);
  if (t == NULL) return 0;
  gsi_unpin(t);
  return 1;
}

int gsi_bif_shutting(gsi_rt *rt) { return atomic_load(&rt->shutting); }

uint64_t *gsi_bif_list(gsi_rt *rt, size_t *n) {
  uint32_t used;
  uint64_t *v;
  size_t k = 0;
  /* slots ever handed out: the table's chunks up to there stay in place */
  pthread_mutex_lock(&rt->tbl_mu);
  used = rt->used;
  pthread_mutex_unlock(&rt->tbl_mu);
  *n = 0;
  if (used == 0) return NULL;
  if ((v = malloc(used * sizeof *v)) == NULL) {
    *n = 1;
    return NULL;
  }
  for (uint32_t i = 1; i <= used; i++) {
    gsi_proc *p = gsi_proc_at(rt, i);
    if (p == NULL || !atomic_load(&p->alive)) continue;
    v[k++] = gsi_proc_pid(p);
  }
  *n = k;
  if (k == 0) {
    free(v);
    return NULL;
  }
  return v;
}

/* Copy every step-th id of v from off into a malloc'd array (*n ids). */
static uint64_t *copy_ids(const gsi_idvec *v, size_t step, size_t off, size_t *n) {
  uint64_t *out;
  size_t k = 0;
  *n = 0;
  if (v == NULL || v->n <= off || (out = malloc((v->n / step + 1) * sizeof *out)) == NULL)
    return NULL;
  for (size_t i = off; i < v->n; i += step) out[k++] = v->v[i];
  *n = k;
  return out;
}

int gsi_bif_info(gsi_rt *rt, uint64_t pid, gsi_pinfo *o) {
  gsi_proc *t = gsi_pin(rt, pid);
  uint64_t in, drained;
  size_t sv;
  memset(o, 0, sizeof *o);
  if (t == NULL) return 0;
  /* the lists are copied under the target's lock into C memory; the
  ** binding pushes them once nothing is held */
  pthread_mutex_lock(&t->lk);
  o->links = copy_ids(&t->links, 1, 0, &o->nlinks);
  o->monitored_by = copy_ids(&t->monitors, 2, 1, &o->nmonitored_by);
  o->monitors = copy_ids(t->mon_user, 2, 1, &o->nmonitors);
  memcpy(o->module, t->module, sizeof o->module);
  if (t->vsn != NULL) snprintf(o->vsn, sizeof o->vsn, "%s", t->vsn);
  o->vsn_n = t->vsn_n;
  o->trap_exit = t->trap_exit;
  o->server = t->server;
  pthread_mutex_unlock(&t->lk);
  o->module[sizeof o->module - 1] = '\0';
  o->messages_out = atomic_load_explicit(&t->msgs_out, memory_order_relaxed);
  o->reductions = atomic_load_explicit(&t->reductions, memory_order_relaxed);
  o->current = atomic_load_explicit(&t->current, memory_order_relaxed);
  o->status = atomic_load(&t->sched) & 3;
  if (o->status == 3) o->status = 2; /* notified while running: running */
  o->foreign = t->fg != NULL;
  in = atomic_load_explicit(&t->msgs_in, memory_order_relaxed);
  drained = atomic_load_explicit(&t->drained_pub, memory_order_relaxed);
  sv = atomic_load_explicit(&t->svlen_pub, memory_order_relaxed);
  o->mailbox = sv + (in > drained ? in - drained : 0);
  o->messages_in = in;
  o->memory = atomic_load_explicit(&t->mem_pub, memory_order_relaxed);
  o->overflowed = atomic_load_explicit(&t->overflowed, memory_order_relaxed);
  o->mailbox_limit = t->mbox_limit;
  o->max_heap = t->max_heap;
  gsi_unpin(t);
  gsi_reg_name_of(rt, pid, o->name, sizeof o->name);
  return 1;
}

void gsi_bif_info_free(gsi_pinfo *i) {
  free(i->links);
  free(i->monitored_by);
  free(i->monitors);
  i->links = i->monitored_by = i->monitors = NULL;
}

/* module and vsn are read by info() on other threads: written under lk */
void gsi_bif_set_module(gsi_proc *p, const char *name, const char *vsn, size_t n) {
  char *v = NULL, *old;
  uint64_t c = 0;
  if (vsn != NULL) {
    if (n > 47) n = 47; /* a version, not a document */
    if ((v = malloc(n + 1)) != NULL) {
      memcpy(v, vsn, n);
      v[n] = '\0';
    }
  } else if (p->paths != NULL) {
    c = gsi_modcache_version(p->rt->mods, name, gsi_paths_path(p->paths),
                             gsi_paths_hash(p->paths), NULL, 0);
  }
  pthread_mutex_lock(&p->lk);
  snprintf(p->module, sizeof p->module, "%s", name);
  old = p->vsn;
  p->vsn = v;
  p->vsn_n = (uint32_t)c;
  p->server = 1;
  pthread_mutex_unlock(&p->lk);
  free(old);
}

/* stop_order is read by the stopping thread (runtime.c): written under lk */
void gsi_bif_stop_order(gsi_proc *p, int order) {
  pthread_mutex_lock(&p->lk);
  p->stop_order = (uint8_t)order;
  pthread_mutex_unlock(&p->lk);
}

/* ------------------------------------------------------- code reloads */

uint64_t gsi_bif_code_reload(lua_State *L, gsi_rt *rt, const char *name,
                             const char *path, const char *file, const char *vsn) {
  return gsi_modcache_replace(L, rt->mods, name, path, file, vsn);
}

uint64_t gsi_bif_code_version(gsi_rt *rt, const char *name, const char *path,
                              char *vsn, size_t n) {
  return gsi_modcache_version(rt->mods, name, path, 0, vsn, n);
}

/* ---------------------------------------------- the gen_server loop */

/* sflags and current are the loop's own (owner) state: current is read by
** info() on other threads (relaxed), sflags by nobody else */
int gsi_bif_running(gsi_proc *p, int callback) {
  gsi_count(&p->reductions);
  atomic_store_explicit(&p->current, (uint8_t)callback, memory_order_relaxed);
  return p->sflags;
}

void gsi_bif_current(gsi_proc *p, int callback) {
  atomic_store_explicit(&p->current, (uint8_t)callback, memory_order_relaxed);
}

int gsi_bif_idle(gsi_proc *p) {
  atomic_store_explicit(&p->current, GSI_CB_NONE, memory_order_relaxed);
  return p->sflags;
}

int gsi_bif_sflags(gsi_proc *p, int clear, int set) {
  p->sflags = (uint8_t)((p->sflags & ~clear) | set);
  return p->sflags;
}

void gsi_bif_trim(gsi_proc *p) { gsi_proc_trim(p); }

/* ------------------------------------------------ a process's state */

int gsi_bif_require(lua_State *L) { return gsi_require(L); }
int gsi_bif_crash_msgh(lua_State *L) { return gsi_crash_msgh(L); }
int gsi_bif_crash_traceback(lua_State *L, int idx) { return gsi_crash_traceback(L, idx); }
