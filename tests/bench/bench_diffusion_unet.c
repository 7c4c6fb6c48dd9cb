/* bench_diffusion_unet.c: times one UNet forward on the CPU backend.
 *
 *   bench_diffusion_unet UNET_DIR INPUTS.safetensors OUT.safetensors [RUNS] [THREADS] [--profile]
 *
 * UNET_DIR holds config.json + diffusion_pytorch_model.safetensors; INPUTS
 * holds "sample" [B,4,h,w], "timesteps" [B] and "encoder_hidden_states"
 * [B,L,D] (F32). Runs one warm-up forward and RUNS timed ones, prints
 * "median_ms <x>" and every run's time, and writes the last output as "out"
 * to OUT (tests/bench/unet_vs_torch.py compares it with diffusers and prints
 * the speed ratio). --profile wraps the backend so that every op call is
 * timed (wall clock, ops are synchronous on the CPU) and prints the time per
 * op class over the timed runs. Never fails on a time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "diffusion/unet.h"
#include "formats/safetensors.h"
#include "kernels/backend_impl.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- profiling backend: forwards to g_inner, accumulates time per class ----
 * A backend of its own (kernels/backend_impl.h) whose ops call g_inner's
 * front end, so they are timed with its checks; alloc/free time g_inner's
 * own memory ops. */
enum {
  P_CONV3,
  P_CONV1,
  P_CONV_S2,
  P_LINEAR,
  P_ATTN,
  P_GNORM,
  P_LNORM,
  P_GEGLU,
  P_ELEM,
  P_LAYOUT,
  P_EMB,
  P_MEM,
  P_COUNT
};
static const char *const P_NAMES[P_COUNT] = {"conv2d 3x3",      "conv2d 1x1",
                                             "conv2d stride 2", "linear",
                                             "attention",       "group_norm",
                                             "layer_norm",      "geglu",
                                             "elementwise",     "layout (permute/concat/upsample)",
                                             "time embedding",  "alloc/free"};
static struct backend *g_inner;
static double g_t[P_COUNT];
static long g_n[P_COUNT];
static int g_on;

#define TIMED(cls, call)                                                                           \
  do {                                                                                             \
    double t0_ = now_s();                                                                          \
    int rc_ = (call);                                                                              \
    if (g_on) {                                                                                    \
      g_t[cls] += now_s() - t0_;                                                                   \
      g_n[cls]++;                                                                                  \
    }                                                                                              \
    return rc_;                                                                                    \
  } while (0)

static void *w_alloc(struct backend *be, size_t bytes) {
  double t0 = now_s();
  void *p = g_inner->ops->alloc(g_inner, bytes);
  if (g_on) {
    g_t[P_MEM] += now_s() - t0;
    g_n[P_MEM]++;
  }
  return p;
}
static void w_free(struct backend *be, void *p) {
  double t0 = now_s();
  g_inner->ops->free(g_inner, p);
  if (g_on) g_t[P_MEM] += now_s() - t0;
}
static int w_upload(struct backend *be, struct tensor *d, const void *s, enum dtype dt) {
  return be_upload(g_inner, d, s, dt);
}
static int w_download(struct backend *be, const struct tensor *s, float *d) {
  return be_download_f32(g_inner, s, d);
}
static int w_conv(struct backend *be, struct tensor *o, const struct tensor *x,
                  const struct tensor *w, const struct tensor *b, int stride, int pad) {
  int cls = stride != 1 ? P_CONV_S2 : w->shape[2] == 1 ? P_CONV1 : P_CONV3;
  TIMED(cls, be_conv2d(g_inner, o, x, w, b, stride, pad));
}
static int w_linear(struct backend *be, struct tensor *o, const struct tensor *x,
                    const struct tensor *w, const struct tensor *b) {
  TIMED(P_LINEAR, be_linear(g_inner, o, x, w, b));
}
static int w_gnorm(struct backend *be, struct tensor *o, const struct tensor *x,
                   const struct tensor *g, const struct tensor *b, int groups, float eps,
                   int silu) {
  TIMED(P_GNORM, be_group_norm(g_inner, o, x, g, b, groups, eps, silu));
}
static int w_lnorm(struct backend *be, struct tensor *o, const struct tensor *x,
                   const struct tensor *g, const struct tensor *b, float eps) {
  TIMED(P_LNORM, be_layer_norm(g_inner, o, x, g, b, eps));
}
static int w_attn(struct backend *be, struct tensor *o, const struct tensor *q,
                  const struct tensor *k, const struct tensor *v, int h, float sc, int causal) {
  TIMED(P_ATTN, be_attention(g_inner, o, q, k, v, h, sc, causal));
}
static int w_unary(struct backend *be, struct tensor *o, const struct tensor *x, enum unary_op op) {
  TIMED(P_ELEM, be_unary(g_inner, o, x, op));
}
static int w_geglu(struct backend *be, struct tensor *o, const struct tensor *x) {
  TIMED(P_GEGLU, be_geglu(g_inner, o, x));
}
static int w_add(struct backend *be, struct tensor *o, const struct tensor *a,
                 const struct tensor *b) {
  TIMED(P_ELEM, be_add(g_inner, o, a, b));
}
static int w_addc(struct backend *be, struct tensor *o, const struct tensor *a,
                  const struct tensor *b) {
  TIMED(P_ELEM, be_add_channel(g_inner, o, a, b));
}
static int w_concat(struct backend *be, struct tensor *o, const struct tensor *a,
                    const struct tensor *b) {
  TIMED(P_LAYOUT, be_concat_channels(g_inner, o, a, b));
}
static int w_up(struct backend *be, struct tensor *o, const struct tensor *x) {
  TIMED(P_LAYOUT, be_upsample_nearest(g_inner, o, x));
}
static int w_perm(struct backend *be, struct tensor *o, const struct tensor *x, const int *p) {
  TIMED(P_LAYOUT, be_permute(g_inner, o, x, p));
}
static int w_temb(struct backend *be, struct tensor *o, const float *t, int dim, int flip,
                  float shift, float maxp) {
  TIMED(P_EMB, be_timestep_embedding(g_inner, o, t, dim, flip, shift, maxp));
}
static int w_copy(struct backend *be, struct tensor *d, const struct tensor *s) {
  return be_copy(g_inner, d, s);
}
static int w_sync(struct backend *be) {
  return be_synchronize(g_inner);
}
static int w_matmul(struct backend *be, struct tensor *o, const struct tensor *a, int ta,
                    const struct tensor *b, int tb, float alpha) {
  TIMED(P_LINEAR, be_matmul(g_inner, o, a, ta, b, tb, alpha));
}
static int w_softmax(struct backend *be, struct tensor *o, const struct tensor *x) {
  TIMED(P_ELEM, be_softmax(g_inner, o, x));
}
static int w_mul(struct backend *be, struct tensor *o, const struct tensor *a,
                 const struct tensor *b) {
  TIMED(P_ELEM, be_mul(g_inner, o, a, b));
}
static int w_axpby(struct backend *be, struct tensor *o, float alpha, const struct tensor *x,
                   float beta, const struct tensor *y) {
  TIMED(P_ELEM, be_axpby(g_inner, o, alpha, x, beta, y));
}
static int w_slice(struct backend *be, struct tensor *o, const struct tensor *x, int dim,
                   int64_t start) {
  TIMED(P_LAYOUT, be_slice(g_inner, o, x, dim, start));
}
static int w_embed(struct backend *be, struct tensor *o, const int32_t *ids,
                   const struct tensor *table) {
  TIMED(P_EMB, be_embedding(g_inner, o, ids, table));
}
static void w_destroy(struct backend *be) {}

static const struct backend_ops w_ops = {
    .alloc = w_alloc,
    .free = w_free,
    .upload = w_upload,
    .download_f32 = w_download,
    .copy = w_copy,
    .synchronize = w_sync,
    .conv2d = w_conv,
    .linear = w_linear,
    .matmul = w_matmul,
    .group_norm = w_gnorm,
    .layer_norm = w_lnorm,
    .softmax = w_softmax,
    .attention = w_attn,
    .unary = w_unary,
    .geglu = w_geglu,
    .add = w_add,
    .mul = w_mul,
    .add_channel = w_addc,
    .axpby = w_axpby,
    .concat_channels = w_concat,
    .upsample_nearest = w_up,
    .permute = w_perm,
    .slice = w_slice,
    .timestep_embedding = w_temb,
    .embedding = w_embed,
    .destroy = w_destroy,
};

static struct backend *profiler_new(struct backend *inner) {
  g_inner = inner;
  return backend_new("profile", NULL, &w_ops);
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int upload_input(struct backend *be, const struct st_file *f, const char *name,
                        struct tensor *t) {
  const struct st_tensor *s = st_find(f, name);
  if (!s || s->dtype != ST_F32 || s->ndim > 4) {
    fprintf(stderr, "inputs: %s missing or not F32\n", name);
    return -1;
  }
  if (be_tensor_alloc(be, t, DT_F32, s->ndim, s->shape)) return -1;
  return be_upload(be, t, s->data, DT_F32);
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s UNET_DIR INPUTS OUT [RUNS] [THREADS] [--profile]\n", argv[0]);
    return 2;
  }
  int runs = argc > 4 ? atoi(argv[4]) : 5, threads = argc > 5 ? atoi(argv[5]) : 2;
  int profile = argc > 6 && strcmp(argv[6], "--profile") == 0;
  if (runs < 1 || runs > 1000) runs = 5;
  struct backend *cpu = backend_cpu_new(threads), *be = cpu;
  if (!cpu) return 1;
  if (profile) be = profiler_new(cpu);
  struct unet *u = NULL;
  struct st_file *in = NULL;
  char *err = NULL;
  int rc = 1;
  double *times = calloc((size_t)runs, sizeof *times);
  struct tensor x = {0}, ctx = {0}, out = {0};
  float *host = NULL;
  double t0 = now_s();
  if (unet_load(argv[1], be, &u, &err)) goto done;
  printf("load_s %.3f\n", now_s() - t0);
  if (st_open(argv[2], &in, &err)) goto done;
  const struct st_tensor *ts = st_find(in, "timesteps");
  if (!ts || ts->dtype != ST_F32 || upload_input(be, in, "sample", &x) ||
      upload_input(be, in, "encoder_hidden_states", &ctx) ||
      be_tensor_alloc(be, &out, DT_F32, 4, x.shape))
    goto done;
  if (unet_forward(u, &out, &x, ts->data, &ctx, &err)) goto done; /* warm-up */
  g_on = profile;
  for (int r = 0; r < runs; r++) {
    t0 = now_s();
    if (unet_forward(u, &out, &x, ts->data, &ctx, &err)) goto done;
    times[r] = now_s() - t0;
    printf("run_ms %.1f\n", 1e3 * times[r]);
  }
  g_on = 0;
  qsort(times, (size_t)runs, sizeof *times, cmp_d);
  printf("median_ms %.1f\n", 1e3 * times[runs / 2]);
  if (profile) {
    double tot = 0;
    for (int i = 0; i < P_COUNT; i++) tot += g_t[i];
    printf("profile (per forward, %d runs, %d threads):\n", runs, threads);
    for (int i = 0; i < P_COUNT; i++)
      if (g_n[i])
        printf("  %-34s %8.1f ms %5.1f%% %6ld calls\n", P_NAMES[i], 1e3 * g_t[i] / runs,
               100 * g_t[i] / tot, g_n[i] / runs);
  }
  int64_t n = tensor_numel(&out);
  host = malloc((size_t)n * sizeof *host);
  if (!host || be_download_f32(be, &out, host)) goto done;
  struct st_write_tensor wt = {"out", ST_F32, 4, out.shape, host};
  if (st_write(argv[3], &wt, 1, NULL, &err)) goto done;
  rc = 0;
done:
  if (rc) fprintf(stderr, "bench: %s\n", err ? err : be_last_error(cpu));
  free(err);
  free(host);
  free(times);
  if (x.data) be_tensor_free(be, &x);
  if (ctx.data) be_tensor_free(be, &ctx);
  if (out.data) be_tensor_free(be, &out);
  unet_free(u);
  st_close(in);
  be_destroy(cpu);
  return rc;
}
