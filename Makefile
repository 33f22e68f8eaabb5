# genserver — build, test, demo and install.
#
#   make                  build build/genserver/core.so, build/libgenserver.{a,so}
#   make test             deps + build, run every C test and the busted specs (TAP + summary)
#   make test SPECS=spec/foo_spec.lua        one spec file (C tests skipped)
#   make test CTESTS=spec/c/codec_test.c     one C test (specs skipped)
#   make demo             deps + build, run the $(DEMOS) examples in-tree
#   make deps             check (and as root, apt-get install) the system packages
#   make check-rockspec   the rockspec lists every csrc/*.c and lua/genserver module
#   make install PREFIX=… / make uninstall PREFIX=…   (DESTDIR honoured)
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

# CFLAGS/LDFLAGS are the user-overridable part (e.g. sanitizer builds:
# make BUILD=build-asan CFLAGS="-O1 -g -fsanitize=address,undefined"); the rest is fixed.
CFLAGS   ?= -O2 -g
LDFLAGS  ?=
WERROR   ?= -Werror
GS_CFLAGS = -std=c11 -Wall -Wextra $(WERROR) -fPIC -fvisibility=hidden -D_GNU_SOURCE \
            $(LUA_CFLAGS) -Icsrc
ALL_CFLAGS = $(GS_CFLAGS) $(CFLAGS)
LDLIBS   = -lpthread -lm

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

DEMOS        ?= examples/kv_store.lua examples/counter.lua examples/supervision_tree.lua
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
INSTALL      ?= install

.PHONY: all test _test demo _demo deps check-rockspec install uninstall clean env FORCE

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
	$(CC) -shared $(LDFLAGS) -o $@ $(OBJS) $(LUA_LIBS) $(LDLIBS)

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
BUSTED_RUN  = $(TIMEOUT_CMD) $(LUA) "$$(command -v $(BUSTED))" --ignore-lua -o TAP $(BUSTED_FLAGS)

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
	for f in $$(grep -oE '"(csrc|lua)/[^"]+"' <<<"$$rs" | tr -d '"'); do \
	  [ -f "$$f" ] || { echo "check-rockspec: $(ROCKSPEC) lists $$f, which does not exist"; bad=1; }; \
	done; \
	exit $$bad

# ---------------------------------------------------------------------------
# Install

install: all
	$(INSTALL) -d '$(DESTDIR)$(LUA_CMOD_DIR)/genserver'
	$(INSTALL) -m 755 $(CORE_SO) '$(DESTDIR)$(LUA_CMOD_DIR)/genserver/core.so'
	@for f in $(LUA_MODULES); do \
	  d='$(DESTDIR)$(LUA_LMOD_DIR)'/$${f#lua/}; \
	  echo "$(INSTALL) -m 644 $$f $$d"; \
	  $(INSTALL) -d "$$(dirname "$$d")" && $(INSTALL) -m 644 "$$f" "$$d" || exit 1; \
	done
# install-dev (later): csrc/genserver.h -> $(INCLUDEDIR), $(LIB_A) $(LIB_SO) -> $(LIBDIR),
# genserver.pc -> $(PKGCONFIGDIR); make `install` depend on it and extend `uninstall`.

uninstall:
	rm -f '$(DESTDIR)$(LUA_CMOD_DIR)/genserver/core.so'
	@for f in $(LUA_MODULES); do \
	  echo "rm -f $(DESTDIR)$(LUA_LMOD_DIR)/$${f#lua/}"; \
	  rm -f '$(DESTDIR)$(LUA_LMOD_DIR)'/$${f#lua/}; \
	done
	-@rmdir '$(DESTDIR)$(LUA_CMOD_DIR)/genserver' 2>/dev/null || true
	-@find '$(DESTDIR)$(LUA_LMOD_DIR)/genserver' -depth -type d -empty -delete 2>/dev/null || true

# Also what `luarocks make` leaves in the tree (objects beside the sources, genserver/core.so).
clean:
	rm -rf '$(BUILD)' luacov.stats.out luacov.report.out
	rm -f csrc/*.o genserver/core.so
	-@rmdir genserver 2>/dev/null || true
