/*
** genserver.h - the public C API of genserver: embed the runtime in a C
** host, expose the host's own C functions to every server, and start,
** call, cast and stop servers from any host thread.
**
** One runtime = worker threads + a process table + timers + a name
** registry. Every process (every gen_server) runs in its own lua_State;
** values cross between states as bytes (the codec). A host thread that
** calls into a runtime becomes a *foreign process* of it: it gets a pid and
** a mailbox on first use, and its waits (gs_call, gs_start, gs_stop) block
** that OS thread. See docs/embedding.md for a walk-through.
**
** Conventions
**   - Every function that can fail returns 0 or a negative GS_E* code;
**     gs_strerror(code) explains the code, gs_errmsg() gives the details
**     of the last failure on the calling thread.
**   - Times are milliseconds; GS_INFINITY means no time-out.
**   - A "server" argument is a pid. Use gs_whereis() for a registered
**     name (the Lua API does the same: a name is looked up at call time).
**   - Values cross in one of three ways, by function suffix:
**       (none)  through a host lua_State: the value at the top of L is
**               consumed, a result is pushed onto L;
**       _msg    through a gs_msg, a small C builder/reader of values;
**       _str    as plain C strings (binary safe).
**   - Every function is thread-safe unless said otherwise. gs_msg and
**     lua_State objects are not: use one per thread (or lock).
**   - Inside a server (a C function the state hook exposed, running on a
**     worker thread of the runtime) only the functions that never wait may
**     be used (gs_cast*, gs_send*, gs_whereis, gs_self, gs_runtime_stats,
**     gs_runtime_configure);
**     the waiting ones return GS_ECONTEXT (they would block the scheduler).
**
** Build:  cc app.c $(pkg-config --cflags --libs genserver)
*/
#ifndef GENSERVER_H
#define GENSERVER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Inside the extern "C" block: Lua's own lua.h has no C++ guards (its
** lua.hpp wraps it like this), so a C++ host would otherwise declare
** the lua_* functions with C++ linkage and fail to link against liblua. */
#include "lua.h"

#if defined(_WIN32)
#define GS_API __declspec(dllexport)
#elif defined(__GNUC__)
#define GS_API __attribute__((visibility("default")))
#else
#define GS_API
#endif

#define GS_VERSION_MAJOR 0
#define GS_VERSION_MINOR 1
#define GS_VERSION_PATCH 0
/* 10000 * major + 100 * minor + patch: compare with gs_version() to check
** that the library a program runs with is the one it was compiled for. */
#define GS_VERSION_NUM \
  (GS_VERSION_MAJOR * 10000 + GS_VERSION_MINOR * 100 + GS_VERSION_PATCH)

GS_API int gs_version(void); /* GS_VERSION_NUM of the library */

/* ------------------------------------------------------------- errors */

#define GS_OK 0
#define GS_EINVAL (-1)     /* bad argument (NULL, out of range, bad state) */
#define GS_ENOMEM (-2)     /* out of memory */
#define GS_ENOPROC (-3)    /* no such process (dead pid, unknown name) */
#define GS_ETIMEDOUT (-4)  /* the time-out passed first */
#define GS_ECLOSED (-5)    /* the runtime is stopped (gs_runtime_stop/close) */
#define GS_ECALLSELF (-6)  /* a process called or stopped itself */
#define GS_EEXIT (-7)      /* the server exited: its exit reason is returned */
#define GS_EENCODE (-8)    /* a value cannot be sent (userdata, too deep...) */
#define GS_EDECODE (-9)    /* a value received cannot be decoded here */
#define GS_ELIMIT (-10)    /* process limit reached or threads cannot start */
#define GS_EALREADY (-11)  /* gs_start: the name is taken (holder returned) */
#define GS_EIGNORE (-12)   /* gs_start: init returned "ignore" */
#define GS_EKILLED (-13)   /* this thread's foreign process was killed by an
                              exit signal (reason returned); the thread goes
                              on with a new pid at its next call */
#define GS_ECONTEXT (-14)  /* not allowed on this thread (a worker of the
                              runtime: waiting would block the scheduler) */
#define GS_ETYPE (-15)     /* the value has a type this function cannot
                              return (e.g. a table to gs_call_str) */
#define GS_EFULL (-16)     /* the server's bounded mailbox refused it */
#define GS_EBUSY (-17)     /* gs_runtime_configure: workers or max_processes
                              once the runtime's threads run */

/* A static English sentence for a GS_E* code ("unknown error code" else). */
GS_API const char *gs_strerror(int code);

/* Details of the last failed call on the calling thread (e.g. the codec's
** "request.cb: cannot send a userdata"; "" after most successes). Valid
** until the thread's next gs_ call. */
GS_API const char *gs_errmsg(void);

typedef struct gs_msg gs_msg;

/* After GS_EKILLED from a function that has no place for the reason
** (gs_cast*, gs_send*, gs_self): the exit reason that ended the calling
** thread's foreign process, as a new message (free it with gs_msg_free).
** Taken: a second call returns NULL, as does a call when there is none (or
** no memory). Only the last such reason of the thread is kept. */
GS_API gs_msg *gs_killed_reason(void);

/* Frees memory the API returned (gs_call_str replies, gs_msg_describe). */
GS_API void gs_free(void *p);

#define GS_INFINITY (-1)

/* ------------------------------------------------------------ runtime */

typedef uint64_t gs_pid; /* never 0 for a real process */

/* Room for any pid's text, its NUL included ("<0.4294967295.4294967295>"). */
#define GS_PID_STRLEN 32

/* Writes `pid` as Lua's tostring(pid) prints it, "<0.INDEX.GEN>", into buf
** (at most size bytes, NUL-terminated, cut short if it does not fit; buf
** may be NULL when size is 0). Returns the length of the whole text, as
** snprintf does (so a result >= size means it was cut), or GS_EINVAL for
** pid 0 or a NULL buf with size > 0. Never waits; usable anywhere. */
GS_API int gs_pid_format(gs_pid pid, char *buf, size_t size);
typedef struct gs_runtime gs_runtime;

/* Called on every new process state before any user code runs, on the
** worker thread that starts the process (so concurrently from several
** workers: it must be thread-safe). Typical use: register C functions as
** globals or in package.preload. It runs in protected mode: if it raises
** an error, the process fails to start and its exit reason carries the
** message ("state hook failed: ..."). It must not wait (see GS_ECONTEXT). */
typedef void (*gs_state_hook)(lua_State *L, void *ud);

typedef struct gs_config {
  int workers;            /* worker threads; 0: $GENSERVER_WORKERS, else
                             the number of online CPUs. At most 1024. */
  uint32_t max_processes; /* processes alive at once, foreign ones included;
                             0: 4194303 */
  const char *path;       /* package.path of the processes this host starts
                             (their own children inherit theirs). NULL:
                             Lua's default ($LUA_PATH_5_4, $LUA_PATH or the
                             built-in one) plus genserver's install
                             directory. ";;" stands for that default. */
  const char *cpath;      /* package.cpath, the same way */
  int max_depth;          /* codec: nesting limit of a message; 0: 200 */
  size_t max_message_size; /* codec: bytes; 0: 64 MiB */
  int budget;             /* messages a process handles per turn; 0: 64 */
  gs_state_hook state_hook; /* or NULL */
  void *state_hook_ud;
} gs_config;

/* Fill cfg with the defaults (all the 0/NULL meanings above, spelled out). */
GS_API void gs_config_init(gs_config *cfg);

/* Create a runtime (cfg NULL: defaults). Cheap: threads start with the
** first process. GS_EINVAL for a config out of range. */
GS_API int gs_runtime_open(gs_runtime **rt, const gs_config *cfg);

/* Change settings of an open runtime. Every field of cfg that is not 0
** (NULL) is applied; 0 leaves the setting as it is -- so start from a
** zeroed gs_config, not from gs_config_init. workers and max_processes may
** only change before the runtime's threads start (its first process):
** GS_EBUSY afterwards. max_depth, max_message_size and budget may change
** at any time (a message being encoded or decoded keeps the limits it
** started with). path, cpath and the state hook are fixed at open:
** GS_EINVAL if set. GS_EINVAL too for a value out of range (as for
** gs_runtime_open; max_processes also at most what the runtime was opened
** for, at least 4194303). On any error nothing has changed. */
GS_API int gs_runtime_configure(gs_runtime *rt, const gs_config *cfg);

/* Stop every process: an exit signal "shutdown" to those whose parent is
** gone or a foreign thread (supervisors first, newest first; they stop
** their children; the logger last), then "kill" for what is left after
** half of timeout_ms. From then on every call on rt returns
** GS_ECLOSED (and genserver functions in bound Lua states raise), but rt
** stays valid, so other threads may still call in safely. GS_ETIMEDOUT if
** a process would not die (or a host call did not return) in time; the
** runtime is then half-stopped and gs_runtime_stop may be called again.
** Idempotent. */
GS_API int gs_runtime_stop(gs_runtime *rt, int timeout_ms);

/* gs_runtime_stop, then join the threads and free ALL memory of rt. The
** host promises that no other thread uses rt any more (join them first, or
** let them gs_thread_detach) and that no Lua state bound to rt with
** gs_openlibs runs genserver code again (closing such a state later is
** fine). On GS_ETIMEDOUT nothing is freed: call it again. */
GS_API int gs_runtime_close(gs_runtime *rt, int timeout_ms);

/* End the calling thread's foreign process in rt (links and monitors on it
** fire with reason "normal") and free the thread's scratch memory. A host
** thread that called a gs_ function is detached by itself when it exits;
** a thread that only used a bound Lua state should call this before it
** exits. Returns 0 (also when there was nothing to detach). */
GS_API int gs_thread_detach(gs_runtime *rt);

/* The calling thread's pid in rt (its foreign process, created if needed),
** or, on a worker thread of rt, the pid of the process running there. */
GS_API int gs_self(gs_runtime *rt, gs_pid *pid);

typedef struct gs_stats {
  int workers;
  int started;       /* threads are running */
  size_t processes;  /* Lua processes alive */
  size_t foreign;    /* foreign processes (host threads) alive */
  size_t run_queue;  /* processes waiting for a worker */
  uint64_t spawned;  /* processes started so far */
  uint64_t messages; /* messages pushed to mailboxes so far (all kinds,
                        processes now dead included) */
  uint64_t abandoned_states; /* processes given up on so far: killed but
                        still running a second later (a finalizer that
                        loops), or whose state took longer than that to
                        close; each one's thread was replaced as a worker */
} gs_stats;

GS_API int gs_runtime_stats(gs_runtime *rt, gs_stats *st);

/* Open the Lua API in a host state bound to rt: afterwards `require
** "genserver"` (and genserver.process, ...) in L use rt, the calling OS
** thread being a foreign process of rt as with the C functions. Open the
** standard libraries first. genserver's own Lua modules are found through
** L's package.path, else through the runtime's path (cfg.path), as the
** servers find them. GS_EINVAL if genserver is already loaded in L for
** another runtime. Lua states that do not go through this keep using genserver's
** default runtime, as a plain lua5.4 script does. */
GS_API int gs_openlibs(gs_runtime *rt, lua_State *L);

/* ------------------------------------------------------------- values */

/* A gs_msg is one encoded value: built with the gs_msg_* appenders (a
** table is announced with its counts, then its values follow), or returned
** by a gs_*_msg function (a reply, an exit reason) and read with gs_read.
**
**   gs_msg *m = gs_msg_new();
**   gs_msg_table(m, 2, 1);            -- { "add", 5, from = "host" }
**   gs_msg_string(m, "add", 3);
**   gs_msg_integer(m, 5);
**   gs_msg_string(m, "from", 4);      -- hash part: key, then value
**   gs_msg_string(m, "host", 4);
**
** Appenders return 0, GS_EINVAL (the value is complete already; a nil or
** NaN table key) or GS_ENOMEM (then the message stays unusable). */

GS_API gs_msg *gs_msg_new(void); /* NULL when out of memory */
GS_API void gs_msg_free(gs_msg *m); /* NULL is fine */
GS_API void gs_msg_reset(gs_msg *m); /* empty again, to build another */
GS_API int gs_msg_nil(gs_msg *m);
GS_API int gs_msg_boolean(gs_msg *m, int b);
GS_API int gs_msg_integer(gs_msg *m, int64_t i);
GS_API int gs_msg_number(gs_msg *m, double d); /* a Lua float */
GS_API int gs_msg_string(gs_msg *m, const char *s, size_t len);
GS_API int gs_msg_pid(gs_msg *m, gs_pid pid);
/* A table with narr array values (keys 1..narr; nil allowed), then nhash
** key/value pairs. The next narr + 2 * nhash values appended fill it. */
GS_API int gs_msg_table(gs_msg *m, size_t narr, size_t nhash);
/* 1 when m holds one whole value (ready to send), else 0. */
GS_API int gs_msg_complete(const gs_msg *m);

/* Lua bridge: push m onto L (GS_EDECODE if it cannot be decoded there), or
** encode the value at index idx of L into a new message (GS_EENCODE with
** the reason in gs_errmsg; the stack is left as it was). rt gives the
** codec limits (NULL: defaults). */
GS_API int gs_msg_push(gs_runtime *rt, lua_State *L, const gs_msg *m);
GS_API int gs_msg_from_lua(gs_runtime *rt, lua_State *L, int idx, gs_msg **m);

/* A readable rendering, like genserver.describe: "{\"add\", 5, from =
** \"host\"}". Free it with gs_free. NULL when out of memory. */
GS_API char *gs_msg_describe(const gs_msg *m);

enum {
  GS_TNIL, GS_TBOOLEAN, GS_TINTEGER, GS_TNUMBER, GS_TSTRING, GS_TTABLE,
  GS_TPID, GS_TREF,     /* a reference (make_ref, monitor ref) */
  GS_TFUNCTION,         /* a function (skipped whole: nothing follows) */
  GS_TMODULE,           /* a loaded module, sent by name (in string) */
  GS_TBACKREF           /* the table or function number `object` again */
};

typedef struct gs_item {
  int type;             /* GS_T* */
  int boolean;
  int64_t integer;
  double number;
  const char *string;   /* GS_TSTRING, GS_TMODULE: points into the message,
                           NOT zero-terminated; len bytes */
  size_t len;
  uint64_t id;          /* GS_TPID: the pid; GS_TREF: the reference */
  size_t narr, nhash;   /* GS_TTABLE: narr values, then nhash key/value
                           pairs follow as the next items */
  size_t object;        /* GS_TTABLE, GS_TFUNCTION: its number (1, 2, ...
                           in message order); GS_TBACKREF: which one */
} gs_item;

/* A cursor over a message (fields are private). */
typedef struct gs_reader {
  const gs_msg *m;
  size_t pos, nobj;
} gs_reader;

GS_API void gs_reader_init(gs_reader *r, const gs_msg *m);
/* Read the next item: 0, or GS_EDECODE (malformed, or past the end). */
GS_API int gs_read(gs_reader *r, gs_item *it);
/* Skip the next value whole (a table with everything in it). */
GS_API int gs_read_skip(gs_reader *r);

/* -------------------------------------------------------------- servers */

enum { GS_OVERFLOW_DROP = 0, GS_OVERFLOW_REJECT, GS_OVERFLOW_KILL };

/* Options of gs_start. All zero (or a NULL pointer) means the defaults. */
typedef struct gs_start_opts {
  const char *name;       /* register the server under this name (before
                             init runs), or NULL */
  int timeout_ms;         /* for init; 0: 5000; GS_INFINITY */
  int hibernate_after_ms; /* idle time before a hibernate; 0: never */
  int trap_exit;          /* the server traps exit signals */
  uint32_t mailbox_limit; /* bounded mailbox; 0: unbounded */
  int overflow;           /* GS_OVERFLOW_*, with mailbox_limit */
  size_t max_heap;        /* bytes the server's state may use; 0: no cap */
  int sandbox;            /* no io, os, debug, package.loadlib; text chunks
                             only (DESIGN.md §5) */
} gs_start_opts;

/* Start a gen_server running the Lua callback module `module` (required
** by name in the new state, found through the config's path) and wait
** until its init returned. The init argument is the value at the top of L
** (consumed), or nil when L is NULL. On return one value replaces it on L:
** the pid (0), the exit reason (GS_EEXIT: init failed, returned "stop" or
** "error", or crashed), { already_started = pid } (GS_EALREADY; *pid is
** the holder), or nil. GS_ETIMEDOUT: init took longer than opts->timeout_ms
** (the half-started server is killed and its name released first). */
GS_API int gs_start(gs_runtime *rt, const char *module, lua_State *L,
                    const gs_start_opts *opts, gs_pid *pid);
/* The same with a C value (arg NULL: nil). *reason (if reason != NULL)
** receives the exit reason for GS_EEXIT / GS_EALREADY / GS_EKILLED, else
** NULL; free it with gs_msg_free. */
GS_API int gs_start_msg(gs_runtime *rt, const char *module, const gs_msg *arg,
                        const gs_start_opts *opts, gs_pid *pid, gs_msg **reason);

/* Call a server: the request at the top of L is consumed and exactly one
** value is pushed: the reply (0), the exit reason (GS_EEXIT: the server
** died before replying; GS_EKILLED), or nil (any other error) -- except
** GS_EINVAL for L NULL or empty, which touches nothing. A call that times
** out leaves no trace: its late reply is dropped. */
GS_API int gs_call(gs_runtime *rt, gs_pid server, lua_State *L, int timeout_ms);
/* *reply: the reply (0) or the exit reason (GS_EEXIT, GS_EKILLED), else
** NULL; free it with gs_msg_free. */
GS_API int gs_call_msg(gs_runtime *rt, gs_pid server, const gs_msg *req,
                       gs_msg **reply, int timeout_ms);
/* A string request and a string reply (numbers and booleans come back as
** their Lua tostring; nil as *reply = NULL; anything else: GS_ETYPE). On
** GS_EEXIT/GS_EKILLED *reply is a text of the exit reason (for a crash,
** its error message). The reply is zero-terminated (rlen excludes the 0);
** free it with gs_free. rlen may be NULL. */
GS_API int gs_call_str(gs_runtime *rt, gs_pid server, const char *req,
                       size_t len, char **reply, size_t *rlen, int timeout_ms);

/* Cast (asynchronous request, handle_cast) or send (a plain message,
** handle_info / process.receive). The value at the top of L is consumed.
** 0 means delivered to the mailbox, not handled; GS_ENOPROC: the process
** is dead (the message is dropped, as the Lua API does silently). */
GS_API int gs_cast(gs_runtime *rt, gs_pid server, lua_State *L);
GS_API int gs_cast_msg(gs_runtime *rt, gs_pid server, const gs_msg *msg);
GS_API int gs_cast_str(gs_runtime *rt, gs_pid server, const char *s, size_t len);
GS_API int gs_send(gs_runtime *rt, gs_pid pid, lua_State *L);
GS_API int gs_send_msg(gs_runtime *rt, gs_pid pid, const gs_msg *msg);
GS_API int gs_send_str(gs_runtime *rt, gs_pid pid, const char *s, size_t len);

/* Stop a server: it runs terminate(reason, state) and exits; waits for its
** end. reason NULL: "normal". GS_EEXIT if it ended with another reason
** (terminate crashed: see gs_errmsg), GS_ENOPROC, GS_ETIMEDOUT. */
GS_API int gs_stop(gs_runtime *rt, gs_pid server, const char *reason,
                   int timeout_ms);

/* The pid registered as name, or GS_ENOPROC. */
GS_API int gs_whereis(gs_runtime *rt, const char *name, gs_pid *pid);

#ifdef __cplusplus
}
#endif

#endif
