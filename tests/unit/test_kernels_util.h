/* test_kernels_util.h: helpers shared by the CPU kernel unit tests.
 *
 * Deterministic random data, tensor creation through the backend (so F16/
 * BF16 weights are rounded by upload and read back exactly with
 * download_f32 for the reference), and a comparison that prints the worst
 * element: |got - ref| <= atol + rtol * |ref| must hold everywhere.
 * References are naive double-precision loops written in each test.
 */
#pragma once

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/backend.h"

static uint64_t tk_rng_state = 0x9e3779b97f4a7c15ull;

static inline void tk_seed(uint64_t s) {
  tk_rng_state = s * 0x9e3779b97f4a7c15ull + 1;
}

/* uniform in [-1, 1) */
static inline float tk_uniform(void) {
  tk_rng_state ^= tk_rng_state << 13;
  tk_rng_state ^= tk_rng_state >> 7;
  tk_rng_state ^= tk_rng_state << 17;
  return (float)((double)(tk_rng_state >> 11) * 0x1p-53 * 2.0 - 1.0);
}

static inline float *tk_randv(int64_t n, float scale, float offset) {
  float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
  for (int64_t i = 0; i < n; i++) v[i] = offset + scale * tk_uniform();
  return v;
}

/* A backend tensor of dtype dt holding vals (rounded to dt); if back is
 * non-NULL, *back receives the values the tensor really holds, as floats. */
static inline struct tensor tk_tensor(struct backend *be, enum dtype dt, int ndim,
                                      const int64_t *shape, const float *vals, float **back) {
  struct tensor t;
  if (be_tensor_alloc(be, &t, dt, ndim, shape) != 0) {
    fprintf(stderr, "tensor_alloc: %s\n", be_last_error(be));
    abort();
  }
  int64_t n = tensor_numel(&t);
  if (vals && be_upload(be, &t, vals, DT_F32) != 0) {
    fprintf(stderr, "upload: %s\n", be_last_error(be));
    abort();
  }
  if (back) {
    *back = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (be_download_f32(be, &t, *back) != 0) abort();
  }
  return t;
}

/* A random tensor; *host gets its exact values as floats. */
static inline struct tensor tk_rand(struct backend *be, enum dtype dt, int ndim,
                                    const int64_t *shape, float scale, float **host) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  float *v = tk_randv(n, scale, 0.0f);
  struct tensor t = tk_tensor(be, dt, ndim, shape, v, host);
  free(v);
  return t;
}

static inline float *tk_download(struct backend *be, const struct tensor *t) {
  float *v = malloc((size_t)(tensor_numel(t) > 0 ? tensor_numel(t) : 1) * sizeof(float));
  if (be_download_f32(be, t, v) != 0) abort();
  return v;
}

/* Returns 1 if all match; prints the worst element otherwise. */
static inline int tk_compare(const char *what, const float *got, const double *ref, int64_t n,
                             double atol, double rtol) {
  double worst = 0;
  int64_t wi = -1;
  for (int64_t i = 0; i < n; i++) {
    double g = got[i], r = ref[i];
    double q;
    if (isnan(r) || isnan(g))
      q = (isnan(r) && isnan(g)) ? 0 : INFINITY;
    else if (isinf(r) || isinf(g))
      q = g == r ? 0 : INFINITY;
    else
      q = fabs(g - r) / (atol + rtol * fabs(r));
    if (q > worst || wi < 0) {
      worst = q;
      wi = i;
    }
  }
  if (n > 0 && worst > 1.0) {
    fprintf(stderr, "%s: worst element %lld: got %.9g want %.9g (|diff| %.3g, %.2fx tolerance)\n",
            what, (long long)wi, (double)got[wi], ref[wi], fabs((double)got[wi] - ref[wi]), worst);
    return 0;
  }
  return 1;
}

/* 2 threads, or TEST_KERNELS_THREADS */
static inline struct backend *tk_backend(void) {
  const char *e = getenv("TEST_KERNELS_THREADS");
  struct backend *be = backend_cpu_new(e ? atoi(e) : 2);
  if (!be) abort();
  return be;
}
