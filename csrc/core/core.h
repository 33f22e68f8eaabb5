/*
** core.h - the C core as the layers above it see it: opaque types, the
** hooks a runtime takes from its faces, and the few functions that need
** no struct. No struct of the core is defined here (DESIGN §1;
** docs/architecture.md), so a file that includes only this header cannot
** touch a process's fields or locks. The core's own files include the
** per-module headers (proc.h, msg.h, rt.h, ...), which include this one.
*/
#ifndef GS_CORE_H
#define GS_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "lua.h"

#define GSI_FUNC __attribute__((visibility("hidden"))) extern

/* A per-thread variable on a hot path: the initial-exec model reads it at a
** fixed offset from the thread pointer instead of calling __tls_get_addr
** (~11 instructions, ~16 times per call round trip in a shared object). It
** takes room from the static TLS block glibc keeps for libraries opened
** with dlopen (a few hundred bytes in all): only small variables get it. */
#define GSI_TLS_FAST __attribute__((tls_model("initial-exec")))

typedef struct gsi_rt gsi_rt;
typedef struct gsi_proc gsi_proc;
typedef struct gsi_msg gsi_msg;
typedef struct gsi_worker gsi_worker;

/* ---------------------------------------------------------------- hash */

/* FNV-1a over n bytes, continuing from h (start with GSI_HASH_SEED): the
** one string hash of the core (names, module cache, boot hints). */
#define GSI_HASH_SEED 14695981039346656037u
static inline uint64_t gsi_hash(uint64_t h, const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211u;
  return h;
}

/* ----------------------------------------------------------------- ids */

#define GSI_PID(index, gen) (((uint64_t)(gen) << 32) | (uint32_t)(index))
#define GSI_PID_INDEX(pid) ((uint32_t)((pid) & 0xffffffffu))
#define GSI_PID_GEN(pid) ((uint32_t)((pid) >> 32))

/* Timer ids are refs with the top bit set, so they never collide with
** make_ref values (a plain counter). */
#define GSI_TIMER_BIT ((uint64_t)1 << 63)

#define GSI_NAME_MAX 255 /* bytes in a registered name */

/* ------------------------------------------------------------ messages */

enum {
  GSI_M_USER = 1, /* process.send */
  GSI_M_CALL,     /* gen_server call: from + ref */
  GSI_M_CAST,     /* gen_server cast */
  GSI_M_REPLY,    /* answer to a pending ref */
  GSI_M_DOWN,     /* monitor fired: from = dead pid, ref = monitor ref */
  GSI_M_EXIT,     /* exit signal: from = sender, flags below */
  GSI_M_TIMEOUT,  /* a wait timer fired: ref = timer id */
  GSI_M_SYSTEM    /* sys / stop requests: from + ref */
};

/* flags of GSI_M_EXIT */
#define GSI_XF_LINK 1   /* sent because a linked process died */
#define GSI_XF_KILL 2   /* reason is "kill": cannot be trapped */
#define GSI_XF_NORMAL 4 /* reason is "normal" */
#define GSI_XF_UNTRAP 8 /* cannot be trapped; the reason is the payload */

/* what a full bounded mailbox does with one more message */
enum { GSI_OVF_DROP = 1, GSI_OVF_REJECT, GSI_OVF_KILL };

/* ----------------------------------------------------------- processes */

/* sched states: the run-queue protocol (see sched.c). A process is on a
** run queue iff it is QUEUED, so at most once. */
enum { GSI_IDLE = 0, GSI_QUEUED, GSI_RUNNING, GSI_NOTIFIED };

/* Why a process yielded back to its worker. */
enum { GSI_W_NONE = 0, GSI_W_WAIT, GSI_W_YIELD, GSI_W_EXIT };

/* sflags: suspended; a debug hook is set; an idle deadline is pending */
enum { GSI_SF_SUSPENDED = 1, GSI_SF_HOOK = 2, GSI_SF_DEADLINE = 4 };

/* gen_server callbacks, for info().current (their names: the binding) */
enum { GSI_CB_NONE = 0, GSI_CB_INIT, GSI_CB_CALL, GSI_CB_CAST, GSI_CB_INFO,
       GSI_CB_CONTINUE, GSI_CB_TERMINATE, GSI_CB_SYSTEM };

/* When runtime shutdown stops a process that is a root (its parent is
** gone or is a foreign thread): supervisors first, one at a time, in
** reverse start order; the logger last, once nothing else is left. */
enum { GSI_STOP_NORMAL = 0, GSI_STOP_FIRST, GSI_STOP_LAST };

/* -------------------------------------------------------------- errors */

/* The core's one error dialect: a function that can fail returns GSI_OK
** or one of these, each equal to the public code of the same name
** (genserver.h's GS_E*; api.c checks that at compile time), so the API
** layer hands them on as they are and the binding maps them to Lua errors
** in one place. GSI_AGAIN is not an error: "nothing yet, look again". */
typedef enum gsi_err {
  GSI_AGAIN = 1,
  GSI_OK = 0,
  GSI_EINVAL = -1,     /* bad argument or state */
  GSI_ENOMEM = -2,     /* out of memory */
  GSI_ENOPROC = -3,    /* no such process (a dead pid) */
  GSI_ETIMEDOUT = -4,
  GSI_ECLOSED = -5,
  GSI_ECALLSELF = -6,
  GSI_EEXIT = -7,
  GSI_EENCODE = -8,
  GSI_EDECODE = -9,
  GSI_ELIMIT = -10,    /* process limit */
  GSI_EALREADY = -11,  /* the name is taken */
  GSI_EIGNORE = -12,
  GSI_EKILLED = -13,   /* the calling process was killed */
  GSI_ECONTEXT = -14,
  GSI_ETYPE = -15,
  GSI_EFULL = -16,     /* a bounded mailbox refused the message */
  GSI_EBUSY = -17      /* the threads run already */
} gsi_err;

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
** process state is one whose allocator is the core's (gsi_palloc, or
** gsi_palloc_boot while it boots: palloc.c); its datum is the process. Cheap: no lookup in
** L, no call but lua_getallocf. */
GSI_FUNC void *gsi_palloc(void *ud, void *ptr, size_t osize, size_t nsize);
GSI_FUNC void *gsi_palloc_boot(void *ud, void *ptr, size_t osize, size_t nsize);
static inline gsi_proc *gsi_state_proc(lua_State *L) {
  void *ud;
  lua_Alloc f = lua_getallocf(L, &ud);
  return f == gsi_palloc || f == gsi_palloc_boot ? (gsi_proc *)ud : NULL;
}

#endif
