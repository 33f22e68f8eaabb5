/*
** apool.h - the memory the boot arenas of process states come from
** (palloc.c): carriers mapped and faulted in whole, carved one arena after
** the other, and the arenas of closed states kept by size for the next
** boots. One pool per runtime.
*/
#ifndef GS_APOOL_H
#define GS_APOOL_H

#include <stddef.h>

#include "core.h"

typedef struct gsi_apool gsi_apool;

/* A new pool, or NULL (no memory). Nothing is mapped until the first get. */
GSI_FUNC gsi_apool *gsi_apool_new(void);
/* Unmap every carrier: no arena from the pool may be used after. */
GSI_FUNC void gsi_apool_free(gsi_apool *pool);
/* n bytes (n <= GSI_APOOL_MAX), 16-byte aligned, or NULL when no memory
** can be mapped. Any thread. */
GSI_FUNC void *gsi_apool_get(gsi_apool *pool, size_t n);
/* Give back a block that gsi_apool_get(pool, n) returned. Any thread. */
GSI_FUNC void gsi_apool_put(gsi_apool *pool, void *block, size_t n);

#define GSI_APOOL_MAX ((size_t)256 << 10)

#endif
