/*
** lbind.h - what the files of the Lua binding share among themselves.
**
** genserver.core is written in several files, one job each:
**   lgenserver.c  the module: registration, a state's runtime, spawn,
**                 calls and replies, the default runtime
**   lmsg.c        arguments, messages and reasons as Lua values
**   lreceive.c    receive, next (the gen_server loop's), sleep, send, cast
**   lproc.c       links, monitors, exit signals, names, timers
**   linfo.c       self, list, info, stats, configure, code versions
**   lserver.c     the gen_server loop (core.serve)
** They reach the core only through gen/ (bif.h, gen.h) and the public API
** (genserver.h), the API layer's lookups through the wiring (lface.h);
** nothing here is seen outside the binding.
*/
#ifndef LBIND_H
#define LBIND_H

#include "lua.h"
#include "lauxlib.h"

#include "genserver.h"
#include "gen/bif.h"
#include "lgenserver.h"

#define ERROR_MT "genserver.error"

/* ------------------------------------------ a state's process (lgenserver.c) */

/* The process whose own state L is, or NULL in a host's state. */
GSI_FUNC gsi_proc *gsi_lua_state_proc(lua_State *L);
/* The core of L's runtime, and its public face; raise once it is shut down. */
GSI_FUNC gsi_rt *gsi_lua_rt(lua_State *L);
GSI_FUNC gs_runtime *gsi_lua_api(lua_State *L);
GSI_FUNC int gsi_lua_raise_closed(lua_State *L);
/* The one mapper from an error code (GS_E*, or a gsi_err: the same
** numbers) to a Lua error "<what>: <msg or the code's text>". */
GSI_FUNC int gsi_lua_raise_error(lua_State *L, const char *what, int rc, const char *msg);
/* A host state: the pid of the calling thread's foreign process as the
** public API knows it now (0 at the process limit). */
GSI_FUNC uint64_t gsi_lua_foreign_pid(lua_State *L);
/* The process has to stop (a signal killed it, or it called exit): yields
** to its worker, which ends it, or ends a foreign thread's process and
** raises its reason. */
GSI_FUNC int gsi_lua_die(lua_State *L, gsi_proc *p);
/* A gs_* call found the thread's foreign process (pid) killed: raise its
** reason. */
GSI_FUNC int gsi_lua_raise_killed(lua_State *L, uint64_t pid);
/* Push { server = pid, op = "exit" } with the genserver.error metatable. */
GSI_FUNC void gsi_lua_push_exit_error(lua_State *L, uint64_t pid);

/* Entry of a primitive that does not wait: a process killed by a signal
** stops here instead of carrying on. */
#define GSI_ENTER(L, p)                       \
  int p##_dies;                               \
  gsi_proc *p = gsi_lua_enter(L, &p##_dies);  \
  if (p##_dies) return gsi_lua_die(L, p)

/* ------------------------------------------------- waits (lreceive.c) */

/* Begin a wait until deadline (ns, 0: none); raises inside a receive
** match function. */
GSI_FUNC void gsi_lua_begin_wait(lua_State *L, gsi_proc *p, uint64_t deadline);
/* Nothing to take yet: 1 when L must yield (lua_yieldk with its
** continuation), 0 to look again; raises where L cannot wait (inline: it
** runs for every wait). */
GSI_FUNC int gsi_lua_cannot_wait(lua_State *L, int why);
static inline int gsi_lua_wait_more(lua_State *L, gsi_proc *p) {
  int st = gsi_bif_wait_more(p, L);
  return st >= 0 ? st : gsi_lua_cannot_wait(L, st);
}

/* The gen_server loop's receive, called by the loop (lserver.c) without
** a Lua call, and by core.next. gsi_lua_next_begin starts the wait for
** the next message, with the time-out (ms, nil: none) at idx: 1 when L
** must yield first (its budget is spent, or NEXT_NEST_MAX messages came
** without a yield), else 0; raises inside a receive match function.
** gsi_lua_next_take then looks, as often as it returns GSI_LNEXT_WAIT
** (yield with a continuation that calls it again): it pushes kind, a
** [, b] for a message and returns their number, or GSI_LNEXT_TIMEOUT
** (nothing pushed), GSI_LNEXT_DIE (return gsi_lua_die). system_only:
** sys.suspend, system messages and exit signals only. */
enum { GSI_LNEXT_TIMEOUT = 0, GSI_LNEXT_WAIT = -1, GSI_LNEXT_DIE = -2 };
GSI_FUNC int gsi_lua_next_begin(lua_State *L, gsi_proc *p, int idx);
GSI_FUNC int gsi_lua_next_take(lua_State *L, gsi_proc *p, int system_only);

/* ----------------------------------------- arguments and values (lmsg.c) */

GSI_FUNC uint64_t gsi_lua_check_pid(lua_State *L, int idx);
GSI_FUNC uint64_t gsi_lua_check_ref(lua_State *L, int idx);
/* The pid registered as name, or 0. */
GSI_FUNC uint64_t gsi_lua_lookup(lua_State *L, const char *name);
/* A server argument: a pid or a registered name; 0 for a name nobody holds. */
GSI_FUNC uint64_t gsi_lua_resolve(lua_State *L, int idx);
/* A time in ms at idx (nil: def_ms; "infinity" or math.huge: NO_TIMEOUT),
** and the same as an absolute deadline in ns (0: none). */
#define NO_TIMEOUT UINT64_MAX
GSI_FUNC uint64_t gsi_lua_opt_ms(lua_State *L, int idx, double def_ms);
GSI_FUNC uint64_t gsi_lua_opt_deadline(lua_State *L, int idx, double def_ms);

/* Raise the codec's error string (on top) with the caller's position. */
GSI_FUNC int gsi_lua_raise_encode_error(lua_State *L);
/* Encode the value at idx into a new message for `to` (0: not known), or
** raise the codec's error (nothing is sent). */
GSI_FUNC gsi_msg *gsi_lua_encode(lua_State *L, int idx, const char *what, int kind,
                                 uint64_t from, uint64_t ref, uint64_t to);
/* Push a message's payload: 0, or -1 with an error string pushed. An empty
** payload reads as nil. decode_next skips the protected call for plain
** data in a process (a memory error then raises). */
GSI_FUNC int gsi_lua_decode(lua_State *L, const gsi_msgv *v);
GSI_FUNC int gsi_lua_decode_next(lua_State *L, const gsi_msgv *v);
/* A call's from { caller pid, tag } (see lmsg.c), and its tag back. */
GSI_FUNC void gsi_lua_push_from(lua_State *L, uint64_t from, uint64_t ref);
GSI_FUNC int gsi_lua_from_tag(lua_State *L, int idx, uint64_t *ref);
/* Give the table at idx the readable reasons' metatable. */
GSI_FUNC void gsi_lua_mark_reason(lua_State *L, int idx);
/* Push a message as plain receive returns it: 0, or -1 with an error. */
GSI_FUNC int gsi_lua_push_msg(lua_State *L, const gsi_msgv *v);
/* Is L a gen_server's state (process.exit raises an exit error)? */
GSI_FUNC int gsi_lua_serving(lua_State *L);
GSI_FUNC int gsi_lua_raise_exit_error(lua_State *L, int idx);
/* A plain process's body raised the error at idx: an error report to
** genserver.logger (the core's report_crash hook, lface.h). Never raises. */
GSI_FUNC void gsi_report_crash(lua_State *L, int idx);

/* ----------------------------------------------------- the functions */

/* genserver.core's functions, one array per file (lgenserver.c sets them) */
GSI_FUNC const luaL_Reg gsi_lua_msg_funcs[];
GSI_FUNC const luaL_Reg gsi_lua_receive_funcs[];
GSI_FUNC const luaL_Reg gsi_lua_proc_funcs[];
GSI_FUNC const luaL_Reg gsi_lua_info_funcs[];

#endif
