/*
** internal.h - every header of the C core, for the core's own files. Each
** module has its own header; nothing is declared here. Layers above the
** core include core.h (opaque) or the one module header they need.
*/
#ifndef GS_INTERNAL_H
#define GS_INTERNAL_H

#include "core.h"
#include "codec.h"
#include "msg.h"
#include "proc.h"
#include "sched.h"
#include "timer.h"
#include "registry.h"
#include "signal.h"
#include "recv.h"
#include "rt.h"
#include "modcache.h"
#include "pstate.h"

#endif
