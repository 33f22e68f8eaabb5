/*
** modcache.h - compiled Lua modules kept per runtime, hot code reload,
** and the package paths processes share (modcache.c).
*/
#ifndef GS_MODCACHE_H
#define GS_MODCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "lua.h"

#include "core.h"

typedef struct gsi_modcache gsi_modcache;
typedef struct gsi_paths gsi_paths;

GSI_FUNC gsi_modcache *gsi_modcache_new(void);
GSI_FUNC void gsi_modcache_free(gsi_modcache *c);
/* If (name, path) is cached: push its compiled chunk and the file it came
** from, return 1. Not cached: 0, nothing pushed. -1: the chunk could not
** be loaded (out of memory), its error pushed. phash: gsi_paths_hash of
** paths whose path this is, or 0 (then hashed here). */
GSI_FUNC int gsi_modcache_load(lua_State *L, gsi_modcache *c, const char *name,
                               const char *path, uint64_t phash);
/* Keep the function at the top of L, compiled from file, as (name, path).
** Best effort; never raises. */
GSI_FUNC void gsi_modcache_put(lua_State *L, gsi_modcache *c, const char *name,
                               const char *path, const char *file);

/* The package paths of a process, shared by every process started with
** the same ones (a reference; NULL when out of memory). */
/* Hot code reload (genserver.code): make the function at the top of L,
** compiled from `file`, the current version of (name, path), replacing a
** cached one (servers that loaded the old one keep it). vsn: the module's
** vsn field as a string, or NULL. Returns the new version counter (1 for
** a first version), 0 when it cannot be kept (out of memory, cache full).
** Never raises. */
GSI_FUNC uint64_t gsi_modcache_replace(lua_State *L, gsi_modcache *c,
                                       const char *name, const char *path,
                                       const char *file, const char *vsn);
/* The current version counter of (name, path), 0 if not cached; its vsn
** string (empty if none) is copied to vsn (size n). phash: as for
** gsi_modcache_load. */
GSI_FUNC uint64_t gsi_modcache_version(gsi_modcache *c, const char *name,
                                       const char *path, uint64_t phash, char *vsn,
                                       size_t n);
GSI_FUNC gsi_paths *gsi_paths_get(gsi_modcache *c, const char *path, size_t plen,
                                  const char *cpath, size_t clen);
GSI_FUNC void gsi_paths_put(gsi_modcache *c, gsi_paths *e);
GSI_FUNC const char *gsi_paths_path(const gsi_paths *e);
GSI_FUNC const char *gsi_paths_cpath(const gsi_paths *e);
/* The hash of e's path as the cache keys use it, computed once when e was
** made: a start looks its module up without hashing package.path again. */
GSI_FUNC uint64_t gsi_paths_hash(const gsi_paths *e);

#endif
