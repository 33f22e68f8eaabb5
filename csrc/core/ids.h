/*
** ids.h - pids and refs as Lua values.
**
** A pid is ((uint64_t)gen << 32) | index; a ref is a nonzero 64-bit
** counter value. In Lua both are full userdata that are interned per
** lua_State: pushing the same id twice gives the same object, so `==`,
** rawequal and table keys behave as for numbers. Nothing here keeps a
** strong reference to a pushed id: the interning tables are weak-valued.
*/
#ifndef GS_IDS_H
#define GS_IDS_H

#include <stdint.h>

#include "lua.h"

#define GSI_PID_MT "genserver.pid"
#define GSI_REF_MT "genserver.ref"

/* kinds returned by gsi_toid */
enum { GSI_ID_NONE = 0, GSI_ID_PID = 1, GSI_ID_REF = 2 };

/* Push the interned userdata for an id. May raise a memory error. */
void gsi_pushpid(lua_State *L, uint64_t pid);
void gsi_pushref(lua_State *L, uint64_t ref);

/* If the value at idx is a pid (ref), set *pid (*ref) and return 1; else
** return 0. Never raises. */
int gsi_topid(lua_State *L, int idx, uint64_t *pid);
int gsi_toref(lua_State *L, int idx, uint64_t *ref);

/* Kind of the value at idx (GSI_ID_PID, GSI_ID_REF or GSI_ID_NONE); when it
** is an id and id != NULL, also store the id. Never raises. */
int gsi_toid(lua_State *L, int idx, uint64_t *id);
int gsi_isid(lua_State *L, int idx);

/* Format an id the way __tostring does ("<0.INDEX.GEN>", "#Ref<0.N>")
** into buf (at least GSI_ID_STRLEN bytes); returns the length. */
#define GSI_ID_STRLEN 48
int gsi_idstring(int kind, uint64_t id, char *buf);

#endif
