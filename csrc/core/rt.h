/*
** rt.h - a runtime (gsi_rt): its process table, run queue, settings and
** life (runtime.c).
*/
#ifndef GS_RT_H
#define GS_RT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "core.h"

typedef struct gsi_modcache gsi_modcache;

/* The shared (global) run queue and the parking lot of the workers; each
** worker has its own queue besides (gsi_worker, sched.c). */
typedef struct gsi_runq {
  pthread_mutex_t mu; /* guards head/tail; nparked changes under it; cv
                         waits on it; a leaf (lock order: gsi_rt) */
  pthread_cond_t cv;
  gsi_proc *head, *tail;
  _Atomic size_t len;
  _Atomic int nspinning;
  _Atomic int nparked; /* written under mu, read without it too */
} gsi_runq;

typedef struct gsi_timers gsi_timers;
typedef struct gsi_names gsi_names;

#define GSI_BOOT_HINTS 64 /* a power of two */

/* Lock order -- the one statement of it for the whole runtime; the comment
** at each lock refers here. A lock on the left may be held while the one
** on its right is taken, never the other way round:
**   gs_runtime.life_mu (api.c)  ->  any lock of the core
**   gsi_rt.life_mu              ->  gsi_rt.tbl_mu
**   gsi_names.mu (registry.c)   ->  gsi_proc.lk
**   an I/O socket's wlock (io/)  ->  the node caches' cache_mu (msg.c)
** Apart from that, gsi_proc.lk is held alone: never two processes' at
** once (signal.c takes one, lets go, then takes the other), and no lock is
** taken under it. Every other lock -- the run queue's, the timers' (each
** shard's and the timer thread's, timer.c: never two at once), the
** module cache's, the arena pool's (apool.c), the node caches' cache_mu,
** a foreign process's fg->mu, preempt.c's hook_mu, the I/O loop's io_mu
** -- is a leaf: nothing is taken while it is held. (The I/O layer's own
** statement, in io/io_int.h, says the same from its side.) */
struct gsi_rt {
  uint64_t serial; /* unique per runtime ever created in this process */
  /* the hooks of the faces above the core (core.h), set at creation,
  ** read-only after */
  gsi_face face;
  int nworkers;
  uint32_t max_procs;
  /* Codec limits: configure() may change them while workers encode and
  ** decode, so readers take the current immutable struct through `lim`
  ** (gsi_rt_limits); a replaced one is kept on `retired` until the runtime
  ** is freed, so a reader holding it never sees it go. */
  gsi_codec_limits limits; /* the first one, set before any thread */
  const gsi_codec_limits *_Atomic lim;
  struct gsi_retired *retired; /* guarded by life_mu */
  _Atomic int budget;
  /* bytes a process state takes to boot, per callback module (by a hash
  ** of its name; palloc.c). Relaxed: a sizing hint, a lost update or a
  ** collision of two names only makes one arena less well sized. */
  _Atomic size_t boot_hint[GSI_BOOT_HINTS];
  /* process table: chunks are allocated on demand and never moved, so a
  ** slot pointer stays valid for the runtime's life. */
  gsi_proc *_Atomic *chunks;
  uint32_t nchunks_max;
  pthread_mutex_t tbl_mu; /* guards free list and `used`; taken under
                             life_mu (lock order: above) */
  gsi_proc *free_head;
  uint32_t used; /* slots ever handed out */
  uint64_t births; /* processes ever allocated: their start order */
  _Atomic size_t live;   /* slots in use, foreign ones included */
  _Atomic size_t nforeign;
  _Atomic uint64_t msgs_dead; /* messages received by processes now dead */
  _Atomic uint64_t spawned;
  /* Abandoned processes (preempt.c): `abandoned` counts them all (stats);
  ** `abandoned_live` those whose slot is not back yet (not Lua processes
  ** any more: lua_procs leaves them out); `orphan_threads` the threads
  ** left running them, which may still touch this runtime: while any is,
  ** gsi_rt_free leaves the table, module cache and struct in place. */
  _Atomic uint64_t abandoned;
  _Atomic size_t abandoned_live;
  _Atomic size_t orphan_threads;
  _Atomic int leaked; /* gsi_rt_free left it for such a thread */
  gsi_runq rq;
  gsi_worker *workers;
  pthread_t watchdog;
  _Atomic int started;
  _Atomic int stopping;
  _Atomic int shutting; /* gsi_rt_stop_all began: what crashes now is its doing */
  _Atomic int closed; /* freed but for this struct: every call fails */
  gsi_timers *timers;
  gsi_names *names;
  gsi_modcache *mods; /* compiled Lua modules (modcache.c) */
  struct gsi_apool *apool; /* the boot arenas' memory (apool.c) */
  /* The I/O layer (io_loop.c), set up on its first use: the exit path
  ** calls io_down(rt, pid) (close the sockets pid controls), gsi_rt_free
  ** calls io_stop(rt) (close them all, join the loop thread). */
  void *_Atomic io;
  void (*_Atomic io_down)(gsi_rt *rt, uint64_t pid);
  void (*_Atomic io_stop)(gsi_rt *rt);
  pthread_mutex_t life_mu; /* guards start/stop of threads; before
                              tbl_mu (lock order: above) */
  pthread_cond_t life_cv;  /* signalled when `live` reaches 0 */
};

#define GSI_CHUNK_BITS 12
#define GSI_CHUNK (1u << GSI_CHUNK_BITS)

GSI_FUNC uint64_t gsi_new_ref(gsi_rt *rt);
GSI_FUNC const gsi_codec_limits *gsi_rt_limits(gsi_rt *rt);
/* Change workers, max_procs (both only before the threads start; 0: as
** is), the codec limits (NULL: as is) and budget (0: as is): GSI_OK,
** GSI_ENOMEM, or GSI_EBUSY: the threads run already (nothing changed). */
GSI_FUNC int gsi_rt_configure(gsi_rt *rt, int workers, uint32_t max_procs,
                              const gsi_codec_limits *lim, int budget);
GSI_FUNC int gsi_rt_ensure_started(gsi_rt *rt);
/* Lua processes alive: slots in use but for foreign and abandoned ones. */
GSI_FUNC size_t gsi_rt_lua_procs(gsi_rt *rt);
/* Stop every process (exit signal `reason`, then kill after half of ms);
** 0 when none is left. */
/* The runtime begins to stop: from now on what crashes is its doing
** (crash reports are left out). Set by the C API before it turns calls away,
** so a process that meets the closed runtime in between is not reported. */
GSI_FUNC void gsi_rt_shutting(gsi_rt *rt);
GSI_FUNC int gsi_rt_stop_all(gsi_rt *rt, const void *reason, size_t len,
                             uint64_t ms);
GSI_FUNC void gsi_rt_free(gsi_rt *rt);    /* all but the struct */
GSI_FUNC void gsi_rt_destroy(gsi_rt *rt); /* the struct */

#endif
