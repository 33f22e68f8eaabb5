/*
** api_int.h - what the files of the public C API (csrc/api/) share; not
** installed, not for the other layers.
**
**   api.c    errors, runtime open/configure/stop/close/stats, host states
**   msg.c    the C value API (gs_msg): builder, reader, describe
**   call.c   the calling thread's process; call, cast, send, stop, start
**
** The functions shared between these files keep the short names they had
** when the API was one file; the macros below give them hidden gsi_api_
** names.
*/
#ifndef GS_API_INT_H
#define GS_API_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "genserver.h"
#include "core/internal.h"
#include "core/wire.h"

#define NAME_MAX_LEN GSI_NAME_MAX
#define MS_INFINITE (UINT64_MAX / 2000000u) /* "forever" for the core */

struct gs_runtime {
  gsi_rt *core;
  char *path, *cpath;        /* package paths of processes started here */
  gs_state_hook hook;
  void *hook_ud;
  pthread_key_t key;         /* per thread: rt once the thread used rt */
  uint64_t serial;           /* tells runtimes at the same address apart */
  _Atomic int stopped;       /* calls are turned away */
  _Atomic long inflight;     /* calls inside an entry point */
  pthread_mutex_t life_mu;   /* one stop/close at a time */
  int stop_done;             /* guarded by life_mu: every process is gone */
};

/* ------------------------------------------------------------- gs_msg */

typedef struct frame {
  size_t total, done, narr;
} frame;

struct gs_msg {
  gsi_buf b;        /* b.data[0] is the header byte */
  frame *st;        /* open tables, innermost last */
  int depth, cap;
  int maxdepth;     /* deepest nesting written (0: unknown, received) */
  int complete;
  int err;          /* sticky GS_ENOMEM */
};

typedef gsi_wire_rd rd;

/* api.c: record details for gs_errmsg and return code; clear them. */
#define fail gsi_api_fail
#define ok gsi_api_ok
GSI_FUNC int fail(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
GSI_FUNC int ok(void);

/* msg.c: the next item of r as a gs_item; a value (a whole message) as
** readable text (malloc; *tlen its length, if wanted) and as a gs_msg; a
** reply as a C string (strings, numbers, booleans; nil is NULL). */
#define rd_item gsi_api_rd_item
#define reason_text gsi_api_reason_text
#define msg_from_bytes gsi_api_msg_from_bytes
#define value_string gsi_api_value_string
GSI_FUNC int rd_item(rd *r, gs_item *it, int depth);
GSI_FUNC char *reason_text(const unsigned char *data, size_t len, size_t *tlen);
GSI_FUNC gs_msg *msg_from_bytes(const unsigned char *data, size_t len);
GSI_FUNC int value_string(const unsigned char *data, size_t len, char **out, size_t *olen);

/* call.c: rt's worker that is the calling thread (or NULL); the entry and
** exit of every call that needs the runtime running; the thread-specific
** key's destructor (a thread that used rt exits). */
#define tls_core gsi_api_tls_core
#define own_worker gsi_api_own_worker
#define enter gsi_api_enter
#define leave gsi_api_leave
#define thread_gone gsi_api_thread_gone
GSI_FUNC _Thread_local gsi_rt *tls_core GSI_TLS_FAST; /* the last runtime the thread used */
GSI_FUNC gsi_worker *own_worker(gs_runtime *rt);
GSI_FUNC int enter(gs_runtime *rt);
GSI_FUNC int leave(gs_runtime *rt, int rc);
GSI_FUNC void thread_gone(void *v);

#endif
