/*
** call.c - the calling thread's side of the public C API: its foreign
** process, entering and leaving the runtime, and call, cast, send, stop
** and start on the protocol layer (gen/gen.h), which the Lua binding uses
** too. A host thread blocks where the binding's process yields.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"

#include "genserver.h"
#include "core/ids.h"
#include "core/wire.h"
#include "core/internal.h"
#include "api/api.h"
#include "gen/gen.h"
#include "api_int.h"

/* ------------------------------------------------- the calling thread */

/* The last runtime the thread used, to tell a new runtime from a closed
** one that had the same address (see fg_self). */
_Thread_local gsi_rt *tls_core GSI_TLS_FAST;
static _Thread_local uint64_t tls_serial GSI_TLS_FAST;

gsi_worker *own_worker(gs_runtime *rt) {
  gsi_worker *w = gsi_current_worker();
  return w != NULL && w->rt == rt->core ? w : NULL;
}

/* This thread's foreign process in rt. core/foreign.c remembers it by runtime
** address only: if a runtime this thread used was closed without the
** thread detaching, and a new one got the same address, forget the dead
** one's process first (it was freed). */
static gsi_proc *fg_self(gs_runtime *rt) {
  gsi_proc *p;
  /* the process this thread used last, in the runtime it used last: the
  ** thread's key was set then (every path that clears it ends the process) */
  if (tls_core == rt->core && tls_serial == rt->serial &&
      (p = gsi_foreign_last(rt->core)) != NULL)
    return p;
  if (tls_core == rt->core && tls_serial != rt->serial) gsi_foreign_reset(rt->core);
  tls_core = rt->core;
  tls_serial = rt->serial;
  p = gsi_foreign_self(rt->core);
  if (p != NULL && pthread_getspecific(rt->key) == NULL)
    pthread_setspecific(rt->key, rt); /* thread_gone detaches it */
  return p;
}

/* End the foreign process p (the calling thread's) with an encoded reason. */
static void fg_end(gs_runtime *rt, gsi_proc *p, const void *reason, size_t len,
                   int normal) {
  gsi_foreign_exit(p, reason, len, normal);
  pthread_setspecific(rt->key, NULL);
}

/* A thread that used rt exits: end its foreign process. */
static void detach(gs_runtime *rt) {
  gsi_buf b;
  gsi_proc *p = fg_self(rt);
  gsi_buf_init(&b);
  if (p != NULL) {
    gsi_wire_msg_cstr(&b, "normal");
    gsi_drain(p); /* a pending exit signal changes nothing now */
    fg_end(rt, p, b.data, b.len, 1);
  }
  gsi_buf_free(&b);
  pthread_setspecific(rt->key, NULL);
  gsi_scratch_release();
}

void thread_gone(void *v) { detach(v); }

int gs_thread_detach(gs_runtime *rt) {
  if (rt == NULL) return fail(GS_EINVAL, "gs_thread_detach: no runtime");
  if (own_worker(rt)) return fail(GS_ECONTEXT, "gs_thread_detach: on a worker thread");
  detach(rt);
  return ok();
}

/* Entry of every call that needs the runtime running.
**
** Protocol: a foreign thread counts itself in `inflight` before it looks
** at `stopped`, and out when it leaves; gs_runtime_stop sets `stopped`
** first, then waits for `inflight` to reach 0, so once it has seen 0 no
** foreign thread is inside or can get in, and close may free.
**
** A worker thread of rt skips the counting (the shared atomic is the
** dominant cost of a cast from a server, which goes through here): it
** cannot see rt freed under it, because gs_runtime_stop refuses to run on
** a worker (GS_ECONTEXT) and only returns once no Lua process is left (a
** worker inside a call is running one), and gs_runtime_close joins the
** workers before it frees anything. It still reads `stopped`, so calls
** are turned away the same on every thread. A thread is a worker of rt for
** its whole life, so enter and leave agree on whether it counted.
** enter_on/leave_on take own_worker(rt), for a caller that has it. */
static int enter_on(gs_runtime *rt, gsi_worker *w) {
  if (w != NULL) {
    if (atomic_load_explicit(&rt->stopped, memory_order_relaxed))
      return fail(GS_ECLOSED, "the runtime is stopped");
    return 0;
  }
  atomic_fetch_add(&rt->inflight, 1);
  if (atomic_load(&rt->stopped)) {
    atomic_fetch_sub(&rt->inflight, 1);
    return fail(GS_ECLOSED, "the runtime is stopped");
  }
  return 0;
}

static int leave_on(gs_runtime *rt, gsi_worker *w, int rc) {
  if (w == NULL) atomic_fetch_sub(&rt->inflight, 1);
  return rc;
}

int enter(gs_runtime *rt) {
  if (rt == NULL) return fail(GS_EINVAL, "no runtime");
  return enter_on(rt, own_worker(rt));
}

int leave(gs_runtime *rt, int rc) { return leave_on(rt, own_worker(rt), rc); }

/* A foreign process ended by an exit signal inside a function that has no
** place for its reason: keep the reason for gs_killed_reason. */
static void keep_killed(gsi_msg *killed) {
  gsi_scratch *sc = gsi_scratch_get();
  gsi_msg_free(sc->killed);
  sc->killed = killed;
}

gs_msg *gs_killed_reason(void) {
  gsi_scratch *sc = gsi_scratch_get();
  gsi_msg *m = sc->killed;
  gs_msg *r;
  if (m == NULL) return NULL;
  sc->killed = NULL;
  r = msg_from_bytes(GSI_MSG_DATA(m), m->len);
  gsi_msg_free(m);
  return r;
}

gsi_proc *gsi_api_foreign(gs_runtime *rt) { return fg_self(rt); }

/* The calling thread's process, checked for an exit signal that killed
** it. GS_EKILLED: it was ended here; its reason is in *killed (a message
** the caller frees). */
static int self_of(gs_runtime *rt, gsi_proc **out, gsi_msg **killed);

static int end_killed(gs_runtime *rt, gsi_proc *p, gsi_msg **killed) {
  int normal;
  *killed = gsi_gen_end_killed(p, &normal); /* as the Lua face's raise_exit */
  pthread_setspecific(rt->key, NULL);
  return fail(GS_EKILLED, "this thread's process was killed by an exit signal");
}

static int self_of(gs_runtime *rt, gsi_proc **out, gsi_msg **killed) {
  gsi_proc *p;
  *killed = NULL;
  if (own_worker(rt))
    return fail(GS_ECONTEXT, "this call waits, which a worker thread must not "
                             "do: use the Lua API inside a server");
  if ((p = fg_self(rt)) == NULL)
    return fail(GS_ELIMIT, "cannot create this thread's process (process limit)");
  if (atomic_load_explicit(&p->sigpend, memory_order_relaxed)) {
    gsi_drain(p);
    if (p->dying) return end_killed(rt, p, killed);
  }
  *out = p;
  return 0;
}

/* Time-out in ms -> absolute deadline in ns (0: none). */
static int deadline_of(int ms, uint64_t *deadline) {
  if (ms == GS_INFINITY) {
    *deadline = 0;
    return 0;
  }
  if (ms < 0) return fail(GS_EINVAL, "time-out must be >= 0 or GS_INFINITY");
  *deadline = gsi_now_ns() + (uint64_t)ms * 1000000u;
  return 0;
}

/* Wait for the answer to pending ref, blocking the thread
** (gsi_gen_await). 0: *ans taken (the request is forgotten), a reply;
** GS_EEXIT: *ans is the server's DOWN, or its refusal (a request it could
** not take), whose payload is the reason; GS_ETIMEDOUT: still pending;
** GS_EKILLED: p must end (the caller calls end_killed). */
static int await(gsi_proc *p, uint64_t ref, uint64_t deadline, gsi_msg **ans) {
  switch (gsi_gen_await(p, ref, deadline, ans)) {
  case GSI_GEN_REPLY: return 0;
  case GSI_GEN_DOWN:
  case GSI_GEN_REFUSED: return GS_EEXIT;
  case GSI_GEN_TIMEOUT: return GS_ETIMEDOUT;
  case GSI_GEN_DYING: return GS_EKILLED;
  default: return GS_EINVAL; /* cannot be */
  }
}

/* ------------------------------------------------- values in, values out */

/* Where the value to send comes from. */
typedef struct src {
  lua_State *L;          /* the top of L (consumed) */
  const gs_msg *msg;     /* or this */
  const char *s;         /* or this string */
  size_t len;
  int nil;               /* or nil */
} src;

/* Encode the value into b (a whole message, header included). On
** GS_EENCODE gs_errmsg names the bad part. Consumes the Lua value. */
static int encode_src_to(gs_runtime *rt, const src *v, const char *what, gsi_buf *b,
                         uint64_t to) {
  b->len = 0;
  if (v->L != NULL) {
    int rc, top = lua_gettop(v->L);
    /* gsi_encode makes its own room on the stack; it pushes an error
    ** message unless even that room was missing. A function for a
    ** sandboxed process is refused here too (DESIGN §5). */
    rc = gsi_encode(v->L, -1, what, gsi_rt_limits(rt->core), b);
    if (rc == 0 && to != 0)
      rc = gsi_check_code_to(v->L, top, what, rt->core, to, b);
    if (rc != 0) {
      if (lua_gettop(v->L) == top) {
        lua_pop(v->L, 1);
        return fail(GS_ENOMEM, "Lua stack overflow");
      }
      rc = fail(GS_EENCODE, "%s", lua_type(v->L, -1) == LUA_TSTRING
                                      ? lua_tostring(v->L, -1) : "cannot encode the value");
      lua_pop(v->L, 2); /* the message, the value */
      return rc;
    }
    lua_pop(v->L, 1);
    return 0;
  }
  if (v->msg != NULL) {
    int maxd = gsi_rt_limits(rt->core)->max_depth > 0 ? gsi_rt_limits(rt->core)->max_depth : 200;
    if (!gs_msg_complete(v->msg))
      return fail(GS_EINVAL, "%s: the message is not a whole value", what);
    if (v->msg->maxdepth > maxd)
      return fail(GS_EENCODE, "%s: too deep (more than %d levels)", what, maxd);
    if (gsi_wire_bytes(b, v->msg->b.data, v->msg->b.len)) return fail(GS_ENOMEM, "out of memory");
  } else if (v->nil) {
    if (gsi_wire_byte(b, GSI_WIRE_MAGIC) || gsi_wire_byte(b, GSI_T_NIL))
      return fail(GS_ENOMEM, "out of memory");
  } else {
    if (v->s == NULL && v->len > 0) return fail(GS_EINVAL, "%s: NULL string", what);
    if (gsi_wire_byte(b, GSI_WIRE_MAGIC) || gsi_wire_str(b, v->s ? v->s : "", v->len))
      return fail(GS_ENOMEM, "out of memory");
  }
  /* the codec checks this for Lua values; the receiver would refuse it */
  {
    size_t maxs = gsi_rt_limits(rt->core)->max_size > 0 ? gsi_rt_limits(rt->core)->max_size : (size_t)64 << 20;
    if (b->len > maxs)
      return fail(GS_EENCODE, "%s: too large (more than %zu bytes)", what, maxs);
  }
  return 0;
}

static int encode_src(gs_runtime *rt, const src *v, const char *what, gsi_buf *b) {
  return encode_src_to(rt, v, what, b, 0);
}

/* Where a received value (reply, reason) goes. */
typedef struct sink {
  lua_State *L;   /* pushed onto L (exactly one value) */
  gs_msg **msg;   /* or a new message */
  char **str;     /* or a string */
  size_t *slen;
} sink;

static void sink_none(const sink *k) {
  if (k->L != NULL) lua_pushnil(k->L);
  if (k->msg != NULL) *k->msg = NULL;
  if (k->str != NULL) *k->str = NULL;
  if (k->slen != NULL) *k->slen = 0;
}

/* Put a received value (data, len: a whole message; len 0 = nil) into k.
** as_reason: a string sink gets the reason's text. Returns 0, or an error
** (k then holds nil). */
static int sink_put(gs_runtime *rt, const sink *k, const unsigned char *data,
                    size_t len, int as_reason) {
  if (k->L != NULL) {
    lua_State *L = k->L;
    if (!lua_checkstack(L, 4)) return fail(GS_ENOMEM, "Lua stack overflow");
    if (len == 0) {
      lua_pushnil(L);
      return 0;
    }
    if (gsi_decode(L, data, len, gsi_rt_limits(rt->core)) != 0) {
      int rc = fail(GS_EDECODE, "%s", lua_type(L, -1) == LUA_TSTRING
                                          ? lua_tostring(L, -1) : "cannot decode");
      lua_pop(L, 1);
      lua_pushnil(L);
      return rc;
    }
    return 0;
  }
  if (k->msg != NULL) {
    if ((*k->msg = msg_from_bytes(data, len)) == NULL) return fail(GS_ENOMEM, "out of memory");
    return 0;
  }
  if (k->str != NULL) {
    size_t n = 0;
    int rc;
    if (as_reason) {
      *k->str = reason_text(data, len, &n);
      rc = *k->str != NULL ? 0 : fail(GS_ENOMEM, "out of memory");
    } else {
      rc = value_string(data, len, k->str, &n);
    }
    if (k->slen != NULL) *k->slen = n;
    return rc;
  }
  return 0;
}

/* An error that carries a reason: put it into k, keep code (unless the
** reason itself cannot be delivered: then that error). */
static int sink_reason(gs_runtime *rt, const sink *k, gsi_msg *m, int code) {
  char msg[256];
  int rc;
  snprintf(msg, sizeof msg, "%s", gs_errmsg());
  rc = sink_put(rt, k, m ? GSI_MSG_DATA(m) : NULL, m ? m->len : 0, 1);
  if (rc == 0 || rc == GS_ETYPE) {
    char *text = m ? reason_text(GSI_MSG_DATA(m), m->len, NULL) : NULL;
    fail(code, "%s: %s", msg[0] ? msg : gs_strerror(code), text ? text : "?");
    free(text);
    rc = code;
  }
  gsi_msg_free(m);
  return rc;
}

/* ------------------------------------------------------------ requests */

/* Send a request (GSI_GEN_CALL or _SYSTEM) to server under a new pending
** ref, monitoring it (gsi_gen_request). */
static int request(gsi_proc *self, gs_pid server, int kind, const gsi_buf *b,
                   uint64_t *ref) {
  int failed;
  if (server == 0) return fail(GS_ENOPROC, "no process (pid 0)");
  if (server == gsi_proc_pid(self))
    return fail(GS_ECALLSELF, "the calling thread's own pid");
  if (gsi_gen_request(self, server, kind, b->data, b->len, 0, &failed, ref) != GSI_OK)
    return fail(GS_ENOMEM, "out of memory");
  switch (failed) {
  case GSI_OK: return 0;
  case GSI_ENOPROC: return fail(GS_ENOPROC, "no such process");
  default: return fail(GS_EFULL, "the server's mailbox is full");
  }
}

/* Request and wait: 0 with the reply in *ans; GS_EEXIT with the DOWN's
** reason in *ans; GS_ETIMEDOUT (abandoned); GS_EKILLED (reason in *ans). */
static int request_wait(gs_runtime *rt, gsi_proc *self, gs_pid server, int kind,
                        const gsi_buf *b, uint64_t deadline, gsi_msg **ans) {
  uint64_t ref = 0;
  int rc = request(self, server, kind, b, &ref);
  *ans = NULL;
  if (rc != 0) return rc;
  rc = await(self, ref, deadline, ans);
  if (rc == GS_ETIMEDOUT) {
    gsi_gen_abandon(self, ref); /* its late answer is dropped */
    return fail(GS_ETIMEDOUT, "no answer in time");
  }
  if (rc == GS_EKILLED) return end_killed(rt, self, ans);
  if (rc == GS_EEXIT) return fail(GS_EEXIT, "the server exited");
  if (rc != 0) return fail(rc, "lost the request");
  return 0;
}

/* ---------------------------------------------------------------- call */

static int do_call(gs_runtime *rt, gs_pid server, const src *v, const sink *k,
                   int timeout_ms) {
  gsi_proc *self;
  gsi_msg *ans;
  gsi_buf b;
  uint64_t deadline = 0;
  int rc;
  if ((rc = deadline_of(timeout_ms, &deadline)) != 0 || (rc = enter(rt)) != 0) {
    if (v->L != NULL) lua_pop(v->L, 1);
    sink_none(k);
    return rc;
  }
  gsi_buf_init(&b);
  rc = encode_src_to(rt, v, "request", &b, server);
  if (rc == 0) rc = self_of(rt, &self, &ans);
  if (rc == 0) rc = request_wait(rt, self, server, GSI_GEN_CALL, &b, deadline, &ans);
  gsi_buf_free(&b);
  if (rc == 0) {
    rc = sink_put(rt, k, GSI_MSG_DATA(ans), ans->len, 0);
    gsi_msg_free(ans);
    if (rc == 0) ok();
  } else if (rc == GS_EEXIT || rc == GS_EKILLED) {
    rc = sink_reason(rt, k, ans, rc);
  } else {
    sink_none(k);
  }
  return leave(rt, rc);
}

static int check_lua_arg(lua_State *L, const char *fn) {
  if (L == NULL || lua_gettop(L) < 1)
    return fail(GS_EINVAL, "%s: no value at the top of L", fn);
  return 0;
}

int gs_call(gs_runtime *rt, gs_pid server, lua_State *L, int timeout_ms) {
  src v = {L, NULL, NULL, 0, 0};
  sink k = {L, NULL, NULL, NULL};
  int rc = check_lua_arg(L, "gs_call");
  return rc ? rc : do_call(rt, server, &v, &k, timeout_ms);
}

int gs_call_msg(gs_runtime *rt, gs_pid server, const gs_msg *req, gs_msg **reply,
                int timeout_ms) {
  src v = {NULL, req, NULL, 0, 0};
  sink k = {NULL, reply, NULL, NULL};
  if (reply != NULL) *reply = NULL;
  if (req == NULL || reply == NULL) return fail(GS_EINVAL, "gs_call_msg: NULL argument");
  return do_call(rt, server, &v, &k, timeout_ms);
}

int gs_call_str(gs_runtime *rt, gs_pid server, const char *req, size_t len,
                char **reply, size_t *rlen, int timeout_ms) {
  src v = {NULL, NULL, req, len, 0};
  sink k = {NULL, NULL, reply, rlen};
  if (reply != NULL) *reply = NULL;
  if (rlen != NULL) *rlen = 0;
  if (reply == NULL || (req == NULL && len > 0))
    return fail(GS_EINVAL, "gs_call_str: NULL argument");
  return do_call(rt, server, &v, &k, timeout_ms);
}

/* ----------------------------------------------------------- cast, send */

/* The hot path of a cast from a server (the Lua binding's cast and send
** come here): the value is encoded into the thread's scratch buffer, so
** the message node is the only allocation. */
static int do_send(gs_runtime *rt, gs_pid pid, int kind, const src *v) {
  gsi_proc *self;
  gsi_msg *m, *killed = NULL;
  gsi_worker *w = rt != NULL ? own_worker(rt) : NULL;
  gsi_buf *b;
  uint64_t from = 0;
  int rc = rt != NULL ? enter_on(rt, w) : fail(GS_EINVAL, "no runtime");
  if (rc != 0) {
    if (v->L != NULL) lua_pop(v->L, 1);
    return rc;
  }
  b = w != NULL ? &w->scratch->buf : &gsi_scratch_get()->buf; /* the same */
  rc = encode_src_to(rt, v, "message", b, pid);
  if (rc == 0 && w != NULL) {
    /* from a C function of a server: the sender is that process */
    gsi_proc *cur = atomic_load(&w->cur);
    from = cur != NULL ? gsi_proc_pid(cur) : 0;
  } else if (rc == 0 && (rc = self_of(rt, &self, &killed)) == 0) {
    from = gsi_proc_pid(self);
  }
  if (killed != NULL) keep_killed(killed);
  if (rc == 0 && pid == 0) rc = fail(GS_ENOPROC, "no process (pid 0)");
  if (rc == 0) {
    if ((m = gsi_msg_new(kind, from, 0, b->data, b->len)) == NULL) {
      rc = fail(GS_ENOMEM, "out of memory");
    } else {
      int d = gsi_deliver(rt->core, pid, m, 0);
      if (d == GSI_ENOPROC) rc = fail(GS_ENOPROC, "no such process: the message was dropped");
      else if (d == GSI_EFULL) rc = fail(GS_EFULL, "the mailbox is full");
      else rc = GS_OK; /* gs_errmsg keeps the last failure's text: one
                          thread-local write less on the hot path */
    }
  }
  if (b->cap > (1u << 20)) gsi_buf_free(b); /* do not keep a huge scratch */
  return leave_on(rt, w, rc);
}

int gs_cast(gs_runtime *rt, gs_pid server, lua_State *L) {
  src v = {L, NULL, NULL, 0, 0};
  int rc = check_lua_arg(L, "gs_cast");
  return rc ? rc : do_send(rt, server, GSI_M_CAST, &v);
}

int gs_cast_msg(gs_runtime *rt, gs_pid server, const gs_msg *msg) {
  src v = {NULL, msg, NULL, 0, 0};
  if (msg == NULL) return fail(GS_EINVAL, "gs_cast_msg: NULL message");
  return do_send(rt, server, GSI_M_CAST, &v);
}

int gs_cast_str(gs_runtime *rt, gs_pid server, const char *s, size_t len) {
  src v = {NULL, NULL, s, len, 0};
  if (s == NULL && len > 0) return fail(GS_EINVAL, "gs_cast_str: NULL string");
  return do_send(rt, server, GSI_M_CAST, &v);
}

int gs_send(gs_runtime *rt, gs_pid pid, lua_State *L) {
  src v = {L, NULL, NULL, 0, 0};
  int rc = check_lua_arg(L, "gs_send");
  return rc ? rc : do_send(rt, pid, GSI_M_USER, &v);
}

int gs_send_msg(gs_runtime *rt, gs_pid pid, const gs_msg *msg) {
  src v = {NULL, msg, NULL, 0, 0};
  if (msg == NULL) return fail(GS_EINVAL, "gs_send_msg: NULL message");
  return do_send(rt, pid, GSI_M_USER, &v);
}

int gs_send_str(gs_runtime *rt, gs_pid pid, const char *s, size_t len) {
  src v = {NULL, NULL, s, len, 0};
  if (s == NULL && len > 0) return fail(GS_EINVAL, "gs_send_str: NULL string");
  return do_send(rt, pid, GSI_M_USER, &v);
}

/* ---------------------------------------------------------------- stop */

/* Is the message data (a whole message) the string s? */
static int is_string(const unsigned char *data, size_t len, const char *s) {
  rd r = {data + 1, data + len, 0};
  gs_item it;
  return len > 0 && rd_item(&r, &it, 0) == 0 && it.type == GS_TSTRING &&
         it.len == strlen(s) && memcmp(it.string, s, it.len) == 0;
}

int gs_stop(gs_runtime *rt, gs_pid server, const char *reason, int timeout_ms) {
  gsi_proc *self;
  gsi_msg *ans = NULL;
  gsi_buf r, b;
  uint64_t deadline = 0;
  int rc;
  if (reason == NULL) reason = "normal";
  if ((rc = deadline_of(timeout_ms, &deadline)) != 0 || (rc = enter(rt)) != 0) return rc;
  gsi_buf_init(&r);
  gsi_buf_init(&b);
  /* the stop request, as genserver.stop sends it (gen.c) */
  if (gsi_wire_msg_cstr(&r, reason) || gsi_gen_stop_encode(&b, r.data, r.len) != GSI_OK)
    rc = fail(GS_ENOMEM, "out of memory");
  gsi_buf_free(&r);
  if (rc == 0) rc = self_of(rt, &self, &ans);
  if (rc == 0) rc = request_wait(rt, self, server, GSI_GEN_SYSTEM, &b, deadline, &ans);
  gsi_buf_free(&b);
  if (rc == GS_EEXIT && is_string(GSI_MSG_DATA(ans), ans->len, reason)) {
    rc = ok(); /* it ended with the reason asked for */
  } else if (rc == GS_EEXIT || rc == GS_EKILLED) {
    char *text = ans ? reason_text(GSI_MSG_DATA(ans), ans->len, NULL) : NULL;
    fail(rc, "%s: %s", rc == GS_EEXIT ? "the server exited with another reason"
                                      : "this thread was killed", text ? text : "?");
    free(text);
  } else if (rc == 0) {
    rc = ok(); /* it answered (a server that replies to its stop request) */
  }
  gsi_msg_free(ans);
  return leave(rt, rc);
}

/* --------------------------------------------------------------- start */

static int valid_name(const char *name, const char *what) {
  size_t n;
  if (name == NULL) return fail(GS_EINVAL, "%s: NULL name", what);
  n = strlen(name);
  if (n == 0 || n > NAME_MAX_LEN)
    return fail(GS_EINVAL, "%s: a name is 1 to %d bytes", what, NAME_MAX_LEN);
  return 0;
}

/* Spawn the server process (gsi_gen_spawn) with a pending request `ref`
** on it (its ack answers, or its DOWN). */
static int spawn_server(gsi_proc *self, const char *module,
                        const gsi_buf *sm, const gs_start_opts *o, uint64_t ref,
                        gs_pid *pid) {
  gsi_spawn_spec spec = {0};
  spec.msg = sm->data;
  spec.len = sm->len;
  spec.module = module;
  spec.start_ref = ref;
  spec.mailbox_limit = o->mailbox_limit;
  spec.overflow = GSI_GEN_OVF_DROP + (o->overflow - GS_OVERFLOW_DROP);
  spec.max_heap = o->max_heap;
  spec.sandbox = o->sandbox != 0;
  switch (gsi_gen_spawn(self, &spec, pid, NULL)) {
  case GSI_OK: return 0;
  case GSI_ECLOSED: return fail(GS_ELIMIT, "the runtime's threads cannot start");
  case GSI_ELIMIT: return fail(GS_ELIMIT, "cannot create a process: process limit reached");
  default: return fail(GS_ENOMEM, "out of memory");
  }
}

/* init took too long: kill the half-started server and wait for its end,
** so that its name is free when gs_start returns (as genserver.start). */
static int kill_wait(gs_runtime *rt, gsi_proc *self, gs_pid pid) {
  uint64_t ref = gsi_new_ref(rt->core);
  gsi_msg *ans = NULL;
  int rc = 0;
  if (gsi_pending_add(self, ref, pid) != 0) return GS_ENOMEM;
  if ((rc = gsi_monitor(self, pid, ref)) != GSI_OK) {
    gsi_pending_remove(self, ref, NULL);
    if (rc == GSI_ENOPROC) return 0; /* gone already */
    /* no memory to watch it: still kill it, but its name may not be free
    ** yet when gs_start returns */
    gsi_exit_signal(rt->core, gsi_proc_pid(self), pid, NULL, 0, GSI_XF_KILL);
    return GS_ENOMEM;
  }
  gsi_exit_signal(rt->core, gsi_proc_pid(self), pid, NULL, 0, GSI_XF_KILL);
  rc = await(self, ref, 0, &ans);
  gsi_msg_free(ans);
  return rc == GS_EEXIT ? 0 : rc;
}

static int do_start(gs_runtime *rt, const char *module, const src *arg,
                    const gs_start_opts *opts, gs_pid *pid, const sink *k) {
  static const gs_start_opts defaults = {0};
  gsi_proc *self;
  gsi_msg *ans = NULL;
  gsi_buf ab, sm;
  uint64_t deadline = 0, ref;
  int rc;
  const gs_start_opts *o = opts ? opts : &defaults;
  *pid = 0;
  if (module == NULL || *module == '\0') rc = fail(GS_EINVAL, "gs_start: no module name");
  else if (o->name != NULL && (rc = valid_name(o->name, "gs_start")) != 0) {}
  else if (o->overflow < GS_OVERFLOW_DROP || o->overflow > GS_OVERFLOW_KILL)
    rc = fail(GS_EINVAL, "gs_start: bad overflow policy");
  else if (o->hibernate_after_ms < 0) rc = fail(GS_EINVAL, "gs_start: hibernate_after_ms < 0");
  else rc = deadline_of(o->timeout_ms == 0 ? 5000 : o->timeout_ms, &deadline);
  if (rc == 0) rc = enter(rt);
  if (rc != 0) {
    if (arg->L != NULL) lua_pop(arg->L, 1);
    sink_none(k);
    return rc;
  }
  gsi_buf_init(&ab);
  gsi_buf_init(&sm);
  ref = gsi_new_ref(rt->core);
  rc = encode_src(rt, arg, "init argument", &ab);
  if (rc == 0) rc = self_of(rt, &self, &ans);
  if (rc == 0) {
    gsi_serve_opts so = {o->name, o->hibernate_after_ms, o->trap_exit};
    switch (gsi_gen_serve_msg(&sm, rt->path, rt->cpath, module, &ab, &so)) {
    case GSI_OK: break;
    case GSI_EINVAL: rc = fail(GS_EINVAL, "init argument: malformed message"); break;
    default: rc = fail(GS_ENOMEM, "out of memory");
    }
  }
  if (rc == 0) rc = spawn_server(self, module, &sm, o, ref, pid);
  gsi_buf_free(&sm);
  if (rc == 0) {
    rc = await(self, ref, deadline, &ans);
    if (rc == GS_ETIMEDOUT) {
      int krc = kill_wait(rt, self, *pid);
      gsi_gen_abandon(self, ref);
      if (krc == GS_EKILLED) {
        rc = end_killed(rt, self, &ans);
      } else {
        rc = fail(GS_ETIMEDOUT, "init of %s took longer than %d ms", module,
                  o->timeout_ms == 0 ? 5000 : o->timeout_ms);
      }
    } else if (rc == GS_EKILLED) {
      rc = end_killed(rt, self, &ans);
    } else if (rc == GS_EEXIT) {
      rc = fail(GS_EEXIT, "the server exited during init");
    } else if (rc == 0) {
      int tag;
      switch (gsi_gen_ack_decode(GSI_MSG_DATA(ans), ans->len, &tag, &ab)) {
      case GSI_OK: break;
      case GSI_ENOMEM: rc = fail(GS_ENOMEM, "out of memory"); break;
      default: rc = fail(GS_EDECODE, "unexpected answer from the server's start");
      }
      if (rc == 0 && tag == GSI_ACK_IGNORE) {
        rc = fail(GS_EIGNORE, "init returned \"ignore\"");
      } else if (rc == 0 && tag == GSI_ACK_ERROR) {
        uint64_t holder;
        gsi_msg *reason = gsi_msg_new(GSI_M_DOWN, 0, 0, ab.data, ab.len);
        if (reason == NULL) {
          rc = fail(GS_ENOMEM, "out of memory");
        } else if (gsi_gen_already_started(ab.data, ab.len, &holder)) {
          *pid = holder;
          rc = fail(GS_EALREADY, "the name %s is taken", o->name ? o->name : "?");
        } else {
          rc = fail(GS_EEXIT, "init failed");
        }
        gsi_msg_free(ans);
        ans = reason;
      }
    }
  }
  gsi_buf_free(&ab);
  if (rc == 0) {
    gsi_msg_free(ans);
    if (k->L != NULL) {
      /* the pid, pushed as a tiny message so nothing here can raise */
      unsigned char t[12];
      t[0] = GSI_WIRE_MAGIC;
      t[1] = GSI_T_PID;
      rc = sink_put(rt, k, t, 2 + gsi_putvarint(t + 2, *pid), 0);
    } else {
      sink_none(k); /* no reason */
    }
    if (rc == 0) ok();
  } else if (rc == GS_EEXIT || rc == GS_EKILLED || rc == GS_EALREADY) {
    if (rc != GS_EALREADY) *pid = 0;
    rc = sink_reason(rt, k, ans, rc);
  } else {
    if (rc != GS_EALREADY) *pid = 0;
    gsi_msg_free(ans);
    sink_none(k);
  }
  return leave(rt, rc);
}

int gs_start(gs_runtime *rt, const char *module, lua_State *L,
             const gs_start_opts *opts, gs_pid *pid) {
  src v = {L, NULL, NULL, 0, L == NULL};
  sink k = {L, NULL, NULL, NULL};
  gs_pid dummy;
  if (L != NULL && lua_gettop(L) < 1)
    return fail(GS_EINVAL, "gs_start: no init argument at the top of L");
  return do_start(rt, module, &v, opts, pid ? pid : &dummy, &k);
}

int gs_start_msg(gs_runtime *rt, const char *module, const gs_msg *arg,
                 const gs_start_opts *opts, gs_pid *pid, gs_msg **reason) {
  src v = {NULL, arg, NULL, 0, arg == NULL};
  gs_msg *dummy_reason = NULL;
  sink k = {NULL, reason ? reason : &dummy_reason, NULL, NULL};
  gs_pid dummy;
  int rc = do_start(rt, module, &v, opts, pid ? pid : &dummy, &k);
  gs_msg_free(dummy_reason);
  return rc;
}

/* ------------------------------------------------------- small queries */

int gs_whereis(gs_runtime *rt, const char *name, gs_pid *pid) {
  int rc;
  if (pid != NULL) *pid = 0;
  if (pid == NULL) return fail(GS_EINVAL, "gs_whereis: NULL pid");
  if ((rc = valid_name(name, "gs_whereis")) != 0 || (rc = enter(rt)) != 0) return rc;
  *pid = gsi_reg_whereis(rt->core, name);
  return leave(rt, *pid ? ok() : fail(GS_ENOPROC, "no process is registered as '%s'", name));
}

int gs_self(gs_runtime *rt, gs_pid *pid) {
  gsi_proc *self;
  gsi_msg *killed = NULL;
  gsi_worker *w;
  int rc;
  if (pid == NULL) return fail(GS_EINVAL, "gs_self: NULL pid");
  *pid = 0;
  if ((rc = enter(rt)) != 0) return rc;
  if ((w = own_worker(rt)) != NULL) {
    gsi_proc *cur = atomic_load(&w->cur);
    if (cur != NULL) *pid = gsi_proc_pid(cur);
    return leave(rt, cur ? ok() : fail(GS_ECONTEXT, "no process runs here"));
  }
  rc = self_of(rt, &self, &killed);
  if (killed != NULL) keep_killed(killed);
  if (rc == 0) *pid = gsi_proc_pid(self);
  return leave(rt, rc ? rc : ok());
}
