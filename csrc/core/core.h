/*
** core.h - the C core as the layers above it see it: opaque types, the
** hooks a runtime takes from its faces, and the few functions that need
** no struct. No struct of the core is defined here (DESIGN §1; RECUT rule
** 3), so a file that includes only this header cannot touch a process's
** fields or locks. The core's own files include the per-module headers
** (proc.h, msg.h, rt.h, ...), which include this one.
*/
#ifndef GS_CORE_H
#define GS_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "lua.h"

#define GSI_FUNC __attribute__((visibility("hidden"))) extern

typedef struct gsi_rt gsi_rt;
typedef struct gsi_proc gsi_proc;
typedef struct gsi_msg gsi_msg;
typedef struct gsi_worker gsi_worker;

/* ------------------------------------------------------------ the face */

/* What the core asks of the faces above it (the Lua binding, the public
** API). A lower layer takes these from the runtime's configuration
** instead of calling upward (DESIGN §1): the wiring is done once, in
** lua/linit.c, as Lua's own linit.c wires the standard libraries. Any
** hook may be NULL: the core then does without it. */
typedef struct gsi_face {
  /* opens genserver.core in a process state: package.preload's entry for
  ** "genserver.core" (the binding's luaopen_genserver_core) */
  lua_CFunction open_core;
  /* the codec's lookup of a C function sent by name, for a process state
  ** only (the core checked): genserver.core's function `field` as a light
  ** C function, or NULL. Never raises. */
  lua_CFunction (*builtin)(lua_State *L, const char *module, size_t lm,
                           const char *field, size_t lf);
  /* a plain process's body raised the error at idx (not a kill, not
  ** max_heap): report it. Never raises, never waits. */
  void (*report_crash)(lua_State *L, int idx);
  /* runs in every new process state after its libraries are set up and
  ** before any of its code (the host's gs_config.state_hook, wrapped by
  ** the API so that it cannot raise). */
  void (*state_hook)(lua_State *L, void *ud);
  /* the face's own datum: given to state_hook, and what the API layer's
  ** lookup gsi_api_of returns (the core never follows it) */
  void *ud;
} gsi_face;

/* A runtime's settings at creation (0 fields: the default). */
typedef struct gsi_rt_config {
  int workers;           /* 0: $GENSERVER_WORKERS, else the CPUs online */
  uint32_t max_procs;    /* processes at most (0: 2^22 - 1) */
  int max_depth;         /* codec nesting (0: the codec's default) */
  size_t max_size;       /* bytes in a message (0: the codec's default) */
  int budget;            /* messages per turn (0: 64) */
  gsi_face face;
} gsi_rt_config;

/* A new runtime (no thread runs until the first process), or NULL when
** out of memory. The caller has checked the ranges. */
GSI_FUNC gsi_rt *gsi_rt_new(const gsi_rt_config *cfg);
/* The hooks rt was created with (read-only for its life). */
GSI_FUNC const gsi_face *gsi_rt_face(const gsi_rt *rt);

/* ------------------------------------------------------ process states */

/* The one test of "is L a process state": the process whose own state L
** is (any of its threads), or NULL for any other state (a host's). A
** process state is one whose allocator is the core's (palloc.c);
** that allocator's datum is the process. Cheap: no lookup in L. */
GSI_FUNC gsi_proc *gsi_state_proc(lua_State *L);

#endif
