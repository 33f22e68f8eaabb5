/*
** wire.c - the codec's wire format (wire.h) read and written without Lua:
** for the C API's value builder and reader, the I/O layer's inbound
** messages, and the wire fuzz target. The codec (codec*.c) has its own,
** faster paths from and to Lua values; this module must agree with it
** byte for byte (fuzz/wire_fuzz.c checks what it reads against
** gsi_decode).
*/
#include <stdlib.h>
#include <string.h>

#include "wire.h"

/* ------------------------------------------------------------ gsi_buf */

void gsi_buf_init(gsi_buf *b) {
  b->data = NULL;
  b->len = b->cap = 0;
}


void gsi_buf_free(gsi_buf *b) {
  free(b->data);
  gsi_buf_init(b);
}


int gsi_buf_reserve(gsi_buf *b, size_t n) {
  size_t want, cap;
  unsigned char *d;
  if (n <= b->cap - b->len)
    return 0;
  if (n > SIZE_MAX - b->len)
    return -1;
  want = b->len + n;
  cap = b->cap < 256 ? 256 : b->cap;
  while (cap < want)  /* doubling keeps appends amortised O(1) */
    cap = (cap > SIZE_MAX / 2) ? want : cap * 2;
  d = (unsigned char *)realloc(b->data, cap);
  if (d == NULL)
    return -1;
  b->data = d;
  b->cap = cap;
  return 0;
}


/* ------------------------------------------------------------ writing */

int gsi_wire_bytes(gsi_buf *b, const void *s, size_t n) {
  if (gsi_buf_reserve(b, n) != 0) return -1;
  if (n > 0) memcpy(b->data + b->len, s, n);
  b->len += n;
  return 0;
}

int gsi_wire_byte(gsi_buf *b, int c) {
  unsigned char x = (unsigned char)c;
  return gsi_wire_bytes(b, &x, 1);
}

int gsi_wire_tagvar(gsi_buf *b, int tag, uint64_t v) {
  unsigned char t[11];
  size_t n = 0;
  if (tag >= 0) t[n++] = (unsigned char)tag;
  n += gsi_putvarint(t + n, v);
  return gsi_wire_bytes(b, t, n);
}

int gsi_wire_varint(gsi_buf *b, uint64_t v) { return gsi_wire_tagvar(b, -1, v); }

int gsi_wire_int(gsi_buf *b, int64_t i) {
  if (i >= 0 && i < 0x80) return gsi_wire_byte(b, (int)i);
  if (i < 0 && i >= -32) return gsi_wire_byte(b, GSI_T_NEGINT + (int)(i + 32));
  return gsi_wire_tagvar(b, GSI_T_INT, gsi_zigzag(i));
}

int gsi_wire_float(gsi_buf *b, double x) {
  unsigned char t[9];
  uint64_t u;
  memcpy(&u, &x, sizeof u);
  t[0] = GSI_T_FLOAT;
  for (int k = 0; k < 8; k++) t[1 + k] = (unsigned char)(u >> (8 * k));
  return gsi_wire_bytes(b, t, 9);
}

int gsi_wire_str(gsi_buf *b, const char *s, size_t len) {
  if (len < 32) {
    if (gsi_wire_byte(b, GSI_T_FIXSTR | (int)len) != 0) return -1;
  } else if (gsi_wire_tagvar(b, GSI_T_STR, len) != 0) {
    return -1;
  }
  return gsi_wire_bytes(b, s, len);
}

int gsi_wire_cstr(gsi_buf *b, const char *s) { return gsi_wire_str(b, s, strlen(s)); }

/* A whole message holding one string. */
int gsi_wire_msg_cstr(gsi_buf *b, const char *s) {
  return gsi_wire_byte(b, GSI_WIRE_MAGIC) || gsi_wire_cstr(b, s) ? -1 : 0;
}

/* ------------------------------------------------------------ reading */

#define MAXDEPTH GSI_CODEC_MAXDEPTH

static size_t rd_left(const gsi_wire_rd *r) { return (size_t)(r->end - r->p); }

static int rd_varint(gsi_wire_rd *r, uint64_t *v) {
  *v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    int c;
    if (r->p >= r->end) return -1;
    c = *r->p++;
    if (shift == 63 && c > 1) return -1;
    *v |= (uint64_t)(c & 0x7f) << shift;
    if (c < 0x80) return 0;
  }
  return -1;
}

static int rd_len(gsi_wire_rd *r, size_t *n) {
  uint64_t v;
  if (rd_varint(r, &v) != 0 || v > rd_left(r)) return -1;
  *n = (size_t)v;
  return 0;
}

/* One item: a scalar, or the head of a table (its contents follow). A
** function is skipped whole (its upvalues are values too). -1 when
** malformed. */
int gsi_wire_read(gsi_wire_rd *r, gsi_wire_item *it, int depth) {
  int c;
  uint64_t v, na, nh;
  memset(it, 0, sizeof *it);
  if (r->p >= r->end) return -1;
  c = *r->p++;
  if (c < 0x80) {
    it->type = GSI_WV_INTEGER;
    it->integer = c;
    return 0;
  }
  if (c < 0xa0) {
    size_t n = (size_t)(c & 0x1f);
    if (n > rd_left(r)) return -1;
    it->type = GSI_WV_STRING;
    it->string = (const char *)r->p;
    it->len = n;
    r->p += n;
    return 0;
  }
  if (c >= GSI_T_NEGINT) {
    it->type = GSI_WV_INTEGER;
    it->integer = c - GSI_T_NEGINT - 32;
    return 0;
  }
  switch (c) {
  case GSI_T_NIL: it->type = GSI_WV_NIL; return 0;
  case GSI_T_FALSE: it->type = GSI_WV_BOOLEAN; return 0;
  case GSI_T_TRUE: it->type = GSI_WV_BOOLEAN; it->boolean = 1; return 0;
  case GSI_T_INT: {
    if (rd_varint(r, &v) != 0) return -1;
    it->type = GSI_WV_INTEGER;
    it->integer = gsi_unzigzag(v);
    return 0;
  }
  case GSI_T_FLOAT: {
    uint64_t u = 0;
    if (rd_left(r) < 8) return -1;
    for (int k = 0; k < 8; k++) u |= (uint64_t)r->p[k] << (8 * k);
    r->p += 8;
    it->type = GSI_WV_NUMBER;
    memcpy(&it->number, &u, sizeof u);
    return 0;
  }
  case GSI_T_STR:
    if (rd_len(r, &it->len) != 0) return -1;
    it->type = GSI_WV_STRING;
    it->string = (const char *)r->p;
    r->p += it->len;
    return 0;
  case GSI_T_TABLE:
    if (rd_varint(r, &na) != 0 || rd_varint(r, &nh) != 0) return -1;
    if (na > rd_left(r) || nh > rd_left(r) / 2 || depth >= MAXDEPTH) return -1;
    it->type = GSI_WV_TABLE;
    it->narr = (size_t)na;
    it->nhash = (size_t)nh;
    it->object = ++r->nobj;
    return 0;
  case GSI_T_REF:
    if (rd_varint(r, &v) != 0 || v < 1 || v > r->nobj) return -1;
    it->type = GSI_WV_BACKREF;
    it->object = (size_t)v;
    return 0;
  case GSI_T_PID:
  case GSI_T_IDREF:
    if (rd_varint(r, &v) != 0) return -1;
    it->type = c == GSI_T_PID ? GSI_WV_PID : GSI_WV_REF;
    it->id = v;
    return 0;
  case GSI_T_MODULE:
    if (rd_len(r, &it->len) != 0) return -1;
    it->type = GSI_WV_MODULE;
    it->string = (const char *)r->p;
    r->p += it->len;
    return 0;
  case GSI_T_CFUNC: {
    size_t n;
    if (rd_len(r, &n) != 0) return -1;
    it->string = (const char *)r->p; /* the module's name, for describe */
    it->len = n;
    r->p += n;
    if (rd_len(r, &n) != 0) return -1;
    r->p += n;
    it->type = GSI_WV_FUNCTION;
    return 0;
  }
  case GSI_T_FUNC: {
    size_t n;
    uint64_t nup;
    if (rd_len(r, &n) != 0 || depth >= MAXDEPTH) return -1;
    r->p += n;
    it->type = GSI_WV_FUNCTION;
    it->object = ++r->nobj;
    if (rd_varint(r, &nup) != 0 || nup > 255) return -1;
    for (uint64_t i = 0; i < nup; i++) {
      if (r->p < r->end && *r->p == GSI_T_UPJOIN) {
        r->p++;
        if (rd_varint(r, &v) != 0 || rd_varint(r, &v) != 0) return -1;
      } else if (gsi_wire_skip(r, depth + 1) != 0) {
        return -1;
      }
    }
    return 0;
  }
  default:
    return -1;
  }
}

int gsi_wire_skip(gsi_wire_rd *r, int depth) {
  gsi_wire_item it;
  if (gsi_wire_read(r, &it, depth) != 0) return -1;
  if (it.type == GSI_WV_TABLE)
    for (size_t i = 0; i < it.narr + 2 * it.nhash; i++)
      if (gsi_wire_skip(r, depth + 1) != 0) return -1;
  return 0;
}

/* Copy one value from r to b, renumbering back-references by delta (the
** value moves into, or out of, an enclosing table). */
int gsi_wire_copy(gsi_wire_rd *r, gsi_buf *b, long delta, int depth) {
  const unsigned char *start = r->p;
  gsi_wire_item it;
  uint64_t v;
  if (depth >= MAXDEPTH || r->p >= r->end) return -1;
  switch (*r->p) {
  case GSI_T_REF:
    r->p++;
    if (rd_varint(r, &v) != 0 || (long)v + delta < 1) return -1;
    return gsi_wire_tagvar(b, GSI_T_REF, (uint64_t)((long)v + delta));
  case GSI_T_TABLE:
    if (gsi_wire_read(r, &it, depth) != 0 || gsi_wire_bytes(b, start, (size_t)(r->p - start)) != 0)
      return -1;
    for (size_t i = 0; i < it.narr + 2 * it.nhash; i++)
      if (gsi_wire_copy(r, b, delta, depth + 1) != 0) return -1;
    return 0;
  case GSI_T_FUNC: {
    size_t n;
    uint64_t nup;
    r->p++;
    if (rd_len(r, &n) != 0) return -1;
    r->p += n;
    if (rd_varint(r, &nup) != 0 || nup > 255) return -1;
    if (gsi_wire_bytes(b, start, (size_t)(r->p - start)) != 0) return -1;
    for (uint64_t i = 0; i < nup; i++) {
      if (r->p < r->end && *r->p == GSI_T_UPJOIN) {
        uint64_t obj, k;
        r->p++;
        if (rd_varint(r, &obj) != 0 || rd_varint(r, &k) != 0 || (long)obj + delta < 1)
          return -1;
        if (gsi_wire_byte(b, GSI_T_UPJOIN) || gsi_wire_varint(b, (uint64_t)((long)obj + delta)) ||
            gsi_wire_varint(b, k))
          return -1;
      } else if (gsi_wire_copy(r, b, delta, depth + 1) != 0) {
        return -1;
      }
    }
    return 0;
  }
  default: /* a scalar (nothing inside refers to objects): copy it raw */
    if (gsi_wire_read(r, &it, depth) != 0) return -1;
    return gsi_wire_bytes(b, start, (size_t)(r->p - start));
  }
}
