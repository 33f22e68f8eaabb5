/*
** spawnmsg.c - the spawn message's writer and reader (layout: spawnmsg.h).
*/
#include <string.h>

#include "spawnmsg.h"

static int put_str(gsi_buf *b, const char *s, size_t n) {
  uint32_t n32 = (uint32_t)n;
  if (n > UINT32_MAX || gsi_buf_reserve(b, 4 + n) != 0) return -1;
  memcpy(b->data + b->len, &n32, 4);
  if (n > 0) memcpy(b->data + b->len + 4, s, n);
  b->len += 4 + n;
  return 0;
}

int gsi_spawnmsg_paths(gsi_buf *b, const char *path, size_t plen, const char *cpath,
                       size_t clen) {
  b->len = 0;
  return put_str(b, path ? path : "", path ? plen : 0) ||
         put_str(b, cpath ? cpath : "", cpath ? clen : 0) ? -1 : 0;
}

static int get_str(const unsigned char **s, const unsigned char *e, const char **str,
                   size_t *n) {
  uint32_t n32;
  if (e - *s < 4) return -1;
  memcpy(&n32, *s, 4);
  *s += 4;
  if ((size_t)(e - *s) < n32) return -1;
  *str = (const char *)*s;
  *n = n32;
  *s += n32;
  return 0;
}

int gsi_spawnmsg_read(const unsigned char *data, size_t len, gsi_spawnmsg *out) {
  const unsigned char *s = data, *e = data + len;
  if (get_str(&s, e, &out->path, &out->plen) || get_str(&s, e, &out->cpath, &out->clen))
    return -1;
  out->body = s;
  out->blen = (size_t)(e - s);
  return 0;
}
