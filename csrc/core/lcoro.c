/*
** lcoro.c - coroutine.resume and coroutine.wrap for process states.
**
** The watchdog (preempt.c) preempts a process by setting a count hook on
** the Lua thread its worker is running. When that thread is a coroutine
** the process resumed itself, a yield from the hook would only go back to
** the resumer, not to the worker. So in a process's own state resume and
** wrap are these wrappers, which
**   - tell the worker which thread really runs (gsi_turn_switch), so that
**     the hook lands there, and
**   - relay a preemption: the hook yields the nested thread with
**     p->relay set; the wrapper then yields its own thread the same way,
**     level by level, until the body (the state's main thread) yields to
**     its worker. When the process runs again, each wrapper's
**     continuation resumes the thread it was resuming.
** A kill (or any exit signal that ends the process) unwinds a nested
** thread with an error instead; the wrapper in the body then ends the
** process. Everything else behaves like the standard library.
*/
#include <string.h>

#include "lauxlib.h"
#include "lualib.h"

#include "internal.h"

static int resume_k(lua_State *L, int status, lua_KContext ctx);

/* Resume the thread at index co with the nargs values on top of L. Returns
** the number of results moved to L, or -1 with an error object on top. May
** also yield L (a relayed preemption), continuing in k. */
static int resume_thread(lua_State *L, int co_idx, int nargs,
                         lua_KFunction k, lua_KContext ctx) {
  lua_State *co = lua_tothread(L, co_idx);
  gsi_proc *p = gsi_state_proc(L);
  gsi_worker *w = gsi_current_worker();
  int st, nres;
  if (lua_status(co) == LUA_OK && lua_gettop(co) == 0) {
    lua_pushliteral(L, "cannot resume dead coroutine");
    return -1;
  }
  if (co == L || (lua_status(co) == LUA_OK && lua_getstack(co, 0, &(lua_Debug){0}))) {
    lua_pushliteral(L, "cannot resume non-suspended coroutine");
    return -1;
  }
  if (!lua_checkstack(co, nargs)) {
    lua_pushliteral(L, "too many arguments to resume");
    return -1;
  }
  lua_xmove(L, co, nargs);
  for (;;) {
    if (w != NULL) gsi_turn_switch(w, co);
    st = lua_resume(co, L, nargs, &nres);
    if (w != NULL) gsi_turn_switch(w, L);
    if (!(st == LUA_YIELD && p->relay)) break;
    /* preempted down there: pass it up, or (if L cannot yield) go on */
    lua_pop(co, nres);
    p->relay = 0;
    nargs = 0;
    if (lua_isyieldable(L)) {
      if (L == p->L) p->want = GSI_W_YIELD;
      else p->relay = 1;
      lua_yieldk(L, 0, ctx, k); /* does not return (continues in k) */
      return -2;
    }
  }
  if (st == LUA_OK || st == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      lua_pushliteral(L, "too many results to resume");
      return -1;
    }
    lua_xmove(co, L, nres);
    return nres;
  }
  lua_xmove(co, L, 1); /* the error */
  return -1;
}

/* The process was killed while a nested thread ran: end it from here if
** this is the body, else unwind one more level. */
static int check_dying(lua_State *L) {
  gsi_proc *p = gsi_state_proc(L);
  if (!p->dying) return 0;
  if (L == p->L && lua_isyieldable(L)) {
    p->want = GSI_W_EXIT;
    return 1;
  }
  gsi_unwind(L, p); /* does not return */
  return 0;
}

/* coroutine.resume(co, ...) */
static int finish_resume(lua_State *L, int n) {
  if (n == -2) return 0; /* unreachable: yielded */
  if (check_dying(L)) return lua_yield(L, 0);
  if (n < 0) {
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -(n + 1));
  return n + 1;
}

static int resume_k(lua_State *L, int status, lua_KContext ctx) {
  int n;
  (void)status;
  (void)ctx;
  lua_settop(L, 1); /* resumed after a relayed preemption: go on */
  n = resume_thread(L, 1, 0, resume_k, 0);
  if (n == -2) return 0;
  return finish_resume(L, n);
}

static int co_resume(lua_State *L) {
  int n;
  luaL_checktype(L, 1, LUA_TTHREAD);
  n = resume_thread(L, 1, lua_gettop(L) - 1, resume_k, 0);
  if (n == -2) return 0;
  return finish_resume(L, n);
}

/* the function coroutine.wrap returns: upvalue 1 is the thread */
static int finish_wrap(lua_State *L, int n) {
  if (check_dying(L)) return lua_yield(L, 0);
  if (n < 0) {
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    if (lua_status(co) != LUA_OK && lua_status(co) != LUA_YIELD)
      lua_resetthread(co); /* a dead coroutine: close its variables */
    if (lua_type(L, -1) == LUA_TSTRING) { /* add where, as the library does */
      luaL_where(L, 1);
      lua_insert(L, -2);
      lua_concat(L, 2);
    }
    return lua_error(L);
  }
  return n;
}

static int wrap_k(lua_State *L, int status, lua_KContext ctx) {
  int base = (int)ctx, n;
  (void)status;
  lua_settop(L, base); /* resumed after a relayed preemption: go on */
  n = resume_thread(L, base, 0, wrap_k, ctx);
  if (n == -2) return 0;
  return finish_wrap(L, n);
}

static int wrapped(lua_State *L) {
  int nargs = lua_gettop(L), base, n;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1); /* the thread at 1, below the arguments */
  base = 1;
  n = resume_thread(L, base, nargs, wrap_k, base);
  if (n == -2) return 0;
  return finish_wrap(L, n);
}

/* coroutine.wrap(f) */
static int co_wrap(lua_State *L) {
  lua_State *co;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  co = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  lua_pushcclosure(L, wrapped, 1);
  return 1;
}

/* coroutine.close(co): the library's (upvalue 1), with the worker told
** that co runs meanwhile (its pending __close handlers run there), so that
** a kill reaches them. */
static int co_close(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  gsi_worker *w = gsi_current_worker();
  int st;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  if (co == NULL || co == L || w == NULL) {
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
  }
  gsi_turn_switch(w, co);
  st = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
  gsi_turn_switch(w, L);
  if (st != LUA_OK) return lua_error(L);
  return lua_gettop(L);
}

/* luaopen for process states: the standard library, with resume, wrap
** and close replaced. */
int gsi_open_coroutine(lua_State *L) {
  luaopen_coroutine(L);
  lua_pushcfunction(L, co_resume);
  lua_setfield(L, -2, "resume");
  lua_pushcfunction(L, co_wrap);
  lua_setfield(L, -2, "wrap");
  lua_getfield(L, -1, "close");
  lua_pushcclosure(L, co_close, 1);
  lua_setfield(L, -2, "close");
  return 1;
}
