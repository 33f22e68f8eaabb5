/*
** bench/core_rtt.c - what a cache line costs to cross between two threads
** on this machine, printed beside the main-script call in `make bench`.
**
**   core_rtt [ROUNDS]   two threads bounce one cache line ROUNDS times
**                       (default 200,000), five times over; prints
**                       "rtt_ns=X" (the median of the five, ns per round
**                       trip)
**
** The main-script call crosses between two threads twice per call (request
** and reply), each crossing several cache lines; on a virtual machine this
** round trip moves with where the hypervisor puts the two vCPUs (measured
** here: 130-150 ns at one placement, 450-580 ns at another), and the call
** with it. The threads are not pinned: the kernel places them as it places
** the bench's own threads.
*/
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static _Alignas(64) atomic_long ping;
static _Alignas(64) atomic_long pong;
static long rounds = 200000;

static void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static void *echo(void *arg) {
  long base = *(long *)arg;
  for (long i = 1; i <= rounds; i++) {
    while (atomic_load_explicit(&ping, memory_order_acquire) != base + i) relax();
    atomic_store_explicit(&pong, base + i, memory_order_release);
  }
  return NULL;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  double r[5];
  if (argc > 1) rounds = atol(argv[1]);
  if (rounds <= 0) {
    fprintf(stderr, "usage: core_rtt [ROUNDS > 0]\n");
    return 2;
  }
  for (int k = 0; k < 5; k++) {
    pthread_t t;
    long base = (long)k * rounds;
    double t0;
    if (pthread_create(&t, NULL, echo, &base) != 0) {
      perror("core_rtt: pthread_create");
      return 1;
    }
    t0 = now();
    for (long i = 1; i <= rounds; i++) {
      atomic_store_explicit(&ping, base + i, memory_order_release);
      while (atomic_load_explicit(&pong, memory_order_acquire) != base + i) relax();
    }
    r[k] = (now() - t0) / (double)rounds * 1e9;
    pthread_join(t, NULL);
  }
  qsort(r, 5, sizeof r[0], cmp);
  printf("rtt_ns=%.0f\n", r[2]);
  return 0;
}
