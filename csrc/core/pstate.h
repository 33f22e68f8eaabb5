/*
** pstate.h - process states: their allocator (palloc.c), their lazy
** libraries and sandbox (plibs.c), their boot, run and end (prun.c), and
** the foreign processes, which have none (foreign.c).
*/
#ifndef GS_PSTATE_H
#define GS_PSTATE_H

#include <stddef.h>
#include <stdint.h>

#include "lua.h"

#include "codec.h"
#include "core.h"

/* The allocator of a process state (palloc.c). gsi_heap_newstate: a new
** state for p, counting on p (its boot arena opened, max_heap in force);
** gsi_heap_booted: the boot is over (the arena closes; call while
** p->ar_open); gsi_heap_closing: the state is about to be closed (freed
** blocks go straight back); gsi_heap_free: it is closed, free the rest.
** gsi_proc_trim: give p's cached free blocks back to malloc (owner; on
** hibernation). */
GSI_FUNC lua_State *gsi_heap_newstate(gsi_proc *p);
GSI_FUNC void gsi_heap_booted(gsi_proc *p);
GSI_FUNC void gsi_heap_closing(gsi_proc *p);
GSI_FUNC void gsi_heap_free(gsi_proc *p);
GSI_FUNC void gsi_proc_trim(gsi_proc *p);

/* Set up the libraries of a new process state (plibs.c): lazily, and
** without what a sandbox must not have. */
GSI_FUNC void gsi_open_libs(lua_State *L, int sandbox);

/* The codec's builtin hook for the runtime's states (plibs.c): in a
** process state, genserver.core's functions without its table, and base
** functions not yet put in _G (they are put there on first use). */
GSI_FUNC lua_CFunction gsi_state_builtin(lua_State *L, const char *module,
                                         size_t lm, const char *field, size_t lf);

/* Run p on the current worker until it waits, yields or ends. */
GSI_FUNC void gsi_run(gsi_worker *w, gsi_proc *p);
/* The thread-local foreign process of this OS thread for rt (created on
** first use). */
GSI_FUNC gsi_proc *gsi_foreign_self(gsi_rt *rt);
/* The same, only if it is the one this thread found last (the common
** case, cheap: no search, nothing made), else NULL. */
GSI_FUNC gsi_proc *gsi_foreign_last(gsi_rt *rt);
GSI_FUNC const gsi_codec_limits *gsi_limits_of(gsi_proc *p);
/* The value at idx of L was just encoded into b for `to`: if b holds a
** function sent by value (GSI_WIRE_CODE) and `to` is a sandboxed process,
** push the codec's error naming the path to it ("message.cb: cannot send
** a function to a sandboxed process ...") and return -1; else return 0.
** Costs nothing unless the message holds a function. Never raises. */
GSI_FUNC int gsi_check_code_to(lua_State *L, int idx, const char *what, gsi_rt *rt,
                               uint64_t to, const gsi_buf *b);
GSI_FUNC void gsi_foreign_reset(gsi_rt *rt);
/* End the calling thread's foreign process p with an encoded reason. */
GSI_FUNC void gsi_foreign_exit(gsi_proc *p, const void *reason, size_t len,
                               int normal);

/* Message handler for code whose crash becomes an exit reason (a process
** body, gen_server callbacks; prun.c): it records the error and the
** traceback taken where it was raised, and lets the error through
** unchanged, since it also runs for errors that get caught (load()
** inherits it while it compiles). */
GSI_FUNC int gsi_crash_msgh(lua_State *L);
/* Push the traceback gsi_crash_msgh took for the error at idx and return
** 1; return 0, pushing nothing, if that error is not the one it saw. */
GSI_FUNC int gsi_crash_traceback(lua_State *L, int idx);
/* require(name) in a process state's boot path (palloc.c): a module the
** runtime compiled before comes from its module cache. */
GSI_FUNC int gsi_require(lua_State *L);

#endif
