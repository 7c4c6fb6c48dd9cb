/* bench_soup_update.c: soup update cost at SD2.1 UNet size (a program, not a
 * test; never fails on a time).
 *
 * Usage: bench_soup_update [scale=1.0] [infer=f16|f32|bf16] [runs=3]
 * A synthetic F16 shard with the 686 tensor sizes of the SD2.1 UNet
 * (865,910,724 parameters) times `scale`. The same buffer serves as base
 * (only F and the empty soup come from it) to stay within ~12 GiB at full
 * size: accumulator 8 B + shard 2 B + two inference copies per parameter.
 * Measures, medians of `runs`:
 *  - register and withdraw (soup_apply +-1.0: validation pass + fused
 *    accumulate/materialize/SHA-256 pass) with n = 1, 2 and 8 shards active;
 *  - (a) a bandwidth baseline: a plain 2-thread loop streaming the same bytes
 *    (read shard, read+write the int64 accumulator, write the inference copy);
 *  - the SHA-256 of the whole accumulator alone (2 threads);
 *  - (b) re-averaging n = 1, 2, 8 shards from scratch (soup_rebuild_hash,
 *    with the shard in memory n times).
 */
#include <pthread.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "soup/soup.h"

static const int64_t sd21_numel[686] = {
    320,     11520,    320,     320,      4,       11520,    320,     320,      320,     102400,
    320,     102400,   102400,  320,      102400,  102400,   102400,  327680,   320,     102400,
    102400,  327680,   2560,    819200,   320,     409600,   320,     320,      320,     320,
    320,     320,      320,     320,      320,     102400,   320,     102400,   102400,  320,
    102400,  102400,   102400,  327680,   320,     102400,   102400,  327680,   2560,    819200,
    320,     409600,   320,     320,      320,     320,      320,     320,      320,     921600,
    320,     921600,   320,     921600,   320,     320,      320,     320,      320,     409600,
    320,     921600,   320,     921600,   320,     320,      320,     320,      320,     409600,
    640,     640,      640,     409600,   640,     409600,   409600,  640,      409600,  409600,
    409600,  655360,   640,     409600,   409600,  655360,   5120,    3276800,  640,     1638400,
    640,     640,      640,     640,      640,     640,      640,     640,      640,     409600,
    640,     409600,   409600,  640,      409600,  409600,   409600,  655360,   640,     409600,
    409600,  655360,   5120,    3276800,  640,     1638400,  640,     640,      640,     640,
    640,     640,      640,     3686400,  640,     1843200,  640,     3686400,  640,     204800,
    320,     320,      640,     640,      640,     819200,   640,     3686400,  640,     3686400,
    640,     640,      640,     640,      640,     819200,   1280,    1280,     1280,    1638400,
    1280,    1638400,  1638400, 1280,     1638400, 1638400,  1638400, 1310720,  1280,    1638400,
    1638400, 1310720,  10240,   13107200, 1280,    6553600,  1280,    1280,     1280,    1280,
    1280,    1280,     1280,    1280,     1280,    1638400,  1280,    1638400,  1638400, 1280,
    1638400, 1638400,  1638400, 1310720,  1280,    1638400,  1638400, 1310720,  10240,   13107200,
    1280,    6553600,  1280,    1280,     1280,    1280,     1280,    1280,     1280,    14745600,
    1280,    7372800,  1280,    14745600, 1280,    819200,   640,     640,      1280,    1280,
    1280,    1638400,  1280,    14745600, 1280,    14745600, 1280,    1280,     1280,    1280,
    1280,    1638400,  1280,    14745600, 1280,    14745600, 1280,    1280,     1280,    1280,
    1280,    1638400,  1280,    14745600, 1280,    14745600, 1280,    1280,     1280,    1280,
    1280,    1638400,  1280,    1280,     1280,    1638400,  1280,    1638400,  1638400, 1280,
    1638400, 1638400,  1638400, 1310720,  1280,    1638400,  1638400, 1310720,  10240,   13107200,
    1280,    6553600,  1280,    1280,     1280,    1280,     1280,    1280,     1280,    14745600,
    1280,    14745600, 1280,    1280,     1280,    1280,     1280,    1638400,  1280,    14745600,
    1280,    14745600, 1280,    1280,     1280,    1280,     1280,    1638400,  1280,    409600,
    1280,    1638400,  1280,    29491200, 1280,    14745600, 1280,    3276800,  2560,    2560,
    1280,    1280,     1280,    1638400,  1280,    29491200, 1280,    14745600, 1280,    3276800,
    2560,    2560,     1280,    1280,     1280,    1638400,  1280,    29491200, 1280,    14745600,
    1280,    3276800,  2560,    2560,     1280,    1280,     1280,    1638400,  1280,    14745600,
    1280,    1280,     1280,    1638400,  1280,    1638400,  1638400, 1280,     1638400, 1638400,
    1638400, 1310720,  1280,    1638400,  1638400, 1310720,  10240,   13107200, 1280,    6553600,
    1280,    1280,     1280,    1280,     1280,    1280,     1280,    1280,     1280,    1638400,
    1280,    1638400,  1638400, 1280,     1638400, 1638400,  1638400, 1310720,  1280,    1638400,
    1638400, 1310720,  10240,   13107200, 1280,    6553600,  1280,    1280,     1280,    1280,
    1280,    1280,     1280,    1280,     1280,    1638400,  1280,    1638400,  1638400, 1280,
    1638400, 1638400,  1638400, 1310720,  1280,    1638400,  1638400, 1310720,  10240,   13107200,
    1280,    6553600,  1280,    1280,     1280,    1280,     1280,    1280,     1280,    29491200,
    1280,    14745600, 1280,    3276800,  2560,    2560,     1280,    1280,     1280,    1638400,
    1280,    29491200, 1280,    14745600, 1280,    3276800,  2560,    2560,     1280,    1280,
    1280,    1638400,  1280,    22118400, 1280,    14745600, 1280,    2457600,  1920,    1920,
    1280,    1280,     1280,    1638400,  1280,    14745600, 640,     640,      640,     409600,
    640,     409600,   409600,  640,      409600,  409600,   409600,  655360,   640,     409600,
    409600,  655360,   5120,    3276800,  640,     1638400,  640,     640,      640,     640,
    640,     640,      640,     640,      640,     409600,   640,     409600,   409600,  640,
    409600,  409600,   409600,  655360,   640,     409600,   409600,  655360,   5120,    3276800,
    640,     1638400,  640,     640,      640,     640,      640,     640,      640,     640,
    640,     409600,   640,     409600,   409600,  640,      409600,  409600,   409600,  655360,
    640,     409600,   409600,  655360,   5120,    3276800,  640,     1638400,  640,     640,
    640,     640,      640,     640,      640,     11059200, 640,     3686400,  640,     1228800,
    1920,    1920,     640,     640,      640,     819200,   640,     7372800,  640,     3686400,
    640,     819200,   1280,    1280,     640,     640,      640,     819200,   640,     5529600,
    640,     3686400,  640,     614400,   960,     960,      640,     640,      640,     819200,
    640,     3686400,  320,     320,      320,     102400,   320,     102400,   102400,  320,
    102400,  102400,   102400,  327680,   320,     102400,   102400,  327680,   2560,    819200,
    320,     409600,   320,     320,      320,     320,      320,     320,      320,     320,
    320,     102400,   320,     102400,   102400,  320,      102400,  102400,   102400,  327680,
    320,     102400,   102400,  327680,   2560,    819200,   320,     409600,   320,     320,
    320,     320,      320,     320,      320,     320,      320,     102400,   320,     102400,
    102400,  320,      102400,  102400,   102400,  327680,   320,     102400,   102400,  327680,
    2560,    819200,   320,     409600,   320,     320,      320,     320,      320,     320,
    320,     2764800,  320,     921600,   320,     307200,   960,     960,      320,     320,
    320,     409600,   320,     1843200,  320,     921600,   320,     204800,   640,     640,
    320,     320,      320,     409600,   320,     1843200,  320,     921600,   320,     204800,
    640,     640,      320,     320,      320,     409600,
};

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- bandwidth baseline: same bytes, trivial arithmetic ---- */
struct bw {
  int64_t *acc;
  const uint16_t *src;
  void *out;
  size_t out_size;
  int64_t lo, hi;
};
#pragma GCC push_options
#pragma GCC optimize("O3")
static void *bw_worker(void *arg) {
  struct bw *b = arg;
  int64_t *restrict acc = b->acc;
  const uint16_t *restrict src = b->src;
  if (b->out_size == 2) {
    uint16_t *restrict out = b->out;
    for (int64_t i = b->lo; i < b->hi; i++) {
      acc[i] += (int64_t)src[i];
      out[i] = (uint16_t)acc[i];
    }
  } else {
    uint32_t *restrict out = b->out;
    for (int64_t i = b->lo; i < b->hi; i++) {
      acc[i] += (int64_t)src[i];
      out[i] = (uint32_t)acc[i];
    }
  }
  return NULL;
}
#pragma GCC pop_options

static double bw_run(int64_t *acc, const uint16_t *src, void *out, size_t osz, int64_t n) {
  struct bw w[2] = {{acc, src, out, osz, 0, n / 2}, {acc, src, out, osz, n / 2, n}};
  pthread_t th;
  double t0 = now_ms();
  pthread_create(&th, NULL, bw_worker, &w[1]);
  bw_worker(&w[0]);
  pthread_join(th, NULL);
  return now_ms() - t0;
}

struct hw {
  const int64_t *acc;
  int64_t lo, hi;
};
static void *hash_worker(void *arg) {
  struct hw *h = arg;
  uint8_t d[32];
  const struct soup_backend *be = soup_backend_cpu();
  for (int64_t off = h->lo; off < h->hi; off += 1 << 24) {
    int64_t m = h->hi - off < (1 << 24) ? h->hi - off : (1 << 24);
    be->hash(h->acc + off, m, d);
  }
  return NULL;
}

/* The fused accumulate + materialize kernel alone (no SHA-256), 2 threads. */
struct kw {
  int64_t *acc;
  const struct soup_view *v;
  void *out;
  enum dtype infer;
  int t0, t1; /* tensor range */
  int64_t kq;
  int64_t off; /* parameter offset of tensor t0 */
};
static void *kernel_worker(void *arg) {
  struct kw *k = arg;
  const struct soup_backend *be = soup_backend_cpu();
  int64_t off = k->off;
  for (int t = k->t0; t < k->t1; t++) {
    int64_t n = k->v[t].shape[0];
    be->accumulate(k->acc + off, k->v[t].data, DT_F16, n, 30, k->kq,
                   (char *)k->out + (size_t)off * dtype_size(k->infer), k->infer, 65536, NULL);
    off += n;
  }
  return NULL;
}
static double kernel_run(int64_t *acc, const struct soup_view *v, int nt, void *out,
                         enum dtype infer, int64_t params, int64_t kq) {
  int mid = 0;
  int64_t half = 0;
  while (mid < nt && half < params / 2) half += v[mid++].shape[0];
  struct kw w[2] = {{acc, v, out, infer, 0, mid, kq, 0}, {acc, v, out, infer, mid, nt, kq, half}};
  pthread_t th;
  double t0 = now_ms();
  pthread_create(&th, NULL, kernel_worker, &w[1]);
  kernel_worker(&w[0]);
  pthread_join(th, NULL);
  return now_ms() - t0;
}

int main(int argc, char **argv) {
  double scale = argc > 1 ? atof(argv[1]) : 1.0;
  const char *inf = argc > 2 ? argv[2] : "f16";
  int runs = argc > 3 ? atoi(argv[3]) : 3;
  enum dtype infer = strcmp(inf, "f32") == 0 ? DT_F32 : strcmp(inf, "bf16") == 0 ? DT_BF16 : DT_F16;
  if (runs < 1 || runs > 50 || !(scale > 0 && scale <= 1.0)) {
    fprintf(stderr, "usage: %s [scale in (0,1]] [f16|f32|bf16] [runs]\n", argv[0]);
    return 2;
  }
  log_set_level(LOG_WARN);
  enum { NT = 686 };
  int64_t numel[NT], params = 0;
  for (int i = 0; i < NT; i++) {
    numel[i] = (int64_t)(sd21_numel[i] * scale + 0.5);
    if (numel[i] < 1) numel[i] = 1;
    params += numel[i];
  }
  size_t osz = dtype_size(infer);
  printf("soup update benchmark: %lld parameters (scale %.3f of SD2.1's 865,910,724), %d tensors,"
         " F16 shard, %s inference copies, %d runs, 2 threads\n",
         (long long)params, scale, NT, dtype_name(infer), runs);
  printf("memory: accumulator %.2f GB + shard %.2f GB + 2 copies %.2f GB\n", params * 8e-9,
         params * 2e-9, params * 2e-9 * (double)osz);

  /* synthetic shard: F16 values ~ +-[2^-12, 2^-1) with random mantissas */
  uint16_t *shard = malloc((size_t)params * 2);
  struct soup_view *v = calloc(NT, sizeof *v);
  char(*names)[32] = calloc(NT, 32);
  if (!shard || !v || !names) {
    fprintf(stderr, "out of memory\n");
    return 1;
  }
  uint64_t x = 88172645463325252ull;
  for (int64_t i = 0; i < params; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    uint16_t e = (uint16_t)(3 + (x >> 40) % 11); /* exponent field 3..13 */
    shard[i] = (uint16_t)(((x >> 20) & 0x8000) | (e << 10) | (x & 0x3ff));
  }
  int64_t off = 0;
  for (int i = 0; i < NT; i++) {
    snprintf(names[i], 32, "t%03d", i);
    v[i].name = names[i];
    v[i].dtype = ST_F16;
    v[i].ndim = 1;
    v[i].shape[0] = numel[i];
    v[i].data = shard + off;
    off += numel[i];
  }

  /* (a) bandwidth baseline first (its buffers are freed before the soup exists) */
  double bwt[50], ht[50], kt[50], t0;
  {
    int64_t *acc = calloc((size_t)params, 8);
    void *out = calloc((size_t)params, osz);
    if (!acc || !out) {
      fprintf(stderr, "out of memory for the baseline (run with a smaller scale)\n");
      return 1;
    }
    bw_run(acc, shard, out, osz, params); /* fault the pages in */
    for (int r = 0; r < runs; r++) bwt[r] = bw_run(acc, shard, out, osz, params);
    for (int r = 0; r < runs; r++) {
      struct hw h[2] = {{acc, 0, params / 2}, {acc, params / 2, params}};
      pthread_t th;
      t0 = now_ms();
      pthread_create(&th, NULL, hash_worker, &h[1]);
      hash_worker(&h[0]);
      pthread_join(th, NULL);
      ht[r] = now_ms() - t0;
    }
    for (int r = 0; r < runs; r++)
      kt[r] = kernel_run(acc, v, NT, out, infer, params, r % 2 ? -65536 : 65536);
    free(acc);
    free(out);
  }
  char *err = NULL;
  struct soup *s = NULL;
  t0 = now_ms();
  if (soup_new_views(v, NT, soup_backend_cpu(), infer, &s, &err)) {
    fprintf(stderr, "soup_new: %s\n", err);
    return 1;
  }
  printf("soup_new (scan base, hash zero accumulator, convert base): %.0f ms\n", now_ms() - t0);

  /* register / withdraw with n shards active (the same shard held n - 1 times
   * in the background). Levels are interleaved within each run so that load
   * from other processes spreads over all n alike; moving between levels
   * uses soup_accumulate (one pass) + soup_materialize_spare, untimed. */
  double reg[3][50], wd[3][50], val[50], reg_med[3], wd_med[3];
  const int levels[3] = {1, 2, 8};
  int active = 0;
  uint64_t ver = 1;
  for (int r = 0; r < runs; r++) {
    for (int l = 0; l < 3; l++) {
      int delta = levels[l] - 1 - active;
      if (delta) {
        if (soup_accumulate(s, v, NT, (int64_t)delta * 65536, &err) ||
            soup_materialize_spare(s, &err) || soup_switch(s, ver++, &err))
          goto fail;
        active += delta;
      }
      struct soup_stats st;
      t0 = now_ms();
      if (soup_apply(s, v, NT, 65536, &err) || soup_switch(s, ver++, &err)) goto fail;
      reg[l][r] = now_ms() - t0;
      soup_stats_get(s, &st);
      if (l == 0) val[r] = st.last_validate_ms;
      t0 = now_ms();
      if (soup_apply(s, v, NT, -65536, &err) || soup_switch(s, ver++, &err)) goto fail;
      wd[l][r] = now_ms() - t0;
    }
  }
  for (int l = 0; l < 3; l++) {
    reg_med[l] = median(reg[l], runs);
    wd_med[l] = median(wd[l], runs);
  }
  double val_med = median(val, runs);

  double bw_med = median(bwt, runs), h_med = median(ht, runs), k_med = median(kt, runs);
  double bytes = (double)params * (2 + 16 + (double)osz);

  /* (b) re-average from scratch: n sources (the same shard n times) */
  double rb_med[3];
  for (int l = 0; l < 3; l++) {
    struct soup_source src[8];
    for (int j = 0; j < levels[l]; j++) src[j] = (struct soup_source){v, NT, 65536};
    double rt[50];
    char hex[65];
    for (int r = 0; r < runs; r++) {
      t0 = now_ms();
      if (soup_rebuild_hash(s, src, (size_t)levels[l], hex, &err)) goto fail;
      rt[r] = now_ms() - t0;
    }
    rb_med[l] = median(rt, runs);
  }

  printf("\n(a) bandwidth baseline (read shard, r/w int64 acc, write %s copy; %.1f GB): %.0f ms "
         "= %.1f GB/s\n",
         dtype_name(infer), bytes * 1e-9, bw_med, bytes / bw_med * 1e-6);
  printf("    SHA-256 of the whole accumulator alone (2 threads): %.0f ms = %.1f GB/s\n", h_med,
         params * 8.0 / h_med * 1e-6);
  printf("    fused accumulate+materialize kernel without SHA-256 (2 threads): %.0f ms = %.2f x "
         "baseline\n",
         k_med, k_med / bw_med);
  printf("    validation pass inside register (n=1): %.0f ms\n", val_med);
  printf("\n%-8s %14s %14s %16s %16s\n", "active n", "register ms", "withdraw ms", "reg/baseline",
         "reg/(base+sha)");
  for (int l = 0; l < 3; l++)
    printf("%-8d %14.0f %14.0f %16.2f %16.2f\n", levels[l], reg_med[l], wd_med[l],
           reg_med[l] / bw_med, reg_med[l] / (bw_med + h_med));
  printf("\n(b) re-average from scratch (rebuild: n shard passes + hash, shards in memory)\n");
  printf("%-8s %14s %22s\n", "n", "rebuild ms", "rebuild/register(n)");
  for (int l = 0; l < 3; l++)
    printf("%-8d %14.0f %22.2f\n", levels[l], rb_med[l], rb_med[l] / reg_med[l]);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("\npeak RSS %.2f GB\n", ru.ru_maxrss / 1e6);
  soup_free(s);
  free(shard);
  free(v);
  free(names);
  return 0;
fail:
  fprintf(stderr, "error: %s\n", err ? err : "?");
  return 1;
}
