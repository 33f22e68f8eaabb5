rockspec_format = "3.0"
package = "genserver"
version = "scm-1"

source = {
  -- The rock is built from a checkout (`luarocks make`, which ignores this);
  -- the project has no public repository address yet to point `install` at.
  url = "git+https://example.invalid/genserver.git",
}

description = {
  summary = "OTP-style gen_servers, supervisors and processes for Lua 5.4 on a C runtime",
  detailed = [[
Every process runs in its own lua_State on an M:N scheduler written in C; messages
are copied between states. Write sequential callback modules (init, handle_call,
handle_cast, handle_info, terminate) and get concurrency, isolation, links, monitors
and supervision trees the way Erlang/OTP provides them.
]],
  license = "MIT",
  labels = { "concurrency", "actors", "otp", "gen_server" },
}

dependencies = {
  "lua >= 5.4, < 5.5",
}

-- libuv, for genserver.tcp / genserver.udp (Debian: libuv1-dev)
external_dependencies = {
  LIBUV = { header = "uv.h", library = "uv" },
}

build = {
  type = "builtin",
  modules = {
    -- KEEP IN SYNC: every csrc/*/*.c and every lua/genserver/*.lua must be listed here.
    -- `make check-rockspec` (part of `make test`) fails when one is missing.
    ["genserver.core"] = {
      sources = {
        "csrc/api/api.c",
        "csrc/api/call.c",
        "csrc/api/msg.c",
        "csrc/core/apool.c",
        "csrc/core/codec.c",
        "csrc/core/codec_dec.c",
        "csrc/core/codec_enc.c",
        "csrc/core/codec_env.c",
        "csrc/core/codec_fast.c",
        "csrc/core/foreign.c",
        "csrc/core/ids.c",
        "csrc/core/lcoro.c",
        "csrc/core/modcache.c",
        "csrc/core/msg.c",
        "csrc/core/palloc.c",
        "csrc/core/plibs.c",
        "csrc/core/preempt.c",
        "csrc/core/proc.c",
        "csrc/core/prun.c",
        "csrc/core/recv.c",
        "csrc/core/registry.c",
        "csrc/core/runtime.c",
        "csrc/core/sched.c",
        "csrc/core/signal.c",
        "csrc/core/spawnmsg.c",
        "csrc/core/timer.c",
        "csrc/core/wire.c",
        "csrc/gen/bif.c",
        "csrc/gen/gen.c",
        "csrc/io/io_loop.c",
        "csrc/io/io_sock.c",
        "csrc/io/io_tcp.c",
        "csrc/io/io_udp.c",
        "csrc/lua/lgenserver.c",
        "csrc/lua/linfo.c",
        "csrc/lua/linit.c",
        "csrc/lua/lio.c",
        "csrc/lua/lmsg.c",
        "csrc/lua/lproc.c",
        "csrc/lua/lreceive.c",
        "csrc/lua/lserver.c",
      },
      defines = { "_GNU_SOURCE" },
      incdirs = { "csrc", "$(LIBUV_INCDIR)" },
      libdirs = { "$(LIBUV_LIBDIR)" },
      libraries = { "uv", "pthread", "m" },
    },
    ["genserver"] = "lua/genserver/init.lua",
    ["genserver.agent"] = "lua/genserver/agent.lua",
    ["genserver.code"] = "lua/genserver/code.lua",
    ["genserver.logger"] = "lua/genserver/logger.lua",
    ["genserver.observer"] = "lua/genserver/observer.lua",
    ["genserver.observer_web"] = "lua/genserver/observer_web.lua",
    ["genserver.process"] = "lua/genserver/process.lua",
    ["genserver.runtime"] = "lua/genserver/runtime.lua",
    ["genserver.server"] = "lua/genserver/server.lua",
    ["genserver.tcp"] = "lua/genserver/tcp.lua",
    ["genserver.udp"] = "lua/genserver/udp.lua",
    ["genserver.supervisor"] = "lua/genserver/supervisor.lua",
    ["genserver.sys"] = "lua/genserver/sys.lua",
    ["genserver.task"] = "lua/genserver/task.lua",
  },
  -- the genserver command (a script run by lua5.4: runs a script in a runtime,
  -- or a shell) and the documentation (the guide, the callback contract, the
  -- samples), which luarocks puts in the rock's doc directory (`luarocks doc genserver`)
  install = {
    bin = { genserver = "bin/genserver" },
  },
  copy_directories = { "docs" },
}
