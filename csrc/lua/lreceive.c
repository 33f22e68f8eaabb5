/*
** lreceive.c - genserver.core's receive, next, sleep, send and cast.
**
** The blocking primitives yield the body (the state's main thread) back to
** its worker, marked as waiting (gsi_bif_wait_more), with a continuation
** that looks again; on a foreign thread they block the thread instead.
** Each look is one step of gen/bif.h on the process (drain, take, end the
** wait), so the gen_server loop's next costs a message what it did when
** the binding read the core's fields itself. Errors are raised only when
** no lock is held and every buffer has an owner.
*/
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lauxlib.h"

#include "gen/gen.h"
#include "lbind.h"

/* -------------------------------------------------------------- waiting */

/* Inside a receive match function, receiving or waiting would free the
** saved messages the outer receive is walking (and reset its wait). */
static int no_receive(lua_State *L) {
  return luaL_error(L, "genserver: cannot receive or wait inside a receive match function");
}

void gsi_lua_begin_wait(lua_State *L, gsi_proc *p, uint64_t deadline) {
  if (gsi_bif_begin_wait(p, deadline) != 0) no_receive(L);
}

int gsi_lua_cannot_wait(lua_State *L, int why) {
  if (why == GSI_ECONTEXT)
    return luaL_error(L, "genserver: cannot wait here (inside a nested coroutine "
                         "or across a C call boundary)");
  return luaL_error(L, "genserver: out of memory");
}

/* ------------------------------------------------------------- receive */

/* Push m (then free it) or raise the decoding error. */
static void push_consume(lua_State *L, gsi_proc *p, gsi_msg *m) {
  gsi_msgv v;
  int rc;
  gsi_bif_msgv(m, &v);
  rc = gsi_lua_push_msg(L, &v);
  gsi_bif_consume(p, m);
  if (rc != 0) {
    lua_pushfstring(L, "genserver: cannot receive a message: %s", lua_tostring(L, -1));
    lua_error(L);
  }
}

/* The first saved message the match function at 1 accepts: pushed and
** consumed (1), or none (0). in_match: while a match function runs,
** nothing may take or free saved messages (see no_receive), so m stays
** valid. */
static int take_match(lua_State *L, gsi_proc *p) {
  for (gsi_msg *m = gsi_bif_saved(p); m != NULL; m = gsi_bif_saved_next(m)) {
    gsi_msgv v;
    int st, ok;
    gsi_bif_msgv(m, &v);
    lua_pushvalue(L, 1);
    gsi_bif_match(p, 1);
    if (gsi_lua_push_msg(L, &v) != 0) {
      gsi_bif_match(p, -1);
      gsi_bif_consume(p, m);
      return lua_error(L);
    }
    st = lua_pcall(L, 1, 1, 0);
    gsi_bif_match(p, -1);
    if (st != LUA_OK) return lua_error(L);
    ok = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (ok) {
      gsi_bif_end_wait(p);
      push_consume(L, p, m);
      return 1;
    }
  }
  return 0;
}

/* receive([match], [timeout]) -> msg | nil */
static int receive_k(lua_State *L, int status, lua_KContext ctx) {
  gsi_proc *p = gsi_lua_self(L);
  int has_match = (int)ctx;
  (void)status;
  for (;;) {
    gsi_msg *m;
    if (gsi_bif_drain(p, has_match)) return gsi_lua_die(L, p);
    if (!has_match) {
      if ((m = gsi_bif_saved(p)) != NULL) {
        gsi_bif_end_wait(p);
        push_consume(L, p, m);
        return 1;
      }
    } else if (take_match(L, p)) {
      return 1;
    }
    if (gsi_bif_timed_out(p)) {
      gsi_bif_end_wait(p);
      lua_pushnil(L);
      return 1;
    }
    if (gsi_lua_wait_more(L, p)) return lua_yieldk(L, 0, ctx, receive_k);
  }
}

static int l_receive(lua_State *L) {
  gsi_proc *p = gsi_lua_self(L);
  int has_match = lua_type(L, 1) == LUA_TFUNCTION;
  gsi_lua_begin_wait(L, p, gsi_lua_opt_deadline(L, has_match ? 2 : 1, HUGE_VAL));
  lua_settop(L, has_match ? 1 : 0);
  if (gsi_bif_over_budget(p, L)) return lua_yieldk(L, 0, has_match, receive_k);
  return receive_k(L, LUA_OK, has_match);
}

/* ---------------------------------------------------------------- next */

/* The loop could not decode m (rc != 0, its error on top): one undecodable
** message (e.g. functions sent to a sandbox) must not kill the server: a
** call is refused at its caller, anything else is logged and dropped.
** Out of memory is no bad request: it raises (the server crashes). */
static void drop_undecodable(lua_State *L, gsi_proc *p, gsi_msg *m, const gsi_msgv *v) {
  const char *why = lua_tostring(L, -1);
  uint64_t me = gsi_bif_pid(p);
  if (why != NULL && strcmp(why, "not enough memory") == 0) {
    gsi_bif_consume(p, m);
    lua_error(L);
  }
  if (v->kind == GSI_M_CALL || v->kind == GSI_M_SYSTEM) {
    lua_pushfstring(L, "undecodable request: %s", why);
    gsi_gen_refuse(gsi_bif_rt(p), me, v->from, v->ref, lua_tostring(L, -1));
  } else {
    fprintf(stderr, "genserver <0.%u.%u>: dropped a message it cannot receive: %s\n",
            GSI_PID_INDEX(me), GSI_PID_GEN(me), why);
  }
  gsi_bif_consume(p, m);
}

/* A message next took: in a process's own state plain data is decoded
** without a protected call (gsi_lua_decode_next). */
static int decode(lua_State *L, const gsi_msgv *v) {
  if (v->lim != NULL && v->len != 0) return gsi_decode_raw(L, v->data, v->len, v->lim);
  return gsi_lua_decode_next(L, v);
}

/* The gen_server loop's receive, one take (see lbind.h): pushes kind, a
** [, b] and returns 2 or 3 (K_CALL, request, from | K_CAST, msg |
** K_INFO, msg [, true] | K_SYSTEM, req, from), or returns GSI_LNEXT_*. */
int gsi_lua_next_take(lua_State *L, gsi_proc *p, int system_only) {
  int top = lua_gettop(L);
  for (;;) {
    gsi_msg *m;
    gsi_msgv v;
    int n = 2, rc;
    switch (gsi_bif_next(p, system_only, &m, &v)) {
    case GSI_NEXT_DYING: return GSI_LNEXT_DIE;
    case GSI_NEXT_TIMEOUT: return GSI_LNEXT_TIMEOUT;
    case GSI_NEXT_EMPTY:
      if (gsi_lua_wait_more(L, p)) return GSI_LNEXT_WAIT;
      continue;
    default: break;
    }
    switch (v.kind) {
    case GSI_M_CALL:
    case GSI_M_SYSTEM:
      lua_pushinteger(L, v.kind == GSI_M_CALL ? GSI_K_CALL : GSI_K_SYSTEM);
      if ((rc = decode(L, &v)) == 0) gsi_lua_push_from(L, v.from, v.ref), n = 3;
      break;
    case GSI_M_CAST:
      lua_pushinteger(L, GSI_K_CAST);
      rc = decode(L, &v);
      break;
    default:
      lua_pushinteger(L, GSI_K_INFO);
      rc = gsi_lua_push_msg(L, &v);
      /* an exit signal from no process: the runtime is shutting down
      ** (gsi_rt_stop_all); the loop then terminates, see dispatch */
      if (rc == 0 && v.kind == GSI_M_EXIT && v.from == 0) lua_pushboolean(L, 1), n = 3;
    }
    if (rc != 0) {
      drop_undecodable(L, p, m, &v);
      lua_settop(L, top);
      continue;
    }
    /* a call's from table stands for (from, ref) in gsi_bif_reply_from */
    gsi_bif_took(p, m, n == 3 ? lua_topointer(L, -1) : NULL);
    return n;
  }
}

/* The gen_server loop (lserver.c) is written in continuation style: when
** a take finds a message without yielding, the loop goes on by calling
** its continuation, and so on for each message of the turn. An -O2 build
** turns those calls into jumps, but an -O0/-O1 build (the sanitizer
** builds among them) nests a few C frames per message: a server that
** never waits (a flood in its mailbox, an idle run queue, a callback the
** watchdog cannot preempt) went thousands of frames deep, enough for
** ThreadSanitizer's 65,536-frame limit and near a thread's C stack. Only
** a yield unwinds them, so the loop yields at least every NEXT_NEST_MAX
** messages, even when nobody waits for a worker. */
#define NEXT_NEST_MAX 64

int gsi_lua_next_begin(lua_State *L, gsi_proc *p, int idx) {
  /* the loop waits without a time-out for most messages: no time needed */
  uint64_t deadline = lua_isnoneornil(L, idx) ? 0 : gsi_lua_opt_deadline(L, idx, HUGE_VAL);
  int st = gsi_bif_next_begin(p, L, deadline, NEXT_NEST_MAX);
  if (st < 0) return no_receive(L);
  return st;
}

/* next([timeout [, system_only]]) -> kind, a, b | nothing on time-out:
** the loop's receive as a Lua function (the loop itself takes its
** messages with gsi_lua_next_take, without a Lua call). */
static int next_k(lua_State *L, int status, lua_KContext ctx) {
  gsi_proc *p = gsi_lua_self(L);
  int n = gsi_lua_next_take(L, p, (int)ctx);
  (void)status;
  switch (n) {
  case GSI_LNEXT_DIE: return gsi_lua_die(L, p);
  case GSI_LNEXT_WAIT: return lua_yieldk(L, 0, ctx, next_k);
  case GSI_LNEXT_TIMEOUT: return 0;
  default: return n;
  }
}

static int l_next(lua_State *L) {
  gsi_proc *p = gsi_lua_self(L);
  lua_KContext sysonly = lua_toboolean(L, 2);
  int st = gsi_lua_next_begin(L, p, 1);
  lua_settop(L, 0);
  if (st > 0) return lua_yieldk(L, 0, sysonly, next_k);
  return next_k(L, LUA_OK, sysonly);
}

/* sleep(ms): wait for the time only; messages stay queued. */
static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  gsi_proc *p = gsi_lua_self(L);
  (void)status;
  for (;;) {
    if (gsi_bif_drain(p, 1)) return gsi_lua_die(L, p);
    if (gsi_bif_timed_out(p)) {
      gsi_bif_end_wait(p);
      return 0;
    }
    if (gsi_lua_wait_more(L, p)) return lua_yieldk(L, 0, ctx, sleep_k);
  }
}

static int l_sleep(lua_State *L) {
  gsi_proc *p = gsi_lua_self(L);
  /* sleep("infinity") waits until an exit signal ends the process */
  gsi_lua_begin_wait(L, p, gsi_lua_opt_deadline(L, 1, 0));
  lua_settop(L, 0);
  return sleep_k(L, LUA_OK, 0);
}

/* ---------------------------------------------------------- send, cast */

static int sent_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  lua_pushboolean(L, 1);
  return 1;
}

/* cast and send. From a process's own state, one step of gen/bif.c
** (gsi_bif_send: encode, deliver); from a foreign thread (a host's state,
** the main script), gs_cast / gs_send (the value is at the top; they
** consume it), which keep the runtime from closing under the thread. The
** sender is the calling process either way: gs_* take the thread's
** foreign process, which gsi_lua_foreign_self has just checked. */
static int send_kind(lua_State *L, int kind) {
  int dying, rc;
  gsi_proc *p = gsi_bif_self(L, &dying);
  int own = p != NULL;
  uint64_t pid, me;
  if (!own) p = gsi_lua_foreign_self(L, &dying);
  if (dying) return gsi_lua_die(L, p);
  pid = gsi_lua_resolve(L, 1);
  me = gsi_bif_pid(p);
  luaL_checkany(L, 2);
  if (pid == 0 && kind == GSI_M_USER)
    return luaL_error(L, "genserver.send: no process is registered as '%s'",
                      lua_tostring(L, 1));
  if (lua_gettop(L) != 2) lua_settop(L, 2); /* the value on top */
  /* pid 0 (a cast to a name nobody holds) still encodes the value, so a
  ** value that cannot be sent is refused the same either way */
  if (own) {
    rc = gsi_bif_send(L, p, 2, pid, kind);
  } else {
    gs_runtime *api = gsi_lua_api(L);
    rc = kind == GSI_M_CAST ? gs_cast(api, pid, L) : gs_send(api, pid, L);
    if (rc == GS_EENCODE) lua_pushstring(L, gs_errmsg());
  }
  switch (rc) { /* a gsi_err or a GS_E* code: the same numbers */
  case GS_OK:
  case GS_ENOPROC: /* OTP: a message to a dead process is silently dropped */
    break;
  case GS_EFULL:
    lua_pushboolean(L, 0); /* a bounded mailbox refused it */
    return 1;
  case GS_EENCODE: /* nothing was sent; the codec's message names the path */
    return gsi_lua_raise_encode_error(L);
  case GS_EKILLED: /* a signal came just now: gs_* ended the process */
    return gsi_lua_raise_killed(L, me);
  case GS_ECLOSED:
    return gsi_lua_raise_closed(L);
  default:
    return luaL_error(L, "genserver: out of memory");
  }
  /* a loop that only sends gives the worker up now and then, so its
  ** receivers (and everybody else) get to run */
  if (gsi_bif_sent(p, L)) return lua_yieldk(L, 0, 0, sent_k);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_send(lua_State *L) { return send_kind(L, GSI_M_USER); }
static int l_cast(lua_State *L) { return send_kind(L, GSI_M_CAST); }

const luaL_Reg gsi_lua_receive_funcs[] = {
    {"receive", l_receive}, {"next", l_next}, {"sleep", l_sleep},
    {"send", l_send},       {"cast", l_cast}, {NULL, NULL}};
