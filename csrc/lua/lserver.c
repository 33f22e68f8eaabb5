/*
** lserver.c - the gen_server process body, in C.
**
** `genserver.start` spawns a process whose body is core.serve(module, arg,
** opts); the spawner records itself and its start ref on the process. It
** registers the name, loads the callback module, runs init, acknowledges
** the starter (gsi_ack), then loops: take the next message,
** run the matching callback, check the shape of what it returned, act on
** it. In C because it runs for every message of every server, and because
** C code costs a server's state nothing (a Lua loop cost each state ~15 KB
** of prototypes). Crash reports, the cold path, stay in Lua
** (genserver.server.report), loaded only by a server that crashes.
**
** It uses only the Lua API, genserver.core's own C functions (reply,
** exit, ..., pushed as light functions: no core table in the state),
** the binding's receive called as C (gsi_lua_next_take: no Lua call per
** message) and, for what info() shows of a server (the callback running,
** reductions) and the loop's flags, one gen/bif.h call per step.
** Callbacks run with lua_pcallk and the loop waits with lua_yieldk, both
** with serve_k as continuation, so that callbacks and waits may yield
** the body (the state's main thread). All loop state lives at fixed stack slots,
** and one continuation (serve_k) drives a flat state machine, so a server
** can handle any number of messages without growing the C stack.
*/
#include <stdio.h>
#include <string.h>

#include "lauxlib.h"

#include "gen/bif.h"
#include "lbind.h"

/* fixed stack slots of the body (the state's main thread) */
enum {
  S_MOD = 1,  /* the callback module (table) */
  S_STATE,    /* the server state */
  S_OPTS,     /* start options: a table, or nil when there are none */
  S_ACTION,   /* pending action: nil, ms, "hibernate", { continue = v } */
  S_MSGH,     /* crash handler for callbacks */
  S_KIND,     /* kind of the message being handled (for reports) */
  S_MSG,      /* the message being handled */
  S_MFROM,    /* its from, for calls */
  S_REASON,   /* exit reason once terminating */
  S_REPLYTO,  /* a from to answer after terminate, or nil */
  S_REPLYV,   /* that answer */
  S_MODNAME,  /* module name for logs */
  S_HIB,      /* opts.hibernate_after (ms) or nil, read once */
  S_SYS,      /* sys context (genserver.sys) or nil until the first system
                 message other than stop: suspended flag, debug options */
  S_DBG,      /* the sys debug hook (trace/log/statistics) or nil */
  S_DL,       /* deadline of the idle time-out (ns, a float) while
                 GSI_SF_DEADLINE is set: a system message does not reset it */
  S_BASE = S_DL
};

/* phases of serve_k */
enum {
  P_LOOP = 1,  /* act on the pending action, then wait */
  P_WAIT,      /* take the next message (after a yield: look again) */
  P_WAIT_SYS,  /* as P_WAIT, suspended: system messages only */
  P_WAIT_HIB,  /* as P_WAIT, the hibernate_after wait: a time-out collects */
  P_INIT,      /* init returned */
  P_CALL,      /* handle_call returned */
  P_NOREPLY,   /* handle_cast / handle_info / handle_continue returned */
  P_TERM,      /* terminate returned: reply, report, exit */
  P_SYS,       /* the sys handler (genserver.sys) returned */
  P_DEAD       /* exit() never returns */
};

/* ------------------------------------------------------------ helpers */

/* The process of this state: lserver.c runs in process states only, so
** the core's extra-space contract (gsi_bif_extra_proc) gives it for free. */
static gsi_proc *me(lua_State *L) { return gsi_bif_extra_proc(L); }

/* Hibernation: a full collection, and the freed blocks the state's
** allocator kept go back to malloc. */
static void hibernate(lua_State *L) {
  lua_gc(L, LUA_GCCOLLECT);
  gsi_bif_trim(me(L));
}

/* Push start option k (nil without options). */
static int opt_field(lua_State *L, const char *k) {
  if (lua_type(L, S_OPTS) != LUA_TTABLE) {
    lua_pushnil(L);
    return LUA_TNIL;
  }
  return lua_getfield(L, S_OPTS, k);
}

/* A callback is about to run: count it and name it for info(). */
static void running(lua_State *L, int callback) { gsi_bif_running(me(L), callback); }

/* push one of genserver.core's functions (light: allocates nothing) */
#define core_fn(L, f) lua_pushcfunction(L, gsi_core_##f)

/* The error on top, raised by a callback run under gsi_bif_crash_msgh,
** becomes the crash reason { error = e, traceback } (the first line of a
** string error heads its traceback: a long message, such as a module
** search list, is not carried twice). process.exit(reason) in a callback
** raised an exit error: the reason is its own. error(nil) reads as
** Lua's stand-alone interpreter says it. An error the handler did not see
** (out of memory) stays as it is. */
static void crash_reason(lua_State *L) {
  int e = lua_gettop(L);
  if (gsi_exit_reason(L, e)) {
    lua_replace(L, e);
    return;
  }
  if (!gsi_bif_crash_traceback(L, e)) return;
  if (lua_isnil(L, e)) {
    lua_pushliteral(L, "(error object is a nil value)");
    lua_replace(L, e);
  }
  if (lua_type(L, e) == LUA_TSTRING) {
    const char *msg = lua_tostring(L, e), *nl = strchr(msg, '\n');
    int head = nl != NULL ? (int)(nl - msg) : (int)lua_rawlen(L, e);
    lua_pushlstring(L, msg, (size_t)head); /* e, traceback, head */
    lua_pushliteral(L, "\n");
    lua_pushvalue(L, -3);
    lua_concat(L, 3);
    lua_replace(L, -2); /* e, head .. "\n" .. traceback */
  }
  lua_createtable(L, 0, 2);
  lua_insert(L, e); /* reason, e, traceback */
  lua_setfield(L, e, "traceback");
  lua_setfield(L, e, "error");
}

static int is_str(lua_State *L, int idx, const char *s) {
  return lua_type(L, idx) == LUA_TSTRING && strcmp(lua_tostring(L, idx), s) == 0;
}

/* nil, a number >= 0, "hibernate", "infinity" or { continue = v } */
static int valid_action(lua_State *L, int idx) {
  switch (lua_type(L, idx)) {
  case LUA_TNONE:
  case LUA_TNIL: return 1;
  case LUA_TNUMBER: return lua_tonumber(L, idx) >= 0;
  case LUA_TSTRING: return is_str(L, idx, "hibernate") || is_str(L, idx, "infinity");
  case LUA_TTABLE: {
    int ok = lua_getfield(L, idx, "continue") != LUA_TNIL;
    lua_pop(L, 1);
    return ok;
  }
  default: return 0;
  }
}

/* "normal", "shutdown" and { shutdown = ... } end a server quietly */
static int quiet(lua_State *L, int idx) {
  int q;
  if (is_str(L, idx, "normal") || is_str(L, idx, "shutdown")) return 1;
  if (lua_type(L, idx) != LUA_TTABLE) return 0;
  lua_pushliteral(L, "shutdown");
  q = lua_rawget(L, idx) != LUA_TNIL; /* no metamethods on a reason */
  lua_pop(L, 1);
  return q;
}

/* What each callback may return (for bad_return_value reasons). */
static const char EXPECT_INIT[] =
    "\"ok\", state [, action] | \"ignore\" | \"stop\", reason | \"error\", reason";
static const char EXPECT_CALL[] =
    "\"reply\", reply, state [, action] | \"noreply\", state [, action] | "
    "\"stop\", reason, reply, state | \"stop\", reason, state";
static const char EXPECT_NOREPLY[] = "\"noreply\", state [, action] | \"stop\", reason, state";

/* The callback that handled the message of kind S_KIND (for reasons). */
static const char *callback_name(lua_State *L) {
  if (lua_isnil(L, S_KIND)) return "handle_info"; /* a time-out */
  switch ((int)lua_tointeger(L, S_KIND)) {
  case 0: return "handle_continue";
  case GSI_K_CALL: return "handle_call";
  case GSI_K_CAST: return "handle_cast";
  default: return "handle_info";
  }
}

/* { bad_return_value = { v1, ..., vn }, callback =, expected = } from the
** n results above S_BASE; an action that is not one counts as bad too
** (action: a time-out in ms, "hibernate" or { continue = v }). */
static void push_bad_return(lua_State *L, int n, const char *callback) {
  const char *expected = strcmp(callback, "init") == 0 ? EXPECT_INIT
                         : strcmp(callback, "handle_call") == 0 ? EXPECT_CALL
                                                                : EXPECT_NOREPLY;
  lua_createtable(L, 0, 3);
  lua_createtable(L, n, 0);
  for (int i = 1; i <= n; i++) {
    lua_pushvalue(L, S_BASE + i);
    lua_rawseti(L, -2, i);
  }
  lua_setfield(L, -2, "bad_return_value");
  lua_pushstring(L, callback);
  lua_setfield(L, -2, "callback");
  lua_pushstring(L, expected);
  lua_setfield(L, -2, "expected");
}

/* reply(from, value) with both on top; an unsendable value returns the
** error (the caller turns it into a crash). */
static int do_reply(lua_State *L) {
  /* straight out when from is the one the receive made (the whole step:
  ** gen/bif.c); else core.reply, which raises the placed error */
  int st = gsi_bif_reply_from(L, -2, -1);
  if (st < 0) luaL_error(L, "genserver: out of memory");
  if (st > 0) {
    lua_pop(L, 2);
    return LUA_OK;
  }
  core_fn(L, reply);
  lua_insert(L, -3);
  st = lua_pcall(L, 2, 0, 0);
  if (st != LUA_OK) {
    lua_createtable(L, 0, 1);
    lua_insert(L, -2);
    lua_setfield(L, -2, "error"); /* { error = message } */
  }
  return st;
}

/* Prints a log line for a dropped message (no handle_info). */
static void log_dropped(lua_State *L) {
  const char *mod = lua_tostring(L, S_MODNAME);
  core_fn(L, self);
  lua_call(L, 0, 1);
  fprintf(stderr, "genserver %s: no handle_info in %s; dropped a message\n",
          luaL_tolstring(L, -1, NULL), mod ? mod : "module");
  lua_pop(L, 2);
}

/* The crash report, in Lua (genserver.server.report), cold path. */
static void report(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "genserver.server");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || lua_type(L, -1) != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  lua_getfield(L, -1, "report");
  lua_remove(L, -2);
  lua_pushvalue(L, S_MOD);
  lua_pushvalue(L, S_REASON);
  lua_pushvalue(L, S_STATE);
  lua_pushvalue(L, S_KIND);
  lua_pushvalue(L, S_MSG);
  lua_pushvalue(L, S_MFROM);
  lua_pushvalue(L, S_MODNAME);
  if (lua_pcall(L, 7, 0, 0) != LUA_OK) lua_pop(L, 1);
}

/* The sys debug hook, when one is set (trace, log):
** hook(ctx, event, a, b, c) with the values at slots a, b, c (0: nil).
** Its errors are ignored: a debug option never ends a server. It cannot
** wait (a plain protected call). */
static void call_hook(lua_State *L, const char *event, int a, int b, int c) {
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 8)) return;
  lua_pushvalue(L, S_DBG);
  lua_pushvalue(L, S_SYS);
  lua_pushstring(L, event);
  if (a) lua_pushvalue(L, a); else lua_pushnil(L);
  if (b) lua_pushvalue(L, b); else lua_pushnil(L);
  if (c) lua_pushvalue(L, c); else lua_pushnil(L);
  (void)lua_pcall(L, 5, 0, 0);
  lua_settop(L, top);
}

/* costs a message one flag test when no hook is set */
#define debug_event(L, event, a, b, c) \
  do { \
    if (gsi_bif_sflags(me(L), 0, 0) & GSI_SF_HOOK) call_hook(L, event, a, b, c); \
  } while (0)

/* ------------------------------------------------------- the machine */

static int serve_k(lua_State *L, int status, lua_KContext ctx);
static int run_sys(lua_State *L);

/* Start terminating with the reason on top of the stack: terminate(reason,
** state) if defined, then (after_terminate) the delayed reply in
** S_REPLYTO/S_REPLYV, the crash report, and exit. */
static int begin_terminate(lua_State *L) {
  lua_replace(L, S_REASON);
  lua_settop(L, S_BASE);
  lua_getfield(L, S_MOD, "terminate");
  if (lua_type(L, -1) != LUA_TFUNCTION) {
    lua_pop(L, 1);
    return serve_k(L, LUA_OK, P_TERM);
  }
  running(L, GSI_CB_TERMINATE);
  lua_pushvalue(L, S_REASON);
  lua_pushvalue(L, S_STATE);
  return lua_pcallk(L, 2, 0, S_MSGH, P_TERM, serve_k) == LUA_OK
             ? serve_k(L, LUA_OK, P_TERM)
             : serve_k(L, LUA_ERRRUN, P_TERM);
}

/* A message-handling callback: push the function and its n args above
** S_BASE, then call it protected; the continuation checks the result. */
static int run_callback(lua_State *L, int nargs, int phase,
                        int callback) {
  int st;
  running(L, callback);
  st = lua_pcallk(L, nargs, LUA_MULTRET, S_MSGH, phase, serve_k);
  return serve_k(L, st, phase);
}

/* Init failed: free the name, tell the starter `ack` (on top), exit with
** `reason` (below it). */
static int init_fail(lua_State *L) {
  opt_field(L, "name");
  if (lua_type(L, -1) == LUA_TSTRING) {
    core_fn(L, unregister);
    lua_insert(L, -2);
    lua_call(L, 1, 0);
  } else {
    lua_pop(L, 1);
  }
  gsi_ack(L, lua_gettop(L));
  lua_pop(L, 1);
  gsi_set_serving(L, 0); /* this exit is the real one */
  core_fn(L, exit);
  lua_insert(L, -2); /* exit(reason) */
  lua_callk(L, 1, 0, P_DEAD, serve_k);
  return luaL_error(L, "genserver: exit returned");
}

static void push_ack(lua_State *L, const char *tag, int value_idx) {
  lua_createtable(L, 2, 0);
  lua_pushstring(L, tag);
  lua_rawseti(L, -2, 1);
  if (value_idx) {
    lua_pushvalue(L, value_idx);
    lua_rawseti(L, -2, 2);
  }
}

/* init's results are above S_BASE */
static int after_init(lua_State *L, int st) {
  int n = lua_gettop(L) - S_BASE;
  if (st != LUA_OK) { /* crashed: the reason is on top */
    lua_pushvalue(L, -1);
    push_ack(L, "error", lua_gettop(L));
    lua_remove(L, -2);
    return init_fail(L);
  }
  if (is_str(L, S_BASE + 1, "ok") && (n == 2 || n == 3) && valid_action(L, S_BASE + 3)) {
    lua_copy(L, S_BASE + 2, S_STATE);
    lua_copy(L, S_BASE + 3, S_ACTION);
    lua_settop(L, S_BASE);
    gsi_ack(L, 0); /* { "ok" } */
    if (opt_field(L, "trap_exit") != LUA_TNIL && lua_toboolean(L, -1)) {
      core_fn(L, trap_exit);
      lua_pushboolean(L, 1);
      lua_call(L, 1, 0);
    }
    lua_settop(L, S_BASE);
    if (opt_field(L, "debug") == LUA_TTABLE) { /* sys options from the start */
      lua_createtable(L, 2, 0);
      lua_pushliteral(L, "$debug");
      lua_rawseti(L, -2, 1);
      lua_insert(L, -2);
      lua_rawseti(L, -2, 2);
      lua_replace(L, S_MSG); /* { "$debug", opts.debug }, from nil */
      lua_pushnil(L);
      lua_replace(L, S_MFROM);
      return run_sys(L);
    }
    lua_settop(L, S_BASE);
    return serve_k(L, LUA_OK, P_LOOP);
  }
  if (is_str(L, S_BASE + 1, "ignore") && n == 1) {
    lua_pushliteral(L, "normal");
    push_ack(L, "ignore", 0);
    return init_fail(L);
  }
  if ((is_str(L, S_BASE + 1, "stop") || is_str(L, S_BASE + 1, "error")) && n == 2) {
    int stop = is_str(L, S_BASE + 1, "stop");
    if (stop) lua_pushvalue(L, S_BASE + 2);
    else lua_pushliteral(L, "normal");
    push_ack(L, "error", S_BASE + 2);
    return init_fail(L);
  }
  push_bad_return(L, n, "init");
  lua_pushvalue(L, -1);
  push_ack(L, "error", lua_gettop(L));
  lua_remove(L, -2);
  return init_fail(L);
}

/* handle_call's results above S_BASE */
static int after_call(lua_State *L, int st) {
  int n = lua_gettop(L) - S_BASE;
  if (st != LUA_OK) return begin_terminate(L);
  if (is_str(L, S_BASE + 1, "reply") && (n == 3 || n == 4) && valid_action(L, S_BASE + 4)) {
    debug_event(L, "reply", S_BASE + 2, S_MFROM, S_BASE + 3);
    lua_pushvalue(L, S_MFROM);
    lua_pushvalue(L, S_BASE + 2);
    if (do_reply(L) != LUA_OK) {
      lua_copy(L, S_BASE + 3, S_STATE);
      return begin_terminate(L);
    }
    lua_copy(L, S_BASE + 3, S_STATE);
    lua_copy(L, S_BASE + 4, S_ACTION);
    return serve_k(L, LUA_OK, P_LOOP);
  }
  if (is_str(L, S_BASE + 1, "stop") && n == 4) {
    lua_copy(L, S_MFROM, S_REPLYTO);
    lua_copy(L, S_BASE + 3, S_REPLYV);
    lua_copy(L, S_BASE + 4, S_STATE);
    lua_pushvalue(L, S_BASE + 2);
    return begin_terminate(L);
  }
  return serve_k(L, st, P_NOREPLY); /* noreply, stop/3 and bad shapes */
}

/* handle_cast/info/continue results above S_BASE (also handle_call's
** "noreply" and 3-value "stop") */
static int after_noreply(lua_State *L, int st) {
  int n = lua_gettop(L) - S_BASE;
  if (st != LUA_OK) return begin_terminate(L);
  if (is_str(L, S_BASE + 1, "noreply") && (n == 2 || n == 3) && valid_action(L, S_BASE + 3)) {
    debug_event(L, "noreply", S_BASE + 2, 0, 0);
    lua_copy(L, S_BASE + 2, S_STATE);
    lua_copy(L, S_BASE + 3, S_ACTION);
    return serve_k(L, LUA_OK, P_LOOP);
  }
  if (is_str(L, S_BASE + 1, "stop") && n == 3) {
    lua_copy(L, S_BASE + 3, S_STATE);
    lua_pushvalue(L, S_BASE + 2);
    return begin_terminate(L);
  }
  push_bad_return(L, n, callback_name(L));
  return begin_terminate(L);
}

/* terminate returned (st != OK: it crashed, its reason replaces ours) */
static int after_terminate(lua_State *L, int st) {
  if (st != LUA_OK) lua_replace(L, S_REASON);
  lua_settop(L, S_BASE);
  if (!lua_isnil(L, S_REPLYTO)) {
    lua_pushvalue(L, S_REPLYTO);
    lua_pushvalue(L, S_REPLYV);
    if (do_reply(L) != LUA_OK) lua_replace(L, S_REASON);
    lua_settop(L, S_BASE);
  }
  if (!quiet(L, S_REASON)) report(L);
  lua_settop(L, S_BASE);
  gsi_set_serving(L, 0); /* this exit is the real one */
  core_fn(L, exit);
  lua_pushvalue(L, S_REASON);
  lua_callk(L, 1, 0, P_DEAD, serve_k);
  return luaL_error(L, "genserver: exit returned");
}

/* Terminate with a fixed message as the reason. */
static int terminate_with(lua_State *L, const char *why) {
  lua_pushstring(L, why);
  return begin_terminate(L);
}

/* A system message other than stop (in S_MSG, S_MFROM): handled in Lua,
** by genserver.sys.system(request, from, ctx) -- loaded by the servers
** that get one only. ctx (S_SYS) carries the state and module in and out
** (so that replace_state and change_code can change them), and keeps
** the sys settings: suspended, debug options, the hook. */
static int run_sys(lua_State *L) {
  lua_settop(L, S_BASE);
  if (lua_isnil(L, S_SYS)) {
    lua_createtable(L, 0, 6);
    lua_replace(L, S_SYS);
  }
  lua_pushvalue(L, S_STATE);
  lua_setfield(L, S_SYS, "state");
  lua_pushvalue(L, S_MOD);
  lua_setfield(L, S_SYS, "module");
  lua_pushvalue(L, S_MODNAME);
  lua_setfield(L, S_SYS, "modname");
  lua_pushcfunction(L, gsi_bif_require);
  lua_pushliteral(L, "genserver.sys");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || lua_type(L, -1) != LUA_TTABLE ||
      lua_getfield(L, -1, "system") != LUA_TFUNCTION) {
    /* no sys here (a broken installation): refuse, live on */
    lua_settop(L, S_BASE);
    if (lua_type(L, S_MFROM) == LUA_TTABLE) {
      lua_pushvalue(L, S_MFROM);
      lua_createtable(L, 2, 0);
      lua_pushliteral(L, "error");
      lua_rawseti(L, -2, 1);
      lua_pushliteral(L, "genserver.sys cannot be loaded");
      lua_rawseti(L, -2, 2);
      do_reply(L);
    }
    lua_settop(L, S_BASE);
    return serve_k(L, LUA_OK, P_LOOP);
  }
  lua_remove(L, -2);
  lua_pushvalue(L, S_MSG);
  lua_pushvalue(L, S_MFROM);
  lua_pushvalue(L, S_SYS);
  gsi_bif_current(me(L), GSI_CB_SYSTEM);
  return serve_k(L, lua_pcallk(L, 3, 0, S_MSGH, P_SYS, serve_k), P_SYS);
}

/* The sys handler returned: take the state, module and hook it left in
** ctx (it crashed only by a bug or out of memory: then the server ends). */
static int after_sys(lua_State *L, int st) {
  if (st != LUA_OK) return begin_terminate(L);
  lua_settop(L, S_BASE);
  lua_getfield(L, S_SYS, "state");
  lua_replace(L, S_STATE);
  lua_getfield(L, S_SYS, "module");
  if (lua_type(L, -1) == LUA_TTABLE) lua_replace(L, S_MOD);
  else lua_pop(L, 1);
  lua_getfield(L, S_SYS, "hook");
  lua_replace(L, S_DBG);
  {
    int susp = lua_getfield(L, S_SYS, "suspended") != LUA_TNIL && lua_toboolean(L, -1);
    lua_pop(L, 1);
    gsi_bif_sflags(me(L), GSI_SF_SUSPENDED | GSI_SF_HOOK,
                   (susp ? GSI_SF_SUSPENDED : 0) | (lua_isnil(L, S_DBG) ? 0 : GSI_SF_HOOK));
  }
  lua_pushnil(L);
  lua_setfield(L, S_SYS, "state"); /* S_STATE holds it */
  lua_pushnil(L);
  lua_setfield(L, S_SYS, "module");
  return serve_k(L, LUA_OK, P_LOOP);
}

/* A message arrived: kind, a, b at S_BASE+1.. (kind nil: time-out). */
static int dispatch(lua_State *L) {
  int kind = (int)lua_tointeger(L, S_BASE + 1);
  lua_copy(L, S_BASE + 1, S_KIND);
  lua_copy(L, S_BASE + 2, S_MSG);
  lua_copy(L, S_BASE + 3, S_MFROM);
  lua_settop(L, S_BASE);
  /* a message came (or the time-out): next ended the idle deadline
  ** (GSI_SF_DEADLINE) unless it is a system message */
  if (kind != GSI_K_SYSTEM) debug_event(L, "in", S_KIND, S_MSG, S_MFROM);
  switch (kind) {
  case GSI_K_CALL:
    if (lua_getfield(L, S_MOD, "handle_call") != LUA_TFUNCTION)
      return terminate_with(L, "no handle_call callback in the module");
    lua_pushvalue(L, S_MSG);
    lua_pushvalue(L, S_MFROM);
    lua_pushvalue(L, S_STATE);
    return run_callback(L, 3, P_CALL, GSI_CB_CALL);
  case GSI_K_CAST:
    if (lua_getfield(L, S_MOD, "handle_cast") != LUA_TFUNCTION)
      return terminate_with(L, "no handle_cast callback in the module");
    lua_pushvalue(L, S_MSG);
    lua_pushvalue(L, S_STATE);
    return run_callback(L, 2, P_NOREPLY, GSI_CB_CAST);
  case GSI_K_SYSTEM:
    if (lua_type(L, S_MSG) == LUA_TTABLE) {
      lua_rawgeti(L, S_MSG, 1);
      if (is_str(L, -1, "stop")) {
        lua_rawgeti(L, S_MSG, 2);
        return begin_terminate(L);
      }
      lua_pop(L, 1);
    }
    return run_sys(L);
  default:
    break;
  }
  /* info, or a time-out (kind nil): an EXIT from the parent ends a server
  ** that traps exits, as in OTP */
  if (kind != 0 && lua_toboolean(L, S_MFROM)) {
    /* the runtime's own exit signal (the receive flags it): the program ends
    ** or runtime.shutdown runs. A server that traps exits terminates as
    ** if its parent had asked; handle_info never sees it (DESIGN 1.7) */
    lua_pushnil(L);
    lua_replace(L, S_MFROM);
    lua_getfield(L, S_MSG, "reason");
    return begin_terminate(L);
  }
  if (kind != 0 && lua_type(L, S_MSG) == LUA_TTABLE) {
    lua_rawgeti(L, S_MSG, 1);
    lua_getfield(L, S_MSG, "pid");
    if (is_str(L, -2, "EXIT") && gsi_is_parent(L, -1)) {
      lua_getfield(L, S_MSG, "reason");
      return begin_terminate(L);
    }
    lua_settop(L, S_BASE);
  }
  if (lua_getfield(L, S_MOD, "handle_info") != LUA_TFUNCTION) {
    lua_settop(L, S_BASE);
    log_dropped(L);
    return serve_k(L, LUA_OK, P_LOOP);
  }
  if (kind == 0) lua_pushliteral(L, "timeout");
  else lua_pushvalue(L, S_MSG);
  lua_pushvalue(L, S_STATE);
  return run_callback(L, 2, P_NOREPLY, GSI_CB_INFO);
}

static int take_next(lua_State *L, int phase);

/* Begin waiting for the next message, with the time-out (ms, or nil: none)
** on top; phase P_WAIT, P_WAIT_SYS or P_WAIT_HIB. */
static int wait_next(lua_State *L, int phase) {
  int st = gsi_lua_next_begin(L, me(L), lua_gettop(L));
  lua_settop(L, S_BASE);
  if (st > 0) return lua_yieldk(L, 0, phase, serve_k);
  return take_next(L, phase);
}

/* Take the next message and dispatch it, or yield the body until one
** comes (the continuation looks again). */
static int take_next(lua_State *L, int phase) {
  gsi_proc *p = me(L);
  switch (gsi_lua_next_take(L, p, phase == P_WAIT_SYS)) {
  case GSI_LNEXT_WAIT: return lua_yieldk(L, 0, phase, serve_k);
  case GSI_LNEXT_DIE: return gsi_lua_die(L, p);
  case GSI_LNEXT_TIMEOUT:
    if (phase == P_WAIT_HIB) { /* idle for hibernate_after: collect */
      hibernate(L);
      lua_pushnil(L); /* then wait for ever */
      return wait_next(L, P_WAIT);
    }
    break;
  default: break;
  }
  lua_settop(L, S_BASE + 3); /* kind, a, b (no kind: the time-out) */
  return dispatch(L);
}

/* Top of the loop: act on the pending action, then wait. */
static int loop_top(lua_State *L) {
  int hib_wait = 0, sflags, action;
  /* S_REPLYTO needs no reset here: only after_call sets it, on its way
  ** to begin_terminate, which never comes back to the loop */
  lua_settop(L, S_BASE);
  sflags = gsi_bif_idle(me(L)); /* no callback runs now */
  action = lua_type(L, S_ACTION);
  if (action == LUA_TTABLE) { /* { continue = v } */
    lua_getfield(L, S_ACTION, "continue");
    lua_pushnil(L);
    lua_replace(L, S_ACTION);
    lua_pushinteger(L, 0); /* kind 0 = continue, for reports */
    lua_replace(L, S_KIND);
    lua_copy(L, -1, S_MSG);
    if (lua_getfield(L, S_MOD, "handle_continue") != LUA_TFUNCTION)
      return terminate_with(L, "no handle_continue callback in the module");
    lua_insert(L, -2);
    lua_pushvalue(L, S_STATE);
    debug_event(L, "in", S_KIND, S_MSG, 0);
    return run_callback(L, 2, P_NOREPLY, GSI_CB_CONTINUE);
  }
  if (sflags & GSI_SF_SUSPENDED) {
    /* sys.suspend: system messages only, no time-out */
    lua_pushnil(L);
    return wait_next(L, P_WAIT_SYS);
  }
  if (action == LUA_TNUMBER) {
    /* the idle time-out: its deadline outlives system messages */
    lua_pushnumber(L, (lua_Number)gsi_bif_now_ns() + lua_tonumber(L, S_ACTION) * 1e6);
    lua_replace(L, S_DL);
    gsi_bif_sflags(me(L), 0, GSI_SF_DEADLINE);
    lua_pushvalue(L, S_ACTION);
  } else if (sflags & GSI_SF_DEADLINE) {
    lua_Number left = (lua_tonumber(L, S_DL) - (lua_Number)gsi_bif_now_ns()) / 1e6;
    lua_pushnumber(L, left > 0 ? left : 0);
  } else {
    if (action == LUA_TSTRING && is_str(L, S_ACTION, "hibernate")) hibernate(L);
    hib_wait = lua_type(L, S_HIB) == LUA_TNUMBER;
    lua_pushvalue(L, S_HIB); /* nil: wait for ever */
  }
  if (action != LUA_TNIL) { /* the action is taken */
    lua_pushnil(L);
    lua_replace(L, S_ACTION);
  }
  return wait_next(L, hib_wait ? P_WAIT_HIB : P_WAIT);
}

static int serve_k(lua_State *L, int status, lua_KContext ctx) {
  int st = status == LUA_YIELD ? LUA_OK : status;
  if (st != LUA_OK) crash_reason(L); /* a callback crashed */
  switch ((int)ctx) {
  case P_LOOP: return loop_top(L);
  case P_WAIT:
  case P_WAIT_SYS:
  case P_WAIT_HIB: return take_next(L, (int)ctx);
  case P_INIT: return after_init(L, st);
  case P_CALL: return after_call(L, st);
  case P_NOREPLY: return after_noreply(L, st);
  case P_TERM: return after_terminate(L, st);
  case P_SYS: return after_sys(L, st);
  default: return luaL_error(L, "genserver: exit returned");
  }
}

/* Load the callback module: a table, or a name to require. Leaves it at
** S_MOD or returns the error (on top) for init_fail. */
static int load_module(lua_State *L) {
  if (lua_type(L, S_MOD) == LUA_TSTRING) {
    lua_copy(L, S_MOD, S_MODNAME);
    lua_pushcfunction(L, gsi_bif_require);
    lua_pushvalue(L, S_MOD);
    if (lua_pcall(L, 1, 1, S_MSGH) != LUA_OK) {
      crash_reason(L);
      return -1;
    }
    if (lua_type(L, -1) != LUA_TTABLE) {
      lua_pop(L, 1);
      lua_pushfstring(L, "module %s is not a table", lua_tostring(L, S_MOD));
      return -1;
    }
    lua_replace(L, S_MOD);
    return 0;
  }
  if (lua_type(L, S_MOD) != LUA_TTABLE) {
    lua_pushliteral(L, "the callback module is not a table");
    return -1;
  }
  if (lua_getfield(L, S_MOD, "name") == LUA_TSTRING) lua_replace(L, S_MODNAME);
  else lua_pop(L, 1), lua_pushliteral(L, "(table)"), lua_replace(L, S_MODNAME);
  return 0;
}

/* serve(module, arg, opts): the body of every gen_server. init's outcome
** goes to the starter, which the spawner recorded (gsi_ack). */
int gsi_serve(lua_State *L) {
  lua_settop(L, S_BASE);
  gsi_set_serving(L, 1); /* process.exit(reason) now ends in terminate */
  if (lua_type(L, S_OPTS) != LUA_TTABLE) lua_pushnil(L), lua_replace(L, S_OPTS);
  lua_pushcfunction(L, gsi_bif_crash_msgh);
  lua_replace(L, S_MSGH);
  lua_pushliteral(L, "module");
  lua_replace(L, S_MODNAME);
  if (opt_field(L, "hibernate_after") != LUA_TNUMBER) {
    lua_pop(L, 1);
    lua_pushnil(L);
  }
  lua_replace(L, S_HIB);
  /* the name goes in before init runs */
  if (opt_field(L, "name") == LUA_TSTRING) {
    core_fn(L, reg);
    lua_pushvalue(L, -2);
    lua_call(L, 1, 2);
    if (lua_isnil(L, -2)) { /* taken: tell the starter, end quietly */
      push_ack(L, "error", lua_gettop(L));
      gsi_ack(L, lua_gettop(L));
      return 0;
    }
  }
  lua_settop(L, S_BASE);
  if (load_module(L) != 0) {
    lua_pushvalue(L, -1);
    push_ack(L, "error", lua_gettop(L));
    lua_remove(L, -2);
    return init_fail(L);
  }
  core_fn(L, set_module);
  lua_pushvalue(L, S_MODNAME);
  lua_pushliteral(L, "vsn");
  lua_rawget(L, S_MOD);
  lua_call(L, 2, 0);
  /* no full collection here: the spawn arguments and the module's main
  ** chunk are left to the collector's own steps. Collecting them before
  ** init cost ~22 K instructions per start (callgrind) and saved no
  ** measurable RSS per idle server (10,077 vs 10,082 bytes). */
  if (lua_getfield(L, S_MOD, "init") != LUA_TFUNCTION) {
    lua_pop(L, 1);
    lua_pushliteral(L, "ok");
    lua_pushvalue(L, S_STATE); /* no init: the state is the argument */
    return after_init(L, LUA_OK);
  }
  lua_pushvalue(L, S_STATE);
  return run_callback(L, 1, P_INIT, GSI_CB_INIT);
}
