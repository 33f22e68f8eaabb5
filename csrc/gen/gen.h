/*
** gen.h - the shared protocols (OTP's gen.erl and proc_lib), written once
** for both faces: the Lua binding (csrc/lua/) and the public C API
** (csrc/api/). Each face adds only what is its own: how a value is encoded
** (a Lua value, or a gs_msg/string), and how it waits (the Lua face yields
** its coroutine, the C face blocks its thread).
**
**   spawn     a spawn spec -> a published, queued process (gsi_gen_spawn)
**   start     the start acknowledgement { "ok" } | { "ignore" } |
**             { "error", reason }: encoded and decoded here only; the
**             gen_server body (genserver.core's serve) sends it
**   stop      the stop request { "stop", reason } (a system request)
**   request   a call, stop or start request and its answer, classified
**             (reply, exit of the server, refusal, time-out, dying)
**   killed    ending a foreign thread's process that an exit signal killed
**
** Processes are opaque here (the struct is the core's): a face that
** includes only this header cannot touch a slot's fields or locks.
*/
#ifndef GS_GEN_H
#define GS_GEN_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h" /* opaque types, gsi_err: no struct */
#include "core/wire.h"

#define GSI_GEN_FN __attribute__((visibility("hidden"))) extern

/* Functions that can fail return the core's gsi_err (core/core.h): GSI_OK,
** or GSI_ENOMEM, GSI_EINVAL (malformed input), GSI_ELIMIT (no free process
** slot), GSI_ECLOSED (the runtime's threads cannot start). */

/* ----------------------------------------------------------------- spawn */

enum { GSI_GEN_OVF_DROP, GSI_GEN_OVF_REJECT, GSI_GEN_OVF_KILL };

/* What a new process is made of. A zeroed spec plus the message is a
** plain spawn. */
typedef struct gsi_spawn_spec {
  const unsigned char *msg; /* the spawn message (core/spawnmsg.h), copied */
  size_t len;
  const char *module;       /* label for info() and crash reports, or NULL */
  uint64_t start_ref;       /* 0, or a ref of the spawner's: it becomes a
                               pending request on the new process (monitored),
                               answered by its start acknowledgement or its
                               DOWN; the new process then runs next */
  int link;                 /* link the spawner and the new process */
  int monitor;              /* a monitor of the spawner's (*mref) */
  int trap_exit;            /* traps exits from the start */
  int stop_last;            /* stopped last at program end (the logger) */
  uint32_t mailbox_limit;   /* 0 = unbounded */
  int overflow;             /* GSI_GEN_OVF_*, with a limit only */
  size_t max_heap;          /* 0 = no cap */
  int sandbox;              /* also set when the spawner is sandboxed */
  uint64_t fail_at;         /* fault injection (tests), 0 = off */
} gsi_spawn_spec;

/* Make, publish and queue a process for self. Nothing is left behind on
** failure (GSI_ECLOSED, GSI_ELIMIT, GSI_ENOMEM; a link or monitor that
** cannot be recorded once the process is published takes back the rest
** and kills it). *mref: the monitor's ref when s->monitor, else 0. */
GSI_GEN_FN int gsi_gen_spawn(gsi_proc *self, const gsi_spawn_spec *s, uint64_t *pid,
                             uint64_t *mref);

/* A sandboxed spawner passes on the package paths it was given, not what
** its code made of package.path (DESIGN §5). Returns 1 with them set, or
** 0 when the spawner's package.path/cpath apply. */
GSI_GEN_FN int gsi_gen_fixed_paths(gsi_proc *self, const char **path, const char **cpath);

/* The start of a spawn message (core/spawnmsg.h) into b (emptied first):
** the package paths the new state starts with; the caller appends the
** message of { n = N, body, args... }. GSI_OK, or GSI_ENOMEM. */
GSI_GEN_FN int gsi_gen_spawn_paths(gsi_buf *b, const char *path, size_t plen,
                                   const char *cpath, size_t clen);

/* The spawn message of a gen_server started by the C face: paths, then
** { n = 3, genserver.core.serve, module, arg, opts } with arg a whole
** message and opts made of the three options the server reads. The Lua
** face makes the same table with genserver.start (init.lua). */
typedef struct gsi_serve_opts {
  const char *name;         /* or NULL */
  int hibernate_after_ms;   /* 0 = none */
  int trap_exit;
} gsi_serve_opts;
GSI_GEN_FN int gsi_gen_serve_msg(gsi_buf *b, const char *path, const char *cpath,
                                 const char *module, const gsi_buf *arg,
                                 const gsi_serve_opts *o);

/* ------------------------------------------------- start acknowledgement */

enum { GSI_ACK_OK, GSI_ACK_IGNORE, GSI_ACK_ERROR };

/* { "ok" } | { "ignore" } | { "error", reason } into b (emptied first);
** reason (a whole message) for GSI_ACK_ERROR only. GSI_OK, or GSI_ENOMEM / GSI_EINVAL. */
GSI_GEN_FN int gsi_gen_ack_encode(gsi_buf *b, int tag, const unsigned char *reason,
                                  size_t len);
/* The tag of an ack, and for GSI_ACK_ERROR its reason as a whole message
** into reason (emptied first). GSI_OK, or GSI_EINVAL (not an ack, or no memory to
** copy its reason) / GSI_ENOMEM. */
GSI_GEN_FN int gsi_gen_ack_decode(const unsigned char *data, size_t len, int *tag,
                                  gsi_buf *reason);
/* Is the ack's reason (a whole message) { already_started = pid }? */
GSI_GEN_FN int gsi_gen_already_started(const unsigned char *reason, size_t len,
                                       uint64_t *holder);
/* Was self started by a start request? 1 with its starter's pid, else 0. */
GSI_GEN_FN int gsi_gen_starter(gsi_proc *self, uint64_t *starter);
/* Send self's ack to its starter. 1 sent; 0 self was not started by a
** start request (nothing to do); GSI_ENOMEM, GSI_EINVAL. */
GSI_GEN_FN int gsi_gen_ack(gsi_proc *self, int tag, const unsigned char *reason,
                           size_t len);

/* ---------------------------------------------------------- stop request */

/* { "stop", reason } into b (emptied first), reason a whole message. */
GSI_GEN_FN int gsi_gen_stop_encode(gsi_buf *b, const unsigned char *reason, size_t len);

/* ---------------------------------------------------- requests, answers */

enum { GSI_GEN_CALL, GSI_GEN_SYSTEM };

/* Send data (a whole message) to `to` as a request of kind GSI_GEN_CALL or
** _SYSTEM under a new pending ref (*ref), monitoring `to`. handoff: run
** `to` next on this worker. When `to` is gone or its mailbox is full:
** with failed == NULL the request stays pending and is answered at once
** (a DOWN "noproc", a refusal "mailbox_full"), so that every wait takes
** one path (the Lua face); with failed set, nothing stays pending and
** *failed says why: GSI_OK (sent), GSI_ENOPROC, GSI_EFULL (the C face).
** GSI_OK, or GSI_ENOMEM (nothing pending). */
GSI_GEN_FN int gsi_gen_request(gsi_proc *self, uint64_t to, int kind, const void *data,
                               size_t len, int handoff, int *failed, uint64_t *ref);

/* Answer request ref of `caller` with data (a whole message), as self:
** the reply, handed off to the caller (it runs next here). GSI_OK, or GSI_ENOMEM. */
GSI_GEN_FN int gsi_gen_reply(gsi_proc *self, uint64_t caller, uint64_t ref, const void *data,
                             size_t len);

/* Answer request ref of `caller` with a refusal (the server lives on): the
** caller's wait returns GSI_GEN_REFUSED with reason. */
GSI_GEN_FN void gsi_gen_refuse(gsi_rt *rt, uint64_t server, uint64_t caller, uint64_t ref,
                               const char *reason);

/* An answer, classified. */
enum {
  GSI_GEN_REPLY,    /* *m: the reply */
  GSI_GEN_DOWN,     /* *m: the DOWN of the server (reason: its payload) */
  GSI_GEN_REFUSED,  /* *m: the server refused the request (reason: payload) */
  GSI_GEN_WAIT,     /* not yet */
  GSI_GEN_TIMEOUT,  /* gsi_gen_await only: not in time (still pending) */
  GSI_GEN_DYING,    /* an exit signal killed the waiter: it must end */
  GSI_GEN_UNKNOWN   /* no such pending request */
};

/* Look for the answer to pending ref (takes it: the request is then
** forgotten). *m is the caller's to free. */
GSI_GEN_FN int gsi_gen_answer(gsi_proc *self, uint64_t ref, gsi_msg **m);
/* The same, blocking a foreign thread until an answer or the deadline (ns,
** 0 = none). */
GSI_GEN_FN int gsi_gen_await(gsi_proc *self, uint64_t ref, uint64_t deadline,
                             gsi_msg **m);
/* Forget pending ref (a late answer is then dropped). */
GSI_GEN_FN void gsi_gen_abandon(gsi_proc *self, uint64_t ref);

/* ------------------------------------------------- a killed foreign thread */

/* A foreign thread's process is dying (an exit signal killed it). Its
** reason, to copy before ending it: 1 when it is plain "killed" (the
** signal was "kill", or carried no reason), else 0 with *data, *len. */
GSI_GEN_FN int gsi_gen_killed_reason(gsi_proc *self, const unsigned char **data,
                                     size_t *len);
/* End it: links and monitors fire with its reason. Returns that reason as
** a message the caller frees (NULL when out of memory: then "killed" is
** the reason, but not returned); *normal: the reason was "normal". The
** thread gets a new process at its next call. */
GSI_GEN_FN gsi_msg *gsi_gen_end_killed(gsi_proc *self, int *normal);

#endif
