/*
** lface.h - the Lua binding's hooks for the core (core.h's gsi_face:
** open_core, builtin, report_crash), defined in lgenserver.c and handed
** to the API layer's opener by linit.c. The type stays incomplete here:
** the binding's headers show no core header (linit.c has it from
** api/api.h).
*/
#ifndef LFACE_H
#define LFACE_H

struct gsi_face;
__attribute__((visibility("hidden"))) extern const struct gsi_face gsi_lua_face;

#endif
