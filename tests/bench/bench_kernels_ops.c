/* bench_kernels_ops.c: speed of the CPU backend's heavy ops at the sizes of
 * an SD2.1-structured UNet with channels / 4 at a 64x64 latent (batch 2),
 * against a plain multithreaded cblas_sgemm of equal flops in this program.
 *
 * Usage: bench_kernels_ops [threads] [repeats] [name filter]. Prints, per op, the median
 * time, GFLOP/s and the ratio to the sgemm baseline (1.0 = as fast as
 * OpenBLAS on a square GEMM of the same work), then memory-bound ops in ms.
 * On a shared machine set BENCH_CPU_TIME=1 to time with process CPU time
 * (summed over threads; robust to other processes taking the cores).
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels/backend.h"

static int g_cpu_clock; /* BENCH_CPU_TIME=1: process CPU time instead of wall time */

static double now(void) {
  struct timespec ts;
  clock_gettime(g_cpu_clock ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int g_repeats = 5, g_threads = 2;
static const char *g_filter; /* run only ops whose name contains this */

typedef int (*bench_fn)(void *ctx);

static double median_time(bench_fn fn, void *ctx) {
  double t[64];
  int r = g_repeats < 64 ? g_repeats : 64;
  if (fn(ctx) != 0) return -1; /* warm-up */
  for (int i = 0; i < r; i++) {
    double t0 = now();
    if (fn(ctx) != 0) return -1;
    t[i] = now() - t0;
  }
  qsort(t, (size_t)r, sizeof *t, cmp_d);
  return t[r / 2];
}

struct sgemm_ctx {
  int M, N, K;
  float *a, *b, *c;
};

static int run_sgemm(void *p) {
  struct sgemm_ctx *s = p;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->M, s->N, s->K, 1.0f, s->a, s->K, s->b,
              s->N, 0.0f, s->c, s->N);
  return 0;
}

/* GFLOP/s of an sgemm with M = N = 1024 and K chosen for the given flops */
static double baseline_gflops(double flops) {
  struct sgemm_ctx s = {1024, 1024, (int)(flops / (2.0 * 1024 * 1024) + 0.5), 0, 0, 0};
  if (s.K < 16) s.K = 16;
  s.a = calloc((size_t)s.M * s.K, 4), s.b = calloc((size_t)s.K * s.N, 4);
  s.c = calloc((size_t)s.M * s.N, 4);
  openblas_set_num_threads(g_threads);
  double t = median_time(run_sgemm, &s);
  openblas_set_num_threads(1); /* as the CPU backend keeps it */
  usleep(300000); /* let OpenBLAS's workers stop spinning before the next op is timed */
  free(s.a), free(s.b), free(s.c);
  return 2.0 * s.M * s.N * (double)s.K / t * 1e-9;
}

struct op_ctx {
  struct backend *be;
  struct tensor out, a, b, c, d;
  int kind, heads, stride, pad;
};

static int run_op(void *p) {
  struct op_ctx *o = p;
  struct backend *be = o->be;
  switch (o->kind) {
  case 0:
    return be_conv2d(be, &o->out, &o->a, &o->b, &o->c, o->stride, o->pad);
  case 1:
    return be_linear(be, &o->out, &o->a, &o->b, &o->c);
  case 2:
    return be_attention(be, &o->out, &o->a, &o->b, &o->c, o->heads, 0.125f, 0);
  case 3:
    return be_group_norm(be, &o->out, &o->a, &o->b, &o->c, o->heads, 1e-5f, 1);
  case 4:
    return be_layer_norm(be, &o->out, &o->a, &o->b, &o->c, 1e-5f);
  case 5:
    return be_geglu(be, &o->out, &o->a);
  case 6:
    return be_unary(be, &o->out, &o->a, UNARY_SILU);
  case 7:
    return be_permute(be, &o->out, &o->a, (const int[]){0, 2, 3, 1});
  default:
    return -1;
  }
}

static void mk(struct backend *be, struct tensor *t, enum dtype dt, int nd, int64_t a, int64_t b,
               int64_t c, int64_t d) {
  int64_t s[4] = {a, b, c, d};
  if (be_tensor_alloc(be, t, dt, nd, s) != 0) abort();
  size_t n = tensor_numel(t);
  float *v = malloc(n * 4);
  for (size_t i = 0; i < n; i++) v[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
  if (be_upload(be, t, v, DT_F32) != 0) abort();
  free(v);
}

static void report(const char *name, struct op_ctx *o, double flops) {
  if (g_filter && !strstr(name, g_filter)) return;
  double t = median_time(run_op, o);
  if (t < 0) {
    printf("%-44s FAILED: %s\n", name, be_last_error(o->be));
    return;
  }
  if (flops > 0) {
    double g = flops / t * 1e-9, base = baseline_gflops(flops);
    printf("%-44s %8.2f ms %7.1f GFLOP/s  sgemm %6.1f GFLOP/s  ratio %.2f\n", name, t * 1e3, g,
           base, g / base);
  } else {
    printf("%-44s %8.2f ms\n", name, t * 1e3);
  }
  fflush(stdout);
}

static void free_all(struct op_ctx *o) {
  struct backend *be = o->be;
  be_tensor_free(be, &o->out), be_tensor_free(be, &o->a), be_tensor_free(be, &o->b);
  be_tensor_free(be, &o->c), be_tensor_free(be, &o->d);
}

int main(int argc, char **argv) {
  if (argc > 1) g_threads = atoi(argv[1]);
  if (argc > 2) g_repeats = atoi(argv[2]);
  if (argc > 3) g_filter = argv[3];
  g_cpu_clock = getenv("BENCH_CPU_TIME") && atoi(getenv("BENCH_CPU_TIME"));
  struct backend *be = backend_cpu_new(g_threads);
  if (!be) return 1;
  printf("CPU backend, %d threads, median of %d, %s time; OpenBLAS %s\n", g_threads, g_repeats,
         g_cpu_clock ? "CPU" : "wall", openblas_get_config());
  baseline_gflops(2e9); /* warm-up: clocks, page faults, OpenBLAS buffers */
  const struct {
    int64_t N, Ci, H, Co, k, s;
    enum dtype wdt;
  } convs[] = {
      {2, 80, 64, 80, 3, 1, DT_F32},     {2, 80, 64, 80, 3, 1, DT_F16},
      {2, 160, 32, 160, 3, 1, DT_F32},   {2, 320, 16, 320, 3, 1, DT_F32},
      {2, 80, 64, 80, 3, 2, DT_F32},     {2, 240, 64, 80, 1, 1, DT_F32},
      {2, 4, 64, 80, 3, 1, DT_F32},      {2, 320, 64, 320, 3, 1, DT_F32},
      {2, 1280, 16, 1280, 3, 1, DT_F16},
  };
  for (unsigned i = 0; i < sizeof convs / sizeof *convs; i++) {
    struct op_ctx o = {.be = be, .kind = 0, .stride = (int)convs[i].s, .pad = convs[i].k / 2};
    int64_t Ho = (convs[i].H + 2 * o.pad - convs[i].k) / convs[i].s + 1;
    mk(be, &o.a, DT_F32, 4, convs[i].N, convs[i].Ci, convs[i].H, convs[i].H);
    mk(be, &o.b, convs[i].wdt, 4, convs[i].Co, convs[i].Ci, convs[i].k, convs[i].k);
    mk(be, &o.c, DT_F32, 1, convs[i].Co, 1, 1, 1);
    mk(be, &o.out, DT_F32, 4, convs[i].N, convs[i].Co, Ho, Ho);
    char name[96];
    snprintf(name, sizeof name, "conv2d %lldx%lld %lld->%lld %lldx%lld s%lld N%lld %s",
             (long long)convs[i].k, (long long)convs[i].k, (long long)convs[i].Ci,
             (long long)convs[i].Co, (long long)convs[i].H, (long long)convs[i].H,
             (long long)convs[i].s, (long long)convs[i].N, dtype_name(convs[i].wdt));
    report(name, &o,
           2.0 * convs[i].N * convs[i].Co * Ho * Ho * convs[i].Ci * convs[i].k * convs[i].k);
    free_all(&o);
  }
  const struct {
    int64_t M, In, O;
    enum dtype wdt;
  } lins[] = {{8192, 80, 80, DT_F32},  {8192, 80, 640, DT_F32},  {8192, 320, 80, DT_F32},
              {154, 1024, 80, DT_F32}, {2048, 320, 320, DT_F16}, {8192, 320, 2560, DT_F32}};
  for (unsigned i = 0; i < sizeof lins / sizeof *lins; i++) {
    struct op_ctx o = {.be = be, .kind = 1};
    mk(be, &o.a, DT_F32, 2, lins[i].M, lins[i].In, 1, 1);
    mk(be, &o.b, lins[i].wdt, 2, lins[i].O, lins[i].In, 1, 1);
    mk(be, &o.c, DT_F32, 1, lins[i].O, 1, 1, 1);
    mk(be, &o.out, DT_F32, 2, lins[i].M, lins[i].O, 1, 1);
    char name[96];
    snprintf(name, sizeof name, "linear [%lld, %lld] -> %lld %s", (long long)lins[i].M,
             (long long)lins[i].In, (long long)lins[i].O, dtype_name(lins[i].wdt));
    report(name, &o, 2.0 * lins[i].M * lins[i].In * lins[i].O);
    free_all(&o);
  }
  const struct {
    int64_t B, Lq, Lk, H, D;
  } atts[] = {{2, 4096, 4096, 5, 16},  {2, 4096, 4096, 5, 64},  {2, 4096, 77, 5, 16},
              {2, 1024, 1024, 10, 16}, {2, 1024, 77, 10, 16},   {2, 256, 256, 20, 16},
              {2, 1024, 1024, 5, 32},  {1, 4096, 4096, 1, 512}, {2, 1024, 1024, 8, 160},
              {2, 4096, 4096, 8, 40}};
  for (unsigned i = 0; i < sizeof atts / sizeof *atts; i++) {
    struct op_ctx o = {.be = be, .kind = 2, .heads = (int)atts[i].H};
    int64_t HD = atts[i].H * atts[i].D;
    mk(be, &o.a, DT_F32, 3, atts[i].B, atts[i].Lq, HD, 1);
    mk(be, &o.b, DT_F32, 3, atts[i].B, atts[i].Lk, HD, 1);
    mk(be, &o.c, DT_F32, 3, atts[i].B, atts[i].Lk, HD, 1);
    mk(be, &o.out, DT_F32, 3, atts[i].B, atts[i].Lq, HD, 1);
    char name[96];
    snprintf(name, sizeof name, "attention B%lld Lq%lld Lk%lld %lldx%lld", (long long)atts[i].B,
             (long long)atts[i].Lq, (long long)atts[i].Lk, (long long)atts[i].H,
             (long long)atts[i].D);
    report(name, &o, 4.0 * atts[i].B * atts[i].H * atts[i].Lq * atts[i].Lk * atts[i].D);
    free_all(&o);
  }
  {
    struct op_ctx o = {.be = be, .kind = 3, .heads = 16};
    mk(be, &o.a, DT_F32, 4, 2, 80, 64, 64);
    mk(be, &o.b, DT_F32, 1, 80, 1, 1, 1);
    mk(be, &o.c, DT_F32, 1, 80, 1, 1, 1);
    mk(be, &o.out, DT_F32, 4, 2, 80, 64, 64);
    report("group_norm+silu [2, 80, 64, 64] G16", &o, 0);
    o.kind = 6;
    report("silu [2, 80, 64, 64]", &o, 0);
    be_tensor_free(be, &o.out);
    mk(be, &o.out, DT_F32, 4, 2, 64, 64, 80);
    o.kind = 7;
    report("permute NCHW->NHWC [2, 80, 64, 64]", &o, 0);
    free_all(&o);
  }
  {
    struct op_ctx o = {.be = be, .kind = 4};
    mk(be, &o.a, DT_F32, 2, 8192, 80, 1, 1);
    mk(be, &o.b, DT_F32, 1, 80, 1, 1, 1);
    mk(be, &o.c, DT_F32, 1, 80, 1, 1, 1);
    mk(be, &o.out, DT_F32, 2, 8192, 80, 1, 1);
    report("layer_norm [8192, 80]", &o, 0);
    free_all(&o);
    o.kind = 5;
    mk(be, &o.a, DT_F32, 2, 8192, 640, 1, 1);
    mk(be, &o.out, DT_F32, 2, 8192, 320, 1, 1);
    report("geglu [8192, 640]", &o, 0);
    free_all(&o);
  }
  be_destroy(be);
  return 0;
}
