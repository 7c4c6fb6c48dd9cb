/* gen_stats.c: the generation statistics in one place: recorded by the
 * worker when a request ends, read by /stats and /metrics. Everything is
 * copied under the ring's mutex; the percentiles are sorted from a copy. */
#include <stdlib.h>
#include <string.h>

#include "generation.h"

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

void gen_stats_get(struct gen_stats_ring *g, struct gen_stats *st) {
  double tmp[GEN_LAT_RING];
  pthread_mutex_lock(&g->mu);
  int n = (int)(g->lat_n < GEN_LAT_RING ? g->lat_n : GEN_LAT_RING);
  memcpy(tmp, g->lat, (size_t)n * sizeof *tmp);
  st->images = g->images, st->requests = g->requests, st->failures = g->failures;
  st->mean_step_ms = g->steps ? g->step_ms_sum / (double)g->steps : 0;
  pthread_mutex_unlock(&g->mu);
  qsort(tmp, (size_t)n, sizeof *tmp, cmp_double);
  st->p50_ms = n ? tmp[(n - 1) * 50 / 100] : 0;
  st->p90_ms = n ? tmp[(n - 1) * 90 / 100] : 0;
  st->p99_ms = n ? tmp[(n - 1) * 99 / 100] : 0;
}

void gen_stats_record(struct gen_stats_ring *g, int ok, int n, double total_ms, double denoise_ms,
                      int steps) {
  pthread_mutex_lock(&g->mu);
  g->requests++;
  if (ok) {
    g->images += n;
    g->lat[g->lat_n++ % GEN_LAT_RING] = total_ms;
    g->step_ms_sum += denoise_ms;
    g->steps += steps;
  } else {
    g->failures++;
  }
  pthread_mutex_unlock(&g->mu);
}
