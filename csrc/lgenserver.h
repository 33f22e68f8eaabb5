/*
** lgenserver.h - the Lua binding's entry points used by the core.
*/
#ifndef LGENSERVER_H
#define LGENSERVER_H

#include "lua.h"

#include "internal.h"

/* Kinds returned by core.next (the gen_server loop's receive). */
enum { GSI_K_CALL = 1, GSI_K_CAST, GSI_K_INFO, GSI_K_SYSTEM };

/* Add core.serve, the gen_server body (lserver.c), to the core table at
** index core. */
GSI_FUNC void gsi_open_server(lua_State *L, int core);

/* Mark L as the state of process p (before genserver.core is opened). */
GSI_FUNC void gsi_bind_process_state(lua_State *L, gsi_proc *p);

__attribute__((visibility("default"))) int luaopen_genserver_core(lua_State *L);

#endif
