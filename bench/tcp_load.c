/*
** bench/tcp_load.c - the TCP side of `make bench`: one load generator for
** every echo server (genserver.tcp, Erlang's gen_tcp, and a plain blocking C
** server that this program also is).
**
**   tcp_load server               a blocking echo server on a loopback port
**                                 (a thread per connection); prints
**                                 "port N", runs until killed (at most 10 min)
**   tcp_load client PORT C R S    C connections (a thread each), R round
**                                 trips of S bytes on each: write S bytes,
**                                 read S bytes back (checked); prints
**                                 "rtt_us=X rps=Y n=C*R"
**
** TCP_NODELAY on every socket, loopback only.
*/
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int full_write(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t k = write(fd, p, n);
    if (k <= 0) return -1;
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

static int full_read(int fd, char *p, size_t n) {
  while (n > 0) {
    ssize_t k = read(fd, p, n);
    if (k <= 0) return -1;
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

/* ---------------------------------------------------------------- server */

static void *serve_conn(void *arg) {
  int fd = (int)(intptr_t)arg;
  char buf[65536];
  ssize_t n;
  nodelay(fd);
  while ((n = read(fd, buf, sizeof buf)) > 0)
    if (full_write(fd, buf, (size_t)n) != 0) break;
  close(fd);
  return NULL;
}

static void *acceptor(void *arg) {
  int ls = (int)(intptr_t)arg;
  for (;;) {
    pthread_t th;
    int fd = accept(ls, NULL, NULL);
    if (fd < 0) continue;
    if (pthread_create(&th, NULL, serve_conn, (void *)(intptr_t)fd) != 0) close(fd);
    else pthread_detach(th);
  }
  return NULL;
}

static int server(void) {
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  pthread_t th;
  int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 512) != 0 ||
      getsockname(ls, (struct sockaddr *)&a, &len) != 0) {
    perror("tcp_load server");
    return 1;
  }
  printf("port %d\n", ntohs(a.sin_port));
  fflush(stdout);
  pthread_create(&th, NULL, acceptor, (void *)(intptr_t)ls);
  sleep(600); /* killed long before; never outlives a forgotten bench */
  return 0;
}

/* ---------------------------------------------------------------- client */

typedef struct job {
  int port, rounds, size, ok;
  pthread_t th;
  pthread_barrier_t *start;
} job;

static void *client_conn(void *arg) {
  job *j = arg;
  struct sockaddr_in a;
  char *out = malloc((size_t)j->size), *in = malloc((size_t)j->size);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)j->port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  j->ok = 0;
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    pthread_barrier_wait(j->start);
    goto done;
  }
  nodelay(fd);
  for (int i = 0; i < j->size; i++) out[i] = (char)('a' + i % 26);
  /* one warm-up round trip before the clock starts */
  if (full_write(fd, out, (size_t)j->size) || full_read(fd, in, (size_t)j->size)) {
    pthread_barrier_wait(j->start);
    goto done;
  }
  pthread_barrier_wait(j->start);
  for (int r = 0; r < j->rounds; r++) {
    out[0] = (char)('A' + r % 26);
    if (full_write(fd, out, (size_t)j->size) || full_read(fd, in, (size_t)j->size) ||
        memcmp(in, out, (size_t)j->size) != 0)
      goto done;
  }
  j->ok = 1;
done:
  close(fd);
  free(out);
  free(in);
  return NULL;
}

static int client(int port, int conns, int rounds, int size) {
  job *jobs = calloc((size_t)conns, sizeof *jobs);
  pthread_barrier_t start;
  double t0, t1;
  int ok = 1;
  pthread_barrier_init(&start, NULL, (unsigned)conns + 1);
  for (int i = 0; i < conns; i++) {
    jobs[i] = (job){port, rounds, size, 0, 0, &start};
    pthread_create(&jobs[i].th, NULL, client_conn, &jobs[i]);
  }
  pthread_barrier_wait(&start);
  t0 = now();
  for (int i = 0; i < conns; i++) {
    pthread_join(jobs[i].th, NULL);
    ok = ok && jobs[i].ok;
  }
  t1 = now();
  if (!ok) {
    printf("error: a connection failed or got a wrong echo\n");
    return 1;
  }
  printf("rtt_us=%.4f rps=%.1f n=%d\n", (t1 - t0) / rounds * 1e6,
         (double)conns * rounds / (t1 - t0), conns * rounds);
  free(jobs);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "server") == 0) return server();
  if (argc >= 6 && strcmp(argv[1], "client") == 0)
    return client(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
  fprintf(stderr, "usage: tcp_load server | tcp_load client PORT CONNS ROUNDS SIZE\n");
  return 2;
}
