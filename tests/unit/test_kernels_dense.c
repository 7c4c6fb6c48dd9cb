/* test_kernels_dense.c: conv2d, linear, matmul and attention of the CPU
 * backend against naive double-precision references, over odd shapes,
 * strides, paddings, F16/BF16 weights, causal masks and Lq != Lk; plus the
 * shape checks (status -EINVAL and a message). Everything runs twice: with
 * the default kernels and with SOUPD_CPU_NO_AVX512=1 (OpenBLAS paths).
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "test_kernels_util.h"

/* ---- conv2d ---- */

static void conv_case(struct backend *be, int64_t N, int64_t Ci, int64_t H, int64_t W, int64_t Co,
                      int64_t kh, int64_t kw, int stride, int pad, enum dtype wdt, int bias) {
  float *xh, *wh, *bh = NULL;
  int64_t xs[4] = {N, Ci, H, W}, ws[4] = {Co, Ci, kh, kw}, bs[1] = {Co};
  struct tensor x = tk_rand(be, DT_F32, 4, xs, 1.0f, &xh);
  struct tensor w = tk_rand(be, wdt, 4, ws, 0.5f, &wh);
  struct tensor b;
  if (bias) b = tk_rand(be, wdt, 1, bs, 1.0f, &bh);
  int64_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
  int64_t os[4] = {N, Co, Ho, Wo};
  struct tensor out = tk_tensor(be, DT_F32, 4, os, NULL, NULL);
  int rc = be_conv2d(be, &out, &x, &w, bias ? &b : NULL, stride, pad);
  if (rc) fprintf(stderr, "conv2d: %s\n", be_last_error(be));
  assert_int_equal(rc, 0);
  int64_t no = tensor_numel(&out);
  double *ref = malloc((size_t)no * sizeof(double));
  for (int64_t n = 0; n < N; n++)
    for (int64_t co = 0; co < Co; co++)
      for (int64_t oy = 0; oy < Ho; oy++)
        for (int64_t ox = 0; ox < Wo; ox++) {
          double s = bias ? bh[co] : 0.0;
          for (int64_t ci = 0; ci < Ci; ci++)
            for (int64_t ky = 0; ky < kh; ky++)
              for (int64_t kx = 0; kx < kw; kx++) {
                int64_t iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                s += (double)wh[((co * Ci + ci) * kh + ky) * kw + kx] *
                     xh[((n * Ci + ci) * H + iy) * W + ix];
              }
          ref[((n * Co + co) * Ho + oy) * Wo + ox] = s;
        }
  float *got = tk_download(be, &out);
  char what[160];
  snprintf(what, sizeof what, "conv2d N%lld Ci%lld %lldx%lld Co%lld k%lldx%lld s%d p%d %s%s",
           (long long)N, (long long)Ci, (long long)H, (long long)W, (long long)Co, (long long)kh,
           (long long)kw, stride, pad, dtype_name(wdt), bias ? " bias" : "");
  double atol = 2e-6 * sqrt((double)(Ci * kh * kw));
  assert_true(tk_compare(what, got, ref, no, atol, 1e-5));
  free(ref), free(got), free(xh), free(wh), free(bh);
  be_tensor_free(be, &x), be_tensor_free(be, &w), be_tensor_free(be, &out);
  if (bias) be_tensor_free(be, &b);
}

static void test_conv2d(void **state) {
  struct backend *be = tk_backend();
  conv_case(be, 2, 3, 7, 9, 5, 3, 3, 1, 1, DT_F32, 1);     /* 3x3 same */
  conv_case(be, 2, 13, 7, 9, 6, 1, 1, 1, 0, DT_F32, 1);    /* 1x1 as GEMM */
  conv_case(be, 1, 4, 7, 9, 3, 3, 3, 2, 1, DT_F32, 1);     /* downsample, odd sizes */
  conv_case(be, 2, 5, 8, 6, 7, 3, 3, 2, 1, DT_F32, 0);     /* downsample, even sizes */
  conv_case(be, 1, 3, 9, 7, 4, 3, 3, 2, 0, DT_F32, 1);     /* stride 2 no pad */
  conv_case(be, 1, 2, 6, 11, 3, 5, 3, 1, 2, DT_F32, 1);    /* 5x3 kernel, pad 2 */
  conv_case(be, 1, 3, 7, 9, 2, 1, 1, 2, 0, DT_F32, 1);     /* strided 1x1 */
  conv_case(be, 1, 3, 5, 5, 2, 1, 1, 1, 1, DT_F32, 1);     /* padded 1x1 */
  conv_case(be, 2, 3, 7, 9, 5, 3, 3, 1, 1, DT_F16, 1);     /* F16 weights */
  conv_case(be, 2, 13, 7, 9, 6, 1, 1, 1, 0, DT_BF16, 1);   /* BF16 1x1 */
  conv_case(be, 1, 4, 7, 9, 5, 3, 3, 2, 1, DT_BF16, 0);    /* BF16 stride 2 */
  conv_case(be, 1, 64, 33, 64, 17, 3, 3, 1, 1, DT_F32, 1); /* many row tiles */
  conv_case(be, 3, 40, 17, 15, 24, 3, 3, 1, 1, DT_F16, 1); /* tiles across images */
  conv_case(be, 2, 24, 64, 40, 9, 1, 1, 1, 0, DT_F32, 1);  /* 1x1, column split */
  conv_case(be, 1, 1, 1, 1, 1, 3, 3, 1, 1, DT_F32, 1);     /* 1x1 image */
  be_destroy(be);
}

static void test_conv2d_errors(void **state) {
  struct backend *be = tk_backend();
  int64_t xs[4] = {1, 3, 5, 5}, ws[4] = {4, 3, 3, 3}, bad_ws[4] = {4, 2, 3, 3},
          os[4] = {1, 4, 5, 5}, bad_os[4] = {1, 4, 4, 5}, bs[1] = {3};
  struct tensor x = tk_rand(be, DT_F32, 4, xs, 1, NULL), w = tk_rand(be, DT_F32, 4, ws, 1, NULL);
  struct tensor bw = tk_rand(be, DT_F32, 4, bad_ws, 1, NULL);
  struct tensor o = tk_tensor(be, DT_F32, 4, os, NULL, NULL);
  struct tensor bo = tk_tensor(be, DT_F32, 4, bad_os, NULL, NULL);
  struct tensor b = tk_rand(be, DT_F32, 1, bs, 1, NULL);
  assert_int_equal(be_conv2d(be, &bo, &x, &w, NULL, 1, 1), -EINVAL);
  assert_non_null(strstr(be_last_error(be), "conv2d"));
  assert_int_equal(be_conv2d(be, &o, &x, &bw, NULL, 1, 1), -EINVAL);
  assert_int_equal(be_conv2d(be, &o, &x, &w, &b, 1, 1), -EINVAL);
  assert_int_equal(be_conv2d(be, &o, &x, &w, NULL, 0, 1), -EINVAL);
  assert_int_equal(be_conv2d(be, &o, &x, &w, NULL, 1, -1), -EINVAL);
  assert_int_equal(be_conv2d(be, &x, &x, &w, NULL, 1, 1), -EINVAL);
  struct tensor xi;
  assert_int_equal(be_tensor_alloc(be, &xi, DT_I32, 4, xs), 0);
  assert_int_equal(be_conv2d(be, &o, &xi, &w, NULL, 1, 1), -EINVAL);
  assert_non_null(strstr(be_last_error(be), "F32"));
  assert_int_equal(be_conv2d(be, &o, &x, &w, NULL, 1, 1), 0);
  be_tensor_free(be, &xi);
  be_tensor_free(be, &x), be_tensor_free(be, &w), be_tensor_free(be, &bw);
  be_tensor_free(be, &o), be_tensor_free(be, &bo), be_tensor_free(be, &b);
  be_destroy(be);
}

/* ---- linear ---- */

static void linear_case(struct backend *be, int ndim, const int64_t *xs, int64_t O, enum dtype wdt,
                        int bias) {
  int64_t I = xs[ndim - 1], M = 1;
  for (int i = 0; i < ndim - 1; i++) M *= xs[i];
  int64_t ws[2] = {O, I}, bs[1] = {O}, os[4];
  for (int i = 0; i < ndim - 1; i++) os[i] = xs[i];
  os[ndim - 1] = O;
  float *xh, *wh, *bh = NULL;
  struct tensor x = tk_rand(be, DT_F32, ndim, xs, 1.0f, &xh);
  struct tensor w = tk_rand(be, wdt, 2, ws, 0.5f, &wh);
  struct tensor b;
  if (bias) b = tk_rand(be, wdt, 1, bs, 1.0f, &bh);
  struct tensor out = tk_tensor(be, DT_F32, ndim, os, NULL, NULL);
  assert_int_equal(be_linear(be, &out, &x, &w, bias ? &b : NULL), 0);
  double *ref = malloc((size_t)(M * O) * sizeof(double));
  for (int64_t m = 0; m < M; m++)
    for (int64_t o = 0; o < O; o++) {
      double s = bias ? bh[o] : 0;
      for (int64_t i = 0; i < I; i++) s += (double)xh[m * I + i] * wh[o * I + i];
      ref[m * O + o] = s;
    }
  float *got = tk_download(be, &out);
  char what[96];
  snprintf(what, sizeof what, "linear M%lld I%lld O%lld %s", (long long)M, (long long)I,
           (long long)O, dtype_name(wdt));
  assert_true(tk_compare(what, got, ref, M * O, 2e-6 * sqrt((double)I), 1e-5));
  free(ref), free(got), free(xh), free(wh), free(bh);
  be_tensor_free(be, &x), be_tensor_free(be, &w), be_tensor_free(be, &out);
  if (bias) be_tensor_free(be, &b);
}

static void test_linear(void **state) {
  struct backend *be = tk_backend();
  int64_t a[3] = {2, 5, 7}, b[2] = {500, 64}, c[2] = {3, 300}, d[4] = {2, 3, 1, 33};
  linear_case(be, 3, a, 11, DT_F32, 1);
  linear_case(be, 3, a, 11, DT_F16, 1);
  linear_case(be, 3, a, 11, DT_BF16, 0);
  linear_case(be, 2, b, 50, DT_F32, 1);   /* split over rows */
  linear_case(be, 2, c, 3000, DT_F16, 1); /* split over outputs */
  linear_case(be, 4, d, 9, DT_F32, 1);
  /* shapes for the packed AVX-512 path: outputs a multiple of 32 or >= 256,
   * reductions longer than one 512-row chunk, partial row panels */
  int64_t e[2] = {100, 70}, f[3] = {1, 257, 600}, g[2] = {40, 33}, h[2] = {37, 1100};
  linear_case(be, 2, e, 64, DT_F16, 1);
  linear_case(be, 3, f, 288, DT_F32, 1);
  linear_case(be, 2, g, 32, DT_BF16, 0);
  linear_case(be, 2, h, 300, DT_F32, 1);
  int64_t xs[2] = {4, 6}, ws[2] = {5, 7}, os[2] = {4, 5};
  struct tensor x = tk_rand(be, DT_F32, 2, xs, 1, NULL), w = tk_rand(be, DT_F32, 2, ws, 1, NULL);
  struct tensor o = tk_tensor(be, DT_F32, 2, os, NULL, NULL);
  assert_int_equal(be_linear(be, &o, &x, &w, NULL), -EINVAL);
  assert_non_null(strstr(be_last_error(be), "linear"));
  be_tensor_free(be, &x), be_tensor_free(be, &w), be_tensor_free(be, &o);
  be_destroy(be);
}

/* ---- matmul ---- */

static void matmul_case(struct backend *be, int64_t B, int64_t M, int64_t N, int64_t K, int ta,
                        int tb, float alpha, int ndim) {
  int d = ndim - 2;
  int64_t as[3], bs[3], os[3];
  as[0] = bs[0] = os[0] = B;
  as[d] = ta ? K : M, as[d + 1] = ta ? M : K;
  bs[d] = tb ? N : K, bs[d + 1] = tb ? K : N;
  os[d] = M, os[d + 1] = N;
  float *ah, *bh;
  struct tensor a = tk_rand(be, DT_F32, ndim, as, 1, &ah),
                b = tk_rand(be, DT_F32, ndim, bs, 1, &bh);
  struct tensor o = tk_tensor(be, DT_F32, ndim, os, NULL, NULL);
  assert_int_equal(be_matmul(be, &o, &a, ta, &b, tb, alpha), 0);
  double *ref = malloc((size_t)(B * M * N) * sizeof(double));
  for (int64_t z = 0; z < B; z++)
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) {
        double s = 0;
        for (int64_t k = 0; k < K; k++) {
          double av = ta ? ah[z * M * K + k * M + m] : ah[z * M * K + m * K + k];
          double bv = tb ? bh[z * K * N + n * K + k] : bh[z * K * N + k * N + n];
          s += av * bv;
        }
        ref[(z * M + m) * N + n] = alpha * s;
      }
  float *got = tk_download(be, &o);
  char what[96];
  snprintf(what, sizeof what, "matmul B%lld M%lld N%lld K%lld ta%d tb%d", (long long)B,
           (long long)M, (long long)N, (long long)K, ta, tb);
  assert_true(tk_compare(what, got, ref, B * M * N, 2e-6 * sqrt((double)K), 1e-5));
  free(ref), free(got), free(ah), free(bh);
  be_tensor_free(be, &a), be_tensor_free(be, &b), be_tensor_free(be, &o);
}

static void test_matmul(void **state) {
  struct backend *be = tk_backend();
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      matmul_case(be, 3, 5, 7, 9, ta, tb, 0.5f, 3);
      matmul_case(be, 1, 5, 7, 9, ta, tb, 1.0f, 2);
      matmul_case(be, 8, 33, 17, 20, ta, tb, 1.0f, 3);   /* batch-parallel */
      matmul_case(be, 1, 200, 150, 70, ta, tb, 2.0f, 3); /* split inside */
    }
  int64_t as[3] = {2, 3, 4}, bs[3] = {2, 5, 6}, os[3] = {2, 3, 6};
  struct tensor a = tk_rand(be, DT_F32, 3, as, 1, NULL), b = tk_rand(be, DT_F32, 3, bs, 1, NULL);
  struct tensor o = tk_tensor(be, DT_F32, 3, os, NULL, NULL);
  assert_int_equal(be_matmul(be, &o, &a, 0, &b, 0, 1.0f), -EINVAL);
  assert_non_null(strstr(be_last_error(be), "matmul"));
  be_tensor_free(be, &a), be_tensor_free(be, &b), be_tensor_free(be, &o);
  be_destroy(be);
}

/* ---- attention ---- */

static void attention_case(struct backend *be, int64_t B, int64_t Lq, int64_t Lk, int H, int64_t D,
                           int causal, float amp) {
  int64_t HD = H * D, qs[3] = {B, Lq, HD}, ks[3] = {B, Lk, HD};
  float *qh, *kh, *vh;
  struct tensor q = tk_rand(be, DT_F32, 3, qs, amp, &qh);
  struct tensor k = tk_rand(be, DT_F32, 3, ks, amp, &kh);
  struct tensor v = tk_rand(be, DT_F32, 3, ks, 1.0f, &vh);
  struct tensor o = tk_tensor(be, DT_F32, 3, qs, NULL, NULL);
  float scale = 1.0f / sqrtf((float)D);
  int rc = be_attention(be, &o, &q, &k, &v, H, scale, causal);
  if (rc) fprintf(stderr, "attention: %s\n", be_last_error(be));
  assert_int_equal(rc, 0);
  double *ref = malloc((size_t)(B * Lq * HD) * sizeof(double));
  double *p = malloc((size_t)Lk * sizeof(double));
  for (int64_t b = 0; b < B; b++)
    for (int h = 0; h < H; h++)
      for (int64_t i = 0; i < Lq; i++) {
        double mx = -INFINITY;
        int64_t n = causal ? (i + 1 < Lk ? i + 1 : Lk) : Lk;
        for (int64_t j = 0; j < n; j++) {
          double s = 0;
          for (int64_t d = 0; d < D; d++)
            s += (double)qh[(b * Lq + i) * HD + h * D + d] * kh[(b * Lk + j) * HD + h * D + d];
          p[j] = s * scale;
          if (p[j] > mx) mx = p[j];
        }
        double sum = 0;
        for (int64_t j = 0; j < n; j++) sum += (p[j] = exp(p[j] - mx));
        for (int64_t d = 0; d < D; d++) {
          double s = 0;
          for (int64_t j = 0; j < n; j++) s += p[j] * vh[(b * Lk + j) * HD + h * D + d];
          ref[(b * Lq + i) * HD + h * D + d] = s / sum;
        }
      }
  float *got = tk_download(be, &o);
  char what[128];
  snprintf(what, sizeof what, "attention B%lld Lq%lld Lk%lld H%d D%lld causal%d amp%g",
           (long long)B, (long long)Lq, (long long)Lk, H, (long long)D, causal, (double)amp);
  assert_true(tk_compare(what, got, ref, B * Lq * HD, 2e-6 * (1 + amp * amp), 1e-5));
  free(ref), free(p), free(got), free(qh), free(kh), free(vh);
  be_tensor_free(be, &q), be_tensor_free(be, &k), be_tensor_free(be, &v);
  be_tensor_free(be, &o);
}

static void test_attention(void **state) {
  struct backend *be = tk_backend();
  attention_case(be, 2, 37, 23, 3, 8, 0, 1.0f);    /* Lq != Lk */
  attention_case(be, 2, 77, 77, 2, 16, 1, 1.0f);   /* causal, CLIP-like */
  attention_case(be, 1, 10, 20, 1, 5, 1, 1.0f);    /* causal, Lq < Lk */
  attention_case(be, 1, 20, 10, 2, 4, 1, 1.0f);    /* causal, Lq > Lk */
  attention_case(be, 1, 300, 300, 2, 16, 0, 1.0f); /* several row blocks */
  attention_case(be, 1, 300, 300, 1, 64, 1, 1.0f); /* causal over blocks */
  attention_case(be, 2, 64, 77, 5, 64, 0, 1.0f);   /* cross-attention */
  attention_case(be, 1, 33, 40, 2, 8, 0, 8.0f);    /* large logits: stable softmax */
  attention_case(be, 1, 1, 1, 1, 1, 0, 1.0f);
  /* key counts that are multiples of 16/64 (fused row max), head dims that
   * are not multiples of 16 or exceed 64, odd row counts */
  attention_case(be, 1, 70, 128, 2, 16, 0, 6.0f);
  attention_case(be, 2, 33, 64, 1, 64, 0, 6.0f);
  attention_case(be, 1, 29, 48, 3, 40, 0, 4.0f);
  attention_case(be, 1, 37, 80, 2, 80, 0, 4.0f);
  attention_case(be, 1, 9, 32, 1, 160, 0, 3.0f);
  attention_case(be, 1, 64, 64, 2, 24, 1, 6.0f);
  attention_case(be, 1, 100, 90, 1, 512, 0, 1.0f);  /* VAE mid-block: one head of 512 */
  attention_case(be, 1, 2100, 2100, 1, 8, 0, 1.0f); /* several tasks per head */
  attention_case(be, 1, 2100, 2100, 1, 8, 1, 1.0f);
  int64_t qs[3] = {1, 4, 6}, ks[3] = {1, 5, 6};
  struct tensor q = tk_rand(be, DT_F32, 3, qs, 1, NULL), k = tk_rand(be, DT_F32, 3, ks, 1, NULL);
  struct tensor o = tk_tensor(be, DT_F32, 3, qs, NULL, NULL);
  assert_int_equal(be_attention(be, &o, &q, &k, &k, 4, 1.0f, 0), -EINVAL);
  assert_non_null(strstr(be_last_error(be), "heads"));
  assert_int_equal(be_attention(be, &o, &q, &k, &q, 2, 1.0f, 0), -EINVAL);
  be_tensor_free(be, &q), be_tensor_free(be, &k), be_tensor_free(be, &o);
  be_destroy(be);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_conv2d),    cmocka_unit_test(test_conv2d_errors),
      cmocka_unit_test(test_linear),    cmocka_unit_test(test_matmul),
      cmocka_unit_test(test_attention),
  };
  /* once with the default kernels (AVX-512 where the CPU has it), once with
   * the portable OpenBLAS paths */
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  setenv("SOUPD_CPU_NO_AVX512", "1", 1);
  failed += cmocka_run_group_tests(tests, NULL, NULL);
  unsetenv("SOUPD_CPU_NO_AVX512");
  return failed;
}
