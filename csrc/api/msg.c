/*
** msg.c - the C value API (gs_msg, genserver.h): build a value, read it
** item by item, describe it as text, with no Lua state at all. Values are
** the codec's wire format (core/wire.h), read and written by wire.c.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"

#include "genserver.h"
#include "core/ids.h"
#include "core/wire.h"
#include "core/internal.h"
#include "api_int.h"

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

int rd_item(rd *r, gs_item *it, int depth) {
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
char *reason_text(const unsigned char *data, size_t len, size_t *tlen) {
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
gs_msg *msg_from_bytes(const unsigned char *data, size_t len) {
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

/* ------------------------------------------------- values as C strings */

static char *dup_mem(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d == NULL) return NULL;
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

/* A reply as a C string: strings, numbers, booleans (Lua's tostring),
** nil (NULL). */
int value_string(const unsigned char *data, size_t len, char **out, size_t *olen) {
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
