/*
** lgenserver.h - what genserver.core's module file (lgenserver.c) and the
** gen_server loop (lserver.c) offer the rest of the binding. It shows no
** core struct: the core is reached through gen/bif.h.
*/
#ifndef LGENSERVER_H
#define LGENSERVER_H

#include "lua.h"

#include "gen/bif.h"

/* Kinds returned by core.next (the gen_server loop's receive). */
enum { GSI_K_CALL = 1, GSI_K_CAST, GSI_K_INFO, GSI_K_SYSTEM };

/* core.serve(module, arg, opts): the gen_server body (lserver.c). It runs
** in process states only; its starter is the process's parent, and init's
** outcome answers the process's start_ref (gsi_ack). */
GSI_FUNC int gsi_serve(lua_State *L);

/* The core functions the gen_server loop calls directly (lserver.c). In a
** process state they are light C functions: pushing one allocates
** nothing and needs no genserver.core table in the state. (Its receive
** it calls as C, not as a Lua function: gsi_lua_next_take, lbind.h.) */
GSI_FUNC const lua_CFunction gsi_core_reply, gsi_core_self,
    gsi_core_exit, gsi_core_trap_exit, gsi_core_reg, gsi_core_unregister,
    gsi_core_set_module;

/* A gen_server's ack to its starter: the table { tag [, reason] } at idx,
** or { "ok" } for idx 0, sent as the protocol layer writes it (gen.c);
** raises like reply() for an unsendable reason. */
GSI_FUNC void gsi_ack(lua_State *L, int idx);

/* Is the value at idx the pid of the process that spawned this one? */
GSI_FUNC int gsi_is_parent(lua_State *L, int idx);

/* The calling process of a genserver.core function (its own, or the
** thread's foreign one), as every core function finds it, also for the
** I/O binding (lio.c), registered with the same upvalues; with its dying
** flag (an exit signal pushed to it taken first), in one step: a process
** state's own (gsi_bif_self: one call on the hot paths), else the
** thread's foreign process (gsi_lua_foreign_self: made on first use;
** raises when an exit signal killed it). */
GSI_FUNC gsi_proc *gsi_lua_foreign_self(lua_State *L, int *dying);
static inline gsi_proc *gsi_lua_enter(lua_State *L, int *dying) {
  gsi_proc *p = gsi_bif_self(L, dying);
  return p != NULL ? p : gsi_lua_foreign_self(L, dying);
}
static inline gsi_proc *gsi_lua_self(lua_State *L) {
  int dying;
  return gsi_lua_enter(L, &dying);
}

/* Mark L as a gen_server's state (core.serve) or not: while it is,
** process.exit(reason) raises an exit error that gsi_exit_reason
** recognises, so that the server's loop runs terminate (lserver.c). */
GSI_FUNC void gsi_set_serving(lua_State *L, int on);

/* If the value at idx is the exit error of process.exit in a gen_server,
** push its reason and return 1; else push nothing and return 0. */
GSI_FUNC int gsi_exit_reason(lua_State *L, int idx);

__attribute__((visibility("default"))) int luaopen_genserver_core(lua_State *L);

#endif
