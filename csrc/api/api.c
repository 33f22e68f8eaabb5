/*
** api.c - the public C API (genserver.h) on the core's internals.
**
** Layers, as in DESIGN.md §1: this file only uses the core (gsi_*), never
** the Lua binding; the binding could call these functions with the same
** meaning (its waits yield a coroutine where ours block the OS thread).
**
** A host thread is a foreign process of the runtime (foreign.c): its waits
** spin, then park on its condition variable. Every wait here is for one
** pending request (call, start, stop), found in O(1) among the answers
** drained from the mailbox (recv.c); a late answer is dropped there.
**
** Values cross as the codec's wire format (codec.h). A host lua_State is
** encoded and decoded with the codec itself; the C value API (gs_msg)
** writes and reads the same format directly, with no Lua state at all.
**
** Life of a gs_runtime: open -> (calls) -> stop -> close. `stopped` turns
** every entry point away (GS_ECLOSED); `inflight` counts the calls inside,
** so stop can wait for them to leave before close frees anything.
*/
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lauxlib.h"
#include "lualib.h"

#include "genserver.h"
#include "core/ids.h"
#include "core/wire.h"
#include "core/internal.h"
#include "api/api.h"
#include "gen/gen.h"

#define NAME_MAX_LEN GSI_NAME_MAX
#define MS_INFINITE (UINT64_MAX / 2000000u) /* "forever" for the core */

struct gs_runtime {
  gsi_rt *core;
  char *path, *cpath;        /* package paths of processes started here */
  gs_state_hook hook;
  void *hook_ud;
  pthread_key_t key;         /* per thread: rt once the thread used rt */
  uint64_t serial;           /* tells runtimes at the same address apart */
  _Atomic int stopped;       /* calls are turned away */
  _Atomic long inflight;     /* calls inside an entry point */
  pthread_mutex_t life_mu;   /* one stop/close at a time */
  int stop_done;             /* guarded by life_mu: every process is gone */
};

/* ------------------------------------------------------------- errors */

/* gs_errmsg's text: tls_err, or the thread's scratch `err` buffer when it
** does not fit (a codec error names a path, which has no bound). */
static _Thread_local char tls_err[256];
static _Thread_local int tls_err_long;

int gs_version(void) { return GS_VERSION_NUM; }

/* The text is the ids layer's, so C and Lua print a pid alike. */
int gs_pid_format(gs_pid pid, char *buf, size_t size) {
  char text[GSI_ID_STRLEN];
  int n;
  if (pid == 0 || (buf == NULL && size > 0)) return GS_EINVAL;
  n = gsi_idstring(GSI_ID_PID, pid, text);
  if (size > 0) {
    size_t k = (size_t)n < size ? (size_t)n : size - 1;
    memcpy(buf, text, k);
    buf[k] = '\0';
  }
  return n;
}

const char *gs_strerror(int code) {
  switch (code) {
  case GS_OK: return "success";
  case GS_EINVAL: return "invalid argument";
  case GS_ENOMEM: return "out of memory";
  case GS_ENOPROC: return "no such process";
  case GS_ETIMEDOUT: return "timed out";
  case GS_ECLOSED: return "the runtime is stopped";
  case GS_ECALLSELF: return "a process cannot call or stop itself";
  case GS_EEXIT: return "the server exited (its exit reason is returned)";
  case GS_EENCODE: return "the value cannot be sent";
  case GS_EDECODE: return "the value received cannot be decoded";
  case GS_ELIMIT: return "process limit reached, or the runtime's threads cannot start";
  case GS_EALREADY: return "the name is already registered";
  case GS_EIGNORE: return "the server's init returned \"ignore\"";
  case GS_EKILLED: return "this thread's process was killed by an exit signal";
  case GS_ECONTEXT: return "not allowed on a worker thread of the runtime";
  case GS_ETYPE: return "the value has a type this function cannot return";
  case GS_EFULL: return "the server's mailbox is full";
  case GS_EBUSY: return "too late: the runtime's threads are running";
  default: return "unknown error code";
  }
}

const char *gs_errmsg(void) {
  return tls_err_long ? (const char *)gsi_scratch_get()->err.data : tls_err;
}

/* Record details for gs_errmsg and return code. A text too long for
** tls_err goes whole into the scratch buffer (cut short only when out of
** memory). */
static int fail(int code, const char *fmt, ...) {
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(tls_err, sizeof tls_err, fmt, ap);
  va_end(ap);
  tls_err_long = 0;
  if (n >= (int)sizeof tls_err) {
    gsi_buf *e = &gsi_scratch_get()->err;
    e->len = 0;
    if (gsi_buf_reserve(e, (size_t)n + 1) == 0) {
      va_start(ap, fmt);
      vsnprintf((char *)e->data, (size_t)n + 1, fmt, ap);
      va_end(ap);
      tls_err_long = 1;
    }
  }
  return code;
}

static int ok(void) {
  tls_err[0] = '\0';
  tls_err_long = 0;
  return GS_OK;
}

void gs_free(void *p) { free(p); }

/* ----------------------------------------------------------------- wire */

/* The codec's wire format without a Lua state: wire.h. The public reader
** hands out gs_item, whose kinds are wire.h's GSI_WV_* one for one. */

_Static_assert((int)GS_TNIL == GSI_WV_NIL && (int)GS_TBOOLEAN == GSI_WV_BOOLEAN &&
               (int)GS_TINTEGER == GSI_WV_INTEGER && (int)GS_TNUMBER == GSI_WV_NUMBER &&
               (int)GS_TSTRING == GSI_WV_STRING && (int)GS_TTABLE == GSI_WV_TABLE &&
               (int)GS_TPID == GSI_WV_PID && (int)GS_TREF == GSI_WV_REF &&
               (int)GS_TFUNCTION == GSI_WV_FUNCTION && (int)GS_TMODULE == GSI_WV_MODULE &&
               (int)GS_TBACKREF == GSI_WV_BACKREF,
               "gs_item kinds follow wire.h");


typedef gsi_wire_rd rd;

static int rd_item(rd *r, gs_item *it, int depth) {
  gsi_wire_item w;
  int rc = gsi_wire_read(r, &w, depth);
  it->type = w.type;
  it->boolean = w.boolean;
  it->integer = w.integer;
  it->number = w.number;
  it->string = w.string;
  it->len = w.len;
  it->id = w.id;
  it->narr = w.narr;
  it->nhash = w.nhash;
  it->object = w.object;
  return rc;
}

static int rd_skip(rd *r, int depth) { return gsi_wire_skip(r, depth); }

/* ------------------------------------------------------- wire: describe */

typedef struct dstr {
  char *s;
  size_t len, cap;
  int oom;
} dstr;

static void d_add(dstr *d, const char *s, size_t n) {
  if (d->oom) return;
  if (d->len + n + 1 > d->cap) {
    size_t ncap = d->cap ? d->cap * 2 : 64;
    char *ns;
    while (ncap < d->len + n + 1) ncap *= 2;
    if ((ns = realloc(d->s, ncap)) == NULL) {
      d->oom = 1;
      return;
    }
    d->s = ns;
    d->cap = ncap;
  }
  memcpy(d->s + d->len, s, n);
  d->len += n;
  d->s[d->len] = '\0';
}

static void d_cstr(dstr *d, const char *s) { d_add(d, s, strlen(s)); }

static void d_fmt(dstr *d, const char *fmt, ...) {
  char t[64];
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(t, sizeof t, fmt, ap);
  va_end(ap);
  if (n > 0) d_add(d, t, (size_t)n < sizeof t ? (size_t)n : sizeof t - 1);
}

/* A float as Lua's tostring writes it ("%.14g", and 1.0 stays "1.0"). */
static void d_number(dstr *d, double x) {
  char t[64];
  snprintf(t, sizeof t, "%.14g", x);
  if (strspn(t, "-0123456789") == strlen(t)) strcat(t, ".0");
  d_cstr(d, t);
}

static void d_quoted(dstr *d, const char *s, size_t n) {
  d_add(d, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      char t[2] = {'\\', (char)c};
      d_add(d, t, 2);
    } else if (c == '\n') {
      d_add(d, "\\n", 2);
    } else if (c < 32 || c == 127) {
      d_fmt(d, "\\%d", c);
    } else {
      d_add(d, (const char *)&s[i], 1);
    }
  }
  d_add(d, "\"", 1);
}

static int is_ident(const char *s, size_t n) {
  if (n == 0 || (s[0] >= '0' && s[0] <= '9')) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9')))
      return 0;
  }
  return 1;
}

static int d_value(rd *r, dstr *d, int depth);

static int d_table(rd *r, dstr *d, const gs_item *t, int depth) {
  size_t n = 0;
  if (depth >= 16) { /* deep enough for a reader: skip the rest */
    for (size_t i = 0; i < t->narr + 2 * t->nhash; i++)
      if (rd_skip(r, depth + 1) != 0) return -1;
    d_cstr(d, "{...}");
    return 0;
  }
  d_add(d, "{", 1);
  for (size_t i = 0; i < t->narr; i++, n++) {
    if (n) d_add(d, ", ", 2);
    if (d_value(r, d, depth + 1) != 0) return -1;
  }
  for (size_t i = 0; i < t->nhash; i++, n++) {
    const unsigned char *save = r->p;
    size_t sn = r->nobj;
    gs_item k;
    if (n) d_add(d, ", ", 2);
    if (rd_item(r, &k, depth + 1) != 0) return -1;
    if (k.type == GS_TSTRING && is_ident(k.string, k.len)) {
      d_add(d, k.string, k.len);
    } else {
      r->p = save; /* read it again as a value */
      r->nobj = sn;
      d_add(d, "[", 1);
      if (d_value(r, d, depth + 1) != 0) return -1;
      d_add(d, "]", 1);
    }
    d_add(d, " = ", 3);
    if (d_value(r, d, depth + 1) != 0) return -1;
  }
  d_add(d, "}", 1);
  return 0;
}

static int d_value(rd *r, dstr *d, int depth) {
  gs_item it;
  if (rd_item(r, &it, depth) != 0) return -1;
  switch (it.type) {
  case GS_TNIL: d_cstr(d, "nil"); break;
  case GS_TBOOLEAN: d_cstr(d, it.boolean ? "true" : "false"); break;
  case GS_TINTEGER: d_fmt(d, "%lld", (long long)it.integer); break;
  case GS_TNUMBER: d_number(d, it.number); break;
  case GS_TSTRING: d_quoted(d, it.string, it.len); break;
  case GS_TTABLE: return d_table(r, d, &it, depth);
  case GS_TPID:
    d_fmt(d, "<0.%u.%u>", (unsigned)GSI_PID_INDEX(it.id), (unsigned)GSI_PID_GEN(it.id));
    break;
  case GS_TREF: d_fmt(d, "#Ref<0.%llu>", (unsigned long long)it.id); break;
  case GS_TFUNCTION: d_cstr(d, "function"); break;
  case GS_TMODULE:
    d_cstr(d, "module ");
    d_quoted(d, it.string, it.len);
    break;
  case GS_TBACKREF: d_cstr(d, "{...}"); break;
  }
  return 0;
}

/* Text of an exit reason: a string as it is, a crash's error message, or
** a description. Returns a malloc'd string or NULL (out of memory). */
static char *reason_text(const unsigned char *data, size_t len, size_t *tlen) {
  rd r = {data + 1, data + len, 0};
  dstr d = {NULL, 0, 0, 0};
  gs_item it;
  if (len == 0) {
    d_cstr(&d, "(no reason)");
  } else if (rd_item(&r, &it, 0) == 0 && it.type == GS_TSTRING) {
    d_add(&d, it.string, it.len);
  } else if (it.type == GS_TTABLE) {
    /* { error = "...", traceback = "..." }: the error says it all */
    int found = 0;
    for (size_t i = 0; i < it.narr; i++)
      if (rd_skip(&r, 1) != 0) break;
    for (size_t i = 0; i < it.nhash && !found; i++) {
      const unsigned char *save = r.p;
      size_t sn = r.nobj;
      gs_item k, v;
      if (rd_item(&r, &k, 1) != 0) break;
      if (k.type == GS_TSTRING && k.len == 5 && memcmp(k.string, "error", 5) == 0 &&
          rd_item(&r, &v, 1) == 0 && v.type == GS_TSTRING) {
        d_add(&d, v.string, v.len);
        found = 1;
        break;
      }
      r.p = save; /* not it: skip the key and its value whole */
      r.nobj = sn;
      if (rd_skip(&r, 1) != 0 || rd_skip(&r, 1) != 0) break;
    }
    if (!found) {
      rd r2 = {data + 1, data + len, 0};
      if (d_value(&r2, &d, 0) != 0) d_cstr(&d, "(malformed reason)");
    }
  } else {
    rd r2 = {data + 1, data + len, 0};
    if (d_value(&r2, &d, 0) != 0) d_cstr(&d, "(malformed reason)");
  }
  if (d.s == NULL && !d.oom) d_add(&d, "", 0);
  if (d.oom) {
    free(d.s);
    return NULL;
  }
  if (tlen) *tlen = d.len;
  return d.s;
}

/* ------------------------------------------------------------- gs_msg */

typedef struct frame {
  size_t total, done, narr;
} frame;

struct gs_msg {
  gsi_buf b;        /* b.data[0] is the header byte */
  frame *st;        /* open tables, innermost last */
  int depth, cap;
  int maxdepth;     /* deepest nesting written (0: unknown, received) */
  int complete;
  int err;          /* sticky GS_ENOMEM */
};

gs_msg *gs_msg_new(void) {
  gs_msg *m = calloc(1, sizeof *m);
  if (m == NULL) return NULL;
  gsi_buf_init(&m->b);
  if (gsi_wire_byte(&m->b, GSI_WIRE_MAGIC) != 0) {
    free(m);
    return NULL;
  }
  return m;
}

void gs_msg_free(gs_msg *m) {
  if (m == NULL) return;
  gsi_buf_free(&m->b);
  free(m->st);
  free(m);
}

void gs_msg_reset(gs_msg *m) {
  if (m == NULL) return;
  m->b.len = 1; /* data[0] exists: gs_msg_new wrote it */
  m->b.data[0] = GSI_WIRE_MAGIC;
  m->depth = m->maxdepth = m->complete = m->err = 0;
}

int gs_msg_complete(const gs_msg *m) { return m != NULL && m->complete && !m->err; }

/* A message holding the bytes of an encoded value (copied). */
static gs_msg *msg_from_bytes(const unsigned char *data, size_t len) {
  gs_msg *m = calloc(1, sizeof *m);
  if (m == NULL) return NULL;
  gsi_buf_init(&m->b);
  if (len == 0) { /* an empty payload reads as nil */
    static const unsigned char nil[2] = {GSI_WIRE_MAGIC, GSI_T_NIL};
    data = nil;
    len = 2;
  }
  if (gsi_wire_bytes(&m->b, data, len) != 0) {
    free(m);
    return NULL;
  }
  m->complete = 1;
  return m;
}

/* Can a value go here? Checks a table key (no nil, no NaN). */
static int begin_value(gs_msg *m, int nil_or_nan) {
  if (m == NULL) return GS_EINVAL;
  if (m->err) return m->err;
  if (m->complete) return GS_EINVAL;
  if (m->depth > 0 && nil_or_nan) {
    frame *f = &m->st[m->depth - 1];
    if (f->done >= f->narr && (f->done - f->narr) % 2 == 0) return GS_EINVAL;
  }
  return 0;
}

/* A value was written: count it in its table, closing full tables. */
static void value_done(gs_msg *m) {
  for (;;) {
    frame *f;
    if (m->depth == 0) {
      m->complete = 1;
      return;
    }
    f = &m->st[m->depth - 1];
    if (++f->done < f->total) return;
    m->depth--; /* that table is whole: a value of its parent */
  }
}

static int wrote(gs_msg *m, int rc) {
  if (rc != 0) return m->err = GS_ENOMEM;
  value_done(m);
  return 0;
}

int gs_msg_nil(gs_msg *m) {
  int rc = begin_value(m, 1);
  return rc ? rc : wrote(m, gsi_wire_byte(&m->b, GSI_T_NIL));
}

int gs_msg_boolean(gs_msg *m, int b) {
  int rc = begin_value(m, 0);
  return rc ? rc : wrote(m, gsi_wire_byte(&m->b, b ? GSI_T_TRUE : GSI_T_FALSE));
}

int gs_msg_integer(gs_msg *m, int64_t i) {
  int rc = begin_value(m, 0);
  return rc ? rc : wrote(m, gsi_wire_int(&m->b, i));
}

int gs_msg_number(gs_msg *m, double d) {
  int rc = begin_value(m, d != d);
  return rc ? rc : wrote(m, gsi_wire_float(&m->b, d));
}

int gs_msg_string(gs_msg *m, const char *s, size_t len) {
  int rc = begin_value(m, 0);
  if (rc) return rc;
  if (s == NULL && len > 0) return GS_EINVAL;
  return wrote(m, gsi_wire_str(&m->b, s ? s : "", len));
}

int gs_msg_pid(gs_msg *m, gs_pid pid) {
  int rc = begin_value(m, 0);
  return rc ? rc : wrote(m, gsi_wire_tagvar(&m->b, GSI_T_PID, pid));
}

int gs_msg_table(gs_msg *m, size_t narr, size_t nhash) {
  int rc = begin_value(m, 0);
  if (rc) return rc;
  if (narr > SIZE_MAX / 4 || nhash > SIZE_MAX / 4) return GS_EINVAL;
  if (m->depth >= GSI_CODEC_MAXDEPTH) return GS_EINVAL;
  if (gsi_wire_tagvar(&m->b, GSI_T_TABLE, narr) != 0 || gsi_wire_varint(&m->b, nhash) != 0)
    return m->err = GS_ENOMEM;
  if (narr + 2 * nhash == 0) {
    if (m->depth + 1 > m->maxdepth) m->maxdepth = m->depth + 1;
    value_done(m);
    return 0;
  }
  if (m->depth == m->cap) {
    int ncap = m->cap ? m->cap * 2 : 8;
    frame *ns = realloc(m->st, (size_t)ncap * sizeof *ns);
    if (ns == NULL) return m->err = GS_ENOMEM;
    m->st = ns;
    m->cap = ncap;
  }
  m->st[m->depth].total = narr + 2 * nhash;
  m->st[m->depth].done = 0;
  m->st[m->depth].narr = narr;
  m->depth++;
  if (m->depth > m->maxdepth) m->maxdepth = m->depth;
  return 0;
}

void gs_reader_init(gs_reader *r, const gs_msg *m) {
  if (r == NULL) return;
  r->m = m;
  r->pos = 1; /* after the header */
  r->nobj = 0;
}

static int reader_rd(gs_reader *r, rd *x) {
  if (r == NULL || r->m == NULL || r->m->b.len < 1 ||
      (r->m->b.data[0] & ~GSI_WIRE_FLAGS) != GSI_WIRE_MAGIC || r->pos > r->m->b.len)
    return -1;
  x->p = r->m->b.data + r->pos;
  x->end = r->m->b.data + r->m->b.len;
  x->nobj = r->nobj;
  return 0;
}

int gs_read(gs_reader *r, gs_item *it) {
  rd x;
  gs_item dummy;
  if (it == NULL) it = &dummy;
  if (reader_rd(r, &x) != 0 || rd_item(&x, it, 0) != 0)
    return fail(GS_EDECODE, "malformed message, or nothing left to read");
  r->pos = (size_t)(x.p - r->m->b.data);
  r->nobj = x.nobj;
  return GS_OK;
}

int gs_read_skip(gs_reader *r) {
  rd x;
  if (reader_rd(r, &x) != 0 || rd_skip(&x, 0) != 0)
    return fail(GS_EDECODE, "malformed message, or nothing left to read");
  r->pos = (size_t)(x.p - r->m->b.data);
  r->nobj = x.nobj;
  return GS_OK;
}

char *gs_msg_describe(const gs_msg *m) {
  dstr d = {NULL, 0, 0, 0};
  if (m == NULL || m->b.len < 2) {
    d_cstr(&d, "(empty)");
  } else {
    rd r = {m->b.data + 1, m->b.data + m->b.len, 0};
    if (d_value(&r, &d, 0) != 0) d_cstr(&d, " (malformed)");
  }
  if (d.oom) {
    free(d.s);
    return NULL;
  }
  return d.s;
}

/* ------------------------------------------------------------ runtime */

static const char BOUND_KEY = 'b'; /* registry of a host state: its gs_runtime */
static _Atomic uint64_t next_serial = 1;

/* The core's errors are the public codes (core.h): one dialect. */
_Static_assert(GSI_EINVAL == GS_EINVAL && GSI_ENOMEM == GS_ENOMEM &&
                   GSI_ENOPROC == GS_ENOPROC && GSI_ETIMEDOUT == GS_ETIMEDOUT &&
                   GSI_ECLOSED == GS_ECLOSED && GSI_ECALLSELF == GS_ECALLSELF &&
                   GSI_EEXIT == GS_EEXIT && GSI_EENCODE == GS_EENCODE &&
                   GSI_EDECODE == GS_EDECODE && GSI_ELIMIT == GS_ELIMIT &&
                   GSI_EALREADY == GS_EALREADY && GSI_EIGNORE == GS_EIGNORE &&
                   GSI_EKILLED == GS_EKILLED && GSI_ECONTEXT == GS_ECONTEXT &&
                   GSI_ETYPE == GS_ETYPE && GSI_EFULL == GS_EFULL &&
                   GSI_EBUSY == GS_EBUSY && GSI_OK == GS_OK,
               "gsi_err and GS_E* must map 1:1");

void gs_config_init(gs_config *cfg) {
  if (cfg == NULL) return;
  memset(cfg, 0, sizeof *cfg);
  cfg->max_processes = (1u << 22) - 1;
  cfg->max_depth = 200;
  cfg->max_message_size = (size_t)64 << 20;
  cfg->budget = 64;
}

static int check_config(const gs_config *c) {
  if (c->workers < 0 || c->workers > 1024)
    return fail(GS_EINVAL, "config: workers must be 0 (automatic) to 1024");
  if (c->max_processes > (1u << 30))
    return fail(GS_EINVAL, "config: max_processes must be 0 (default) to 2^30");
  if (c->max_depth < 0 || c->max_depth > GSI_CODEC_MAXDEPTH)
    return fail(GS_EINVAL, "config: max_depth must be 0 (default) to %d",
                GSI_CODEC_MAXDEPTH);
  if (c->max_message_size != 0 && c->max_message_size < 16)
    return fail(GS_EINVAL, "config: max_message_size must be 0 (default) or >= 16");
  if (c->budget < 0) return fail(GS_EINVAL, "config: budget must be >= 0");
  return 0;
}

/* Lua's own default package.path/cpath (with $LUA_PATH_5_4 / $LUA_PATH /
** ... applied), read from a throwaway state. */
static int read_default_paths(lua_State *S) {
  luaL_requiref(S, LUA_LOADLIBNAME, luaopen_package, 1);
  lua_getfield(S, -1, "path");
  lua_getfield(S, -2, "cpath");
  return 2;
}

#ifdef GS_LUADIR
static char *cat3(const char *a, const char *b, const char *c) {
  size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
  char *s = malloc(la + lb + lc + 1);
  if (s == NULL) return NULL;
  memcpy(s, a, la);
  memcpy(s + la, b, lb);
  memcpy(s + la + lb, c, lc + 1);
  return s;
}
#endif

/* `path` with its ";;" replaced by the default, as Lua does for LUA_PATH. */
static char *expand_path(const char *path, const char *dft) {
  const char *mark;
  size_t len;
  char *s, *q;
  if (path == NULL) return strdup(dft);
  if ((mark = strstr(path, ";;")) == NULL) return strdup(path);
  len = strlen(path);
  if ((s = malloc(len + strlen(dft) + 3)) == NULL) return NULL;
  q = s;
  if (mark > path) {
    memcpy(q, path, (size_t)(mark - path));
    q += mark - path;
    *q++ = ';';
  }
  strcpy(q, dft);
  q += strlen(dft);
  if (mark + 2 < path + len) {
    *q++ = ';';
    strcpy(q, mark + 2);
  } else {
    *q = '\0';
  }
  return s;
}

static int make_paths(gs_runtime *rt, const gs_config *cfg) {
  lua_State *S = luaL_newstate();
  char *dpath = NULL, *dcpath = NULL;
  int rc = GS_ENOMEM;
  if (S == NULL) return GS_ENOMEM;
  lua_pushcfunction(S, read_default_paths);
  if (lua_pcall(S, 0, 2, 0) == LUA_OK && lua_isstring(S, -2) && lua_isstring(S, -1)) {
#ifdef GS_LUADIR
    /* where `make install` put genserver's own Lua modules */
    const char *own = GS_LUADIR "/?.lua;" GS_LUADIR "/?/init.lua";
    if (strstr(lua_tostring(S, -2), own) == NULL)
      dpath = cat3(lua_tostring(S, -2), ";", own);
    else
      dpath = strdup(lua_tostring(S, -2));
#else
    dpath = strdup(lua_tostring(S, -2));
#endif
    dcpath = strdup(lua_tostring(S, -1));
  }
  lua_close(S);
  if (dpath != NULL && dcpath != NULL) {
    rt->path = expand_path(cfg->path, dpath);
    rt->cpath = expand_path(cfg->cpath, dcpath);
    if (rt->path != NULL && rt->cpath != NULL) rc = 0;
  }
  free(dpath);
  free(dcpath);
  return rc;
}

/* ------------------------------------------------------- the state hook */

static int hook_call(lua_State *L) {
  gs_runtime *rt = lua_touserdata(L, 1);
  lua_settop(L, 0);
  rt->hook(L, rt->hook_ud);
  return 0;
}

/* `require` of a state whose hook failed: the process cannot start. */
static int hook_failed(lua_State *L) {
  return luaL_error(L, "state hook failed: %s", lua_tostring(L, lua_upvalueindex(1)));
}

static int poison(lua_State *L) {
  if (lua_type(L, 1) != LUA_TSTRING) {
    lua_settop(L, 0);
    lua_pushliteral(L, "(error object is not a string)");
  }
  lua_pushcclosure(L, hook_failed, 1);
  lua_setglobal(L, "require");
  return 0;
}

/* The runtime's state hook (prun.c calls it before any user code): run
** the host's hook in protected mode. If it fails, the state's `require`
** raises its error, so the process ends at once with that reason (a
** server's body is loaded with require). */
static void state_hook(lua_State *L, void *ud) {
  gs_runtime *rt = ud;
  int top = lua_gettop(L);
  lua_pushcfunction(L, hook_call);
  lua_pushlightuserdata(L, rt);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    lua_pushcfunction(L, poison);
    lua_insert(L, -2);
    lua_pcall(L, 1, 0, 0); /* out of memory here: nothing more to do */
  }
  lua_settop(L, top);
}

/* ------------------------------------------------- the calling thread */

/* The last runtime the thread used, to tell a new runtime from a closed
** one that had the same address (see fg_self). */
static _Thread_local gsi_rt *tls_core;
static _Thread_local uint64_t tls_serial;

static gsi_worker *own_worker(gs_runtime *rt) {
  gsi_worker *w = gsi_current_worker();
  return w != NULL && w->rt == rt->core ? w : NULL;
}

/* This thread's foreign process in rt. pstate.c remembers it by runtime
** address only: if a runtime this thread used was closed without the
** thread detaching, and a new one got the same address, forget the dead
** one's process first (it was freed). */
static gsi_proc *fg_self(gs_runtime *rt) {
  gsi_proc *p;
  if (tls_core == rt->core && tls_serial != rt->serial) gsi_foreign_reset(rt->core);
  tls_core = rt->core;
  tls_serial = rt->serial;
  p = gsi_foreign_self(rt->core);
  if (p != NULL && pthread_getspecific(rt->key) == NULL)
    pthread_setspecific(rt->key, rt); /* thread_gone detaches it */
  return p;
}

/* End the foreign process p (the calling thread's) with an encoded reason. */
static void fg_end(gs_runtime *rt, gsi_proc *p, const void *reason, size_t len,
                   int normal) {
  gsi_foreign_exit(p, reason, len, normal);
  pthread_setspecific(rt->key, NULL);
}

/* A thread that used rt exits: end its foreign process. */
static void detach(gs_runtime *rt) {
  gsi_buf b;
  gsi_proc *p = fg_self(rt);
  gsi_buf_init(&b);
  if (p != NULL) {
    gsi_wire_msg_cstr(&b, "normal");
    gsi_drain(p); /* a pending exit signal changes nothing now */
    fg_end(rt, p, b.data, b.len, 1);
  }
  gsi_buf_free(&b);
  pthread_setspecific(rt->key, NULL);
  gsi_scratch_release();
}

static void thread_gone(void *v) { detach(v); }

int gs_thread_detach(gs_runtime *rt) {
  if (rt == NULL) return fail(GS_EINVAL, "gs_thread_detach: no runtime");
  if (own_worker(rt)) return fail(GS_ECONTEXT, "gs_thread_detach: on a worker thread");
  detach(rt);
  return ok();
}

/* Entry of every call that needs the runtime running.
**
** Protocol: a foreign thread counts itself in `inflight` before it looks
** at `stopped`, and out when it leaves; gs_runtime_stop sets `stopped`
** first, then waits for `inflight` to reach 0, so once it has seen 0 no
** foreign thread is inside or can get in, and close may free.
**
** A worker thread of rt skips the counting (the shared atomic is the
** dominant cost of a cast from a server, which goes through here): it
** cannot see rt freed under it, because gs_runtime_stop refuses to run on
** a worker (GS_ECONTEXT) and only returns once no Lua process is left (a
** worker inside a call is running one), and gs_runtime_close joins the
** workers before it frees anything. It still reads `stopped`, so calls
** are turned away the same on every thread. A thread is a worker of rt for
** its whole life, so enter and leave agree on whether it counted.
** enter_on/leave_on take own_worker(rt), for a caller that has it. */
static int enter_on(gs_runtime *rt, gsi_worker *w) {
  if (w != NULL) {
    if (atomic_load_explicit(&rt->stopped, memory_order_relaxed))
      return fail(GS_ECLOSED, "the runtime is stopped");
    return 0;
  }
  atomic_fetch_add(&rt->inflight, 1);
  if (atomic_load(&rt->stopped)) {
    atomic_fetch_sub(&rt->inflight, 1);
    return fail(GS_ECLOSED, "the runtime is stopped");
  }
  return 0;
}

static int leave_on(gs_runtime *rt, gsi_worker *w, int rc) {
  if (w == NULL) atomic_fetch_sub(&rt->inflight, 1);
  return rc;
}

static int enter(gs_runtime *rt) {
  if (rt == NULL) return fail(GS_EINVAL, "no runtime");
  return enter_on(rt, own_worker(rt));
}

static int leave(gs_runtime *rt, int rc) { return leave_on(rt, own_worker(rt), rc); }

/* A foreign process ended by an exit signal inside a function that has no
** place for its reason: keep the reason for gs_killed_reason. */
static void keep_killed(gsi_msg *killed) {
  gsi_scratch *sc = gsi_scratch_get();
  gsi_msg_free(sc->killed);
  sc->killed = killed;
}

gs_msg *gs_killed_reason(void) {
  gsi_scratch *sc = gsi_scratch_get();
  gsi_msg *m = sc->killed;
  gs_msg *r;
  if (m == NULL) return NULL;
  sc->killed = NULL;
  r = msg_from_bytes(GSI_MSG_DATA(m), m->len);
  gsi_msg_free(m);
  return r;
}

gsi_proc *gsi_api_foreign(gs_runtime *rt) { return fg_self(rt); }

/* The calling thread's process, checked for an exit signal that killed
** it. GS_EKILLED: it was ended here; its reason is in *killed (a message
** the caller frees). */
static int self_of(gs_runtime *rt, gsi_proc **out, gsi_msg **killed);

static int end_killed(gs_runtime *rt, gsi_proc *p, gsi_msg **killed) {
  int normal;
  *killed = gsi_gen_end_killed(p, &normal); /* as the Lua face's raise_exit */
  pthread_setspecific(rt->key, NULL);
  return fail(GS_EKILLED, "this thread's process was killed by an exit signal");
}

static int self_of(gs_runtime *rt, gsi_proc **out, gsi_msg **killed) {
  gsi_proc *p;
  *killed = NULL;
  if (own_worker(rt))
    return fail(GS_ECONTEXT, "this call waits, which a worker thread must not "
                             "do: use the Lua API inside a server");
  if ((p = fg_self(rt)) == NULL)
    return fail(GS_ELIMIT, "cannot create this thread's process (process limit)");
  if (atomic_load_explicit(&p->sigpend, memory_order_relaxed)) {
    gsi_drain(p);
    if (p->dying) return end_killed(rt, p, killed);
  }
  *out = p;
  return 0;
}

/* Time-out in ms -> absolute deadline in ns (0: none). */
static int deadline_of(int ms, uint64_t *deadline) {
  if (ms == GS_INFINITY) {
    *deadline = 0;
    return 0;
  }
  if (ms < 0) return fail(GS_EINVAL, "time-out must be >= 0 or GS_INFINITY");
  *deadline = gsi_now_ns() + (uint64_t)ms * 1000000u;
  return 0;
}

/* Wait for the answer to pending ref, blocking the thread
** (gsi_gen_await). 0: *ans taken (the request is forgotten), a reply;
** GS_EEXIT: *ans is the server's DOWN, or its refusal (a request it could
** not take), whose payload is the reason; GS_ETIMEDOUT: still pending;
** GS_EKILLED: p must end (the caller calls end_killed). */
static int await(gsi_proc *p, uint64_t ref, uint64_t deadline, gsi_msg **ans) {
  switch (gsi_gen_await(p, ref, deadline, ans)) {
  case GSI_GEN_REPLY: return 0;
  case GSI_GEN_DOWN:
  case GSI_GEN_REFUSED: return GS_EEXIT;
  case GSI_GEN_TIMEOUT: return GS_ETIMEDOUT;
  case GSI_GEN_DYING: return GS_EKILLED;
  default: return GS_EINVAL; /* cannot be */
  }
}

/* ------------------------------------------------- values in, values out */

/* Where the value to send comes from. */
typedef struct src {
  lua_State *L;          /* the top of L (consumed) */
  const gs_msg *msg;     /* or this */
  const char *s;         /* or this string */
  size_t len;
  int nil;               /* or nil */
} src;

/* Encode the value into b (a whole message, header included). On
** GS_EENCODE gs_errmsg names the bad part. Consumes the Lua value. */
static int encode_src_to(gs_runtime *rt, const src *v, const char *what, gsi_buf *b,
                         uint64_t to) {
  b->len = 0;
  if (v->L != NULL) {
    int rc, top = lua_gettop(v->L);
    /* gsi_encode makes its own room on the stack; it pushes an error
    ** message unless even that room was missing. A function for a
    ** sandboxed process is refused here too (DESIGN §5). */
    rc = gsi_encode(v->L, -1, what, gsi_rt_limits(rt->core), b);
    if (rc == 0 && to != 0)
      rc = gsi_check_code_to(v->L, top, what, rt->core, to, b);
    if (rc != 0) {
      if (lua_gettop(v->L) == top) {
        lua_pop(v->L, 1);
        return fail(GS_ENOMEM, "Lua stack overflow");
      }
      rc = fail(GS_EENCODE, "%s", lua_type(v->L, -1) == LUA_TSTRING
                                      ? lua_tostring(v->L, -1) : "cannot encode the value");
      lua_pop(v->L, 2); /* the message, the value */
      return rc;
    }
    lua_pop(v->L, 1);
    return 0;
  }
  if (v->msg != NULL) {
    int maxd = gsi_rt_limits(rt->core)->max_depth > 0 ? gsi_rt_limits(rt->core)->max_depth : 200;
    if (!gs_msg_complete(v->msg))
      return fail(GS_EINVAL, "%s: the message is not a whole value", what);
    if (v->msg->maxdepth > maxd)
      return fail(GS_EENCODE, "%s: too deep (more than %d levels)", what, maxd);
    if (gsi_wire_bytes(b, v->msg->b.data, v->msg->b.len)) return fail(GS_ENOMEM, "out of memory");
  } else if (v->nil) {
    if (gsi_wire_byte(b, GSI_WIRE_MAGIC) || gsi_wire_byte(b, GSI_T_NIL))
      return fail(GS_ENOMEM, "out of memory");
  } else {
    if (v->s == NULL && v->len > 0) return fail(GS_EINVAL, "%s: NULL string", what);
    if (gsi_wire_byte(b, GSI_WIRE_MAGIC) || gsi_wire_str(b, v->s ? v->s : "", v->len))
      return fail(GS_ENOMEM, "out of memory");
  }
  /* the codec checks this for Lua values; the receiver would refuse it */
  {
    size_t maxs = gsi_rt_limits(rt->core)->max_size > 0 ? gsi_rt_limits(rt->core)->max_size : (size_t)64 << 20;
    if (b->len > maxs)
      return fail(GS_EENCODE, "%s: too large (more than %zu bytes)", what, maxs);
  }
  return 0;
}

static int encode_src(gs_runtime *rt, const src *v, const char *what, gsi_buf *b) {
  return encode_src_to(rt, v, what, b, 0);
}

/* Where a received value (reply, reason) goes. */
typedef struct sink {
  lua_State *L;   /* pushed onto L (exactly one value) */
  gs_msg **msg;   /* or a new message */
  char **str;     /* or a string */
  size_t *slen;
} sink;

static void sink_none(const sink *k) {
  if (k->L != NULL) lua_pushnil(k->L);
  if (k->msg != NULL) *k->msg = NULL;
  if (k->str != NULL) *k->str = NULL;
  if (k->slen != NULL) *k->slen = 0;
}

static char *dup_mem(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d == NULL) return NULL;
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

/* A reply as a C string: strings, numbers, booleans (Lua's tostring),
** nil (NULL). */
static int value_string(const unsigned char *data, size_t len, char **out, size_t *olen) {
  rd r = {data + 1, data + len, 0};
  gs_item it;
  char t[64];
  *out = NULL;
  *olen = 0;
  if (len == 0) return 0; /* nil */
  if (rd_item(&r, &it, 0) != 0) return fail(GS_EDECODE, "malformed message");
  switch (it.type) {
  case GS_TNIL: return 0;
  case GS_TSTRING:
    if ((*out = dup_mem(it.string, it.len)) == NULL) return fail(GS_ENOMEM, "out of memory");
    *olen = it.len;
    return 0;
  case GS_TINTEGER: snprintf(t, sizeof t, "%lld", (long long)it.integer); break;
  case GS_TBOOLEAN: snprintf(t, sizeof t, "%s", it.boolean ? "true" : "false"); break;
  case GS_TNUMBER: {
    dstr d = {NULL, 0, 0, 0};
    d_number(&d, it.number);
    if (d.oom) return fail(GS_ENOMEM, "out of memory");
    *out = d.s;
    *olen = d.len;
    return 0;
  }
  default: {
    char *desc = reason_text(data, len, NULL);
    int rc = fail(GS_ETYPE, "the value is not a string: %s", desc ? desc : "?");
    free(desc);
    return rc;
  }
  }
  if ((*out = dup_mem(t, strlen(t))) == NULL) return fail(GS_ENOMEM, "out of memory");
  *olen = strlen(t);
  return 0;
}

/* Put a received value (data, len: a whole message; len 0 = nil) into k.
** as_reason: a string sink gets the reason's text. Returns 0, or an error
** (k then holds nil). */
static int sink_put(gs_runtime *rt, const sink *k, const unsigned char *data,
                    size_t len, int as_reason) {
  if (k->L != NULL) {
    lua_State *L = k->L;
    if (!lua_checkstack(L, 4)) return fail(GS_ENOMEM, "Lua stack overflow");
    if (len == 0) {
      lua_pushnil(L);
      return 0;
    }
    if (gsi_decode(L, data, len, gsi_rt_limits(rt->core)) != 0) {
      int rc = fail(GS_EDECODE, "%s", lua_type(L, -1) == LUA_TSTRING
                                          ? lua_tostring(L, -1) : "cannot decode");
      lua_pop(L, 1);
      lua_pushnil(L);
      return rc;
    }
    return 0;
  }
  if (k->msg != NULL) {
    if ((*k->msg = msg_from_bytes(data, len)) == NULL) return fail(GS_ENOMEM, "out of memory");
    return 0;
  }
  if (k->str != NULL) {
    size_t n = 0;
    int rc;
    if (as_reason) {
      *k->str = reason_text(data, len, &n);
      rc = *k->str != NULL ? 0 : fail(GS_ENOMEM, "out of memory");
    } else {
      rc = value_string(data, len, k->str, &n);
    }
    if (k->slen != NULL) *k->slen = n;
    return rc;
  }
  return 0;
}

/* An error that carries a reason: put it into k, keep code (unless the
** reason itself cannot be delivered: then that error). */
static int sink_reason(gs_runtime *rt, const sink *k, gsi_msg *m, int code) {
  char msg[sizeof tls_err];
  int rc;
  snprintf(msg, sizeof msg, "%s", tls_err);
  rc = sink_put(rt, k, m ? GSI_MSG_DATA(m) : NULL, m ? m->len : 0, 1);
  if (rc == 0 || rc == GS_ETYPE) {
    char *text = m ? reason_text(GSI_MSG_DATA(m), m->len, NULL) : NULL;
    fail(code, "%s: %s", msg[0] ? msg : gs_strerror(code), text ? text : "?");
    free(text);
    rc = code;
  }
  gsi_msg_free(m);
  return rc;
}

/* ------------------------------------------------------------ requests */

/* Send a request (GSI_GEN_CALL or _SYSTEM) to server under a new pending
** ref, monitoring it (gsi_gen_request). */
static int request(gsi_proc *self, gs_pid server, int kind, const gsi_buf *b,
                   uint64_t *ref) {
  int failed;
  if (server == 0) return fail(GS_ENOPROC, "no process (pid 0)");
  if (server == gsi_proc_pid(self))
    return fail(GS_ECALLSELF, "the calling thread's own pid");
  if (gsi_gen_request(self, server, kind, b->data, b->len, 0, &failed, ref) != GSI_GEN_OK)
    return fail(GS_ENOMEM, "out of memory");
  switch (failed) {
  case GSI_GEN_SENT: return 0;
  case GSI_GEN_NOPROC: return fail(GS_ENOPROC, "no such process");
  default: return fail(GS_EFULL, "the server's mailbox is full");
  }
}

/* Request and wait: 0 with the reply in *ans; GS_EEXIT with the DOWN's
** reason in *ans; GS_ETIMEDOUT (abandoned); GS_EKILLED (reason in *ans). */
static int request_wait(gs_runtime *rt, gsi_proc *self, gs_pid server, int kind,
                        const gsi_buf *b, uint64_t deadline, gsi_msg **ans) {
  uint64_t ref = 0;
  int rc = request(self, server, kind, b, &ref);
  *ans = NULL;
  if (rc != 0) return rc;
  rc = await(self, ref, deadline, ans);
  if (rc == GS_ETIMEDOUT) {
    gsi_gen_abandon(self, ref); /* its late answer is dropped */
    return fail(GS_ETIMEDOUT, "no answer in time");
  }
  if (rc == GS_EKILLED) return end_killed(rt, self, ans);
  if (rc == GS_EEXIT) return fail(GS_EEXIT, "the server exited");
  if (rc != 0) return fail(rc, "lost the request");
  return 0;
}

/* ---------------------------------------------------------------- call */

static int do_call(gs_runtime *rt, gs_pid server, const src *v, const sink *k,
                   int timeout_ms) {
  gsi_proc *self;
  gsi_msg *ans;
  gsi_buf b;
  uint64_t deadline = 0;
  int rc;
  if ((rc = deadline_of(timeout_ms, &deadline)) != 0 || (rc = enter(rt)) != 0) {
    if (v->L != NULL) lua_pop(v->L, 1);
    sink_none(k);
    return rc;
  }
  gsi_buf_init(&b);
  rc = encode_src_to(rt, v, "request", &b, server);
  if (rc == 0) rc = self_of(rt, &self, &ans);
  if (rc == 0) rc = request_wait(rt, self, server, GSI_GEN_CALL, &b, deadline, &ans);
  gsi_buf_free(&b);
  if (rc == 0) {
    rc = sink_put(rt, k, GSI_MSG_DATA(ans), ans->len, 0);
    gsi_msg_free(ans);
    if (rc == 0) ok();
  } else if (rc == GS_EEXIT || rc == GS_EKILLED) {
    rc = sink_reason(rt, k, ans, rc);
  } else {
    sink_none(k);
  }
  return leave(rt, rc);
}

static int check_lua_arg(lua_State *L, const char *fn) {
  if (L == NULL || lua_gettop(L) < 1)
    return fail(GS_EINVAL, "%s: no value at the top of L", fn);
  return 0;
}

int gs_call(gs_runtime *rt, gs_pid server, lua_State *L, int timeout_ms) {
  src v = {L, NULL, NULL, 0, 0};
  sink k = {L, NULL, NULL, NULL};
  int rc = check_lua_arg(L, "gs_call");
  return rc ? rc : do_call(rt, server, &v, &k, timeout_ms);
}

int gs_call_msg(gs_runtime *rt, gs_pid server, const gs_msg *req, gs_msg **reply,
                int timeout_ms) {
  src v = {NULL, req, NULL, 0, 0};
  sink k = {NULL, reply, NULL, NULL};
  if (reply != NULL) *reply = NULL;
  if (req == NULL || reply == NULL) return fail(GS_EINVAL, "gs_call_msg: NULL argument");
  return do_call(rt, server, &v, &k, timeout_ms);
}

int gs_call_str(gs_runtime *rt, gs_pid server, const char *req, size_t len,
                char **reply, size_t *rlen, int timeout_ms) {
  src v = {NULL, NULL, req, len, 0};
  sink k = {NULL, NULL, reply, rlen};
  if (reply != NULL) *reply = NULL;
  if (rlen != NULL) *rlen = 0;
  if (reply == NULL || (req == NULL && len > 0))
    return fail(GS_EINVAL, "gs_call_str: NULL argument");
  return do_call(rt, server, &v, &k, timeout_ms);
}

/* ----------------------------------------------------------- cast, send */

/* The hot path of a cast from a server (the Lua binding's cast and send
** come here): the value is encoded into the thread's scratch buffer, so
** the message node is the only allocation. */
static int do_send(gs_runtime *rt, gs_pid pid, int kind, const src *v) {
  gsi_proc *self;
  gsi_msg *m, *killed = NULL;
  gsi_worker *w = rt != NULL ? own_worker(rt) : NULL;
  gsi_buf *b;
  uint64_t from = 0;
  int rc = rt != NULL ? enter_on(rt, w) : fail(GS_EINVAL, "no runtime");
  if (rc != 0) {
    if (v->L != NULL) lua_pop(v->L, 1);
    return rc;
  }
  b = w != NULL ? &w->scratch->buf : &gsi_scratch_get()->buf; /* the same */
  rc = encode_src_to(rt, v, "message", b, pid);
  if (rc == 0 && w != NULL) {
    /* from a C function of a server: the sender is that process */
    gsi_proc *cur = atomic_load(&w->cur);
    from = cur != NULL ? gsi_proc_pid(cur) : 0;
  } else if (rc == 0 && (rc = self_of(rt, &self, &killed)) == 0) {
    from = gsi_proc_pid(self);
  }
  if (killed != NULL) keep_killed(killed);
  if (rc == 0 && pid == 0) rc = fail(GS_ENOPROC, "no process (pid 0)");
  if (rc == 0) {
    if ((m = gsi_msg_new(kind, from, 0, b->data, b->len)) == NULL) {
      rc = fail(GS_ENOMEM, "out of memory");
    } else {
      int d = gsi_deliver(rt->core, pid, m, 0);
      if (d == GSI_ENOPROC) rc = fail(GS_ENOPROC, "no such process: the message was dropped");
      else if (d == GSI_EFULL) rc = fail(GS_EFULL, "the mailbox is full");
      else rc = GS_OK; /* gs_errmsg keeps the last failure's text: one
                          thread-local write less on the hot path */
    }
  }
  if (b->cap > (1u << 20)) gsi_buf_free(b); /* do not keep a huge scratch */
  return leave_on(rt, w, rc);
}

int gs_cast(gs_runtime *rt, gs_pid server, lua_State *L) {
  src v = {L, NULL, NULL, 0, 0};
  int rc = check_lua_arg(L, "gs_cast");
  return rc ? rc : do_send(rt, server, GSI_M_CAST, &v);
}

int gs_cast_msg(gs_runtime *rt, gs_pid server, const gs_msg *msg) {
  src v = {NULL, msg, NULL, 0, 0};
  if (msg == NULL) return fail(GS_EINVAL, "gs_cast_msg: NULL message");
  return do_send(rt, server, GSI_M_CAST, &v);
}

int gs_cast_str(gs_runtime *rt, gs_pid server, const char *s, size_t len) {
  src v = {NULL, NULL, s, len, 0};
  if (s == NULL && len > 0) return fail(GS_EINVAL, "gs_cast_str: NULL string");
  return do_send(rt, server, GSI_M_CAST, &v);
}

int gs_send(gs_runtime *rt, gs_pid pid, lua_State *L) {
  src v = {L, NULL, NULL, 0, 0};
  int rc = check_lua_arg(L, "gs_send");
  return rc ? rc : do_send(rt, pid, GSI_M_USER, &v);
}

int gs_send_msg(gs_runtime *rt, gs_pid pid, const gs_msg *msg) {
  src v = {NULL, msg, NULL, 0, 0};
  if (msg == NULL) return fail(GS_EINVAL, "gs_send_msg: NULL message");
  return do_send(rt, pid, GSI_M_USER, &v);
}

int gs_send_str(gs_runtime *rt, gs_pid pid, const char *s, size_t len) {
  src v = {NULL, NULL, s, len, 0};
  if (s == NULL && len > 0) return fail(GS_EINVAL, "gs_send_str: NULL string");
  return do_send(rt, pid, GSI_M_USER, &v);
}

/* ---------------------------------------------------------------- stop */

/* Is the message data (a whole message) the string s? */
static int is_string(const unsigned char *data, size_t len, const char *s) {
  rd r = {data + 1, data + len, 0};
  gs_item it;
  return len > 0 && rd_item(&r, &it, 0) == 0 && it.type == GS_TSTRING &&
         it.len == strlen(s) && memcmp(it.string, s, it.len) == 0;
}

int gs_stop(gs_runtime *rt, gs_pid server, const char *reason, int timeout_ms) {
  gsi_proc *self;
  gsi_msg *ans = NULL;
  gsi_buf r, b;
  uint64_t deadline = 0;
  int rc;
  if (reason == NULL) reason = "normal";
  if ((rc = deadline_of(timeout_ms, &deadline)) != 0 || (rc = enter(rt)) != 0) return rc;
  gsi_buf_init(&r);
  gsi_buf_init(&b);
  /* the stop request, as genserver.stop sends it (gen.c) */
  if (gsi_wire_msg_cstr(&r, reason) || gsi_gen_stop_encode(&b, r.data, r.len) != GSI_GEN_OK)
    rc = fail(GS_ENOMEM, "out of memory");
  gsi_buf_free(&r);
  if (rc == 0) rc = self_of(rt, &self, &ans);
  if (rc == 0) rc = request_wait(rt, self, server, GSI_GEN_SYSTEM, &b, deadline, &ans);
  gsi_buf_free(&b);
  if (rc == GS_EEXIT && is_string(GSI_MSG_DATA(ans), ans->len, reason)) {
    rc = ok(); /* it ended with the reason asked for */
  } else if (rc == GS_EEXIT || rc == GS_EKILLED) {
    char *text = ans ? reason_text(GSI_MSG_DATA(ans), ans->len, NULL) : NULL;
    fail(rc, "%s: %s", rc == GS_EEXIT ? "the server exited with another reason"
                                      : "this thread was killed", text ? text : "?");
    free(text);
  } else if (rc == 0) {
    rc = ok(); /* it answered (a server that replies to its stop request) */
  }
  gsi_msg_free(ans);
  return leave(rt, rc);
}

/* --------------------------------------------------------------- start */

static int valid_name(const char *name, const char *what) {
  size_t n;
  if (name == NULL) return fail(GS_EINVAL, "%s: NULL name", what);
  n = strlen(name);
  if (n == 0 || n > NAME_MAX_LEN)
    return fail(GS_EINVAL, "%s: a name is 1 to %d bytes", what, NAME_MAX_LEN);
  return 0;
}

/* Spawn the server process (gsi_gen_spawn) with a pending request `ref`
** on it (its ack answers, or its DOWN). */
static int spawn_server(gsi_proc *self, const char *module,
                        const gsi_buf *sm, const gs_start_opts *o, uint64_t ref,
                        gs_pid *pid) {
  gsi_spawn_spec spec = {0};
  spec.msg = sm->data;
  spec.len = sm->len;
  spec.module = module;
  spec.start_ref = ref;
  spec.mailbox_limit = o->mailbox_limit;
  spec.overflow = GSI_GEN_OVF_DROP + (o->overflow - GS_OVERFLOW_DROP);
  spec.max_heap = o->max_heap;
  spec.sandbox = o->sandbox != 0;
  switch (gsi_gen_spawn(self, &spec, pid, NULL)) {
  case GSI_GEN_OK: return 0;
  case GSI_GEN_ESTART: return fail(GS_ELIMIT, "the runtime's threads cannot start");
  case GSI_GEN_ELIMIT: return fail(GS_ELIMIT, "cannot create a process: process limit reached");
  default: return fail(GS_ENOMEM, "out of memory");
  }
}

/* init took too long: kill the half-started server and wait for its end,
** so that its name is free when gs_start returns (as genserver.start). */
static int kill_wait(gs_runtime *rt, gsi_proc *self, gs_pid pid) {
  uint64_t ref = gsi_new_ref(rt->core);
  gsi_msg *ans = NULL;
  int rc = 0;
  if (gsi_pending_add(self, ref, pid) != 0) return GS_ENOMEM;
  if (gsi_monitor(self, pid, ref) != 0) {
    gsi_pending_remove(self, ref, NULL);
    return 0; /* gone already */
  }
  gsi_exit_signal(rt->core, gsi_proc_pid(self), pid, NULL, 0, GSI_XF_KILL);
  rc = await(self, ref, 0, &ans);
  gsi_msg_free(ans);
  return rc == GS_EEXIT ? 0 : rc;
}

static int do_start(gs_runtime *rt, const char *module, const src *arg,
                    const gs_start_opts *opts, gs_pid *pid, const sink *k) {
  static const gs_start_opts defaults = {0};
  gsi_proc *self;
  gsi_msg *ans = NULL;
  gsi_buf ab, sm;
  uint64_t deadline = 0, ref;
  int rc;
  const gs_start_opts *o = opts ? opts : &defaults;
  *pid = 0;
  if (module == NULL || *module == '\0') rc = fail(GS_EINVAL, "gs_start: no module name");
  else if (o->name != NULL && (rc = valid_name(o->name, "gs_start")) != 0) {}
  else if (o->overflow < GS_OVERFLOW_DROP || o->overflow > GS_OVERFLOW_KILL)
    rc = fail(GS_EINVAL, "gs_start: bad overflow policy");
  else if (o->hibernate_after_ms < 0) rc = fail(GS_EINVAL, "gs_start: hibernate_after_ms < 0");
  else rc = deadline_of(o->timeout_ms == 0 ? 5000 : o->timeout_ms, &deadline);
  if (rc == 0) rc = enter(rt);
  if (rc != 0) {
    if (arg->L != NULL) lua_pop(arg->L, 1);
    sink_none(k);
    return rc;
  }
  gsi_buf_init(&ab);
  gsi_buf_init(&sm);
  ref = gsi_new_ref(rt->core);
  rc = encode_src(rt, arg, "init argument", &ab);
  if (rc == 0) rc = self_of(rt, &self, &ans);
  if (rc == 0) {
    gsi_serve_opts so = {o->name, o->hibernate_after_ms, o->trap_exit};
    switch (gsi_gen_serve_msg(&sm, rt->path, rt->cpath, module, &ab, &so)) {
    case GSI_GEN_OK: break;
    case GSI_GEN_EINVAL: rc = fail(GS_EINVAL, "init argument: malformed message"); break;
    default: rc = fail(GS_ENOMEM, "out of memory");
    }
  }
  if (rc == 0) rc = spawn_server(self, module, &sm, o, ref, pid);
  gsi_buf_free(&sm);
  if (rc == 0) {
    rc = await(self, ref, deadline, &ans);
    if (rc == GS_ETIMEDOUT) {
      int krc = kill_wait(rt, self, *pid);
      gsi_gen_abandon(self, ref);
      if (krc == GS_EKILLED) {
        rc = end_killed(rt, self, &ans);
      } else {
        rc = fail(GS_ETIMEDOUT, "init of %s took longer than %d ms", module,
                  o->timeout_ms == 0 ? 5000 : o->timeout_ms);
      }
    } else if (rc == GS_EKILLED) {
      rc = end_killed(rt, self, &ans);
    } else if (rc == GS_EEXIT) {
      rc = fail(GS_EEXIT, "the server exited during init");
    } else if (rc == 0) {
      int tag;
      switch (gsi_gen_ack_decode(GSI_MSG_DATA(ans), ans->len, &tag, &ab)) {
      case GSI_GEN_OK: break;
      case GSI_GEN_ENOMEM: rc = fail(GS_ENOMEM, "out of memory"); break;
      default: rc = fail(GS_EDECODE, "unexpected answer from the server's start");
      }
      if (rc == 0 && tag == GSI_ACK_IGNORE) {
        rc = fail(GS_EIGNORE, "init returned \"ignore\"");
      } else if (rc == 0 && tag == GSI_ACK_ERROR) {
        uint64_t holder;
        gsi_msg *reason = gsi_msg_new(GSI_M_DOWN, 0, 0, ab.data, ab.len);
        if (reason == NULL) {
          rc = fail(GS_ENOMEM, "out of memory");
        } else if (gsi_gen_already_started(ab.data, ab.len, &holder)) {
          *pid = holder;
          rc = fail(GS_EALREADY, "the name %s is taken", o->name ? o->name : "?");
        } else {
          rc = fail(GS_EEXIT, "init failed");
        }
        gsi_msg_free(ans);
        ans = reason;
      }
    }
  }
  gsi_buf_free(&ab);
  if (rc == 0) {
    gsi_msg_free(ans);
    if (k->L != NULL) {
      /* the pid, pushed as a tiny message so nothing here can raise */
      unsigned char t[12];
      t[0] = GSI_WIRE_MAGIC;
      t[1] = GSI_T_PID;
      rc = sink_put(rt, k, t, 2 + gsi_putvarint(t + 2, *pid), 0);
    } else {
      sink_none(k); /* no reason */
    }
    if (rc == 0) ok();
  } else if (rc == GS_EEXIT || rc == GS_EKILLED || rc == GS_EALREADY) {
    if (rc != GS_EALREADY) *pid = 0;
    rc = sink_reason(rt, k, ans, rc);
  } else {
    if (rc != GS_EALREADY) *pid = 0;
    gsi_msg_free(ans);
    sink_none(k);
  }
  return leave(rt, rc);
}

int gs_start(gs_runtime *rt, const char *module, lua_State *L,
             const gs_start_opts *opts, gs_pid *pid) {
  src v = {L, NULL, NULL, 0, L == NULL};
  sink k = {L, NULL, NULL, NULL};
  gs_pid dummy;
  if (L != NULL && lua_gettop(L) < 1)
    return fail(GS_EINVAL, "gs_start: no init argument at the top of L");
  return do_start(rt, module, &v, opts, pid ? pid : &dummy, &k);
}

int gs_start_msg(gs_runtime *rt, const char *module, const gs_msg *arg,
                 const gs_start_opts *opts, gs_pid *pid, gs_msg **reason) {
  src v = {NULL, arg, NULL, 0, arg == NULL};
  gs_msg *dummy_reason = NULL;
  sink k = {NULL, reason ? reason : &dummy_reason, NULL, NULL};
  gs_pid dummy;
  int rc = do_start(rt, module, &v, opts, pid ? pid : &dummy, &k);
  gs_msg_free(dummy_reason);
  return rc;
}

/* ------------------------------------------------------- small queries */

int gs_whereis(gs_runtime *rt, const char *name, gs_pid *pid) {
  int rc;
  if (pid != NULL) *pid = 0;
  if (pid == NULL) return fail(GS_EINVAL, "gs_whereis: NULL pid");
  if ((rc = valid_name(name, "gs_whereis")) != 0 || (rc = enter(rt)) != 0) return rc;
  *pid = gsi_reg_whereis(rt->core, name);
  return leave(rt, *pid ? ok() : fail(GS_ENOPROC, "no process is registered as '%s'", name));
}

int gs_self(gs_runtime *rt, gs_pid *pid) {
  gsi_proc *self;
  gsi_msg *killed = NULL;
  gsi_worker *w;
  int rc;
  if (pid == NULL) return fail(GS_EINVAL, "gs_self: NULL pid");
  *pid = 0;
  if ((rc = enter(rt)) != 0) return rc;
  if ((w = own_worker(rt)) != NULL) {
    gsi_proc *cur = atomic_load(&w->cur);
    if (cur != NULL) *pid = gsi_proc_pid(cur);
    return leave(rt, cur ? ok() : fail(GS_ECONTEXT, "no process runs here"));
  }
  rc = self_of(rt, &self, &killed);
  if (killed != NULL) keep_killed(killed);
  if (rc == 0) *pid = gsi_proc_pid(self);
  return leave(rt, rc ? rc : ok());
}

/* Messages pushed so far: the dead processes' total plus every slot's
** counter (a slot keeps counting for its next process; gsi_proc_exit adds
** the count of the one that died to msgs_dead and resets it). */
static uint64_t messages_total(gsi_rt *c) {
  uint32_t used;
  uint64_t msgs = atomic_load(&c->msgs_dead);
  pthread_mutex_lock(&c->tbl_mu); /* guards `used` */
  used = c->used;
  pthread_mutex_unlock(&c->tbl_mu);
  for (uint32_t i = 1; i <= used; i++) {
    gsi_proc *p = gsi_proc_at(c, i);
    if (p != NULL) msgs += atomic_load_explicit(&p->msgs_in, memory_order_relaxed);
  }
  return msgs;
}

int gs_runtime_stats(gs_runtime *rt, gs_stats *st) {
  gsi_rt *c;
  size_t nf;
  /* no enter(): stats stay readable after gs_runtime_stop */
  if (rt == NULL || st == NULL) return fail(GS_EINVAL, "gs_runtime_stats: NULL argument");
  c = rt->core;
  memset(st, 0, sizeof *st);
  nf = atomic_load(&c->nforeign);
  st->workers = c->nworkers;
  st->started = atomic_load(&c->started);
  st->processes = gsi_rt_lua_procs(c);
  st->abandoned_states = atomic_load(&c->abandoned);
  st->foreign = nf;
  st->run_queue = atomic_load(&c->rq.len);
  st->spawned = atomic_load(&c->spawned);
  st->messages = messages_total(c);
  return ok();
}

/* ---------------------------------------------------- open, stop, close */

/* gs_runtime_open with the hooks of the face above (lua/linit.c gives the
** binding's): the API adds its own state hook and its datum (the
** gs_runtime, which gsi_api_of finds again from the core). */
int gsi_api_open(gs_runtime **out, const gs_config *cfg, const gsi_face *face) {
  gs_config defaults;
  gsi_rt_config rc_cfg;
  gs_runtime *rt;
  int rc;
  if (out == NULL) return fail(GS_EINVAL, "gs_runtime_open: NULL result pointer");
  *out = NULL;
  if (cfg == NULL) {
    gs_config_init(&defaults);
    cfg = &defaults;
  }
  if ((rc = check_config(cfg)) != 0) return rc;
  if ((rt = calloc(1, sizeof *rt)) == NULL) return fail(GS_ENOMEM, "out of memory");
  rt->hook = cfg->state_hook;
  rt->hook_ud = cfg->state_hook_ud;
  memset(&rc_cfg, 0, sizeof rc_cfg);
  rc_cfg.workers = cfg->workers;
  rc_cfg.max_procs = cfg->max_processes;
  rc_cfg.max_depth = cfg->max_depth;
  rc_cfg.max_size = cfg->max_message_size;
  rc_cfg.budget = cfg->budget;
  if (face != NULL) rc_cfg.face = *face;
  rc_cfg.face.state_hook = rt->hook != NULL ? state_hook : NULL;
  rc_cfg.face.ud = rt; /* before any thread sees the core */
  if ((rc = make_paths(rt, cfg)) != 0 || (rt->core = gsi_rt_new(&rc_cfg)) == NULL) {
    free(rt->path);
    free(rt->cpath);
    free(rt);
    return fail(GS_ENOMEM, "out of memory");
  }
  if (pthread_key_create(&rt->key, thread_gone) != 0) {
    gsi_rt_free(rt->core);
    gsi_rt_destroy(rt->core);
    free(rt->path);
    free(rt->cpath);
    free(rt);
    return fail(GS_ELIMIT, "no thread-specific key left (too many runtimes open)");
  }
  rt->serial = atomic_fetch_add(&next_serial, 1);
  pthread_mutex_init(&rt->life_mu, NULL);
  *out = rt;
  return ok();
}

int gs_runtime_configure(gs_runtime *rt, const gs_config *cfg) {
  gsi_codec_limits lim;
  int rc, changed = 0;
  if (cfg == NULL) return fail(GS_EINVAL, "gs_runtime_configure: NULL config");
  if (cfg->path != NULL || cfg->cpath != NULL || cfg->state_hook != NULL ||
      cfg->state_hook_ud != NULL)
    return fail(GS_EINVAL, "config: path, cpath and the state hook are fixed at open");
  if ((rc = check_config(cfg)) != 0) return rc;
  if ((rc = enter(rt)) != 0) return rc;
  /* slot 0 is never used: n processes need n + 1 slots, and the process
  ** table cannot grow past what the runtime was opened for */
  if (cfg->max_processes > 0 &&
      (uint64_t)cfg->max_processes + 1 > (uint64_t)rt->core->nchunks_max * GSI_CHUNK - 1)
    return leave(rt, fail(GS_EINVAL, "config: max_processes must be at most %llu for this runtime",
                          (unsigned long long)rt->core->nchunks_max * GSI_CHUNK - 2));
  lim = *gsi_rt_limits(rt->core);
  if (cfg->max_depth > 0) lim.max_depth = cfg->max_depth, changed = 1;
  if (cfg->max_message_size > 0) lim.max_size = cfg->max_message_size, changed = 1;
  switch (gsi_rt_configure(rt->core, cfg->workers,
                           cfg->max_processes > 0 ? cfg->max_processes + 1 : 0,
                           changed ? &lim : NULL, cfg->budget)) {
  case GSI_OK: rc = ok(); break;
  case GSI_EBUSY: rc = fail(GS_EBUSY, "config: workers and max_processes must be set "
                                      "before the first process starts"); break;
  default: rc = fail(GS_ENOMEM, "out of memory");
  }
  return leave(rt, rc);
}

static size_t lua_procs(gsi_rt *c) { return gsi_rt_lua_procs(c); }

int gs_runtime_stop(gs_runtime *rt, int timeout_ms) {
  uint64_t ms, deadline;
  gsi_buf b;
  int rc = 0;
  if (rt == NULL) return fail(GS_EINVAL, "gs_runtime_stop: no runtime");
  if (own_worker(rt)) return fail(GS_ECONTEXT, "gs_runtime_stop: on a worker thread");
  if (timeout_ms < 0 && timeout_ms != GS_INFINITY)
    return fail(GS_EINVAL, "time-out must be >= 0 or GS_INFINITY");
  ms = timeout_ms == GS_INFINITY ? MS_INFINITE : (uint64_t)timeout_ms;
  deadline = gsi_now_ns() + ms * 1000000u;
  pthread_mutex_lock(&rt->life_mu);
  if (rt->stop_done) {
    pthread_mutex_unlock(&rt->life_mu);
    return ok();
  }
  atomic_store(&rt->stopped, 1); /* no call gets in any more */
  gsi_buf_init(&b);
  if (gsi_wire_msg_cstr(&b, "shutdown") != 0) rc = fail(GS_ENOMEM, "out of memory");
  /* every process gets "shutdown" (then "kill"); calls still inside see
  ** their servers die and leave; a process one of them started late is
  ** caught by the next round */
  while (rc == 0) {
    uint64_t now = gsi_now_ns();
    if (gsi_rt_stop_all(rt->core, b.data, b.len,
                        now < deadline ? (deadline - now) / 1000000u : 0) != 0) {
      rc = fail(GS_ETIMEDOUT, "a process did not stop in time");
      break;
    }
    while (atomic_load(&rt->inflight) > 0 && gsi_now_ns() < deadline) {
      struct timespec ts = {0, 200000};
      nanosleep(&ts, NULL);
    }
    if (atomic_load(&rt->inflight) > 0) {
      rc = fail(GS_ETIMEDOUT, "a call into the runtime did not return in time");
      break;
    }
    if (lua_procs(rt->core) == 0) break;
  }
  gsi_buf_free(&b);
  if (rc == 0) {
    /* Lua states bound to rt raise from now on ("shut down") */
    atomic_store(&rt->core->closed, 1);
    rt->stop_done = 1;
    rc = ok();
  }
  pthread_mutex_unlock(&rt->life_mu);
  return rc;
}

int gs_runtime_close(gs_runtime *rt, int timeout_ms) {
  int rc;
  if (rt == NULL) return fail(GS_EINVAL, "gs_runtime_close: no runtime");
  if ((rc = gs_runtime_stop(rt, timeout_ms)) != 0) return rc;
  /* the calling thread's foreign process goes with the table */
  gsi_foreign_reset(rt->core);
  if (tls_core == rt->core) tls_core = NULL;
  pthread_setspecific(rt->key, NULL);
  pthread_key_delete(rt->key);
  gsi_rt_free(rt->core);
  gsi_rt_destroy(rt->core);
  gsi_scratch_release();
  pthread_mutex_destroy(&rt->life_mu);
  free(rt->path);
  free(rt->cpath);
  free(rt);
  return ok();
}

/* ------------------------------------------------------ Lua host states */

gsi_rt *gsi_api_core(gs_runtime *rt) { return rt->core; }

gs_runtime *gsi_api_of(gsi_rt *core) { return core->face.ud; }

gs_runtime *gsi_host_api(lua_State *L) {
  gs_runtime *rt;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &BOUND_KEY);
  rt = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return rt;
}

/* A package searcher for genserver's own Lua modules ("genserver",
** "genserver.*") along the runtime's path (upvalue 1), so that a bound
** state finds them where the runtime's processes do, whatever its own
** package.path says. Other names are not its business. */
static int genserver_searcher(lua_State *L) {
  const char *name = luaL_checkstring(L, 1), *file;
  if (strcmp(name, "genserver") != 0 && strncmp(name, "genserver.", 10) != 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  lua_getglobal(L, LUA_LOADLIBNAME);
  if (lua_type(L, -1) != LUA_TTABLE || lua_getfield(L, -1, "searchpath") != LUA_TFUNCTION)
    return 0;
  lua_pushvalue(L, 1);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_call(L, 2, 2);
  if ((file = lua_tostring(L, -2)) == NULL) { /* not there: say where we looked */
    lua_pushfstring(L, "\n\t(genserver runtime path)%s", lua_tostring(L, -1));
    return 1;
  }
  if (luaL_loadfilex(L, file, NULL) != LUA_OK)
    return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", name, file,
                      lua_tostring(L, -1));
  lua_pushstring(L, file);
  return 2;
}

/* Protected part of gs_openlibs: 1 = rt. Returns true, or false if
** genserver is loaded in L for another runtime already. */
static int bind_state(lua_State *L) {
  gs_runtime *rt = lua_touserdata(L, 1);
  int loaded;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &BOUND_KEY);
  if (lua_touserdata(L, -1) == rt) { /* again: nothing to do */
    lua_pushboolean(L, 1);
    return 1;
  }
  if (!lua_isnil(L, -1)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  loaded = lua_type(L, -1) == LUA_TTABLE &&
           lua_getfield(L, -1, "genserver.core") != LUA_TNIL;
  if (loaded) { /* already opened for the default runtime */
    lua_pushboolean(L, 0);
    return 1;
  }
  /* this library's genserver.core, not a copy found on package.cpath */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  if (rt->core->face.open_core != NULL) {
    lua_pushcfunction(L, rt->core->face.open_core);
    lua_setfield(L, -2, "genserver.core");
  }
  lua_getglobal(L, LUA_LOADLIBNAME);
  if (lua_type(L, -1) == LUA_TTABLE && lua_getfield(L, -1, "searchers") == LUA_TTABLE) {
    lua_pushstring(L, rt->path);
    lua_pushcclosure(L, genserver_searcher, 1);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1); /* last: L's own path first */
  }
  lua_pushlightuserdata(L, rt);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &BOUND_KEY);
  lua_pushboolean(L, 1);
  return 1;
}

int gs_openlibs(gs_runtime *rt, lua_State *L) {
  int rc, top;
  if (L == NULL) return fail(GS_EINVAL, "gs_openlibs: NULL state");
  if ((rc = enter(rt)) != 0) return rc;
  top = lua_gettop(L);
  if (!lua_checkstack(L, 4)) return leave(rt, fail(GS_ENOMEM, "Lua stack overflow"));
  lua_pushcfunction(L, bind_state);
  lua_pushlightuserdata(L, rt);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) rc = fail(GS_ENOMEM, "out of memory");
  else if (!lua_toboolean(L, -1))
    rc = fail(GS_EINVAL, "gs_openlibs: genserver is already loaded in this "
                         "state for another runtime");
  else rc = ok();
  lua_settop(L, top);
  return leave(rt, rc);
}

/* --------------------------------------------------------- Lua bridge */

int gs_msg_push(gs_runtime *rt, lua_State *L, const gs_msg *m) {
  gsi_codec_limits lim = gsi_codec_default_limits;
  if (L == NULL || !gs_msg_complete(m)) return fail(GS_EINVAL, "gs_msg_push: bad argument");
  if (rt != NULL) lim = *gsi_rt_limits(rt->core);
  if (!lua_checkstack(L, 4)) return fail(GS_ENOMEM, "Lua stack overflow");
  if (gsi_decode(L, m->b.data, m->b.len, &lim) != 0) {
    int rc = fail(GS_EDECODE, "%s", lua_type(L, -1) == LUA_TSTRING
                                        ? lua_tostring(L, -1) : "cannot decode");
    lua_pop(L, 1);
    return rc;
  }
  return ok();
}

int gs_msg_from_lua(gs_runtime *rt, lua_State *L, int idx, gs_msg **out) {
  gsi_codec_limits lim = gsi_codec_default_limits;
  gs_msg *m;
  if (out != NULL) *out = NULL;
  if (L == NULL || out == NULL || lua_type(L, idx) == LUA_TNONE)
    return fail(GS_EINVAL, "gs_msg_from_lua: bad argument");
  if (rt != NULL) lim = *gsi_rt_limits(rt->core);
  if (!lua_checkstack(L, 4)) return fail(GS_ENOMEM, "Lua stack overflow");
  if ((m = gs_msg_new()) == NULL) return fail(GS_ENOMEM, "out of memory");
  m->b.len = 0;
  if (gsi_encode(L, idx, "value", &lim, &m->b) != 0) {
    int rc = fail(GS_EENCODE, "%s", lua_type(L, -1) == LUA_TSTRING
                                        ? lua_tostring(L, -1) : "cannot encode");
    lua_pop(L, 1); /* the codec's error string */
    gs_msg_free(m);
    return rc;
  }
  m->complete = 1;
  *out = m;
  return ok();
}
