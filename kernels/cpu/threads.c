/* threads.c: the pool behind parallel_for (see threads.h).
 *
 * Workers sleep on a condition variable until the job generation changes,
 * then pull chunks from an atomic counter. The job is finished when the
 * count of finished workers reaches threads-1 and the caller has drained the
 * counter itself. A nested call (from inside a task) runs inline.
 */
#include "threads.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

struct thread_pool {
  int threads;
  pthread_t *tids;
  pthread_mutex_t mu;
  pthread_cond_t wake, done;
  uint64_t generation; /* bumped per job, under mu */
  int finished;        /* workers done with the current job, under mu */
  int quit;
  /* the current job */
  parallel_fn fn;
  void *ctx;
  int64_t n, grain;
  atomic_int_fast64_t next;
  atomic_int busy; /* a job is running (nested calls go inline) */
};

struct worker_arg {
  struct thread_pool *p;
  int tid;
};

static void pool_drain(struct thread_pool *p, int tid) {
  for (;;) {
    int64_t i0 = atomic_fetch_add(&p->next, p->grain);
    if (i0 >= p->n) break;
    int64_t i1 = i0 + p->grain < p->n ? i0 + p->grain : p->n;
    p->fn(p->ctx, i0, i1, tid);
  }
}

static void *pool_worker(void *arg) {
  struct worker_arg *wa = arg;
  struct thread_pool *p = wa->p;
  int tid = wa->tid;
  free(wa);
  uint64_t seen = 0;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->quit && p->generation == seen) pthread_cond_wait(&p->wake, &p->mu);
    if (p->quit) break;
    seen = p->generation;
    pthread_mutex_unlock(&p->mu);
    pool_drain(p, tid);
    pthread_mutex_lock(&p->mu);
    if (++p->finished == p->threads - 1) pthread_cond_signal(&p->done);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

struct thread_pool *thread_pool_new(int threads) {
  if (threads <= 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    threads = n > 0 ? (int)n : 1;
  }
  struct thread_pool *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->threads = threads;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->wake, NULL);
  pthread_cond_init(&p->done, NULL);
  p->tids = calloc((size_t)threads, sizeof *p->tids);
  if (!p->tids) goto fail;
  for (int i = 1; i < threads; i++) {
    struct worker_arg *wa = malloc(sizeof *wa);
    if (!wa) goto fail_started;
    wa->p = p;
    wa->tid = i;
    if (pthread_create(&p->tids[i], NULL, pool_worker, wa) != 0) {
      free(wa);
      goto fail_started;
    }
    continue;
  fail_started:
    p->threads = i; /* join the ones started so far */
    thread_pool_free(p);
    return NULL;
  }
  return p;
fail:
  free(p->tids);
  free(p);
  return NULL;
}

void thread_pool_free(struct thread_pool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  p->quit = 1;
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->mu);
  for (int i = 1; i < p->threads; i++) pthread_join(p->tids[i], NULL);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->wake);
  pthread_cond_destroy(&p->done);
  free(p->tids);
  free(p);
}

int thread_pool_size(const struct thread_pool *p) {
  return p->threads;
}

void parallel_for(struct thread_pool *p, int64_t n, int64_t grain, parallel_fn fn, void *ctx) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  int expected = 0;
  if (p->threads == 1 || n <= grain || !atomic_compare_exchange_strong(&p->busy, &expected, 1)) {
    for (int64_t i0 = 0; i0 < n; i0 += grain) fn(ctx, i0, i0 + grain < n ? i0 + grain : n, 0);
    return;
  }
  pthread_mutex_lock(&p->mu);
  p->fn = fn;
  p->ctx = ctx;
  p->n = n;
  p->grain = grain;
  atomic_store(&p->next, 0);
  p->finished = 0;
  p->generation++;
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->mu);
  pool_drain(p, 0);
  pthread_mutex_lock(&p->mu);
  while (p->finished < p->threads - 1) pthread_cond_wait(&p->done, &p->mu);
  pthread_mutex_unlock(&p->mu);
  atomic_store(&p->busy, 0);
}
