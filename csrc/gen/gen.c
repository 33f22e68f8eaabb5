/*
** gen.c - the shared protocols (gen.h): spawn, the start acknowledgement,
** the stop request, requests and their answers, ending a killed foreign
** thread's process. Both faces call these; neither writes the bytes or
** touches the slots itself.
*/
#include <stdio.h>
#include <string.h>

#include "core/internal.h"
#include "core/spawnmsg.h"
#include "core/wire.h"
#include "gen/gen.h"

/* The body of every gen_server process started by the C face, sent by
** name like any C function of a loaded module (lua/lserver.c serves). */
#define BODY_MODULE "genserver.core"
#define BODY_FIELD "serve"

/* ----------------------------------------------------------------- spawn */

int gsi_gen_spawn(gsi_proc *self, const gsi_spawn_spec *s, uint64_t *pid, uint64_t *mref) {
  gsi_rt *rt = self->rt;
  gsi_proc *p;
  uint64_t ref = 0;
  int rc = GSI_OK;
  *pid = 0;
  if (mref != NULL) *mref = 0;
  if (gsi_rt_ensure_started(rt) != 0) return GSI_ECLOSED;
  if ((p = gsi_proc_alloc(rt)) == NULL) return GSI_ELIMIT; /* preinit'ed */
  /* from here nothing fails once the process is published: a slot taken
  ** and never run would never be freed */
  if ((p->spawn_msg = gsi_msg_new(GSI_M_USER, 0, 0, s->msg, s->len)) == NULL ||
      (s->start_ref != 0 && gsi_pending_add(self, s->start_ref, gsi_proc_pid(p)) != 0)) {
    gsi_msg_free(p->spawn_msg);
    p->spawn_msg = NULL;
    gsi_proc_release(p); /* never published */
    return GSI_ENOMEM;
  }
  *pid = gsi_proc_pid(p);
  p->trap_exit = s->trap_exit != 0;
  p->stop_order = s->stop_last ? GSI_STOP_LAST : GSI_STOP_NORMAL;
  p->parent = gsi_proc_pid(self);
  p->start_ref = s->start_ref; /* its ack answers it (gsi_gen_ack) */
  if (s->module != NULL) { /* as much as fits, as snprintf would, without its cost */
    size_t n = strnlen(s->module, sizeof p->module - 1);
    memcpy(p->module, s->module, n);
    p->module[n] = '\0';
  }
  p->mbox_limit = s->mailbox_limit;
  p->overflow = s->mailbox_limit > 0 ? GSI_OVF_DROP + s->overflow : 0;
  p->max_heap = s->max_heap;
  /* everything a sandboxed process spawns or starts is sandboxed too,
  ** whatever the spec says (DESIGN §5) */
  p->sandbox = s->sandbox != 0 || self->sandbox;
  p->fail_at = s->fail_at;
  /* QUEUED before it is alive: a sender that finds it (list(), shutdown)
  ** sees QUEUED and does not queue it a second time. Links and monitors go
  ** in before it can run or die; then it is queued. */
  atomic_store(&p->sched, GSI_QUEUED);
  atomic_store(&p->alive, 1);
  /* The new process cannot have died yet (it never ran, nobody else knows
  ** its pid), so these fail only when C memory runs out. */
  if (s->link) rc = gsi_link(self, *pid);
  if (rc == GSI_OK && s->monitor) {
    ref = gsi_new_ref(rt);
    if ((rc = gsi_monitor(self, *pid, ref)) == GSI_OK) gsi_mon_user_add(self, ref, *pid);
    else ref = 0;
  }
  if (rc == GSI_OK && s->start_ref != 0) rc = gsi_monitor(self, *pid, s->start_ref);
  if (rc != GSI_OK) {
    /* Take back what was made, then kill the process (untrappable: it
    ** ends as any killed process does, at its first primitive or by the
    ** watchdog), so that nothing is left half-made and the spawner is
    ** told. */
    if (s->link) gsi_unlink(self, *pid);
    if (ref != 0) {
      gsi_demonitor(self, ref);
      gsi_mon_user_remove(self, ref);
    }
    if (s->start_ref != 0) gsi_pending_remove(self, s->start_ref, NULL);
    gsi_exit_signal(rt, gsi_proc_pid(self), *pid, NULL, 0, GSI_XF_KILL);
    gsi_enqueue(rt, p);
    *pid = 0;
    return GSI_ENOMEM;
  }
  if (mref != NULL) *mref = ref;
  atomic_fetch_add_explicit(&rt->spawned, 1, memory_order_relaxed);
  /* a start: the starter waits for the ack, so the new server runs next
  ** on this worker (on a foreign thread: queued as usual) */
  if (s->start_ref != 0) gsi_enqueue_next(rt, p);
  else gsi_enqueue(rt, p);
  return GSI_OK;
}

int gsi_gen_fixed_paths(gsi_proc *self, const char **path, const char **cpath) {
  if (self == NULL || !self->sandbox || self->paths == NULL) return 0;
  *path = gsi_paths_path(self->paths);
  *cpath = gsi_paths_cpath(self->paths);
  return 1;
}

int gsi_gen_spawn_paths(gsi_buf *b, const char *path, size_t plen, const char *cpath,
                        size_t clen) {
  return gsi_spawnmsg_paths(b, path, plen, cpath, clen) == 0 ? GSI_OK : GSI_ENOMEM;
}

int gsi_gen_serve_msg(gsi_buf *b, const char *path, const char *cpath, const char *module,
                      const gsi_buf *arg, const gsi_serve_opts *o) {
  /* arg's back-references move by one: the outer table is object 1 */
  gsi_wire_rd r = {arg->data + 1, arg->data + arg->len, 0};
  int nopt = (o->name != NULL) + (o->hibernate_after_ms > 0) + (o->trap_exit != 0);
  if (arg->len == 0) return GSI_EINVAL;
  if (gsi_spawnmsg_paths(b, path, strlen(path), cpath, strlen(cpath)) ||
      gsi_wire_byte(b, GSI_WIRE_MAGIC | (arg->data[0] & GSI_WIRE_FLAGS)) ||
      gsi_wire_tagvar(b, GSI_T_TABLE, 4) || gsi_wire_varint(b, 1) ||
      gsi_wire_tagvar(b, GSI_T_CFUNC, strlen(BODY_MODULE)) ||
      gsi_wire_bytes(b, BODY_MODULE, strlen(BODY_MODULE)) ||
      gsi_wire_varint(b, strlen(BODY_FIELD)) ||
      gsi_wire_bytes(b, BODY_FIELD, strlen(BODY_FIELD)) || gsi_wire_cstr(b, module))
    return GSI_ENOMEM;
  {
    size_t before = b->len;
    if (gsi_wire_copy(&r, b, 1, 1) != 0 || r.p != r.end)
      return b->len == before ? GSI_ENOMEM : GSI_EINVAL;
  }
  if (gsi_wire_tagvar(b, GSI_T_TABLE, 0) || gsi_wire_varint(b, (uint64_t)nopt))
    return GSI_ENOMEM;
  if (o->name && (gsi_wire_cstr(b, "name") || gsi_wire_cstr(b, o->name)))
    return GSI_ENOMEM;
  if (o->hibernate_after_ms > 0 &&
      (gsi_wire_cstr(b, "hibernate_after") || gsi_wire_int(b, o->hibernate_after_ms)))
    return GSI_ENOMEM;
  if (o->trap_exit && (gsi_wire_cstr(b, "trap_exit") || gsi_wire_byte(b, GSI_T_TRUE)))
    return GSI_ENOMEM;
  if (gsi_wire_cstr(b, "n") || gsi_wire_int(b, 3)) return GSI_ENOMEM;
  return GSI_OK;
}

/* ------------------------------------------ tagged tuples: ack and stop */

/* The head of { tag [, value] }: header byte (with the value's flags),
** the table's sizes, the tag. Tags are this file's constants, shorter than
** a fixstr's 32 bytes, so the head has a fixed layout and fits TAG_HEAD. */
#define TAG_HEAD 40
static size_t tagged_head(unsigned char *o, const char *tag, int with_value, int flags) {
  size_t n = strlen(tag);
  o[0] = (unsigned char)(GSI_WIRE_MAGIC | flags);
  o[1] = GSI_T_TABLE;
  o[2] = with_value ? 2 : 1; /* array part: tag [, value] */
  o[3] = 0;                  /* no hash part */
  o[4] = (unsigned char)(GSI_T_FIXSTR | n);
  memcpy(o + 5, tag, n);
  return 5 + n;
}

/* { tag [, value] } into b: value (a whole message, or NULL) becomes
** element 2, its back-references moved by one (the outer table is
** object 1). */
static int tagged(gsi_buf *b, const char *tag, const unsigned char *value, size_t len) {
  int flags = value != NULL && len > 0 ? value[0] & GSI_WIRE_FLAGS : 0;
  b->len = 0;
  if (value != NULL && len == 0) return GSI_EINVAL;
  if (gsi_buf_reserve(b, TAG_HEAD) != 0) return GSI_ENOMEM;
  b->len = tagged_head(b->data, tag, value != NULL, flags);
  if (value != NULL) {
    gsi_wire_rd r = {value + 1, value + len, 0};
    size_t before = b->len;
    if (gsi_wire_copy(&r, b, 1, 1) != 0 || r.p != r.end)
      return b->len == before ? GSI_ENOMEM : GSI_EINVAL;
  }
  return GSI_OK;
}

static const char *const ack_tags[] = {"ok", "ignore", "error"};

int gsi_gen_ack_encode(gsi_buf *b, int tag, const unsigned char *reason, size_t len) {
  if (tag < GSI_ACK_OK || tag > GSI_ACK_ERROR || (tag == GSI_ACK_ERROR) != (reason != NULL))
    return GSI_EINVAL;
  return tagged(b, ack_tags[tag], reason, len);
}

static int is_str(const gsi_wire_item *it, const char *s) {
  return it->type == GSI_WV_STRING && it->len == strlen(s) &&
         memcmp(it->string, s, it->len) == 0;
}

int gsi_gen_ack_decode(const unsigned char *data, size_t len, int *tag, gsi_buf *reason) {
  gsi_wire_rd r = {data + 1, data + len, 0};
  gsi_wire_item t, s;
  int i;
  if (len == 0 || gsi_wire_read(&r, &t, 0) != 0 || t.type != GSI_WV_TABLE || t.narr < 1 ||
      gsi_wire_read(&r, &s, 1) != 0)
    return GSI_EINVAL;
  for (i = GSI_ACK_OK; i <= GSI_ACK_ERROR && !is_str(&s, ack_tags[i]); i++) {}
  if (i > GSI_ACK_ERROR || (i == GSI_ACK_ERROR && t.narr < 2)) return GSI_EINVAL;
  *tag = i;
  if (i != GSI_ACK_ERROR) return GSI_OK;
  /* element 2, as a whole message of its own */
  reason->len = 0;
  if (gsi_wire_byte(reason, data[0]) != 0) return GSI_ENOMEM;
  /* malformed or out of memory alike: not an ack this starter can read */
  return gsi_wire_copy(&r, reason, -1, 1) == 0 ? GSI_OK : GSI_EINVAL;
}

int gsi_gen_already_started(const unsigned char *reason, size_t len, uint64_t *holder) {
  gsi_wire_rd r = {reason + 1, reason + len, 0};
  gsi_wire_item t, k, v;
  if (len == 0 || gsi_wire_read(&r, &t, 0) != 0 || t.type != GSI_WV_TABLE ||
      t.narr != 0 || t.nhash != 1)
    return 0;
  if (gsi_wire_read(&r, &k, 1) != 0 || !is_str(&k, "already_started")) return 0;
  if (gsi_wire_read(&r, &v, 1) != 0 || v.type != GSI_WV_PID) return 0;
  *holder = v.id;
  return 1;
}

int gsi_gen_starter(gsi_proc *self, uint64_t *starter) {
  *starter = self->parent;
  return self->start_ref != 0;
}

int gsi_gen_ack(gsi_proc *self, int tag, const unsigned char *reason, size_t len) {
  gsi_msg *m;
  if (self->start_ref == 0) return 0; /* not started by a start request */
  if (tag == GSI_ACK_ERROR) {
    gsi_buf b;
    int rc;
    gsi_buf_init(&b);
    rc = gsi_gen_ack_encode(&b, tag, reason, len);
    m = rc == GSI_OK ? gsi_msg_new(GSI_M_REPLY, gsi_proc_pid(self), self->start_ref,
                                       b.data, b.len) : NULL;
    gsi_buf_free(&b);
    if (rc != GSI_OK) return rc;
  } else if (tag == GSI_ACK_OK || tag == GSI_ACK_IGNORE) {
    /* no reason: the head alone, with no buffer to allocate (every start) */
    unsigned char head[TAG_HEAD];
    size_t n = tagged_head(head, ack_tags[tag], 0, 0);
    m = gsi_msg_new(GSI_M_REPLY, gsi_proc_pid(self), self->start_ref, head, n);
  } else {
    return GSI_EINVAL;
  }
  if (m == NULL) return GSI_ENOMEM;
  gsi_deliver(self->rt, self->parent, m, 1);
  return 1;
}

int gsi_gen_stop_encode(gsi_buf *b, const unsigned char *reason, size_t len) {
  return tagged(b, "stop", reason, len);
}

/* ---------------------------------------------------- requests, answers */


int gsi_gen_reply(gsi_proc *self, uint64_t caller, uint64_t ref, const void *data,
                  size_t len) {
  gsi_msg *m = gsi_msg_new(GSI_M_REPLY, gsi_proc_pid(self), ref, data, len);
  if (m == NULL) return GSI_ENOMEM;
  gsi_deliver(self->rt, caller, m, 1);
  gsi_count(&self->msgs_out);
  return GSI_OK;
}

void gsi_gen_refuse(gsi_rt *rt, uint64_t server, uint64_t caller, uint64_t ref,
                    const char *reason) {
  gsi_buf b;
  gsi_msg *d;
  gsi_buf_init(&b);
  if (gsi_encode_cstring(&b, reason) == 0 &&
      (d = gsi_msg_new(GSI_M_DOWN, server, ref, b.data, b.len)) != NULL) {
    d->flags = GSI_MF_REFUSED;
    gsi_deliver(rt, caller, d, 0);
  }
  gsi_buf_free(&b);
}

/* Keep ref pending, answered at once by a DOWN "noproc" of `to` (pushed
** into our own mailbox, as a monitor of a dead process would). */
static int answer_noproc(gsi_proc *self, uint64_t to, uint64_t ref) {
  gsi_buf b;
  gsi_msg *m;
  gsi_buf_init(&b);
  m = gsi_wire_msg_cstr(&b, "noproc") == 0 ? gsi_msg_new(GSI_M_DOWN, to, ref, b.data, b.len)
                                           : NULL;
  gsi_buf_free(&b);
  if (m == NULL) return -1;
  if (gsi_idvec_push_pair(&self->mon_out, ref, to) != GSI_OK) { /* so the DOWN is accepted */
    gsi_msg_free(m);
    return -1;
  }
  gsi_deliver(self->rt, gsi_proc_pid(self), m, 0);
  return 0;
}

int gsi_gen_request(gsi_proc *self, uint64_t to, int kind, const void *data, size_t len,
                    int handoff, int *failed, uint64_t *ref) {
  int rc = gsi_request(self, to, kind == GSI_GEN_SYSTEM ? GSI_M_SYSTEM : GSI_M_CALL, data,
                       len, handoff, ref);
  if (rc == GSI_ENOMEM) return GSI_ENOMEM;
  gsi_count(&self->msgs_out);
  if (failed != NULL) {
    *failed = rc == GSI_OK ? GSI_OK : rc == GSI_ENOPROC ? GSI_ENOPROC
                                                                     : GSI_EFULL;
    return GSI_OK;
  }
  if (rc != GSI_OK) {
    /* keep it pending, answered at once, so that every wait sees one path */
    if (gsi_pending_add(self, *ref, to) != 0) return GSI_ENOMEM;
    if (rc == GSI_ENOPROC) {
      if (answer_noproc(self, to, *ref) != 0) {
        gsi_pending_remove(self, *ref, NULL);
        return GSI_ENOMEM;
      }
    } else {
      gsi_gen_refuse(self->rt, to, gsi_proc_pid(self), *ref, "mailbox_full");
    }
  }
  return GSI_OK;
}

int gsi_gen_answer(gsi_proc *self, uint64_t ref, gsi_msg **m) {
  switch (gsi_answer(self, ref, m)) {
  case GSI_OK:
    if ((*m)->kind == GSI_M_REPLY) return GSI_GEN_REPLY;
    return (*m)->flags == GSI_MF_REFUSED ? GSI_GEN_REFUSED : GSI_GEN_DOWN;
  case GSI_AGAIN: return GSI_GEN_WAIT;
  case GSI_EKILLED: return GSI_GEN_DYING;
  default: return GSI_GEN_UNKNOWN;
  }
}

int gsi_gen_await(gsi_proc *self, uint64_t ref, uint64_t deadline, gsi_msg **m) {
  int timed_out = 0;
  for (;;) {
    int st = gsi_gen_answer(self, ref, m);
    if (st != GSI_GEN_WAIT) return st;
    if (timed_out) return GSI_GEN_TIMEOUT;
    if (deadline != 0 && gsi_now_ns() >= deadline) timed_out = 1;
    else if (gsi_foreign_wait(self, deadline) == 1) timed_out = 1;
    /* either way look once more: an answer that came just now wins */
  }
}

void gsi_gen_abandon(gsi_proc *self, uint64_t ref) { gsi_pending_remove(self, ref, NULL); }

/* ------------------------------------------------- a killed foreign thread */

int gsi_gen_killed_reason(gsi_proc *self, const unsigned char **data, size_t *len) {
  gsi_msg *m = self->exit_msg;
  if (m == NULL || (m->flags & GSI_XF_KILL) || m->len == 0) return 1;
  *data = GSI_MSG_DATA(m);
  *len = m->len;
  return 0;
}

gsi_msg *gsi_gen_end_killed(gsi_proc *self, int *normal) {
  gsi_msg *m = self->exit_msg;
  *normal = m != NULL && (m->flags & GSI_XF_NORMAL);
  self->exit_msg = NULL;
  self->dying = 0;
  if (m == NULL || (m->flags & GSI_XF_KILL) || m->len == 0) {
    /* Erlang's rule: killed by "kill" (or with no reason) is "killed" */
    gsi_buf b;
    gsi_msg_free(m);
    m = NULL;
    gsi_buf_init(&b);
    if (gsi_wire_msg_cstr(&b, "killed") == 0) m = gsi_msg_new(GSI_M_EXIT, 0, 0, b.data, b.len);
    gsi_buf_free(&b);
  }
  /* links and monitors fire; nothing fails from here */
  if (m != NULL) gsi_foreign_exit(self, GSI_MSG_DATA(m), m->len, *normal);
  else gsi_foreign_exit(self, NULL, 0, 0);
  return m;
}
