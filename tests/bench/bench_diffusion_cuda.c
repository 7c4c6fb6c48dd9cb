/* bench_diffusion_cuda.c: GPU benchmarks of the CUDA backend (built with the
 * bench_*.c glob; needs a CUDA device at run time, exits 2 without one).
 *
 *   bench_diffusion_cuda unet [--runs N] [--dir UNET_DIR --inputs IN --out OUT]
 *   bench_diffusion_cuda soup [--runs N] [--params N] [--cpu]
 *
 * unet: one UNet forward (batch 2, latent 64x64, 77 context tokens) timed
 * with a synchronize after each run. Without --dir the model is the SD2.1
 * architecture (block_out_channels 320/640/1280/1280, head dims 5/10/20/20
 * heads, cross_attention_dim 1024, linear projections, 32 groups; the other
 * keys from the tiny-sd2 fixture config) with random F16 weights written to
 * a temporary safetensors file and loaded from it. With --dir/--inputs/--out
 * it loads that folder and the inputs (as bench_diffusion_unet) and writes
 * "out" (tests/bench/gpu/unet_gpu_vs_torch.py uses this to compare with
 * diffusers on the same GPU). Prints run_ms per run and median_ms.
 * soup: a soup update of an SD2.1-size shard (865,910,724 F16 parameters by
 * default) with soup_backend_cuda(): first the host->device copy of the
 * shard alone (pageable cudaMemcpy: the baseline any update pays), then
 * accumulate (add), the fused update as the engine runs it (accumulate +
 * materialize F16 + SHA-256), materialize alone and hash alone. Prints the
 * medians and each one's ratio to the copy. --cpu also times the fused
 * update on soup_backend_cpu() once (needs ~9 GB of host memory).
 * Never fails on a time.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "diffusion/unet.h"
#include "formats/safetensors.h"
#include "kernels/soup_backend.h"
#ifdef SOUPD_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/backend_cuda.h"
#endif

#ifdef SOUPD_SOURCE_DIR
#define SOUPD_SOURCE_DIR_FALLBACK SOUPD_SOURCE_DIR
#else
#define SOUPD_SOURCE_DIR_FALLBACK "."
#endif

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *t, int n) {
  qsort(t, (size_t)n, sizeof *t, cmp_d);
  return t[n / 2];
}

static uint64_t rng = 0x243f6a8885a308d3ull;
static uint64_t next_u64(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}
/* a random F16 weight in about [-0.06, 0.06] (exponent <= 2^-5) */
static uint16_t rand_f16(void) {
  uint64_t r = next_u64();
  uint16_t e = (uint16_t)(r % 10 + 1); /* 2^-14 .. 2^-5 */
  return (uint16_t)(((r >> 8) & 0x83ff) | (e << 10));
}

static const char *opt(int argc, char **argv, const char *name, const char *def) {
  for (int i = 2; i + 1 < argc; i++)
    if (strcmp(argv[i], name) == 0) return argv[i + 1];
  return def;
}
static int flag(int argc, char **argv, const char *name) {
  for (int i = 2; i < argc; i++)
    if (strcmp(argv[i], name) == 0) return 1;
  return 0;
}

#ifdef SOUPD_HAVE_CUDA
static json_t *ints(int a, int b, int c, int d) {
  return json_pack("[iiii]", a, b, c, d);
}

/* the SD2.1 UNet config over the tiny-sd2 fixture's */
static json_t *sd21_config(char **err) {
  char path[1024];
  const char *root = getenv("SOUPD_SOURCE_DIR");
  snprintf(path, sizeof path, "%s/tests/fixtures/tiny-sd2/unet/config.json",
           root ? root : SOUPD_SOURCE_DIR_FALLBACK);
  json_error_t je;
  json_t *c = json_load_file(path, 0, &je);
  if (!c) {
    *err = strdup("cannot read tests/fixtures/tiny-sd2/unet/config.json (set SOUPD_SOURCE_DIR)");
    return NULL;
  }
  json_object_set_new(c, "block_out_channels", ints(320, 640, 1280, 1280));
  json_object_set_new(c, "attention_head_dim", ints(5, 10, 20, 20));
  json_object_set_new(c, "down_block_types",
                      json_pack("[ssss]", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                "CrossAttnDownBlock2D", "DownBlock2D"));
  json_object_set_new(c, "up_block_types",
                      json_pack("[ssss]", "UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                "CrossAttnUpBlock2D"));
  json_object_set_new(c, "cross_attention_dim", json_integer(1024));
  json_object_set_new(c, "layers_per_block", json_integer(2));
  json_object_set_new(c, "norm_num_groups", json_integer(32));
  json_object_set_new(c, "use_linear_projection", json_true());
  json_object_set_new(c, "sample_size", json_integer(64));
  return c;
}

/* random F16 weights for every parameter of u, written to path */
static int write_random_weights(struct unet *u, const char *path, char **err) {
  int n = unet_param_count(u);
  struct st_write_tensor *w = calloc((size_t)n, sizeof *w);
  int64_t(*shapes)[4] = calloc((size_t)n, sizeof *shapes);
  void **data = calloc((size_t)n, sizeof *data);
  int rc = -1;
  int64_t total = 0;
  if (!w || !shapes || !data) goto out;
  for (int i = 0; i < n; i++) {
    int nd = 0;
    const char *name = unet_param_info(u, i, &nd, shapes[i]);
    int64_t m = 1;
    for (int d = 0; d < nd; d++) m *= shapes[i][d];
    uint16_t *p = malloc((size_t)(m ? m : 1) * 2);
    if (!p) goto out;
    for (int64_t k = 0; k < m; k++) p[k] = rand_f16();
    data[i] = p;
    w[i] = (struct st_write_tensor){name, ST_F16, nd, shapes[i], p};
    total += m;
  }
  printf("params %lld (F16, random)\n", (long long)total);
  rc = st_write(path, w, (size_t)n, NULL, err);
out:
  for (int i = 0; data && i < n; i++) free(data[i]);
  free(data);
  free(shapes);
  free(w);
  return rc;
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

static int bench_unet(int argc, char **argv) {
  int runs = atoi(opt(argc, argv, "--runs", "10"));
  if (runs < 1 || runs > 1000) runs = 10;
  const char *dir = opt(argc, argv, "--dir", NULL), *inputs = opt(argc, argv, "--inputs", NULL);
  const char *outp = opt(argc, argv, "--out", NULL);
  char *err = NULL;
  struct backend *be = backend_cuda_new(0, &err);
  if (!be) {
    fprintf(stderr, "bench: %s\n", err);
    free(err);
    return 2;
  }
  struct unet *u = NULL;
  struct st_file *in = NULL;
  json_t *cfg = NULL;
  int rc = 1;
  double *times = calloc((size_t)runs, sizeof *times);
  struct tensor x = {0}, ctx = {0}, out = {0};
  float *host = NULL, *tsbuf = NULL;
  const float *ts = NULL;
  char tmp[] = "/tmp/soupd-bench-unet-XXXXXX";
  int tmpfd = -1;
  double t0 = now_s();
  if (dir) {
    if (unet_load(dir, be, &u, &err)) goto done;
  } else {
    if (!(cfg = sd21_config(&err)) || unet_new(cfg, be, &u, &err)) goto done;
    if ((tmpfd = mkstemp(tmp)) < 0) {
      err = strdup("mkstemp failed");
      goto done;
    }
    if (write_random_weights(u, tmp, &err) || unet_load_weights(u, tmp, &err)) goto done;
  }
  printf("device %s load_s %.3f\n", be_name(be), now_s() - t0);
  if (inputs) {
    if (st_open(inputs, &in, &err)) goto done;
    const struct st_tensor *t = st_find(in, "timesteps");
    if (!t || t->dtype != ST_F32 || upload_input(be, in, "sample", &x) ||
        upload_input(be, in, "encoder_hidden_states", &ctx))
      goto done;
    ts = t->data;
  } else {
    int64_t xs[4] = {2, unet_in_channels(u), 64, 64}, cs[3] = {2, 77, unet_cross_attention_dim(u)};
    int64_t nx = xs[0] * xs[1] * xs[2] * xs[3], nc = cs[0] * cs[1] * cs[2];
    host = malloc((size_t)(nx > nc ? nx : nc) * 4);
    tsbuf = malloc(2 * sizeof *tsbuf);
    if (!host || !tsbuf) goto done;
    tsbuf[0] = 999.0f;
    tsbuf[1] = 500.0f;
    ts = tsbuf;
    for (int64_t i = 0; i < nx; i++) host[i] = (float)((double)(next_u64() >> 11) * 0x1p-52 - 1.0);
    if (be_tensor_alloc(be, &x, DT_F32, 4, xs) || be_upload(be, &x, host, DT_F32)) goto done;
    for (int64_t i = 0; i < nc; i++) host[i] = (float)((double)(next_u64() >> 11) * 0x1p-52 - 1.0);
    if (be_tensor_alloc(be, &ctx, DT_F32, 3, cs) || be_upload(be, &ctx, host, DT_F32)) goto done;
    free(host);
    host = NULL;
  }
  int64_t os[4] = {x.shape[0], unet_out_channels(u), x.shape[2], x.shape[3]};
  if (be_tensor_alloc(be, &out, DT_F32, 4, os)) goto done;
  for (int w = 0; w < 2; w++) /* warm-up: algorithm choice, allocator */
    if (unet_forward(u, &out, &x, ts, &ctx, &err) || be_synchronize(be)) goto done;
  for (int r = 0; r < runs; r++) {
    t0 = now_s();
    if (unet_forward(u, &out, &x, ts, &ctx, &err) || be_synchronize(be)) goto done;
    times[r] = now_s() - t0;
    printf("run_ms %.2f\n", 1e3 * times[r]);
  }
  printf("median_ms %.2f (unet forward, batch %lld, latent %lldx%lld, %s)\n",
         1e3 * median(times, runs), (long long)x.shape[0], (long long)x.shape[2],
         (long long)x.shape[3], be_name(be));
  if (outp) {
    int64_t n = tensor_numel(&out);
    host = malloc((size_t)n * 4);
    if (!host || be_download_f32(be, &out, host)) goto done;
    struct st_write_tensor wt = {"out", ST_F32, 4, out.shape, host};
    if (st_write(outp, &wt, 1, NULL, &err)) goto done;
  }
  rc = 0;
done:
  if (rc) fprintf(stderr, "bench: %s\n", err ? err : be_last_error(be));
  if (tmpfd >= 0) {
    close(tmpfd);
    unlink(tmp);
  }
  free(err);
  free(host);
  free(tsbuf);
  free(times);
  json_decref(cfg);
  if (x.data) be_tensor_free(be, &x);
  if (ctx.data) be_tensor_free(be, &ctx);
  if (out.data) be_tensor_free(be, &out);
  unet_free(u);
  st_close(in);
  be_destroy(be);
  return rc;
}

static int bench_soup(int argc, char **argv) {
  int runs = atoi(opt(argc, argv, "--runs", "3"));
  if (runs < 1 || runs > 100) runs = 3;
  int64_t n = atoll(opt(argc, argv, "--params", "865910724"));
  const struct soup_backend *sb = soup_backend_cuda();
  if (!sb) {
    fprintf(stderr, "bench: soup_backend_cuda() is NULL (no device)\n");
    return 2;
  }
  const int F = 20;
  uint16_t *shard = malloc((size_t)n * 2);
  int64_t *acc = sb->alloc((size_t)n * 8);
  void *out = sb->alloc((size_t)n * 2), *dev16 = sb->alloc((size_t)n * 2);
  double *t = calloc((size_t)runs, sizeof *t), copy_ms, r_ms;
  uint8_t digest[32];
  int rc = 1;
  if (!shard || !acc || !out || !dev16 || !t) {
    fprintf(stderr, "bench: out of memory for %lld params\n", (long long)n);
    goto done;
  }
  for (int64_t i = 0; i < n; i++) shard[i] = rand_f16();
  printf("soup: %lld F16 params (%.2f GB shard, %.2f GB accumulator) on %s\n", (long long)n,
         (double)n * 2 / 1e9, (double)n * 8 / 1e9, sb->name);
  for (int r = 0; r < runs; r++) {
    double t0 = now_s();
    if (cudaMemcpy(dev16, shard, (size_t)n * 2, cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaDeviceSynchronize() != cudaSuccess)
      goto done;
    t[r] = now_s() - t0;
  }
  copy_ms = 1e3 * median(t, runs);
  printf("h2d_copy_ms %.1f (%.1f GB/s, pageable cudaMemcpy: the baseline)\n", copy_ms,
         (double)n * 2 / 1e6 / copy_ms);
#define TIME(label, call)                                                                          \
  do {                                                                                             \
    for (int r_ = 0; r_ < runs; r_++) {                                                            \
      double t0_ = now_s();                                                                        \
      if (call) {                                                                                  \
        fprintf(stderr, "bench: %s failed\n", label);                                              \
        goto done;                                                                                 \
      }                                                                                            \
      t[r_] = now_s() - t0_;                                                                       \
    }                                                                                              \
    r_ms = 1e3 * median(t, runs);                                                                  \
    printf("%-34s %9.1f ms  ratio to copy %.2f\n", label, r_ms, r_ms / copy_ms);                   \
  } while (0)
  /* kq alternates +1/-1 so the accumulator stays bounded over the runs */
  int sign = 1;
  TIME("accumulate (add only)",
       (sign = -sign, sb->accumulate(acc, shard, DT_F16, n, F, sign, NULL, DT_F16, 0, NULL)));
  TIME("update (acc + materialize + hash)",
       (sign = -sign, sb->accumulate(acc, shard, DT_F16, n, F, sign, out, DT_F16, 1, digest)));
  TIME("materialize F16", sb->materialize(out, DT_F16, acc, n, F, 3));
  TIME("hash", sb->hash(acc, n, digest));
  TIME("convert F16 -> F16 (base upload)", sb->convert(out, DT_F16, shard, DT_F16, n));
  if (flag(argc, argv, "--cpu")) {
    const struct soup_backend *cb = soup_backend_cpu();
    int64_t *hacc = cb->alloc((size_t)n * 8);
    void *hout = cb->alloc((size_t)n * 2);
    if (hacc && hout) {
      double t0 = now_s();
      cb->accumulate(hacc, shard, DT_F16, n, F, 1, hout, DT_F16, 1, digest);
      double ms = 1e3 * (now_s() - t0);
      printf("%-34s %9.1f ms  ratio to copy %.2f (1 run, single host thread)\n", "cpu update", ms,
             ms / copy_ms);
    }
    cb->free(hacc);
    cb->free(hout);
  }
  rc = 0;
done:
  free(shard);
  free(t);
  sb->free(acc);
  sb->free(out);
  sb->free(dev16);
  return rc;
}
#endif

int main(int argc, char **argv) {
  if (argc < 2 || (strcmp(argv[1], "unet") != 0 && strcmp(argv[1], "soup") != 0)) {
    fprintf(stderr, "usage: %s unet|soup [options] (see the file's header)\n", argv[0]);
    return 2;
  }
#ifdef SOUPD_HAVE_CUDA
  if (backend_cuda_device_count() == 0) {
    fprintf(stderr, "bench: no CUDA device\n");
    return 2;
  }
  return strcmp(argv[1], "unet") == 0 ? bench_unet(argc, argv) : bench_soup(argc, argv);
#else
  (void)opt;
  (void)flag;
  (void)median;
  (void)rand_f16;
  (void)now_s;
  fprintf(stderr, "bench: built without the CUDA backend\n");
  return 2;
#endif
}
