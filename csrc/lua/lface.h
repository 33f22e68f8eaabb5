/*
** lface.h - what the wiring file (linit.c) and the Lua binding hand each
** other. The binding's hooks for the core (core.h's gsi_face: open_core,
** builtin, report_crash) are defined in lgenserver.c and handed to the
** API layer's opener by linit.c; the type stays incomplete here. The other
** way, linit.c hands the binding the four lookups between a runtime's
** public face and its core that only the API layer can make (api/api.h):
** wiring, like the hooks, so the binding calls no API internal itself and
** the public header gains nothing hosts have no use for.
*/
#ifndef LFACE_H
#define LFACE_H

#include "lua.h"

#include "genserver.h"
#include "gen/bif.h" /* gsi_rt, gsi_proc: opaque */

struct gsi_face;
__attribute__((visibility("hidden"))) extern const struct gsi_face gsi_lua_face;

/* linit.c: the public face of a core (a process state's runtime), the core
** of a public face, the runtime a host state was bound to by gs_openlibs
** (or NULL), and the calling thread's foreign process in rt (NULL at the
** process limit; not on a worker). */
GSI_FUNC gs_runtime *gsi_lua_api_of(gsi_rt *core);
GSI_FUNC gsi_rt *gsi_lua_core_of(gs_runtime *rt);
GSI_FUNC gs_runtime *gsi_lua_host_api(lua_State *L);
GSI_FUNC gsi_proc *gsi_lua_foreign(gs_runtime *rt);

#endif
