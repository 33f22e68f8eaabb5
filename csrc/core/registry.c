/*
** registry.c - the local name registry: name -> pid.
**
** One mutex (names->mu) guards the table and every process's `name` field.
** It is taken before a process's lk (gsi_reg_register), never after: the
** lock order is written once, at struct gsi_rt (rt.h).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct nentry {
  struct nentry *next;
  uint64_t pid;
  char name[]; /* NUL-terminated */
} nentry;

struct gsi_names {
  pthread_mutex_t mu; /* before a gsi_proc.lk, never after (rt.h) */
  nentry **buckets;
  size_t nbuckets, count;
};

static size_t hash(const char *s) { return (size_t)gsi_hash(GSI_HASH_SEED, s, strlen(s)); }

static nentry **find(gsi_names *n, const char *name) {
  nentry **e = &n->buckets[hash(name) & (n->nbuckets - 1)];
  while (*e != NULL && strcmp((*e)->name, name) != 0) e = &(*e)->next;
  return e;
}

static void rehash(gsi_names *n) {
  size_t nb = n->nbuckets * 2;
  nentry **b = calloc(nb, sizeof *b);
  if (b == NULL) return; /* keep the old, longer chains */
  for (size_t i = 0; i < n->nbuckets; i++) {
    nentry *e = n->buckets[i];
    while (e != NULL) {
      nentry *next = e->next;
      size_t h = hash(e->name) & (nb - 1);
      e->next = b[h];
      b[h] = e;
      e = next;
    }
  }
  free(n->buckets);
  n->buckets = b;
  n->nbuckets = nb;
}

int gsi_reg_init(gsi_rt *rt) {
  gsi_names *n = calloc(1, sizeof *n);
  if (n == NULL) return -1;
  n->nbuckets = 64;
  n->buckets = calloc(n->nbuckets, sizeof *n->buckets);
  if (n->buckets == NULL) {
    free(n);
    return -1;
  }
  pthread_mutex_init(&n->mu, NULL);
  rt->names = n;
  return 0;
}

void gsi_reg_free(gsi_rt *rt) {
  gsi_names *n = rt->names;
  if (n == NULL) return;
  for (size_t i = 0; i < n->nbuckets; i++) {
    nentry *e = n->buckets[i];
    while (e != NULL) {
      nentry *next = e->next;
      free(e);
      e = next;
    }
  }
  free(n->buckets);
  pthread_mutex_destroy(&n->mu);
  free(n);
  rt->names = NULL;
}

int gsi_reg_register(gsi_rt *rt, const char *name, uint64_t pid,
                     uint64_t *holder) {
  gsi_names *n = rt->names;
  nentry **slot, *e;
  gsi_proc *p;
  int rc = GSI_OK;
  size_t len = strlen(name);
  pthread_mutex_lock(&n->mu);
  slot = find(n, name);
  if (*slot != NULL) {
    *holder = (*slot)->pid;
    pthread_mutex_unlock(&n->mu);
    return GSI_EALREADY;
  }
  p = gsi_pin(rt, pid);
  if (p == NULL) {
    pthread_mutex_unlock(&n->mu);
    return GSI_ENOPROC;
  }
  pthread_mutex_lock(&p->lk);
  if (p->exiting) rc = GSI_ENOPROC;
  else if (p->name != NULL) rc = GSI_EINVAL;
  else if ((e = malloc(sizeof *e + len + 1)) == NULL) rc = GSI_ENOMEM;
  else {
    memcpy(e->name, name, len + 1);
    e->pid = pid;
    e->next = NULL;
    *slot = e;
    p->name = e->name;
    n->count++;
  }
  pthread_mutex_unlock(&p->lk);
  gsi_unpin(p);
  if (rc == GSI_OK && n->count > n->nbuckets) rehash(n);
  pthread_mutex_unlock(&n->mu);
  return rc;
}

/* Remove entry *slot; the caller holds n->mu, which also guards p->name.
** Slots are never freed, so touching the owner's slot needs no pin. */
static void remove_at(gsi_rt *rt, nentry **slot) {
  nentry *e = *slot;
  gsi_proc *p = gsi_proc_at(rt, GSI_PID_INDEX(e->pid));
  if (p != NULL && p->name == e->name) p->name = NULL;
  *slot = e->next;
  rt->names->count--;
  free(e);
}

int gsi_reg_unregister(gsi_rt *rt, const char *name) {
  gsi_names *n = rt->names;
  nentry **slot;
  int found;
  pthread_mutex_lock(&n->mu);
  slot = find(n, name);
  found = *slot != NULL;
  if (found) remove_at(rt, slot);
  pthread_mutex_unlock(&n->mu);
  return found ? 0 : -1;
}

uint64_t gsi_reg_whereis(gsi_rt *rt, const char *name) {
  gsi_names *n = rt->names;
  nentry *e;
  uint64_t pid = 0;
  pthread_mutex_lock(&n->mu);
  e = *find(n, name);
  if (e != NULL) pid = e->pid;
  pthread_mutex_unlock(&n->mu);
  return pid;
}

void gsi_reg_release(gsi_rt *rt, gsi_proc *p) {
  gsi_names *n = rt->names;
  pthread_mutex_lock(&n->mu);
  if (p->name != NULL) {
    nentry **slot = find(n, p->name);
    if (*slot != NULL) remove_at(rt, slot);
    p->name = NULL;
  }
  pthread_mutex_unlock(&n->mu);
}

void gsi_reg_each(gsi_rt *rt, void (*fn)(void *, const char *, uint64_t),
                  void *ud) {
  gsi_names *n = rt->names;
  pthread_mutex_lock(&n->mu);
  for (size_t i = 0; i < n->nbuckets; i++)
    for (nentry *e = n->buckets[i]; e != NULL; e = e->next)
      fn(ud, e->name, e->pid);
  pthread_mutex_unlock(&n->mu);
}

/* Copy pid's registered name into buf ("" if none). */
void gsi_reg_name_of(gsi_rt *rt, uint64_t pid, char *buf, size_t size) {
  gsi_names *n = rt->names;
  gsi_proc *p = gsi_proc_at(rt, GSI_PID_INDEX(pid));
  buf[0] = '\0';
  pthread_mutex_lock(&n->mu);
  if (p != NULL && p->name != NULL && gsi_proc_pid(p) == pid)
    snprintf(buf, size, "%s", p->name);
  pthread_mutex_unlock(&n->mu);
}
