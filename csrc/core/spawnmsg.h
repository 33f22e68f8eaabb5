/*
** spawnmsg.h - the spawn message: what a spawner hands to the first run
** of the process it makes (core/prun.c reads it, once, as the state boots).
**
**   u32 n, n bytes   package.path the new state starts with
**   u32 n, n bytes   package.cpath
**   a whole wire message (wire.h): { n = N, body, arg1, ..., argN }, the
**                    body (a function, a module name, or a C function by
**                    name) and its N arguments
**
** The u32s are in the host's byte order: the message never leaves the
** process. The writer and the reader are the only code that knows this
** layout; the value after the paths is the codec's (codec.c, wire.c).
** No process structs here: the protocol layer (gen/) includes it.
*/
#ifndef GS_SPAWNMSG_H
#define GS_SPAWNMSG_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"

#define GSI_SPAWNMSG_FN __attribute__((visibility("hidden"))) extern

/* Append the two paths to b (emptied first); the caller appends the
** body's message. 0, or -1 when out of memory. */
GSI_SPAWNMSG_FN int gsi_spawnmsg_paths(gsi_buf *b, const char *path, size_t plen,
                                       const char *cpath, size_t clen);

/* A spawn message taken apart: pointers into its bytes. */
typedef struct gsi_spawnmsg {
  const char *path, *cpath;
  size_t plen, clen;
  const unsigned char *body; /* the whole message of { n, body, args... } */
  size_t blen;
} gsi_spawnmsg;

/* 0, or -1 when the bytes are not a spawn message. */
GSI_SPAWNMSG_FN int gsi_spawnmsg_read(const unsigned char *data, size_t len,
                                      gsi_spawnmsg *out);

#endif
