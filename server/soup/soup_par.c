/* soup_par.c: a parallel for over the soup's tensors (largest first, dynamic
 * scheduling with an atomic counter) on s->threads pthreads. Each tensor is
 * handled by exactly one thread, so per-tensor work (and per-tensor SHA-256)
 * stays sequential. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "soup_internal.h"

struct par {
  const struct soup *s;
  int (*fn)(void *ctx, size_t i);
  void *ctx;
  atomic_size_t next;
  atomic_int rc;
};

static void *par_worker(void *arg) {
  struct par *p = arg;
  for (;;) {
    size_t k = atomic_fetch_add(&p->next, 1);
    if (k >= p->s->n || atomic_load(&p->rc) != 0) break;
    int rc = p->fn(p->ctx, p->s->order[k]);
    if (rc) {
      int zero = 0;
      atomic_compare_exchange_strong(&p->rc, &zero, rc);
    }
  }
  return NULL;
}

int soup_par_for(const struct soup *s, int (*fn)(void *ctx, size_t i), void *ctx) {
  struct par p = {.s = s, .fn = fn, .ctx = ctx};
  atomic_init(&p.next, 0);
  atomic_init(&p.rc, 0);
  int nt = s->threads > 1 && s->n > 1 ? s->threads : 1;
  pthread_t th[64];
  int started = 0;
  if (nt > 64) nt = 64;
  for (int i = 1; i < nt; i++) {
    if (pthread_create(&th[started], NULL, par_worker, &p) == 0) started++;
  }
  par_worker(&p);
  for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
  return atomic_load(&p.rc);
}
