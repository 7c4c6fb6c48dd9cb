/* test_kernels_norm.c: group_norm (with and without fused SiLU), layer_norm
 * and softmax of the CPU backend against double-precision references,
 * including inputs with a large mean (cancellation), F16/BF16 affine
 * parameters, NULL gamma/beta, in-place use and -Inf logits.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "test_kernels_util.h"

static void gn_case(struct backend *be, int ndim, const int64_t *xs, int groups, float eps,
                    int silu, enum dtype pdt, float offset, float spread, int inplace, int affine) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= xs[i];
  int64_t N = xs[0], C = xs[1], S = n / (N * C), cs[1] = {C};
  float *xv = tk_randv(n, spread, offset), *xh, *gh = NULL, *bh = NULL;
  struct tensor x = tk_tensor(be, DT_F32, ndim, xs, xv, &xh);
  struct tensor g, b;
  if (affine) {
    g = tk_rand(be, pdt, 1, cs, 1.0f, &gh);
    b = tk_rand(be, pdt, 1, cs, 1.0f, &bh);
  }
  struct tensor o = inplace ? x : tk_tensor(be, DT_F32, ndim, xs, NULL, NULL);
  int rc = be_group_norm(be, &o, &x, affine ? &g : NULL, affine ? &b : NULL, groups, eps, silu);
  if (rc) fprintf(stderr, "group_norm: %s\n", be_last_error(be));
  assert_int_equal(rc, 0);
  double *ref = malloc((size_t)n * sizeof(double));
  int64_t cpg = C / groups;
  for (int64_t i = 0; i < N; i++)
    for (int gi = 0; gi < groups; gi++) {
      const float *blk = xh + (i * C + gi * cpg) * S;
      double m = 0, v = 0;
      for (int64_t k = 0; k < cpg * S; k++) m += blk[k];
      m /= (double)(cpg * S);
      for (int64_t k = 0; k < cpg * S; k++) v += (blk[k] - m) * (blk[k] - m);
      v /= (double)(cpg * S);
      for (int64_t c = gi * cpg; c < (gi + 1) * cpg; c++)
        for (int64_t s = 0; s < S; s++) {
          double y = (xh[(i * C + c) * S + s] - m) / sqrt(v + eps);
          if (affine) y = y * gh[c] + bh[c];
          if (silu) y = y / (1 + exp(-y));
          ref[(i * C + c) * S + s] = y;
        }
    }
  float *got = tk_download(be, &o);
  char what[96];
  snprintf(what, sizeof what, "group_norm C%lld S%lld G%d silu%d off%g %s", (long long)C,
           (long long)S, groups, silu, (double)offset, dtype_name(pdt));
  assert_true(tk_compare(what, got, ref, n, 1e-5, 1e-5));
  free(ref), free(got), free(xv), free(xh), free(gh), free(bh);
  be_tensor_free(be, &x);
  if (!inplace) be_tensor_free(be, &o);
  if (affine) be_tensor_free(be, &g), be_tensor_free(be, &b);
}

static void test_group_norm(void **state) {
  struct backend *be = tk_backend();
  int64_t a[4] = {2, 12, 5, 7}, b[3] = {3, 6, 11}, c[4] = {1, 64, 16, 16}, d[2] = {4, 10};
  gn_case(be, 4, a, 4, 1e-5f, 0, DT_F32, 0, 1, 0, 1);
  gn_case(be, 4, a, 4, 1e-6f, 1, DT_F32, 0, 1, 0, 1);
  gn_case(be, 4, a, 3, 1e-5f, 1, DT_F16, 0, 1, 0, 1);
  gn_case(be, 4, a, 12, 1e-5f, 0, DT_BF16, 0, 1, 1, 1); /* in place, 1 channel per group */
  gn_case(be, 3, b, 2, 1e-5f, 0, DT_F32, 0, 3, 0, 1);
  gn_case(be, 4, c, 32, 1e-5f, 1, DT_F32, 0, 2, 0, 1);
  gn_case(be, 4, a, 4, 1e-5f, 0, DT_F32, 1000, 0.01f, 0, 1); /* mean >> std */
  gn_case(be, 2, d, 5, 1e-5f, 0, DT_F32, 0, 1, 0, 0);        /* no affine, [N, C] */
  int64_t s[4] = {1, 6, 2, 2};
  struct tensor x = tk_rand(be, DT_F32, 4, s, 1, NULL), o = tk_tensor(be, DT_F32, 4, s, NULL, NULL);
  assert_int_equal(be_group_norm(be, &o, &x, NULL, NULL, 4, 1e-5f, 0), -EINVAL);
  assert_non_null(strstr(be_last_error(be), "groups"));
  be_tensor_free(be, &x), be_tensor_free(be, &o);
  be_destroy(be);
}

static void ln_case(struct backend *be, int ndim, const int64_t *xs, float eps, enum dtype pdt,
                    float offset, float spread, int inplace, int affine) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= xs[i];
  int64_t C = xs[ndim - 1], cs[1] = {C};
  float *xv = tk_randv(n, spread, offset), *xh, *gh = NULL, *bh = NULL;
  struct tensor x = tk_tensor(be, DT_F32, ndim, xs, xv, &xh);
  struct tensor g, b;
  if (affine) {
    g = tk_rand(be, pdt, 1, cs, 1.0f, &gh);
    b = tk_rand(be, pdt, 1, cs, 1.0f, &bh);
  }
  struct tensor o = inplace ? x : tk_tensor(be, DT_F32, ndim, xs, NULL, NULL);
  assert_int_equal(be_layer_norm(be, &o, &x, affine ? &g : NULL, affine ? &b : NULL, eps), 0);
  double *ref = malloc((size_t)n * sizeof(double));
  for (int64_t r = 0; r < n / C; r++) {
    const float *row = xh + r * C;
    double m = 0, v = 0;
    for (int64_t k = 0; k < C; k++) m += row[k];
    m /= (double)C;
    for (int64_t k = 0; k < C; k++) v += (row[k] - m) * (row[k] - m);
    v /= (double)C;
    for (int64_t k = 0; k < C; k++) {
      double y = (row[k] - m) / sqrt(v + eps);
      ref[r * C + k] = affine ? y * gh[k] + bh[k] : y;
    }
  }
  float *got = tk_download(be, &o);
  char what[96];
  snprintf(what, sizeof what, "layer_norm C%lld off%g %s", (long long)C, (double)offset,
           dtype_name(pdt));
  assert_true(tk_compare(what, got, ref, n, 1e-5, 1e-5));
  free(ref), free(got), free(xv), free(xh), free(gh), free(bh);
  be_tensor_free(be, &x);
  if (!inplace) be_tensor_free(be, &o);
  if (affine) be_tensor_free(be, &g), be_tensor_free(be, &b);
}

static void test_layer_norm(void **state) {
  struct backend *be = tk_backend();
  int64_t a[3] = {3, 5, 19}, b[2] = {77, 1024}, c[1] = {7}, d[4] = {2, 2, 3, 40};
  ln_case(be, 3, a, 1e-5f, DT_F32, 0, 1, 0, 1);
  ln_case(be, 3, a, 1e-5f, DT_F16, 0, 1, 1, 1);
  ln_case(be, 2, b, 1e-5f, DT_BF16, 0, 2, 0, 1);
  ln_case(be, 1, c, 1e-6f, DT_F32, 0, 1, 0, 0);
  ln_case(be, 4, d, 1e-5f, DT_F32, -500, 0.01f, 0, 1);
  int64_t s[2] = {3, 4}, gs[1] = {5};
  struct tensor x = tk_rand(be, DT_F32, 2, s, 1, NULL), o = tk_tensor(be, DT_F32, 2, s, NULL, NULL);
  struct tensor g = tk_rand(be, DT_F32, 1, gs, 1, NULL);
  assert_int_equal(be_layer_norm(be, &o, &x, &g, NULL, 1e-5f), -EINVAL);
  assert_non_null(strstr(be_last_error(be), "gamma"));
  be_tensor_free(be, &x), be_tensor_free(be, &o), be_tensor_free(be, &g);
  be_destroy(be);
}

static void test_softmax(void **state) {
  struct backend *be = tk_backend();
  int lens[] = {1, 2, 7, 16, 17, 33, 100, 1000};
  for (unsigned li = 0; li < sizeof lens / sizeof *lens; li++) {
    for (int inplace = 0; inplace < 2; inplace++) {
      int64_t C = lens[li], s[2] = {5, C}, n = 5 * C;
      float *xv = tk_randv(n, 40.0f, 0.0f);
      if (C > 3) xv[1] = -INFINITY, xv[C + 2] = 85.0f, xv[2 * C] = -85.0f;
      struct tensor x = tk_tensor(be, DT_F32, 2, s, xv, NULL);
      struct tensor o = inplace ? x : tk_tensor(be, DT_F32, 2, s, NULL, NULL);
      assert_int_equal(be_softmax(be, &o, &x), 0);
      double *ref = malloc((size_t)n * sizeof(double));
      for (int64_t r = 0; r < 5; r++) {
        double m = -INFINITY, sum = 0;
        for (int64_t k = 0; k < C; k++) m = xv[r * C + k] > m ? xv[r * C + k] : m;
        for (int64_t k = 0; k < C; k++) sum += exp(xv[r * C + k] - m);
        for (int64_t k = 0; k < C; k++) ref[r * C + k] = exp(xv[r * C + k] - m) / sum;
      }
      float *got = tk_download(be, &o);
      char what[64];
      snprintf(what, sizeof what, "softmax C%lld inplace%d", (long long)C, inplace);
      assert_true(tk_compare(what, got, ref, n, 1e-7, 1e-5));
      free(ref), free(got), free(xv);
      be_tensor_free(be, &x);
      if (!inplace) be_tensor_free(be, &o);
    }
  }
  be_destroy(be);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_group_norm),
      cmocka_unit_test(test_layer_norm),
      cmocka_unit_test(test_softmax),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
