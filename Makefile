# genserver — build, test, install. The test machinery (sanitizers, valgrind,
# fuzzing) is tools/run-tests; the other scripts are in tools/ too.
#
#   make                  build build/genserver/core.so, build/libgenserver.{a,so}
#   make test             deps + build, run every C test and the busted specs
#   make test SPECS=spec/foo_spec.lua        one spec file (C tests skipped)
#   make test CTESTS=spec/c/codec_test.c     one C test (specs skipped)
#   make test-tsan        the same under ThreadSanitizer (build in build-tsan)
#   make test-asan        the same under AddressSanitizer + UBSan (build in build-asan)
#   make test-valgrind    the $(DEMOS) and the C tests under valgrind memcheck
#   make fuzz FUZZ_TIME=60   libFuzzer (clang) on each of $(FUZZ_TARGETS), FUZZ_TIME s each
#   make fuzz-seeds       rewrite fuzz/corpus/ from real encodings
#   make bench / bench-big   genserver beside Erlang/OTP (bench/README.md)
#   make demo             deps + build, run the $(DEMOS) examples in-tree
#   make docs             the HTML reference in build/docs (ldoc); fails on a warning
#   make deps             check (and as root, apt-get install) the system packages
#   make check-rockspec   the rockspec lists every csrc/*/*.c and lua/genserver module
#   make install PREFIX=… / make uninstall PREFIX=…   (DESTDIR honoured): the Lua
#                         modules and core.so, the genserver command, the docs, the C API
#   make clean / make clean-reliability
#   eval "$$(make -s env)"   LUA_PATH/LUA_CPATH for running lua5.4 in-tree by hand
#
# Every test target prints TAP per run and ends with "tests: N passed, N failed"
# (.ci/run adds those up). Settings such as TEST_WORKERS="1 4" (the spec runs' worker
# counts), TEST_TIMEOUT=600, FUZZ_TIME=60 are listed at the top of tools/run-tests.
# `test`, `demo`, ... build in a sub-make after `deps`, so that the packages are in
# place before anything is compiled, even under `make -j`.

.DEFAULT_GOAL := all
SHELL := /bin/bash

# ---------------------------------------------------------------------------
# Tools, flags, files

LUA         ?= lua5.4
LUA_VERSION := 5.4
BUSTED      ?= busted
PKG_CONFIG  ?= pkg-config
ifeq ($(origin CC),default)
CC := gcc
endif
AR          ?= ar
LUA_CFLAGS := $(or $(shell $(PKG_CONFIG) --cflags lua$(LUA_VERSION) 2>/dev/null),-I/usr/include/lua$(LUA_VERSION))
LUA_LIBS   := $(or $(shell $(PKG_CONFIG) --libs lua$(LUA_VERSION) 2>/dev/null),-llua$(LUA_VERSION))
# libuv (Debian's libuv1-dev) for the I/O layer (genserver.tcp / genserver.udp)
UV_CFLAGS  := $(shell $(PKG_CONFIG) --cflags libuv 2>/dev/null)
UV_LIBS    := $(or $(shell $(PKG_CONFIG) --libs libuv 2>/dev/null),-luv)

# CFLAGS/LDFLAGS are the user-overridable part (e.g. sanitizer builds:
# make BUILD=build-asan CFLAGS="-O1 -g -fsanitize=address,undefined"); the rest is fixed.
CFLAGS   ?= -O2 -g
LDFLAGS  ?=
WERROR   ?= -Werror
GS_CFLAGS = -std=c11 -Wall -Wextra $(WERROR) -fPIC -fvisibility=hidden -D_GNU_SOURCE \
            $(LUA_CFLAGS) $(UV_CFLAGS) -Icsrc
ALL_CFLAGS = $(GS_CFLAGS) $(CFLAGS)
LDLIBS   = $(UV_LIBS) -lpthread -lm

BUILD   ?= build
OBJDIR  := $(BUILD)/obj
# one folder per layer (docs/architecture.md): core, gen, api, io, lua
SRCS    := $(sort $(wildcard csrc/*/*.c))
OBJS    := $(patsubst csrc/%.c,$(OBJDIR)/%.o,$(SRCS))
CORE_SO := $(BUILD)/genserver/core.so
LIB_A   := $(BUILD)/libgenserver.a
LIB_SO  := $(BUILD)/libgenserver.so
FLAGS_STAMP := $(OBJDIR)/.cflags
LUA_MODULES := $(sort $(wildcard lua/genserver/*.lua lua/genserver/*/*.lua))
ROCKSPEC    := rockspec/genserver-scm-1.rockspec

# Tests. Giving SPECS on the command line skips the C tests and vice versa.
ALL_SPECS  := $(sort $(wildcard spec/*_spec.lua spec/*/*_spec.lua))
ALL_CTESTS := $(sort $(wildcard spec/c/*_test.c))
ifeq ($(origin SPECS)$(origin CTESTS),command lineundefined)
CTESTS :=
endif
ifeq ($(origin CTESTS)$(origin SPECS),command lineundefined)
SPECS :=
endif
SPECS  ?= $(ALL_SPECS)
CTESTS ?= $(ALL_CTESTS)
CTEST_BINS := $(patsubst spec/c/%.c,$(BUILD)/test/%,$(CTESTS))
RESULTS    := $(BUILD)/test-results

DEMOS        ?= examples/kv_store.lua examples/counter.lua examples/supervision_tree.lua \
                examples/chat_room.lua examples/worker_pool.lua examples/todo.lua \
                examples/rate_limiter.lua examples/job_queue.lua \
                examples/tcp_echo.lua examples/chat_tcp.lua
DEMO_TIMEOUT ?= 120

# In-tree module search paths (both the generic and the 5.4-specific variables,
# since lua5.4 prefers LUA_PATH_5_4 when the user has one set).
INTREE_LUA_PATH  = $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;;
INTREE_LUA_CPATH = $(abspath $(BUILD))/?.so;;
INTREE_ENV = LUA_PATH='$(INTREE_LUA_PATH)' LUA_CPATH='$(INTREE_LUA_CPATH)' \
             LUA_PATH_5_4='$(INTREE_LUA_PATH)' LUA_CPATH_5_4='$(INTREE_LUA_CPATH)'

# tools/run-tests MODE, with what it needs to know of this build.
RUN_TESTS = tools/run-tests $(1) MAKE='$(MAKE)' LUA='$(LUA)' BUSTED='$(BUSTED)' CC='$(CC)' \
  BUILD='$(BUILD)' RESULTS='$(RESULTS)' SPECS='$(SPECS)' CTESTS='$(CTEST_BINS)' DEMOS='$(DEMOS)' \
  INTREE_LUA_PATH='$(INTREE_LUA_PATH)' INTREE_LUA_CPATH='$(INTREE_LUA_CPATH)'

# Sanitizer builds. float-cast-overflow is not in gcc's -fsanitize=undefined and the
# codec converts floats to integers; -fno-sanitize-recover: UB stops the process.
TSAN_BUILD  ?= build-tsan
ASAN_BUILD  ?= build-asan
SAN_CFLAGS  ?= -O1 -g -fno-omit-frame-pointer
TSAN_FLAGS  := -fsanitize=thread
ASAN_FLAGS  := -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all

# libFuzzer targets: fuzz/NAME_fuzz.c -> $(FUZZ_BUILD)/NAME_fuzz, linked with $(FUZZ_SRCS)
FUZZ_BUILD   ?= build-fuzz
FUZZ_CC      ?= clang
FUZZ_TARGETS := decode roundtrip wire
FUZZ_SAN     := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS  ?= -g -O1 -fno-omit-frame-pointer
# the codec's files (csrc/core/codec_int.h says which does what), ids and wire: no rest of the core
FUZZ_SRCS    := csrc/core/codec.c csrc/core/codec_fast.c csrc/core/codec_enc.c csrc/core/codec_env.c \
                csrc/core/codec_dec.c csrc/core/ids.c csrc/core/wire.c
FUZZ_HDRS    := csrc/core/codec.h csrc/core/codec_int.h csrc/core/ids.h csrc/core/wire.h

BENCH_FLAGS    ?=
BENCH_TCP_LOAD  = $(BUILD)/bench/tcp_load
BENCH_CORE_RTT  = $(BUILD)/bench/core_rtt
BENCH_ENV       = $(INTREE_ENV) BENCH_LUA='$(LUA)' BENCH_TCP_LOAD='$(abspath $(BENCH_TCP_LOAD))' \
                  BENCH_CORE_RTT='$(abspath $(BENCH_CORE_RTT))'

# Install layout; the embedding API (genserver.h, libgenserver.{a,so}, genserver.pc)
# goes to INCLUDEDIR/LIBDIR/PKGCONFIGDIR, the guide (README.md, docs/) to DOCDIR.
PREFIX       ?= /usr/local
DESTDIR      ?=
LUA_LMOD_DIR ?= $(PREFIX)/share/lua/$(LUA_VERSION)
LUA_CMOD_DIR ?= $(PREFIX)/lib/lua/$(LUA_VERSION)
INCLUDEDIR   ?= $(PREFIX)/include
LIBDIR       ?= $(PREFIX)/lib
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
BINDIR       ?= $(PREFIX)/bin
DOCDIR       ?= $(PREFIX)/share/doc/genserver
INSTALL      ?= install
DOC_FILES    := README.md $(sort $(wildcard docs/*.md))
DOC_SAMPLES  := $(sort $(wildcard docs/samples/*.lua))

# The embedding API's version (from csrc/genserver.h) and the shared library's
# names: libgenserver.so -> libgenserver.so.MAJOR (the soname) -> .so.MAJOR.MINOR.PATCH
gs_version_part = $(shell sed -n 's/^\#define GS_VERSION_$(1) \([0-9]*\).*/\1/p' csrc/genserver.h)
GS_VERSION  := $(call gs_version_part,MAJOR).$(call gs_version_part,MINOR).$(call gs_version_part,PATCH)
SONAME      := libgenserver.so.$(call gs_version_part,MAJOR)
SO_REAL     := libgenserver.so.$(GS_VERSION)
PC_FILE     := $(BUILD)/genserver.pc
# api.c looks for genserver's Lua modules where `make install` puts them, so a C
# host finds them with the default config. Only api.o depends on it.
API_DEFS     = -DGS_LUADIR='"$(LUA_LMOD_DIR)"'
API_STAMP   := $(OBJDIR)/.api-defs

.PHONY: all test _test test-tsan test-asan _san_test test-valgrind _test_valgrind fuzz \
        fuzz-bins fuzz-seeds demo _demo bench bench-big _bench _bench-big bench-erlang deps env docs \
        check-rockspec install install-dev install-tools uninstall clean clean-reliability FORCE

# ---------------------------------------------------------------------------
# Build

all: $(CORE_SO) $(LIB_A) $(LIB_SO)

$(OBJDIR) $(OBJDIR)/test $(BUILD)/genserver $(BUILD)/test $(FUZZ_BUILD):
	@mkdir -p $@

# Rebuild everything when the compiler or flags change.
$(FLAGS_STAMP): FORCE | $(OBJDIR)
	@echo '$(CC) $(ALL_CFLAGS)' | cmp -s - $@ || echo '$(CC) $(ALL_CFLAGS)' > $@

$(OBJDIR)/%.o: csrc/%.c $(FLAGS_STAMP) | $(OBJDIR)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(API_STAMP): FORCE | $(OBJDIR)
	@echo '$(API_DEFS)' | cmp -s - $@ || echo '$(API_DEFS)' > $@

$(OBJDIR)/api/%.o: csrc/api/%.c $(FLAGS_STAMP) $(API_STAMP) | $(OBJDIR)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(API_DEFS) -MMD -MP -c -o $@ $<

# The Lua C module: no -llua, the symbols come from the interpreter.
# luaopen_genserver_core must be exported despite -fvisibility=hidden.
$(CORE_SO): $(OBJS) | $(BUILD)/genserver
	@test -n "$(OBJS)" || { echo "error: no csrc/*/*.c to build" >&2; exit 1; }
	$(CC) -shared $(LDFLAGS) -o $@.tmp $(OBJS) $(LDLIBS)
	@nm -D --defined-only $@.tmp | grep -qw luaopen_genserver_core || { \
	  echo "error: $@ does not export luaopen_genserver_core" \
	       "(mark it __attribute__((visibility(\"default\"))))" >&2; rm -f $@.tmp; exit 1; }
	@mv -f $@.tmp $@

$(LIB_A): $(OBJS)
	@test -n "$(OBJS)" || { echo "error: no csrc/*/*.c to build" >&2; exit 1; }
	@rm -f $@
	$(AR) rcs $@ $(OBJS)

$(LIB_SO): $(OBJS)
	@test -n "$(OBJS)" || { echo "error: no csrc/*/*.c to build" >&2; exit 1; }
	$(CC) -shared $(LDFLAGS) -Wl,-soname,$(SONAME) -o $@ $(OBJS) $(LUA_LIBS) $(LDLIBS)

# C tests: spec/c/NAME.c -> $(BUILD)/test/NAME, linked with every core object.
$(OBJDIR)/test/%.o: spec/c/%.c $(FLAGS_STAMP) | $(OBJDIR)/test
	$(CC) $(ALL_CFLAGS) -Ispec/c -MMD -MP -c -o $@ $<

$(BUILD)/test/%: $(OBJDIR)/test/%.o $(OBJS) | $(BUILD)/test
	$(CC) $(LDFLAGS) -o $@ $< $(OBJS) $(LUA_LIBS) $(LDLIBS)

-include $(OBJS:.o=.d) $(patsubst spec/c/%.c,$(OBJDIR)/test/%.d,$(ALL_CTESTS))

$(FUZZ_BUILD)/%_fuzz: fuzz/%_fuzz.c fuzz/fuzz_common.h $(FUZZ_SRCS) $(FUZZ_HDRS) | $(FUZZ_BUILD)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -std=c11 -Wall -Wextra -D_GNU_SOURCE \
	  $(LUA_CFLAGS) -Icsrc -Ifuzz -o $@ $< $(FUZZ_SRCS) $(LUA_LIBS) -lm

$(FUZZ_BUILD)/mkseeds: fuzz/mkseeds.c $(FUZZ_SRCS) $(FUZZ_HDRS) | $(FUZZ_BUILD)
	$(CC) -O1 -g -std=c11 -Wall -Wextra -D_GNU_SOURCE $(LUA_CFLAGS) -Icsrc \
	  -o $@ $< $(FUZZ_SRCS) $(LUA_LIBS) -lm

fuzz-bins: $(patsubst %,$(FUZZ_BUILD)/%_fuzz,$(FUZZ_TARGETS))

# the TCP workloads' load generator and plain blocking C echo server (it defines
# _GNU_SOURCE itself: -D_GNU_SOURCE here made -Werror fail on the redefinition)
$(BENCH_TCP_LOAD): bench/tcp_load.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -std=c11 -Wall -Wextra $(WERROR) -o $@ $< -lpthread

# the core-to-core cache-line round trip printed beside the main-script call
$(BENCH_CORE_RTT): bench/core_rtt.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -std=c11 -Wall -Wextra $(WERROR) -o $@ $< -lpthread

deps:
	@tools/deps '$(LUA)' '$(LUA_VERSION)' '$(BUSTED)' '$(CC)' '$(PKG_CONFIG)'

# ---------------------------------------------------------------------------
# Tests, demos, benchmark, reference

test: deps
	@$(MAKE) --no-print-directory _test

_test: all
	@$(call RUN_TESTS,plain)

# WERROR is off: at -O1 with instrumentation gcc warns about things the plain -O2
# build (which keeps -Werror) does not (false -Wmaybe-uninitialized); they still print.
test-tsan: deps
	@$(MAKE) --no-print-directory _san_test SAN=tsan BUILD='$(TSAN_BUILD)' WERROR= \
	  CFLAGS='$(SAN_CFLAGS) $(TSAN_FLAGS)' LDFLAGS='$(TSAN_FLAGS)'

test-asan: deps
	@$(MAKE) --no-print-directory _san_test SAN=asan BUILD='$(ASAN_BUILD)' WERROR= \
	  CFLAGS='$(SAN_CFLAGS) $(ASAN_FLAGS)' LDFLAGS='$(ASAN_FLAGS)'

_san_test: all
	@test -n '$(SAN)' || { echo "_san_test: run make test-tsan or make test-asan" >&2; exit 1; }
	@$(call RUN_TESTS,$(SAN))

test-valgrind: deps
	@$(MAKE) --no-print-directory _test_valgrind RESULTS='$(BUILD)/valgrind-results'

_test_valgrind: all
	@$(call RUN_TESTS,valgrind)

fuzz:
	@$(call RUN_TESTS,fuzz) RESULTS='$(FUZZ_BUILD)/test-results' FUZZ_BUILD='$(FUZZ_BUILD)' \
	  FUZZ_TARGETS='$(FUZZ_TARGETS)'

fuzz-seeds: $(FUZZ_BUILD)/mkseeds
	$(FUZZ_BUILD)/mkseeds fuzz/corpus

check-rockspec:
	@tools/check-rockspec '$(ROCKSPEC)' $(SRCS) -- $(LUA_MODULES)

demo: deps
	@$(MAKE) --no-print-directory _demo

_demo: all
	@fail=0; for d in $(DEMOS); do \
	  echo "==> $(LUA) $$d"; \
	  $(INTREE_ENV) timeout -k 5 $(DEMO_TIMEOUT) $(LUA) "$$d" || { \
	    echo "demo $$d FAILED (exit status $$?)" >&2; fail=1; }; \
	done; exit $$fail

# bench: a table of medians and ratios, bench/results.json (under 5 minutes on 2 cores);
# bench-big: the opt-in 1,000,000 live idle servers (bench/results-big.json).
# E.g. make bench BENCH_FLAGS='--only cast,call --runs 3'
bench bench-big: bench-erlang
	@$(MAKE) --no-print-directory _$@

bench-erlang:
	@tools/bench-erlang

_bench: all $(BENCH_TCP_LOAD) $(BENCH_CORE_RTT)
	@$(BENCH_ENV) $(LUA) bench/compare.lua --erl-out '$(BUILD)/bench' $(BENCH_FLAGS)

_bench-big: all
	@$(BENCH_ENV) $(LUA) bench/compare.lua --big --erl-out '$(BUILD)/bench' $(BENCH_FLAGS)

env:
	@echo "export LUA_PATH='$(INTREE_LUA_PATH)' LUA_CPATH='$(INTREE_LUA_CPATH)'"
	@echo "export LUA_PATH_5_4='$(INTREE_LUA_PATH)' LUA_CPATH_5_4='$(INTREE_LUA_CPATH)'"

LDOC     ?= $(shell command -v ldoc 2>/dev/null)
DOCS_DIR ?= $(BUILD)/docs

docs:
	@tools/docs '$(LUA)' '$(LDOC)' '$(DOCS_DIR)'

# ---------------------------------------------------------------------------
# Install

install: all install-dev
	$(INSTALL) -d '$(DESTDIR)$(LUA_CMOD_DIR)/genserver'
	$(INSTALL) -m 755 $(CORE_SO) '$(DESTDIR)$(LUA_CMOD_DIR)/genserver/core.so'
	@for f in $(LUA_MODULES); do \
	  d='$(DESTDIR)$(LUA_LMOD_DIR)'/$${f#lua/}; \
	  echo "$(INSTALL) -m 644 $$f $$d"; \
	  $(INSTALL) -d "$$(dirname "$$d")" && $(INSTALL) -m 644 "$$f" "$$d" || exit 1; \
	done
	@$(MAKE) --no-print-directory install-tools

# The genserver command -> $(BINDIR), the docs and the guide's samples -> $(DOCDIR).
# Nothing to build: `install` does it too.
install-tools:
	$(INSTALL) -d '$(DESTDIR)$(BINDIR)' '$(DESTDIR)$(DOCDIR)/samples'
	$(INSTALL) -m 755 bin/genserver '$(DESTDIR)$(BINDIR)/genserver'
	$(INSTALL) -m 644 $(DOC_FILES) '$(DESTDIR)$(DOCDIR)/'
	$(if $(DOC_SAMPLES),$(INSTALL) -m 644 $(DOC_SAMPLES) '$(DESTDIR)$(DOCDIR)/samples/')

# The embedding API: csrc/genserver.h, libgenserver.{a,so} (the .so under its
# versioned name, with the soname and dev links), genserver.pc. `install` does it too.
install-dev: all $(PC_FILE)
	$(INSTALL) -d '$(DESTDIR)$(INCLUDEDIR)' '$(DESTDIR)$(LIBDIR)' '$(DESTDIR)$(PKGCONFIGDIR)'
	$(INSTALL) -m 644 csrc/genserver.h '$(DESTDIR)$(INCLUDEDIR)/genserver.h'
	$(INSTALL) -m 644 $(LIB_A) '$(DESTDIR)$(LIBDIR)/libgenserver.a'
	$(INSTALL) -m 755 $(LIB_SO) '$(DESTDIR)$(LIBDIR)/$(SO_REAL)'
	ln -sf $(SO_REAL) '$(DESTDIR)$(LIBDIR)/$(SONAME)'
	ln -sf $(SONAME) '$(DESTDIR)$(LIBDIR)/libgenserver.so'
	$(INSTALL) -m 644 $(PC_FILE) '$(DESTDIR)$(PKGCONFIGDIR)/genserver.pc'

# genserver.pc for the install paths (rewritten only when they change). Paths under
# $(PREFIX) are written relative to ${prefix}, so `pkg-config --define-prefix` works.
pc_rel = $(patsubst $(PREFIX)/%,$${prefix}/%,$(1))
$(PC_FILE): tools/genserver.pc.in FORCE | $(OBJDIR)
	@sed -e 's|@PREFIX@|$(PREFIX)|; s|@INCLUDEDIR@|$(call pc_rel,$(INCLUDEDIR))|' \
	  -e 's|@LIBDIR@|$(call pc_rel,$(LIBDIR))|; s|@LUADIR@|$(call pc_rel,$(LUA_LMOD_DIR))|' \
	  -e 's|@CMODDIR@|$(call pc_rel,$(LUA_CMOD_DIR))|; s|@VERSION@|$(GS_VERSION)|' \
	  -e 's|@LUA_VERSION@|$(LUA_VERSION)|' $< > $@.tmp; cmp -s $@.tmp $@ && rm -f $@.tmp || mv -f $@.tmp $@

uninstall:
	rm -f '$(DESTDIR)$(INCLUDEDIR)/genserver.h' '$(DESTDIR)$(PKGCONFIGDIR)/genserver.pc'
	rm -f '$(DESTDIR)$(LIBDIR)/libgenserver.a' '$(DESTDIR)$(LIBDIR)/libgenserver.so' \
	      '$(DESTDIR)$(LIBDIR)/$(SONAME)' '$(DESTDIR)$(LIBDIR)/$(SO_REAL)'
	-@rmdir '$(DESTDIR)$(PKGCONFIGDIR)' 2>/dev/null || true
	rm -f '$(DESTDIR)$(LUA_CMOD_DIR)/genserver/core.so'
	@for f in $(LUA_MODULES); do \
	  echo "rm -f $(DESTDIR)$(LUA_LMOD_DIR)/$${f#lua/}"; \
	  rm -f '$(DESTDIR)$(LUA_LMOD_DIR)'/$${f#lua/}; \
	done
	-@rmdir '$(DESTDIR)$(LUA_CMOD_DIR)/genserver' 2>/dev/null || true
	-@find '$(DESTDIR)$(LUA_LMOD_DIR)/genserver' -depth -type d -empty -delete 2>/dev/null || true
	rm -f '$(DESTDIR)$(BINDIR)/genserver'
	rm -rf '$(DESTDIR)$(DOCDIR)'

# Also what `luarocks make` leaves in the tree (objects beside the sources, genserver/core.so).
clean:
	rm -rf '$(BUILD)' luacov.stats.out luacov.report.out
	rm -f csrc/*.o csrc/*/*.o genserver/core.so
	-@rmdir genserver 2>/dev/null || true

clean-reliability:
	rm -rf '$(TSAN_BUILD)' '$(ASAN_BUILD)' '$(FUZZ_BUILD)'
