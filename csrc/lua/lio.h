/*
** lio.h - the I/O layer's Lua face (lio.c): genserver.core's io_*
** functions, registered with the core's own (same upvalues).
*/
#ifndef LIO_H
#define LIO_H

#include "lauxlib.h"

#include "io/io.h"

GSI_FUNC const luaL_Reg gsi_io_funcs[];

#endif
