# genserver — build, test, demo and install.
#
#   make                  build build/genserver/core.so, build/libgenserver.{a,so}
#   make test             deps + build, run every C test and the busted specs (TAP + summary)
#   make test SPECS=spec/foo_spec.lua        one spec file (C tests skipped)
#   make test CTESTS=spec/c/codec_test.c     one C test (specs skipped)
#   make demo             deps + build, run the $(DEMOS) examples in-tree
#   make deps             check (and as root, apt-get install) the system packages
#   make check-rockspec   the rockspec lists every csrc/*.c and lua/genserver module
#   make docs             the HTML reference in build/docs (ldoc, config.ld); fails on a warning
#   make install PREFIX=… / make uninstall PREFIX=…   (DESTDIR honoured)
#                         (also the genserver command -> $(BINDIR), docs -> $(DOCDIR))
#   make clean
#   eval "$$(make -s env)"   LUA_PATH/LUA_CPATH for running lua5.4 in-tree by hand
#
# Internal targets (_test, _demo) are run by a sub-make after `deps`, so that the
# packages are in place before anything is compiled, even under `make -j`.

.DEFAULT_GOAL := all
SHELL := /bin/bash

# ---------------------------------------------------------------------------
# Tools and flags

LUA         ?= lua5.4
LUA_VERSION := 5.4
BUSTED      ?= busted
PKG_CONFIG  ?= pkg-config
ifeq ($(origin CC),default)
CC := gcc
endif
AR          ?= ar

LUA_CFLAGS := $(shell $(PKG_CONFIG) --cflags lua$(LUA_VERSION) 2>/dev/null)
ifeq ($(strip $(LUA_CFLAGS)),)
LUA_CFLAGS := -I/usr/include/lua$(LUA_VERSION)
endif
LUA_LIBS := $(shell $(PKG_CONFIG) --libs lua$(LUA_VERSION) 2>/dev/null)
ifeq ($(strip $(LUA_LIBS)),)
LUA_LIBS := -llua$(LUA_VERSION)
endif

# libuv (Debian's libuv1-dev) for the I/O layer (genserver.tcp / genserver.udp)
UV_CFLAGS := $(shell $(PKG_CONFIG) --cflags libuv 2>/dev/null)
UV_LIBS   := $(shell $(PKG_CONFIG) --libs libuv 2>/dev/null)
ifeq ($(strip $(UV_LIBS)),)
UV_LIBS := -luv
endif

# CFLAGS/LDFLAGS are the user-overridable part (e.g. sanitizer builds:
# make BUILD=build-asan CFLAGS="-O1 -g -fsanitize=address,undefined"); the rest is fixed.
CFLAGS   ?= -O2 -g
LDFLAGS  ?=
WERROR   ?= -Werror
GS_CFLAGS = -std=c11 -Wall -Wextra $(WERROR) -fPIC -fvisibility=hidden -D_GNU_SOURCE \
            $(LUA_CFLAGS) $(UV_CFLAGS) -Icsrc
ALL_CFLAGS = $(GS_CFLAGS) $(CFLAGS)
LDLIBS   = $(UV_LIBS) -lpthread -lm

# ---------------------------------------------------------------------------
# Files

BUILD   ?= build
OBJDIR  := $(BUILD)/obj
SRCS    := $(sort $(wildcard csrc/*.c))
OBJS    := $(patsubst csrc/%.c,$(OBJDIR)/%.o,$(SRCS))
CORE_SO := $(BUILD)/genserver/core.so
LIB_A   := $(BUILD)/libgenserver.a
LIB_SO  := $(BUILD)/libgenserver.so
FLAGS_STAMP := $(OBJDIR)/.cflags

LUA_MODULES := $(sort $(wildcard lua/genserver/*.lua lua/genserver/*/*.lua))
# What `make install` puts in $(DOCDIR): the guide, the references in docs/, and
# the guide's samples.
DOC_FILES   := README.md $(sort $(wildcard docs/*.md))
DOC_SAMPLES := $(sort $(wildcard docs/samples/*.lua))
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

TEST_WORKERS ?= 1 4
TEST_TIMEOUT ?= 600
BUSTED_FLAGS ?= -v
RESULTS      := $(BUILD)/test-results
TAP_SUMMARY  := .ci/tap-summary

DEMOS        ?= examples/kv_store.lua examples/counter.lua examples/supervision_tree.lua \
                examples/chat_room.lua examples/worker_pool.lua examples/todo.lua \
                examples/rate_limiter.lua examples/job_queue.lua \
                examples/tcp_echo.lua examples/chat_tcp.lua
DEMO_TIMEOUT ?= 120

# In-tree module search paths (both the generic and the 5.4-specific variables,
# since lua5.4 prefers LUA_PATH_5_4 when the user has one set).
# Tests also find helper modules in spec/support/.
INTREE_LUA_PATH  = $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;;
INTREE_LUA_CPATH = $(abspath $(BUILD))/?.so;;
INTREE_ENV = LUA_PATH='$(INTREE_LUA_PATH)' LUA_CPATH='$(INTREE_LUA_CPATH)' \
             LUA_PATH_5_4='$(INTREE_LUA_PATH)' LUA_CPATH_5_4='$(INTREE_LUA_CPATH)'
TEST_LUA_PATH = $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/spec/support/?.lua;;
TEST_ENV   = LUA_PATH='$(TEST_LUA_PATH)' LUA_CPATH='$(INTREE_LUA_CPATH)' \
             LUA_PATH_5_4='$(TEST_LUA_PATH)' LUA_CPATH_5_4='$(INTREE_LUA_CPATH)'

# Install layout. INCLUDEDIR/LIBDIR/PKGCONFIGDIR are for the embedding API
# (genserver.h, libgenserver.{a,so}, genserver.pc) — see install-dev below.
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

.PHONY: all test _test demo _demo deps check-rockspec install install-dev install-tools uninstall clean env docs FORCE

# ---------------------------------------------------------------------------
# Build

all: $(CORE_SO) $(LIB_A) $(LIB_SO)

$(OBJDIR) $(OBJDIR)/test $(BUILD)/genserver $(BUILD)/test:
	@mkdir -p $@

# Rebuild everything when the compiler or flags change.
$(FLAGS_STAMP): FORCE | $(OBJDIR)
	@echo '$(CC) $(ALL_CFLAGS)' | cmp -s - $@ || echo '$(CC) $(ALL_CFLAGS)' > $@

$(OBJDIR)/%.o: csrc/%.c $(FLAGS_STAMP) | $(OBJDIR)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(API_STAMP): FORCE | $(OBJDIR)
	@echo '$(API_DEFS)' | cmp -s - $@ || echo '$(API_DEFS)' > $@

$(OBJDIR)/api.o: csrc/api.c $(FLAGS_STAMP) $(API_STAMP) | $(OBJDIR)
	$(CC) $(ALL_CFLAGS) $(API_DEFS) -MMD -MP -c -o $@ $<

# The Lua C module: no -llua, the symbols come from the interpreter.
# luaopen_genserver_core must be exported despite -fvisibility=hidden.
$(CORE_SO): $(OBJS) | $(BUILD)/genserver
	@test -n "$(OBJS)" || { echo "error: no csrc/*.c to build" >&2; exit 1; }
	$(CC) -shared $(LDFLAGS) -o $@.tmp $(OBJS) $(LDLIBS)
	@nm -D --defined-only $@.tmp | grep -qw luaopen_genserver_core || { \
	  echo "error: $@ does not export luaopen_genserver_core" \
	       "(mark it __attribute__((visibility(\"default\"))))" >&2; rm -f $@.tmp; exit 1; }
	@mv -f $@.tmp $@

$(LIB_A): $(OBJS)
	@test -n "$(OBJS)" || { echo "error: no csrc/*.c to build" >&2; exit 1; }
	@rm -f $@
	$(AR) rcs $@ $(OBJS)

$(LIB_SO): $(OBJS)
	@test -n "$(OBJS)" || { echo "error: no csrc/*.c to build" >&2; exit 1; }
	$(CC) -shared $(LDFLAGS) -Wl,-soname,$(SONAME) -o $@ $(OBJS) $(LUA_LIBS) $(LDLIBS)

# C tests: spec/c/NAME.c -> $(BUILD)/test/NAME, linked with every core object.
$(OBJDIR)/test/%.o: spec/c/%.c $(FLAGS_STAMP) | $(OBJDIR)/test
	$(CC) $(ALL_CFLAGS) -Ispec/c -MMD -MP -c -o $@ $<

$(BUILD)/test/%: $(OBJDIR)/test/%.o $(OBJS) | $(BUILD)/test
	$(CC) $(LDFLAGS) -o $@ $< $(OBJS) $(LUA_LIBS) $(LDLIBS)

-include $(OBJS:.o=.d) $(patsubst spec/c/%.c,$(OBJDIR)/test/%.d,$(ALL_CTESTS))

# ---------------------------------------------------------------------------
# System packages (Debian/Ubuntu names). Cheap when everything is present.

deps:
	@missing=; \
	command -v $(LUA) >/dev/null 2>&1 || missing="$$missing lua5.4"; \
	{ $(PKG_CONFIG) --exists lua$(LUA_VERSION) 2>/dev/null || \
	  [ -f /usr/include/lua$(LUA_VERSION)/lua.h ]; } || missing="$$missing liblua5.4-dev"; \
	{ command -v $(BUSTED) >/dev/null 2>&1 && \
	  $(LUA) -e 'require "busted.runner"' >/dev/null 2>&1; } || missing="$$missing lua-busted"; \
	command -v $(CC) >/dev/null 2>&1 || missing="$$missing gcc"; \
	[ -f /usr/include/pthread.h ] || missing="$$missing libc6-dev"; \
	{ $(PKG_CONFIG) --exists libuv 2>/dev/null || [ -f /usr/include/uv.h ]; } || \
	  missing="$$missing libuv1-dev"; \
	command -v make >/dev/null 2>&1 || missing="$$missing make"; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "deps: installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -q --no-install-recommends $$missing || exit 1; \
	  $(LUA) -e 'require "busted.runner"' >/dev/null 2>&1 || { \
	    echo "deps: busted still cannot be loaded by $(LUA)" >&2; exit 1; }; \
	else \
	  echo "deps: missing system packages:$$missing" >&2; \
	  echo "deps: install them with:  sudo apt-get install$$missing" >&2; \
	  exit 1; \
	fi

# ---------------------------------------------------------------------------
# Tests. Every run (one C test, or one spec file under one worker count) writes
# $(RESULTS)/NNN.tap and NNN.rc; $(TAP_SUMMARY) counts them and ends with
# "tests: N passed, N failed".

# $(call tap_run,LABEL,COMMAND) — a shell fragment; COMMAND must not contain commas.
tap_run = n=$$((n+1)); f=$$(printf '%s/%03d' '$(RESULTS)' $$n); \
  echo '\# run: $(1)' | tee "$$f.tap"; \
  { $(2); echo $$? > "$$f.rc"; } | tee -a "$$f.tap"; \
  rc=$$(cat "$$f.rc" 2>/dev/null); [ "$$rc" = 0 ] || echo "\# exit status $$rc" | tee -a "$$f.tap";

TIMEOUT_CMD = timeout -k 10 $(TEST_TIMEOUT)
# --cpath: .busted names build/, and busted puts that before LUA_CPATH
BUSTED_RUN  = $(TIMEOUT_CMD) $(LUA) "$$(command -v $(BUSTED))" --ignore-lua -o TAP --cpath=$(CURDIR)/$(BUILD)/?.so $(BUSTED_FLAGS)

ROCKSPEC_TAP = if out=$$($(MAKE) -s --no-print-directory check-rockspec 2>&1); \
  then echo 'ok 1 - rockspec lists every csrc/*.c and lua module'; \
  else echo 'not ok 1 - rockspec lists every csrc/*.c and lua module'; fi; \
  [ -z "$$out" ] || printf '%s\n' "$$out" | sed 's/^/\# /'; echo 1..1

test: deps
	@$(MAKE) --no-print-directory _test

_test: all
	@rm -rf '$(RESULTS)'; mkdir -p '$(RESULTS)'; n=0; \
	$(call tap_run,check-rockspec,$(ROCKSPEC_TAP)) \
	$(foreach t,$(CTEST_BINS),$(call tap_run,$(t),$(MAKE) -s --no-print-directory $(t) >&2 && \
	  $(TEST_ENV) $(TIMEOUT_CMD) $(t))) \
	$(foreach w,$(TEST_WORKERS),$(foreach s,$(SPECS),$(call tap_run,GENSERVER_WORKERS=$(w) busted $(s),\
	  $(TEST_ENV) GENSERVER_WORKERS=$(w) $(BUSTED_RUN) $(s)))) \
	$(TAP_SUMMARY) '$(RESULTS)'

# ---------------------------------------------------------------------------
# Demos

demo: deps
	@$(MAKE) --no-print-directory _demo

_demo: all
	@fail=0; for d in $(DEMOS); do \
	  echo "==> $(LUA) $$d"; \
	  $(INTREE_ENV) timeout -k 5 $(DEMO_TIMEOUT) $(LUA) "$$d" || { \
	    echo "demo $$d FAILED (exit status $$?)" >&2; fail=1; }; \
	done; exit $$fail

env:
	@echo "export LUA_PATH='$(INTREE_LUA_PATH)' LUA_CPATH='$(INTREE_LUA_CPATH)'"
	@echo "export LUA_PATH_5_4='$(INTREE_LUA_PATH)' LUA_CPATH_5_4='$(INTREE_LUA_CPATH)'"

# ---------------------------------------------------------------------------
# The rockspec must list every csrc/*.c in genserver.core's sources and every
# Lua module as ["genserver.x"] = "lua/genserver/x.lua"; everything it lists must exist.

check-rockspec:
	@test -f $(ROCKSPEC) || { echo "check-rockspec: $(ROCKSPEC) is missing"; exit 1; }; \
	rs=$$(sed 's/--.*$$//' $(ROCKSPEC)); rsn=$$(tr -d ' \t' <<<"$$rs"); bad=0; \
	for f in $(SRCS); do \
	  grep -qF "\"$$f\"" <<<"$$rs" || { \
	    echo "check-rockspec: $$f is missing from genserver.core sources in $(ROCKSPEC)"; bad=1; }; \
	done; \
	for f in $(LUA_MODULES); do \
	  m=$${f#lua/}; m=$${m%.lua}; m=$${m%/init}; m=$${m//\//.}; \
	  grep -qF "[\"$$m\"]=\"$$f\"" <<<"$$rsn" || { \
	    echo "check-rockspec: $(ROCKSPEC) lacks [\"$$m\"] = \"$$f\""; bad=1; }; \
	done; \
	grep -qF 'genserver="bin/genserver"' <<<"$$rsn" || { \
	  echo "check-rockspec: $(ROCKSPEC) does not install bin/genserver (build.install.bin)"; bad=1; }; \
	grep -qF 'copy_directories={"docs"' <<<"$$rsn" || { \
	  echo "check-rockspec: $(ROCKSPEC) does not ship docs/ (build.copy_directories)"; bad=1; }; \
	for f in $$(grep -oE '"(csrc|lua)/[^"]+"' <<<"$$rs" | tr -d '"'); do \
	  [ -f "$$f" ] || { echo "check-rockspec: $(ROCKSPEC) lists $$f, which does not exist"; bad=1; }; \
	done; \
	exit $$bad

# ---------------------------------------------------------------------------
# Reference: Debian's lua-ldoc (its ldoc script asks for Lua 5.1/5.2 through
# lua-any, but its modules are installed for 5.4 too: run it with $(LUA)).
# Any line of ldoc's output that names a file and line is a warning: the
# target prints them and fails.

LDOC     ?= $(shell command -v ldoc 2>/dev/null)
DOCS_DIR ?= $(BUILD)/docs

docs:
	@test -n '$(LDOC)' || { echo "make docs: ldoc not found (apt-get install lua-ldoc)" >&2; exit 1; }
	@rm -rf '$(DOCS_DIR)'; mkdir -p '$(DOCS_DIR)'; \
	out=$$($(LUA) '$(LDOC)' -d '$(DOCS_DIR)' . 2>&1); rc=$$?; \
	warn=$$(grep -E '^[^ ]+:[0-9]+:|warning|not found|cannot|error' <<<"$$out"); \
	if [ $$rc != 0 ] || [ -n "$$warn" ]; then echo "$$out" >&2; \
	  echo "make docs: ldoc failed or warned (exit status $$rc)" >&2; exit 1; fi; \
	echo "make docs: $(DOCS_DIR)/index.html"

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

# The embedding API: csrc/genserver.h -> $(INCLUDEDIR), libgenserver.{a,so} (the .so
# under its versioned name, with the soname and dev links) -> $(LIBDIR), genserver.pc
# -> $(PKGCONFIGDIR). `install` does it too.
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
$(PC_FILE): FORCE | $(OBJDIR)
	@{ echo 'prefix=$(PREFIX)'; \
	  echo 'includedir=$(call pc_rel,$(INCLUDEDIR))'; \
	  echo 'libdir=$(call pc_rel,$(LIBDIR))'; \
	  echo '# where the genserver Lua modules and genserver/core.so are installed'; \
	  echo 'luadir=$(call pc_rel,$(LUA_LMOD_DIR))'; \
	  echo 'cmoddir=$(call pc_rel,$(LUA_CMOD_DIR))'; \
	  echo; \
	  echo 'Name: genserver'; \
	  echo 'Description: OTP-style gen_servers for Lua 5.4 on a C runtime (embedding API)'; \
	  echo 'Version: $(GS_VERSION)'; \
	  echo 'Requires: lua$(LUA_VERSION)'; \
	  echo 'Requires.private: libuv'; \
	  echo 'Libs: -L$${libdir} -lgenserver -lpthread'; \
	  echo 'Libs.private: -luv -lm'; \
	  echo 'Cflags: -I$${includedir}'; \
	} > $@.tmp; cmp -s $@.tmp $@ && rm -f $@.tmp || mv -f $@.tmp $@

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
	rm -f csrc/*.o genserver/core.so
	-@rmdir genserver 2>/dev/null || true

# ---------------------------------------------------------------------------
# Reliability: sanitizers, valgrind, fuzzing (docs/reliability.md).
#
#   make test-tsan         the whole suite (every C test; every spec under each of
#                          $(TEST_WORKERS)) against a ThreadSanitizer build in $(TSAN_BUILD)
#   make test-asan         the same under AddressSanitizer + UndefinedBehaviorSanitizer,
#                          build in $(ASAN_BUILD)
#   make test-valgrind     the $(DEMOS) and the C tests under valgrind memcheck, one TAP
#                          test per program
#   make fuzz FUZZ_TIME=60 libFuzzer (clang): the decoder and the round trip, FUZZ_TIME
#                          seconds each, one TAP test per target
#   make fuzz-seeds        rewrite fuzz/corpus/ from real encodings (build/mkseeds)
#   make clean-reliability remove $(TSAN_BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
# SPECS=... / CTESTS=... select runs as for `make test`. Each target prints TAP per run
# and ends with "tests: N passed, N failed"; a sanitizer report on a run's stderr adds
# one failing test to that run (so a report always fails the run, whatever the exit
# status). The lua5.4 interpreter is not instrumented: the sanitizer runtime is
# preloaded into it, and into every lua5.4 a spec starts (see SAN_LUA_WRAPPER).

TSAN_BUILD  ?= build-tsan
ASAN_BUILD  ?= build-asan
FUZZ_BUILD  ?= build-fuzz
SAN_CFLAGS  ?= -O1 -g -fno-omit-frame-pointer
TSAN_FLAGS  := -fsanitize=thread
# float-cast-overflow is not part of gcc's -fsanitize=undefined; the codec converts
# floats to integers, so check that too. -fno-sanitize-recover: UB stops the process.
ASAN_FLAGS  := -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all
TSAN_RT      = $(shell $(CC) -print-file-name=libtsan.so)
ASAN_RT      = $(shell $(CC) -print-file-name=libasan.so)

# Reports fail the run: TSan keeps going and exits 66 at the end (so one run shows
# every race), ASan and UBSan stop at the first error. Leaks: on for the C tests
# (their every allocation is instrumented); off for lua5.4 runs, whose interpreter
# and busted are not ours (valgrind checks the Lua side for definite leaks). The
# Lua-side options reach every program a spec starts: strict_string_checks is left
# out there (it trips on GNU make's own strndup when a runtime is loaded into make).
TSAN_OPTS      ?= halt_on_error=0 exitcode=66 second_deadlock_stack=1 history_size=4
ASAN_OPTS_C    ?= detect_leaks=1:halt_on_error=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1
ASAN_OPTS_LUA  ?= detect_leaks=0:halt_on_error=1:abort_on_error=0
UBSAN_OPTS     ?= halt_on_error=1:print_stacktrace=1

# How the uninstrumented lua5.4 gets the sanitizer runtime: $(BUILD)/san/bin/lua5.4
# is a wrapper that execs the real interpreter with the runtime (and the shim
# below) in LD_PRELOAD; the runs put $(BUILD)/san/bin first in PATH, so busted and
# every `lua5.4` a spec starts (through sh, timeout, ...) are instrumented, while
# other programs a spec runs (sh, make, gcc, a C host it built) are not: the shim
# puts LD_PRELOAD back as it was before the wrapper, once the runtime is loaded. An
# uninstrumented program under a preloaded TSan reports false races (it cannot see
# the program's atomics), and preloaded TSan crashes dash and bash outright.
#
# The shim, built without sanitizers or fortification:
#  - gcc 12's libtsan intercepts longjmp but not __longjmp_chk, which Debian's
#    lua5.4 and liblua5.4 (built with _FORTIFY_SOURCE) use for every error and
#    yield: without the shim each Lua error that unwinds instrumented frames leaks
#    TSan shadow-stack entries until TSan dies ("CHECK failed:
#    sanitizer_stackdepot.cpp:83"); the shim's __longjmp_chk calls the
#    intercepted longjmp (libasan intercepts __longjmp_chk itself and wins);
#  - its constructor initialises TSan before main() (needed when a preloaded
#    libtsan meets a program whose first setjmp runs before TSan is set up);
#  - it restores LD_PRELOAD (saved by the wrapper in GS_SAN_PRELOAD_SAVED).
define SAN_SHIM_SRC
/* generated by the Makefile (SAN_SHIM_SRC): see the comment there */
#include <setjmp.h>
#include <stdlib.h>
void __longjmp_chk(struct __jmp_buf_tag env[1], int val) __attribute__((noreturn));
void __longjmp_chk(struct __jmp_buf_tag env[1], int val) { longjmp(env, val); }
extern void __tsan_init(void) __attribute__((weak));
__attribute__((constructor)) static void gs_san_shim_init(void) {
  const char *saved = getenv("GS_SAN_PRELOAD_SAVED");
  if (__tsan_init) __tsan_init();
  if (saved == NULL) return;
  if (*saved) setenv("LD_PRELOAD", saved, 1);
  else unsetenv("LD_PRELOAD");
  unsetenv("GS_SAN_PRELOAD_SAVED");
}
endef

define SAN_LUA_WRAPPER
#!/bin/sh
# generated by the Makefile (SAN_LUA_WRAPPER): $(LUA) under $(SAN)
GS_SAN_PRELOAD_SAVED="$${LD_PRELOAD-}"
LD_PRELOAD='$(SAN_RT_$(SAN)) $(abspath $(BUILD))/san/san_shim.so'"$${LD_PRELOAD:+ $$LD_PRELOAD}"
export GS_SAN_PRELOAD_SAVED LD_PRELOAD
exec '$(shell command -v $(LUA))' "$$@"
endef
SAN_RT_tsan = $(TSAN_RT)
SAN_RT_asan = $(ASAN_RT)

$(BUILD)/san $(BUILD)/san/bin:
	@mkdir -p $@

$(BUILD)/san/san_shim.so: | $(BUILD)/san
	$(file >$(BUILD)/san/san_shim.c,$(SAN_SHIM_SRC))
	$(CC) -O1 -U_FORTIFY_SOURCE -fPIC -shared -o $@ $(BUILD)/san/san_shim.c

# rewritten every time (it names the runtime and the interpreter of this run)
$(BUILD)/san/bin/$(notdir $(LUA)): $(BUILD)/san/san_shim.so FORCE | $(BUILD)/san/bin
	$(file >$@,$(SAN_LUA_WRAPPER))
	@chmod +x $@

# How much slower than the plain build the code runs (roughly, on 2 cores): given
# to the specs as GENSERVER_TEST_SLOWDOWN, for a spec that waits a fixed time for
# something that "should happen soon" to scale its bound by.
TSAN_SLOWDOWN ?= 10
ASAN_SLOWDOWN ?= 3

# Environment of the sanitized runs: SAN_ENV_C for the C tests (linked with the
# runtime; TSan's also take the shim: they link liblua5.4), SAN_ENV_LUA for busted.
SAN_ENV_C_tsan   = TSAN_OPTIONS='$(TSAN_OPTS)'
SAN_PRE_C_tsan   = env LD_PRELOAD='$(abspath $(BUILD))/san/san_shim.so'
SAN_ENV_LUA_tsan = PATH='$(abspath $(BUILD))/san/bin':"$$PATH" TSAN_OPTIONS='$(TSAN_OPTS)' \
                   GENSERVER_TEST_SLOWDOWN=$(TSAN_SLOWDOWN)
SAN_ENV_C_asan   = ASAN_OPTIONS='$(ASAN_OPTS_C)' UBSAN_OPTIONS='$(UBSAN_OPTS)'
SAN_PRE_C_asan   =
SAN_ENV_LUA_asan = PATH='$(abspath $(BUILD))/san/bin':"$$PATH" \
                   ASAN_OPTIONS='$(ASAN_OPTS_LUA)' UBSAN_OPTIONS='$(UBSAN_OPTS)' \
                   GENSERVER_TEST_SLOWDOWN=$(ASAN_SLOWDOWN)
SAN_DEPS         = $(BUILD)/san/san_shim.so $(BUILD)/san/bin/$(notdir $(LUA))

# busted, with the module path of THIS build first: .busted sets cpath =
# "build/?.so", which busted puts before LUA_CPATH, so without --cpath the specs
# (and the children they start, which inherit package.cpath) would load the plain
# build/genserver/core.so - uninstrumented code in an instrumented process, whose
# atomics TSan cannot see (false races), and not the build under test.
SAN_BUSTED_RUN = $(TIMEOUT_CMD) $(notdir $(LUA)) "$$(command -v $(BUSTED))" --ignore-lua -o TAP \
                 $(BUSTED_FLAGS) '--cpath=$(abspath $(BUILD))/?.so'

# What the tests see must not depend on how make was called: the sub-make's
# command-line variables (CFLAGS with sanitizer flags, BUILD, ...) are exported
# to recipes and through MAKEFLAGS, and a spec that runs `make` itself (e.g. an
# install test) would build with them.
SAN_CLEAN_ENV = env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u MAKEOVERRIDES -u CFLAGS \
                -u LDFLAGS -u WERROR -u BUILD -u SAN -u RESULTS

# A line of a run's stderr that is a sanitizer report.
SAN_REPORT_RE = (WARNING|ERROR|FATAL): (ThreadSanitizer|AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer)|Sanitizer: CHECK failed|^[^ ]+:[0-9]+:[0-9]+: runtime error: 

# $(call san_run,COMMAND) - for tap_run: COMMAND's stdout is the TAP, its stderr
# is shown and kept in NNN.err; if it holds a sanitizer report, one more failing
# test (with its own plan line, so the plan still adds up) says so.
san_run = ( { $(1) 2>&1 1>&3 | tee "$$f.err" >&2; rc=$${PIPESTATUS[0]}; } 3>&1; \
  r=$$(grep -cE '$(SAN_REPORT_RE)' "$$f.err"); \
  if [ "$$r" != 0 ]; then \
    echo "not ok 1 - sanitizer: $$r report line(s) on stderr (see the log above)"; \
    grep -E '$(SAN_REPORT_RE)' "$$f.err" | head -n 5 | sed 's/^/\# /'; echo 1..1; \
    [ "$$rc" != 0 ] || rc=1; fi; exit $$rc )

.PHONY: test-tsan test-asan _san_test test-valgrind _test_valgrind fuzz _fuzz \
        fuzz-bins fuzz-seeds clean-reliability

# WERROR is off in these builds: at -O1 with instrumentation gcc warns about
# things the plain -O2 build (which keeps -Werror) does not (false
# -Wmaybe-uninitialized); the warnings are still printed.
test-tsan: deps
	@$(MAKE) --no-print-directory _san_test SAN=tsan BUILD='$(TSAN_BUILD)' WERROR= \
	  CFLAGS='$(SAN_CFLAGS) $(TSAN_FLAGS)' LDFLAGS='$(TSAN_FLAGS)'

test-asan: deps
	@$(MAKE) --no-print-directory _san_test SAN=asan BUILD='$(ASAN_BUILD)' WERROR= \
	  CFLAGS='$(SAN_CFLAGS) $(ASAN_FLAGS)' LDFLAGS='$(ASAN_FLAGS)'

_san_test: all $(SAN_DEPS)
	@test -n '$(SAN)' || { echo "_san_test: run make test-tsan or make test-asan" >&2; exit 1; }
	@rm -rf '$(RESULTS)'; mkdir -p '$(RESULTS)'; n=0; \
	$(foreach t,$(CTEST_BINS),$(call tap_run,$(SAN) $(t),$(MAKE) -s --no-print-directory $(t) >&2 && \
	  $(call san_run,$(TEST_ENV) $(SAN_ENV_C_$(SAN)) $(SAN_CLEAN_ENV) $(TIMEOUT_CMD) $(SAN_PRE_C_$(SAN)) $(t)))) \
	$(foreach w,$(TEST_WORKERS),$(foreach s,$(SPECS),$(call tap_run,$(SAN) GENSERVER_WORKERS=$(w) busted $(s),\
	  $(call san_run,$(TEST_ENV) $(SAN_ENV_LUA_$(SAN)) GENSERVER_WORKERS=$(w) \
	  $(SAN_CLEAN_ENV) $(SAN_BUSTED_RUN) $(s))))) \
	$(TAP_SUMMARY) '$(RESULTS)'

# ---------------------------------------------------------------- valgrind

VALGRIND       ?= valgrind
VALGRIND_FLAGS ?= --leak-check=full --errors-for-leak-kinds=definite \
                  --show-leak-kinds=definite --error-exitcode=1 --num-callers=40
VALGRIND_TIMEOUT ?= 900

# $(call vg_one,NAME,ENV COMMAND) - one TAP test: COMMAND under valgrind exits 0
# with no error (invalid access, uninitialised use, definite leak). The program's
# own output and valgrind's log are kept in NNN.out / NNN.vg and shown on failure.
vg_one = $(1) > "$$f.out" 2>&1; rc=$$?; \
  if [ "$$rc" = 0 ]; then echo "ok 1 - valgrind: $(2)"; \
  else echo "not ok 1 - valgrind: $(2) (exit status $$rc)"; \
    tail -n 60 "$$f.vg" "$$f.out" 2>/dev/null | sed 's/^/\# /'; fi; echo 1..1

test-valgrind: deps
	@$(MAKE) --no-print-directory _test_valgrind RESULTS='$(BUILD)/valgrind-results'

_test_valgrind: all
	@command -v $(VALGRIND) >/dev/null 2>&1 || { \
	  echo "test-valgrind: $(VALGRIND) not found (apt-get install valgrind)" >&2; exit 1; }
	@rm -rf '$(RESULTS)'; mkdir -p '$(RESULTS)'; n=0; \
	$(foreach d,$(DEMOS),$(call tap_run,valgrind $(d),$(call vg_one,$(INTREE_ENV) \
	  timeout -k 10 $(VALGRIND_TIMEOUT) $(VALGRIND) $(VALGRIND_FLAGS) --log-file="$$f.vg" \
	  $(LUA) $(d),$(d)))) \
	$(foreach t,$(CTEST_BINS),$(call tap_run,valgrind $(t),$(MAKE) -s --no-print-directory $(t) >&2 && \
	  $(call vg_one,$(TEST_ENV) timeout -k 10 $(VALGRIND_TIMEOUT) $(VALGRIND) $(VALGRIND_FLAGS) \
	  --log-file="$$f.vg" $(t),$(t)))) \
	$(TAP_SUMMARY) '$(RESULTS)'

# ----------------------------------------------------------------- fuzzing

FUZZ_CC      ?= clang
FUZZ_TIME    ?= 60
FUZZ_MAX_LEN ?= 4096
FUZZ_TARGETS := decode roundtrip wire
FUZZ_SAN     := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS  ?= -g -O1 -fno-omit-frame-pointer
FUZZ_SRCS    := csrc/codec.c csrc/ids.c csrc/wire.c
FUZZ_BINS    := $(patsubst %,$(FUZZ_BUILD)/%_fuzz,$(FUZZ_TARGETS))
FUZZ_OPTS    ?= -max_len=$(FUZZ_MAX_LEN) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
FUZZ_RESULTS := $(FUZZ_BUILD)/test-results
FUZZ_ENV      = ASAN_OPTIONS='detect_leaks=1:halt_on_error=1' UBSAN_OPTIONS='$(UBSAN_OPTS)'

$(FUZZ_BUILD):
	@mkdir -p $@

$(FUZZ_BUILD)/%_fuzz: fuzz/%_fuzz.c fuzz/fuzz_common.h $(FUZZ_SRCS) csrc/codec.h csrc/ids.h csrc/wire.h | $(FUZZ_BUILD)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -std=c11 -Wall -Wextra -D_GNU_SOURCE \
	  $(LUA_CFLAGS) -Icsrc -Ifuzz -o $@ $< $(FUZZ_SRCS) $(LUA_LIBS) -lm

$(FUZZ_BUILD)/mkseeds: fuzz/mkseeds.c $(FUZZ_SRCS) csrc/codec.h csrc/ids.h csrc/wire.h | $(FUZZ_BUILD)
	$(CC) -O1 -g -std=c11 -Wall -Wextra -D_GNU_SOURCE $(LUA_CFLAGS) -Icsrc \
	  -o $@ $< $(FUZZ_SRCS) $(LUA_LIBS) -lm

fuzz-bins: $(FUZZ_BINS)

fuzz-seeds: $(FUZZ_BUILD)/mkseeds
	$(FUZZ_BUILD)/mkseeds fuzz/corpus

# $(call fuzz_one,TARGET) - one TAP test: libFuzzer runs FUZZ_TIME seconds from the
# seeds (fuzz/corpus/TARGET, read only) plus what earlier runs found
# ($(FUZZ_BUILD)/corpus/TARGET) and finds nothing. A crash is kept as
# $(FUZZ_BUILD)/artifacts/TARGET-crash-... and shown in hex.
fuzz_one = mkdir -p '$(FUZZ_BUILD)/corpus/$(1)' '$(FUZZ_BUILD)/artifacts'; \
  $(FUZZ_ENV) timeout -k 10 $$(( $(FUZZ_TIME) + 300 )) $(FUZZ_BUILD)/$(1)_fuzz $(FUZZ_OPTS) \
    -max_total_time=$(FUZZ_TIME) -artifact_prefix='$(FUZZ_BUILD)/artifacts/$(1)-' \
    '$(FUZZ_BUILD)/corpus/$(1)' 'fuzz/corpus/$(1)' > "$$f.log" 2>&1; rc=$$?; \
  grep -E '^(\#[0-9]+ +DONE|Done [0-9]+ runs|stat::number_of_executed_units)' "$$f.log" | sed 's/^/\# /'; \
  if [ "$$rc" = 0 ]; then echo "ok 1 - fuzz $(1): $(FUZZ_TIME) s without a finding"; \
  else echo "not ok 1 - fuzz $(1): exit status $$rc"; \
    grep -E -A 40 'ERROR|FAILED|runtime error|Test unit written|deadly signal' "$$f.log" | head -n 80 | sed 's/^/\# /'; \
    for a in $$(sed -n 's/.*Test unit written to \([^ ]*\).*/\1/p' "$$f.log"); do \
      echo "\# input $$a:"; od -A x -t x1z "$$a" | head -n 40 | sed 's/^/\#   /'; done; \
  fi; echo 1..1

fuzz:
	@$(MAKE) --no-print-directory _fuzz RESULTS='$(FUZZ_RESULTS)'

_fuzz:
	@rm -rf '$(RESULTS)'; mkdir -p '$(RESULTS)'; n=0; \
	$(foreach t,$(FUZZ_TARGETS),$(call tap_run,fuzz $(t) $(FUZZ_TIME)s,$(MAKE) -s --no-print-directory \
	  $(FUZZ_BUILD)/$(t)_fuzz >&2 && $(call fuzz_one,$(t)))) \
	$(TAP_SUMMARY) '$(RESULTS)'

clean-reliability:
	rm -rf '$(TSAN_BUILD)' '$(ASAN_BUILD)' '$(FUZZ_BUILD)'

# ---------------------------------------------------------------------------
# Benchmark: genserver beside Erlang/OTP's gen_server, same workloads, same run
# (bench/README.md). `make bench` (under 5 minutes on 2 cores) prints a table of
# medians and ratios and writes bench/results.json; `make bench-big` runs the
# opt-in 1,000,000 live idle servers workload (bench/results-big.json).
#   make bench BENCH_FLAGS='--only cast,call --runs 3'
#   lua5.4 bench/run.lua cast          one workload, genserver side only

BENCH_FLAGS ?=
BENCH_TCP_LOAD = $(BUILD)/bench/tcp_load
BENCH_ENV    = $(INTREE_ENV) BENCH_LUA='$(LUA)' BENCH_TCP_LOAD='$(abspath $(BENCH_TCP_LOAD))'

.PHONY: bench bench-big _bench _bench-big bench-erlang

bench: bench-erlang
	@$(MAKE) --no-print-directory _bench

bench-big: bench-erlang
	@$(MAKE) --no-print-directory _bench-big

_bench: all $(BENCH_TCP_LOAD)
	@$(BENCH_ENV) $(LUA) bench/compare.lua --erl-out '$(BUILD)/bench' $(BENCH_FLAGS)

# the TCP workloads' load generator and plain blocking C echo server
$(BENCH_TCP_LOAD): bench/tcp_load.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -std=c11 -Wall -Wextra $(WERROR) -D_GNU_SOURCE -o $@ $< -lpthread

_bench-big: all
	@$(BENCH_ENV) $(LUA) bench/compare.lua --big --erl-out '$(BUILD)/bench' $(BENCH_FLAGS)

# Erlang/OTP for the comparison: installed (as root, with apt-get) when missing;
# otherwise the bench runs the genserver side alone and marks Erlang figures missing.
bench-erlang:
	@command -v erl >/dev/null 2>&1 && command -v erlc >/dev/null 2>&1 && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "bench: installing erlang-nox"; export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q --no-install-recommends erlang-nox >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -q --no-install-recommends erlang-nox; } || \
	  echo "bench: could not install erlang-nox; Erlang figures will be missing" >&2; \
	else \
	  echo "bench: Erlang/OTP not found; Erlang figures will be missing." >&2; \
	  echo "bench: install it with:  sudo apt-get install erlang-nox" >&2; \
	fi
