/*
** api.h - what the public API layer (api.c) offers the layer above it
** besides genserver.h: its opener with the hooks of the face above (for
** lua/linit.c, the one file that wires the faces together), and the
** lookups between a public runtime and its core.
*/
#ifndef GS_API_H
#define GS_API_H

#include "genserver.h"
#include "core/core.h"

/* gs_runtime_open, with the core's hooks for the face above (the Lua
** binding's; NULL: none). */
GSI_FUNC int gsi_api_open(gs_runtime **out, const gs_config *cfg,
                          const gsi_face *face);

/* The core of a public runtime, and the public runtime of a core (the one
** that opened it). */
GSI_FUNC gsi_rt *gsi_api_core(gs_runtime *rt);
GSI_FUNC gs_runtime *gsi_api_of(gsi_rt *core);
/* The runtime a host state was bound to by gs_openlibs, or NULL. */
GSI_FUNC gs_runtime *gsi_host_api(lua_State *L);
/* The calling thread's foreign process in rt, as the public API knows it
** (a runtime closed and another opened at the same address is told
** apart; the process ends when the thread exits), or NULL at the process
** limit. Not on a worker thread of rt. */
GSI_FUNC gsi_proc *gsi_api_foreign(gs_runtime *rt);

#endif
