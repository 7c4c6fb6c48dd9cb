/* gpu_test_util.h: shared helpers of the GPU tests (tests/gpu): the skip
 * rule, a seeded RNG, tensors uploaded to both backends from one host copy,
 * guarded outputs and the normalised error.
 *
 * Skip rule: every GPU test exits 77 (ctest: skipped) with a line on stdout
 * saying why when the build has no CUDA backend or no device is usable;
 * nothing is ever reported as passed without a GPU.
 * Guarded outputs: an output tensor is a view into a larger allocation with
 * GUARD floats before and after, filled with a sentinel bit pattern; after
 * the op the guards must still hold it (catches out-of-bounds writes).
 * Normalised error: max|gpu - cpu| / max(max|cpu|, 1e-30) over all elements,
 * after checking that the GPU output has no NaN/Inf where the CPU's is finite.
 */
#pragma once

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#ifdef SOUPD_HAVE_CUDA
#include "kernels/backend_cuda.h"
#endif

#define GPU_SKIP 77
#define GUARD 64
#define SENTINEL 0x7fa5a5a5u /* a NaN no op produces */

static int g_fail;
/* SOUPD_GPU_TEST_SELFCHECK=1: a second CPU backend stands in for the GPU, to
 * check the test harness itself on a machine without a GPU; the test then
 * still exits 77 (skipped), never 0 */
static int g_selfcheck;

static inline int gpu_test_exit(void) {
  printf("%s: %d failure(s)%s\n",
         g_fail        ? "FAILED"
         : g_selfcheck ? "SELF-CHECK OK"
                       : "PASSED",
         g_fail, g_selfcheck ? " (CPU vs CPU harness self-check, no GPU ran: exit 77)" : "");
  return g_fail ? 1 : g_selfcheck ? GPU_SKIP : 0;
}

static inline int gpu_test_skip_reason(void) {
  const char *sc = getenv("SOUPD_GPU_TEST_SELFCHECK");
  if (sc && strcmp(sc, "1") == 0) {
    g_selfcheck = 1;
    printf("SELF-CHECK: CPU backend stands in for CUDA (harness check only)\n");
    return 0;
  }
#ifndef SOUPD_HAVE_CUDA
  printf("SKIP: built without the CUDA backend (SOUPD_HAVE_CUDA unset)\n");
  return GPU_SKIP;
#else
  if (backend_cuda_device_count() == 0) {
    printf("SKIP: no CUDA device (backend_cuda_device_count() == 0)\n");
    return GPU_SKIP;
  }
  return 0;
#endif
}

/* the CUDA backend on device 0 (NULL without CUDA) */
static inline struct backend *gpu_backend_new(char **err) {
  if (g_selfcheck) return backend_cpu_new(1);
#ifdef SOUPD_HAVE_CUDA
  return backend_cuda_new(0, err);
#else
  if (err) *err = strdup("built without CUDA");
  return NULL;
#endif
}

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static inline float rnd(void) { /* uniform in [-1, 1) */
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}
static inline uint64_t rnd_u64(void) {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return g_rng;
}

static inline int64_t numel_of(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  return n;
}

/* host data rounded to dt and widened back (what both backends hold) */
static inline void round_to(float *x, int64_t n, enum dtype dt) {
  for (int64_t i = 0; i < n; i++)
    x[i] = dt == DT_F16    ? f16_to_f32(f32_to_f16(x[i]))
           : dt == DT_BF16 ? bf16_to_f32(f32_to_bf16(x[i]))
                           : x[i];
}

/* a tensor on both backends with the same contents */
struct pair {
  struct tensor c, g;
};

static inline int upload_both(struct backend *cpu, struct backend *gpu, struct pair *p,
                              enum dtype dt, int ndim, const int64_t *shape, const float *host) {
  int64_t n = numel_of(ndim, shape);
  void *bits = malloc((size_t)(n ? n : 1) * 4);
  for (int64_t i = 0; i < n; i++) {
    if (dt == DT_F16)
      ((uint16_t *)bits)[i] = f32_to_f16(host[i]);
    else if (dt == DT_BF16)
      ((uint16_t *)bits)[i] = f32_to_bf16(host[i]);
    else
      ((float *)bits)[i] = host[i];
  }
  int rc = be_tensor_alloc(cpu, &p->c, dt, ndim, shape) ||
           be_tensor_alloc(gpu, &p->g, dt, ndim, shape) || be_upload(cpu, &p->c, bits, dt) ||
           be_upload(gpu, &p->g, bits, dt);
  free(bits);
  if (rc) {
    printf("FAIL: upload: %s / %s\n", be_last_error(cpu), be_last_error(gpu));
    g_fail++;
  }
  return rc;
}

/* random tensor with values scale * U[-1, 1) */
static inline int rand_both(struct backend *cpu, struct backend *gpu, struct pair *p, enum dtype dt,
                            int ndim, const int64_t *shape, float scale) {
  int64_t n = numel_of(ndim, shape);
  float *h = malloc((size_t)(n ? n : 1) * 4);
  for (int64_t i = 0; i < n; i++) h[i] = scale * rnd();
  int rc = upload_both(cpu, gpu, p, dt, ndim, shape, h);
  free(h);
  return rc;
}

static inline void free_both(struct backend *cpu, struct backend *gpu, struct pair *p) {
  be_tensor_free(cpu, &p->c);
  be_tensor_free(gpu, &p->g);
}

/* guarded F32 output: views c/g into big allocations */
struct gout {
  struct pair big;
  struct tensor c, g;
  int64_t n;
};

static inline int gout_new(struct backend *cpu, struct backend *gpu, struct gout *o, int ndim,
                           const int64_t *shape) {
  o->n = numel_of(ndim, shape);
  int64_t bn = o->n + 2 * GUARD;
  float *h = malloc((size_t)bn * 4);
  uint32_t s = SENTINEL;
  for (int64_t i = 0; i < bn; i++) memcpy(&h[i], &s, 4);
  int rc = upload_both(cpu, gpu, &o->big, DT_F32, 1, &bn, h);
  free(h);
  if (rc) return rc;
  o->c = tensor_view(DT_F32, ndim, shape, (float *)o->big.c.data + GUARD);
  o->g = tensor_view(DT_F32, ndim, shape, (float *)o->big.g.data + GUARD);
  return 0;
}

/* same contents in the output (for ops that allow out == x) */
static inline int gout_fill(struct backend *cpu, struct backend *gpu, struct gout *o,
                            const float *h) {
  return be_upload(cpu, &o->c, h, DT_F32) || be_upload(gpu, &o->g, h, DT_F32);
}

/* downloads both, checks guards, NaN/Inf and the normalised error (<= tol) */
static inline double gout_check(struct backend *cpu, struct backend *gpu, struct gout *o,
                                const char *what, double tol) {
  int64_t bn = o->n + 2 * GUARD;
  float *hc = malloc((size_t)bn * 4), *hg = malloc((size_t)bn * 4);
  double err = -1;
  if (be_download_f32(cpu, &o->big.c, hc) || be_download_f32(gpu, &o->big.g, hg)) {
    printf("FAIL %-60s download: %s\n", what, be_last_error(gpu));
    g_fail++;
    goto out;
  }
  for (int64_t i = 0; i < bn; i++) {
    if (i >= GUARD && i < GUARD + o->n) continue;
    uint32_t u;
    memcpy(&u, &hg[i], 4);
    if (u != SENTINEL) {
      printf("FAIL %-60s GPU wrote outside the output (guard index %lld)\n", what,
             (long long)(i - GUARD));
      g_fail++;
      goto out;
    }
  }
  double mx = 0, md = 0;
  for (int64_t i = GUARD; i < GUARD + o->n; i++) {
    if (isfinite(hc[i]) && !isfinite(hg[i])) {
      printf("FAIL %-60s GPU non-finite %g at %lld (CPU %g)\n", what, (double)hg[i],
             (long long)(i - GUARD), (double)hc[i]);
      g_fail++;
      goto out;
    }
    if (!isfinite(hc[i])) {
      if (isfinite(hg[i]) || isnan(hc[i]) != isnan(hg[i])) {
        printf("FAIL %-60s CPU %g vs GPU %g at %lld\n", what, (double)hc[i], (double)hg[i],
               (long long)(i - GUARD));
        g_fail++;
        goto out;
      }
      continue;
    }
    double a = fabs((double)hc[i]), d = fabs((double)hg[i] - (double)hc[i]);
    mx = a > mx ? a : mx;
    md = d > md ? d : md;
  }
  err = md / (mx > 1e-30 ? mx : 1e-30);
  int ok = err <= tol;
  printf("%s %-60s err %.3g (bound %.1g)\n", ok ? "ok  " : "FAIL", what, err, tol);
  if (!ok) g_fail++;
out:
  free(hc);
  free(hg);
  return err;
}

static inline void gout_free(struct backend *cpu, struct backend *gpu, struct gout *o) {
  free_both(cpu, gpu, &o->big);
}
