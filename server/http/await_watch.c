/* await_watch.c: the disconnect watcher of awaited jobs (await_watch.h).
 *
 * Entries live in one array under mu. The thread copies the sockets out,
 * polls them without the lock (100 ms at most, so stopping takes at most
 * that), then, under the lock, takes a job reference for each entry that
 * is still there and has hung up, and cancels those jobs after unlocking:
 * engine_job_cancel may end a queued job at once, whose completion calls
 * await_watch_remove, so mu is never held across an engine call. A client
 * that sends more bytes while it waits (a pipelined request) is then only
 * watched for its hang-up (POLLRDHUP), so poll never spins on unread data.
 */
#include "await_watch.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "engine/engine.h"

#define POLL_MS 100

struct entry {
  uint64_t id;
  int fd;
  short events;
  int cancelled;
  struct engine *e;
  struct job *j;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct entry *tab;
static size_t n, cap;
static uint64_t next_id = 1;
static pthread_t thread;
static atomic_int running, stopping;

/* index of id in tab (under mu), or -1 */
static long find(uint64_t id) {
  for (size_t i = 0; i < n; i++)
    if (tab[i].id == id) return (long)i;
  return -1;
}

uint64_t await_watch_add(int fd, struct engine *e, struct job *j) {
  pthread_mutex_lock(&mu);
  uint64_t id = 0;
  if (n == cap) {
    size_t c = cap ? 2 * cap : 64;
    struct entry *t = realloc(tab, c * sizeof *t);
    if (t) tab = t, cap = c;
  }
  if (n < cap) {
    id = next_id++;
    tab[n++] = (struct entry){id, fd, POLLIN | POLLRDHUP, 0, e, j};
  }
  pthread_mutex_unlock(&mu);
  return id;
}

void await_watch_remove(uint64_t id) {
  if (!id) return;
  pthread_mutex_lock(&mu);
  long i = find(id);
  if (i >= 0) tab[i] = tab[--n];
  pthread_mutex_unlock(&mu);
}

/* 1 if the peer has closed the socket; clears POLLIN from *events when
 * unread bytes are waiting */
static int hung_up(const struct pollfd *p, short *events) {
  if (p->revents & (POLLRDHUP | POLLHUP | POLLERR)) return 1;
  if (!(p->revents & POLLIN)) return 0;
  char c;
  if (recv(p->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0) return 1;
  *events = POLLRDHUP;
  return 0;
}

static void *watch_main(void *arg) {
  struct pollfd *pf = NULL;
  uint64_t *ids = NULL;
  size_t have = 0;
  while (!atomic_load(&stopping)) {
    pthread_mutex_lock(&mu);
    size_t m = n;
    if (m > have) {
      struct pollfd *p2 = realloc(pf, m * sizeof *pf);
      if (p2) pf = p2;
      uint64_t *i2 = realloc(ids, m * sizeof *ids);
      if (i2) ids = i2;
      if (p2 && i2) have = m;
    }
    if (m > have) m = have;
    size_t k = 0;
    for (size_t i = 0; i < m; i++) {
      if (tab[i].cancelled) continue;
      pf[k] = (struct pollfd){.fd = tab[i].fd, .events = tab[i].events};
      ids[k++] = tab[i].id;
    }
    pthread_mutex_unlock(&mu);
    if (poll(pf, k, POLL_MS) <= 0) continue;
    for (size_t i = 0; i < k; i++) {
      if (!pf[i].revents) continue;
      struct engine *e = NULL;
      struct job *j = NULL;
      pthread_mutex_lock(&mu);
      long t = find(ids[i]);
      if (t >= 0 && hung_up(&pf[i], &tab[t].events)) {
        tab[t].cancelled = 1;
        e = tab[t].e, j = tab[t].j;
        job_get(j);
      }
      pthread_mutex_unlock(&mu);
      if (!j) continue;
      engine_job_cancel(e, j, "the client disconnected");
      job_put(j);
    }
  }
  free(pf);
  free(ids);
  return NULL;
}

int await_watch_start(char **err) {
  if (atomic_load(&running)) return 0;
  atomic_store(&stopping, 0);
  if (pthread_create(&thread, NULL, watch_main, NULL) != 0) {
    *err = strdup("cannot start the disconnect watcher thread");
    return -1;
  }
  atomic_store(&running, 1);
  return 0;
}

void await_watch_stop(void) {
  if (!atomic_load(&running)) return;
  atomic_store(&stopping, 1);
  pthread_join(thread, NULL);
  atomic_store(&running, 0);
  pthread_mutex_lock(&mu);
  free(tab);
  tab = NULL, n = cap = 0;
  pthread_mutex_unlock(&mu);
}
