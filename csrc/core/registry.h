/*
** registry.h - the local name registry: name -> pid (registry.c).
*/
#ifndef GS_REGISTRY_H
#define GS_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

GSI_FUNC int gsi_reg_init(gsi_rt *rt);
GSI_FUNC void gsi_reg_free(gsi_rt *rt);
/* GSI_OK; GSI_EALREADY the name is taken (*holder set); GSI_ENOPROC pid
** is dead; GSI_EINVAL pid has a name already; GSI_ENOMEM. */
GSI_FUNC int gsi_reg_register(gsi_rt *rt, const char *name, uint64_t pid,
                              uint64_t *holder);
GSI_FUNC int gsi_reg_unregister(gsi_rt *rt, const char *name);
GSI_FUNC uint64_t gsi_reg_whereis(gsi_rt *rt, const char *name);
GSI_FUNC void gsi_reg_release(gsi_rt *rt, gsi_proc *p); /* on death */
GSI_FUNC void gsi_reg_name_of(gsi_rt *rt, uint64_t pid, char *buf, size_t size);
/* Calls fn for every name; under the registry lock (fn must not block). */
GSI_FUNC void gsi_reg_each(gsi_rt *rt, void (*fn)(void *, const char *, uint64_t),
                           void *ud);

#endif
