/*
** bif.h - the process primitives a binding needs, on opaque handles.
**
** Erlang calls the primitives of its runtime BIFs (built-in functions:
** link, monitor, register, send_after, process_info ...). These are the
** same for a binding of the core: the Lua binding (csrc/lua/) reaches a
** process, a message and the runtime only through them, so it compiles
** without the core's structures and cannot take a core lock or write a
** field behind the core's back (docs/architecture.md, the layer rules).
**
** Handles: a gsi_proc is the calling process (its owner thread is the
** caller unless said otherwise), a gsi_rt its runtime, a gsi_msg a
** message this process took out of its mailbox. Other processes are named
** by pid only. Nothing here raises a Lua error: a function that can fail
** returns the core's error code (gsi_err, core.h), and the binding raises
** once it holds no lock and owns every buffer. The few that take a lua_State use it to compare or to
** test lua_isyieldable, and to decode or encode into that state.
**
** Hot paths (receive, next, send, reply, the gen_server loop) call one
** function per step, which does the whole step on the structures, rather
** than many small accessors.
*/
#ifndef GS_GEN_BIF_H
#define GS_GEN_BIF_H

#include <stddef.h>
#include <stdint.h>

#include "lua.h"

#include "core/codec.h"
#include "core/core.h" /* opaque handles, message kinds, gsi_err */
#include "core/ids.h"

/* --------------------------------------------------------- a process */

/* The process whose own state L is (any of its threads), or NULL in any
** other state (a host's): the core's one test, gsi_state_proc. */
GSI_FUNC gsi_proc *gsi_bif_state_proc(lua_State *L);
/* The calling process as a primitive begins: L's process, after taking an
** exit signal pushed to it (a process that only sends still dies), with
** *dying set to its dying flag (the whole entry step, for every
** primitive); NULL in a host's state (*dying untouched). */
GSI_FUNC gsi_proc *gsi_bif_self(lua_State *L, int *dying);
/* The same notice for a foreign thread's process p: an exit signal pushed
** to it is taken now; returns 1 when that left p dying, else 0. */
GSI_FUNC int gsi_bif_notice(gsi_proc *p);
/* The core's contract with lserver.c: at boot (core/prun.c) the extra
** space of a process state (LUA_EXTRASPACE, copied to every thread made
** later) holds its gsi_proc. Only for code that runs in a process state
** only (the gen_server loop), where it costs nothing; anywhere else use
** gsi_bif_state_proc (a host's extra space is the host's). */
static inline gsi_proc *gsi_bif_extra_proc(lua_State *L) {
  return *(gsi_proc **)lua_getextraspace(L);
}

GSI_FUNC uint64_t gsi_bif_pid(gsi_proc *p);
GSI_FUNC gsi_rt *gsi_bif_rt(gsi_proc *p);
/* An exit signal killed p, or it called exit: it must stop now. */
GSI_FUNC int gsi_bif_dying(const gsi_proc *p);
/* p is a foreign thread's process (it blocks where a process yields). */
GSI_FUNC int gsi_bif_foreign(const gsi_proc *p);
/* p runs sandboxed (set before it was published, read-only since). */
GSI_FUNC int gsi_bif_sandboxed(const gsi_proc *p);
/* The process that spawned p, 0 for none. */
GSI_FUNC uint64_t gsi_bif_parent(const gsi_proc *p);
/* Is self sandboxed and pid a live process outside any sandbox? Then pid
** is out of self's reach for what would end it or take it over: exit
** signals, system requests, its name (DESIGN §5). */
GSI_FUNC int gsi_bif_outside_sandbox(gsi_proc *self, uint64_t pid);
/* The codec limits for decoding into p's state, and the runtime's. */
GSI_FUNC const gsi_codec_limits *gsi_bif_limits(gsi_proc *p);
GSI_FUNC const gsi_codec_limits *gsi_bif_rt_limits(gsi_rt *rt);
/* A binding's runtime check at each primitive: rt when it runs, NULL once
** it is closed; rt NULL stands for the runtime of L's process (a process
** state: gsi_bif_state_proc(L) is not NULL). */
GSI_FUNC gsi_rt *gsi_bif_live_rt(lua_State *L, gsi_rt *rt);

/* ------------------------------------------------------------ messages */

/* What a binding reads of a message: a copy of its header and where its
** payload (the codec's bytes) lies. Valid while the message is. lim: the
** codec limits to decode it with in the receiving process's own state, set
** by gsi_bif_next only (NULL: ask gsi_bif_limits, or a foreign thread). */
typedef struct gsi_msgv {
  const unsigned char *data;
  size_t len;
  uint64_t from, ref;
  int kind, flags;
  const gsi_codec_limits *lim;
} gsi_msgv;
GSI_FUNC void gsi_bif_msgv(const gsi_msg *m, gsi_msgv *v);

/* Encode the value at idx of L into a new message of `kind` for `to` (0:
** not known, or a value that holds no function). NULL with *err =
** GSI_EENCODE and the codec's error string pushed, or GSI_ENOMEM (nothing
** pushed). */
GSI_FUNC gsi_msg *gsi_bif_encode(lua_State *L, int idx, const char *what,
                                 gsi_rt *rt, int kind, uint64_t from,
                                 uint64_t ref, uint64_t to, int *err);
/* The calling thread's scratch buffer (the codec's bytes of what it
** sends), kept between calls; release frees it (a thread that is done). */
GSI_FUNC gsi_buf *gsi_bif_scratch(void);
GSI_FUNC void gsi_bif_scratch_release(void);
/* Encode the value at idx of L into the thread's scratch buffer (emptied
** first) with rt's limits, checking that a function in it may go to `to`
** (0: not known). Returns the buffer, or NULL with the codec's error
** string pushed (nothing is sent). The caller trims it after sending
** (gsi_bif_scratch_trim). */
GSI_FUNC gsi_buf *gsi_bif_encode_buf(lua_State *L, int idx, const char *what,
                                     gsi_rt *rt, uint64_t to);
/* A scratch buffer grown past 1 MiB is freed, not kept. */
GSI_FUNC void gsi_bif_scratch_trim(gsi_buf *b);
GSI_FUNC void gsi_bif_msg_free(gsi_msg *m);
/* Decode the answer m that p took into L (p's own state, or the host
** state of p's foreign thread) without a protected call (plain data:
** gsi_decode_raw with p's limits): 0, or -1 with the error pushed. p
** holds m meanwhile, so a memory error raising from the decoder leaves m
** on p, freed later (at the next such decode, or when p ends), not lost;
** the caller still owns m after a return. GSI_AGAIN, decoding nothing
** (an empty payload): the binding decodes it protected. */
GSI_FUNC int gsi_bif_decode_answer(lua_State *L, gsi_proc *p, gsi_msg *m);
/* Take m out of p's saved messages and free it, forgetting the pending
** request it answered (a reply taken by a plain receive is consumed for
** good). */
GSI_FUNC void gsi_bif_consume(gsi_proc *p, gsi_msg *m);
/* The saved messages (drained from the mailbox), oldest first. */
GSI_FUNC gsi_msg *gsi_bif_saved(gsi_proc *p);
GSI_FUNC gsi_msg *gsi_bif_saved_next(gsi_msg *m);
/* Move the mailbox to the saved list: everything (all), or only while
** nothing is saved (a receive that takes the oldest). Returns dying. */
GSI_FUNC int gsi_bif_drain(gsi_proc *p, int all);

/* ---------------------------------------------------------------- waits */

/* A wait: begin_wait arms `deadline` (ns, 0 = none) after ending the last
** one: GSI_OK, or GSI_ECONTEXT inside a receive match function (receiving
** there would free what the outer receive walks). */
GSI_FUNC int gsi_bif_begin_wait(gsi_proc *p, uint64_t deadline);
GSI_FUNC void gsi_bif_end_wait(gsi_proc *p);
/* A receive match function starts (+1) or returns (-1). */
GSI_FUNC void gsi_bif_match(gsi_proc *p, int d);
GSI_FUNC int gsi_bif_timed_out(const gsi_proc *p);
/* Nothing to take yet: GSI_WAIT_AGAIN to look again (a foreign thread
** woke up or timed out), GSI_WAIT_YIELD when L must yield to its worker
** (a timer is armed for the deadline); or an error: GSI_ECONTEXT when L
** cannot yield (a nested coroutine, across a C call), GSI_ENOMEM. */
enum { GSI_WAIT_AGAIN = 0, GSI_WAIT_YIELD = 1 };
GSI_FUNC int gsi_bif_wait_more(gsi_proc *p, lua_State *L);
/* Fairness: p took its budget of messages this turn and others wait for
** a worker: 1 when L must yield now (p is marked to go to the back). */
GSI_FUNC int gsi_bif_over_budget(gsi_proc *p, lua_State *L);
/* The gen_server loop's next begins a wait until deadline (as
** gsi_bif_begin_wait: GSI_ECONTEXT inside a match function); 1 when L must
** yield first: p took its budget of messages (as gsi_bif_over_budget), or
** next returned nest_max messages in a row without yielding (see l_next).
** 0: look now. */
GSI_FUNC int gsi_bif_next_begin(gsi_proc *p, lua_State *L, uint64_t deadline,
                                int nest_max);
/* p has to stop (dying). GSI_DIE_FOREIGN: a foreign thread, which ends
** its process itself; GSI_DIE_YIELD: L yields to the worker, which ends
** it. Else it cannot yield here, and this raises an error no pcall
** keeps (never returns). */
enum { GSI_DIE_FOREIGN = 1, GSI_DIE_YIELD };
GSI_FUNC int gsi_bif_die(gsi_proc *p, lua_State *L);
/* exit(reason) on itself: p dies with the encoded reason m (owned now). */
GSI_FUNC void gsi_bif_exit_self(gsi_proc *p, gsi_msg *m, int flags);

/* The gen_server loop's receive, one look: GSI_NEXT_MSG (*m taken from
** the saved list's front, or with system_only the first system message
** or the parent's or the runtime's EXIT; v filled; the wait ended),
** GSI_NEXT_TIMEOUT (the wait ended), GSI_NEXT_EMPTY, GSI_NEXT_DYING.
** A time-out ends the loop's idle deadline (GSI_SF_DEADLINE). */
enum { GSI_NEXT_MSG = 0, GSI_NEXT_TIMEOUT, GSI_NEXT_EMPTY, GSI_NEXT_DYING };
GSI_FUNC int gsi_bif_next(gsi_proc *p, int system_only, gsi_msg **m,
                          gsi_msgv *v);
/* next handed out m: consume it; a call's or system request's from table
** (a pointer only compared, never followed; NULL: none) stands for its
** (from, ref) in the loop's reply, a cast clears it. A message other than
** a system one ends the loop's idle deadline (GSI_SF_DEADLINE): a new
** wait follows. */
GSI_FUNC void gsi_bif_took(gsi_proc *p, gsi_msg *m, const void *from_tab);

/* --------------------------------------------------------------- sends */

/* p sent a message: count it. 1 when L must give its worker up now (a
** loop that only sends lets its receivers run); p is then marked to go to
** the back of the run queue. */
GSI_FUNC int gsi_bif_sent(gsi_proc *p, lua_State *L);
/* Send the exit signal m (flags GSI_XF_*) from p to pid. Returns p's
** dying flag when pid is p itself (its own signal is taken at once). */
GSI_FUNC int gsi_bif_signal(gsi_proc *p, uint64_t pid, gsi_msg *m, int flags);

/* Send the value at idx of L to pid as a request of kind (GSI_GEN_CALL /
** _SYSTEM) from p under a new pending ref (*ref), the whole step of a call
** (gsi_gen_request; handoff: pid runs next on this worker): p's runtime
** checked, the value encoded into the thread's scratch buffer (what: the
** codec's name for it). GSI_OK; GSI_ECLOSED the runtime is shut down;
** GSI_EENCODE with the codec's error pushed; GSI_ENOMEM. */
GSI_FUNC int gsi_bif_request(lua_State *L, gsi_proc *p, int idx, const char *what,
                             uint64_t pid, int kind, int handoff, uint64_t *ref);
/* Send the value at idx of L to pid as a message of kind (GSI_M_CAST /
** GSI_M_USER) from p, the whole step of a cast or send from a process's
** own state (the binding sends from foreign threads through gs_cast /
** gs_send): p's runtime checked, the value encoded into the thread's
** scratch buffer (so pid 0 still refuses a value that cannot be sent),
** delivered without hand-off. GSI_OK; GSI_ENOPROC (pid 0 or dead: the
** message is dropped); GSI_EFULL (a bounded mailbox refused it);
** GSI_ECLOSED; GSI_EENCODE with the codec's error pushed; GSI_ENOMEM. */
GSI_FUNC int gsi_bif_send(lua_State *L, gsi_proc *p, int idx, uint64_t pid, int kind);
/* The gen_server loop's reply (lserver.c) to the call it is handling: when
** the value at fidx of L (p's own state) is the from table gsi_bif_took
** was given, encode the value at idx and send it to that call's (from,
** ref) straight away. Returns 1 sent; 0 not that from, or the value cannot
** be encoded (the codec's error is popped: reply() makes it again, with
** its position); GSI_ENOMEM. */
GSI_FUNC int gsi_bif_reply_from(lua_State *L, int fidx, int idx);

/* ---------------------------------------------------- links, monitors */

/* monitor(pid): the new ref; a dead pid (or 0) gets its DOWN "noproc" in
** p's mailbox at once, as Erlang does. 0 when out of memory. */
GSI_FUNC uint64_t gsi_bif_monitor(gsi_proc *p, uint64_t pid);
/* demonitor(ref [, flush]): GSI_OK, or GSI_ECONTEXT inside a receive
** match function. A DOWN already delivered stays unless flushed; none
** comes later. */
GSI_FUNC int gsi_bif_demonitor(gsi_proc *p, uint64_t ref, int flush);
/* link(pid): GSI_OK when linked, or when pid is dead and p traps exits
** ({"EXIT", pid, "noproc"} is then in its mailbox, as Erlang's link/1);
** GSI_ENOPROC: dead and not trapping (the binding raises); GSI_ENOMEM. */
GSI_FUNC int gsi_bif_link(gsi_proc *p, uint64_t pid);
GSI_FUNC void gsi_bif_unlink(gsi_proc *p, uint64_t pid);
/* trap_exit: set it (on = 0 or 1) or only read it (on = -1); returns the
** old value. */
GSI_FUNC int gsi_bif_trap_exit(gsi_proc *p, int on);

/* --------------------------------------------------------------- names */

/* GSI_OK; GSI_EALREADY the name is taken (*holder set); GSI_ENOPROC pid
** is dead; GSI_EINVAL pid has a name already; GSI_ENOMEM. */
GSI_FUNC int gsi_bif_register(gsi_rt *rt, const char *name, uint64_t pid,
                              uint64_t *holder);
/* 1 when the name was held (and is free now). */
GSI_FUNC int gsi_bif_unregister(gsi_rt *rt, const char *name);
/* Every registered name, copied out under the registry lock: a malloc'd
** array of *n malloc'd strings, freed by gsi_bif_names_free. NULL with
** *n = 0 when there are none or memory ran out. */
GSI_FUNC char **gsi_bif_names(gsi_rt *rt, size_t *n);
GSI_FUNC void gsi_bif_names_free(char **v, size_t n);

/* -------------------------------------------------------------- timers */

GSI_FUNC uint64_t gsi_bif_now_ns(void);
/* Start the runtime's threads if they do not run yet: 0, or -1 (stopped). */
GSI_FUNC int gsi_bif_ensure_started(gsi_rt *rt);
/* send_after / send_interval (every): deliver m to pid, or to the process
** registered as name (name != NULL), after ms (every ms). Returns the
** timer id (a ref), or 0 when out of memory (m is freed). */
GSI_FUNC uint64_t gsi_bif_send_after(gsi_rt *rt, uint64_t ms, uint64_t pid,
                                     const char *name, gsi_msg *m, int every);
/* ms left (>= 0), or -1 when the timer fired already or is unknown. */
GSI_FUNC int64_t gsi_bif_cancel_timer(gsi_rt *rt, uint64_t id);

/* ---------------------------------------------------------- inspection */

GSI_FUNC uint64_t gsi_bif_make_ref(gsi_rt *rt);
GSI_FUNC int gsi_bif_alive(gsi_rt *rt, uint64_t pid);
/* The pids of the live processes (malloc'd, *n of them; free()). NULL
** with *n = 0 for none, NULL with *n = 1 when out of memory. */
GSI_FUNC uint64_t *gsi_bif_list(gsi_rt *rt, size_t *n);
/* The runtime is shutting down (what crashes now is its doing). */
GSI_FUNC int gsi_bif_shutting(gsi_rt *rt);

/* info(pid): a snapshot in plain C memory, taken under the target's lock
** and filled in here, so that the binding builds its table with no lock
** held. status: 0 waiting, 1 runnable, 2 running. links: pids;
** monitored_by: the watchers' pids; monitors: the pids p monitors (made by
** monitor(), not a request's). vsn: a string, else vsn_n (0: none).
** current: GSI_CB_*. */
typedef struct gsi_pinfo {
  int status, foreign, trap_exit, server, current;
  uint64_t mailbox, messages_in, messages_out, reductions, overflowed;
  size_t memory, max_heap;
  uint32_t mailbox_limit;
  uint64_t vsn_n;
  char module[64];
  char vsn[48];
  char name[GSI_NAME_MAX + 1];
  uint64_t *links, *monitored_by, *monitors;
  size_t nlinks, nmonitored_by, nmonitors;
} gsi_pinfo;
/* 1 filled in (free it with gsi_bif_info_free), 0 no such process. */
GSI_FUNC int gsi_bif_info(gsi_rt *rt, uint64_t pid, gsi_pinfo *out);
GSI_FUNC void gsi_bif_info_free(gsi_pinfo *i);

/* A gen_server names its module and version, for info(): vsn (n bytes,
** cut at 47) when given, else the module cache's counter for name. */
GSI_FUNC void gsi_bif_set_module(gsi_proc *p, const char *name,
                                 const char *vsn, size_t n);
/* When runtime shutdown stops p if it is a root: GSI_STOP_*. */
GSI_FUNC void gsi_bif_stop_order(gsi_proc *p, int order);

/* ------------------------------------------------------- code reloads */

/* Make the function at the top of L, compiled from file, the current
** version of (name, path) in rt's module cache: the new version counter,
** 0 when it cannot be kept. Never raises. */
GSI_FUNC uint64_t gsi_bif_code_reload(lua_State *L, gsi_rt *rt, const char *name,
                                      const char *path, const char *file,
                                      const char *vsn);
/* The current version counter of (name, path), 0 if not cached; its vsn
** string (empty if none) copied to vsn (n bytes). */
GSI_FUNC uint64_t gsi_bif_code_version(gsi_rt *rt, const char *name,
                                       const char *path, char *vsn, size_t n);

/* ---------------------------------------------- the gen_server loop */

/* A callback (GSI_CB_*) is about to run: count it, name it for info();
** returns the loop's flags (GSI_SF_*). */
GSI_FUNC int gsi_bif_running(gsi_proc *p, int callback);
/* Name the running callback (GSI_CB_SYSTEM: sys) without counting it. */
GSI_FUNC void gsi_bif_current(gsi_proc *p, int callback);
/* Top of the loop: no callback runs; returns the loop's flags. */
GSI_FUNC int gsi_bif_idle(gsi_proc *p);
/* The loop's flags: clear then set bits; returns the new flags. */
GSI_FUNC int gsi_bif_sflags(gsi_proc *p, int clear, int set);
/* Hibernation: the freed blocks p's state kept go back to malloc. */
GSI_FUNC void gsi_bif_trim(gsi_proc *p);

/* ------------------------------------------------ a process's state */

/* require(name) through the runtime's module cache (a lua_CFunction). */
GSI_FUNC int gsi_bif_require(lua_State *L);
/* The message handler of code whose crash becomes an exit reason (a
** lua_CFunction): it records the error and its traceback. */
GSI_FUNC int gsi_bif_crash_msgh(lua_State *L);
/* Push the traceback gsi_bif_crash_msgh took for the error at idx and
** return 1; 0, pushing nothing, if that error is not the one it saw. */
GSI_FUNC int gsi_bif_crash_traceback(lua_State *L, int idx);

#endif
