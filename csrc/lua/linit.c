/*
** linit.c - the wiring of the faces, as Lua's own linit.c wires the
** standard libraries: the public gs_runtime_open is the API layer's opener
** given the Lua binding's hooks for the core (process states get
** genserver.core, the codec finds its functions by name, a crashed body
** is reported to the logger). Neither the core nor the API layer calls
** the binding: this file is the only one that knows all three
** (docs/architecture.md, checked by tools/check-layers).
*/
#include "genserver.h"
#include "api/api.h"
#include "lface.h"

int gs_runtime_open(gs_runtime **out, const gs_config *cfg) {
  return gsi_api_open(out, cfg, &gsi_lua_face);
}

/* The API layer's lookups the binding needs (lface.h). Handed over here,
** with the hooks, rather than made public gs_ functions: a host has no use
** for a core or a foreign process, which it never sees. Each is a tail
** call (a jump). */
gs_runtime *gsi_lua_api_of(gsi_rt *core) { return gsi_api_of(core); }
gsi_rt *gsi_lua_core_of(gs_runtime *rt) { return gsi_api_core(rt); }
gs_runtime *gsi_lua_host_api(lua_State *L) { return gsi_host_api(L); }
gsi_proc *gsi_lua_foreign(gs_runtime *rt) { return gsi_api_foreign(rt); }
