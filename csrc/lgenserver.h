/*
** lgenserver.h - the Lua binding's entry points used by the core.
*/
#ifndef LGENSERVER_H
#define LGENSERVER_H

#include "lua.h"

#include "internal.h"

/* Mark L as the state of process p (before genserver.core is opened). */
GSI_FUNC void gsi_bind_process_state(lua_State *L, gsi_proc *p);

__attribute__((visibility("default"))) int luaopen_genserver_core(lua_State *L);

#endif
