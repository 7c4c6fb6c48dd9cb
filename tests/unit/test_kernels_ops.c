/* test_kernels_ops.c: the CPU backend's elementwise, layout, embedding and
 * memory ops against double-precision / index-formula references: the four
 * activations, geglu, add/mul/add_channel/axpby (with out == a), concat,
 * nearest upsample (2x and PyTorch's float-scale rule for odd ratios, index
 * tables recorded from torch.nn.functional.interpolate), every 4-D and 3-D
 * permutation, slices on each dim, diffusers timestep embedding, embedding
 * lookup with F16/BF16 tables, dtype conversions (all 65536 halves), and
 * two host threads sharing one backend.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>

#include "test_kernels_util.h"

static double ref_act(double x, int op) {
  switch (op) {
  case UNARY_SILU:
    return x / (1 + exp(-x));
  case UNARY_GELU:
    return 0.5 * x * (1 + erf(x / sqrt(2.0)));
  case UNARY_GELU_TANH:
    return 0.5 * x * (1 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
  default:
    return x / (1 + exp(-1.702 * x));
  }
}

static void test_unary(void **state) {
  struct backend *be = tk_backend();
  int64_t n = 100003, s[2] = {1, n};
  float *xv = tk_randv(n, 12.0f, 0.0f);
  float special[] = {0.0f, -0.0f, 100.0f, -100.0f, 1e-30f, -1e-30f, 88.0f, -88.0f, 90.0f, -90.0f};
  memcpy(xv, special, sizeof special);
  for (int op = 0; op < 4; op++)
    for (int inplace = 0; inplace < 2; inplace++) {
      struct tensor x = tk_tensor(be, DT_F32, 2, s, xv, NULL);
      struct tensor o = inplace ? x : tk_tensor(be, DT_F32, 2, s, NULL, NULL);
      assert_int_equal(be_unary(be, &o, &x, (enum unary_op)op), 0);
      double *ref = malloc((size_t)n * sizeof(double));
      for (int64_t i = 0; i < n; i++) ref[i] = ref_act(xv[i], op);
      float *got = tk_download(be, &o);
      char what[32];
      snprintf(what, sizeof what, "unary op%d inplace%d", op, inplace);
      assert_true(tk_compare(what, got, ref, n, 1e-7, 4e-6));
      free(ref), free(got);
      be_tensor_free(be, &x);
      if (!inplace) be_tensor_free(be, &o);
    }
  struct tensor x = tk_tensor(be, DT_F32, 2, s, xv, NULL);
  assert_int_equal(be_unary(be, &x, &x, (enum unary_op)9), -EINVAL);
  be_tensor_free(be, &x);
  free(xv);
  be_destroy(be);
}

static void test_geglu(void **state) {
  struct backend *be = tk_backend();
  int64_t xs[3] = {2, 7, 2 * 37}, os[3] = {2, 7, 37}, D = 37, rows = 14;
  float *xh;
  struct tensor x = tk_rand(be, DT_F32, 3, xs, 4.0f, &xh);
  struct tensor o = tk_tensor(be, DT_F32, 3, os, NULL, NULL);
  assert_int_equal(be_geglu(be, &o, &x), 0);
  double *ref = malloc((size_t)(rows * D) * sizeof(double));
  for (int64_t r = 0; r < rows; r++)
    for (int64_t i = 0; i < D; i++)
      ref[r * D + i] = xh[r * 2 * D + i] * ref_act(xh[r * 2 * D + D + i], UNARY_GELU);
  float *got = tk_download(be, &o);
  assert_true(tk_compare("geglu", got, ref, rows * D, 1e-7, 4e-6));
  assert_int_equal(be_geglu(be, &x, &x), -EINVAL);
  free(ref), free(got), free(xh);
  be_tensor_free(be, &x), be_tensor_free(be, &o);
  be_destroy(be);
}

static void test_binary(void **state) {
  struct backend *be = tk_backend();
  int64_t s[4] = {2, 3, 33, 35}, n = 2 * 3 * 33 * 35, cs[2] = {2, 3}, cs4[4] = {2, 3, 1, 1};
  float *ah, *bh, *ch;
  struct tensor a = tk_rand(be, DT_F32, 4, s, 1, &ah), b = tk_rand(be, DT_F32, 4, s, 1, &bh);
  struct tensor c = tk_rand(be, DT_F32, 2, cs, 1, &ch);
  struct tensor o = tk_tensor(be, DT_F32, 4, s, NULL, NULL);
  double *ref = malloc((size_t)n * sizeof(double));
  float *got;
  /* add, then mul and axpby in place (out == a) */
  assert_int_equal(be_add(be, &o, &a, &b), 0);
  for (int64_t i = 0; i < n; i++) ref[i] = (double)ah[i] + bh[i];
  got = tk_download(be, &o);
  assert_true(tk_compare("add", got, ref, n, 0, 1e-7));
  free(got);
  assert_int_equal(be_mul(be, &o, &o, &b), 0);
  for (int64_t i = 0; i < n; i++) ref[i] = (float)((double)ah[i] + bh[i]) * (double)bh[i];
  got = tk_download(be, &o);
  assert_true(tk_compare("mul in place", got, ref, n, 0, 1e-7));
  free(got);
  assert_int_equal(be_axpby(be, &o, 0.5f, &a, -2.0f, &b), 0);
  for (int64_t i = 0; i < n; i++) ref[i] = 0.5 * ah[i] - 2.0 * bh[i];
  got = tk_download(be, &o);
  assert_true(tk_compare("axpby", got, ref, n, 1e-7, 1e-6));
  free(got);
  assert_int_equal(be_axpby(be, &o, 3.0f, &o, 0.0f, NULL), 0);
  for (int64_t i = 0; i < n; i++) ref[i] *= 3.0;
  got = tk_download(be, &o);
  assert_true(tk_compare("axpby y=NULL", got, ref, n, 1e-7, 1e-6));
  free(got);
  assert_int_equal(be_axpby(be, &o, 1.0f, &a, 1.0f, NULL), -EINVAL);
  /* add_channel with b [N, C] and [N, C, 1, 1] */
  struct tensor c4 = c;
  c4.ndim = 4;
  memcpy(c4.shape, cs4, sizeof cs4);
  for (int k = 0; k < 2; k++) {
    assert_int_equal(be_add_channel(be, &o, &a, k ? &c4 : &c), 0);
    for (int64_t i = 0; i < n; i++) ref[i] = (double)ah[i] + ch[i / (33 * 35)];
    got = tk_download(be, &o);
    assert_true(tk_compare("add_channel", got, ref, n, 0, 1e-7));
    free(got);
  }
  assert_int_equal(be_add_channel(be, &a, &a, &c), 0); /* in place */
  got = tk_download(be, &a);
  assert_true(tk_compare("add_channel in place", got, ref, n, 0, 1e-7));
  free(got);
  assert_int_equal(be_add_channel(be, &o, &a, &b), -EINVAL);
  struct tensor sm = tk_tensor(be, DT_F32, 2, cs, NULL, NULL);
  assert_int_equal(be_add(be, &o, &a, &sm), -EINVAL);
  assert_non_null(strstr(be_last_error(be), "add"));
  free(ref), free(ah), free(bh), free(ch);
  be_tensor_free(be, &a), be_tensor_free(be, &b), be_tensor_free(be, &c);
  be_tensor_free(be, &o), be_tensor_free(be, &sm);
  be_destroy(be);
}

static void test_concat(void **state) {
  struct backend *be = tk_backend();
  int64_t as[4] = {3, 2, 5, 7}, bs[4] = {3, 5, 5, 7}, os[4] = {3, 7, 5, 7};
  float *ah, *bh;
  struct tensor a = tk_rand(be, DT_F32, 4, as, 1, &ah), b = tk_rand(be, DT_F32, 4, bs, 1, &bh);
  struct tensor o = tk_tensor(be, DT_F32, 4, os, NULL, NULL);
  assert_int_equal(be_concat_channels(be, &o, &a, &b), 0);
  float *got = tk_download(be, &o);
  for (int64_t n = 0; n < 3; n++)
    for (int64_t c = 0; c < 7; c++)
      for (int64_t p = 0; p < 35; p++) {
        float want = c < 2 ? ah[(n * 2 + c) * 35 + p] : bh[(n * 5 + c - 2) * 35 + p];
        assert_true(got[(n * 7 + c) * 35 + p] == want);
      }
  assert_int_equal(be_concat_channels(be, &o, &b, &b), -EINVAL);
  free(got), free(ah), free(bh);
  be_tensor_free(be, &a), be_tensor_free(be, &b), be_tensor_free(be, &o);
  be_destroy(be);
}

/* source indices of F.interpolate(mode="nearest", size=out) from torch 2.x */
static const struct {
  int in, out, idx[64];
} torch_nearest[] = {
    {5, 7, {0, 0, 1, 2, 2, 3, 4}},
    {7, 3, {0, 2, 4}},
    {26, 22, {0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 14, 15, 16, 17, 18, 20, 21, 22, 23, 24}},
    {39, 33, {0,  1,  2,  3,  4,  5,  7,  8,  9,  10, 11, 12, 14, 15, 16, 17, 18,
              20, 21, 22, 23, 24, 25, 27, 28, 29, 30, 31, 33, 34, 35, 36, 37}},
    {14, 46, {0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3,  3,  3,  3,  4,  4,  4,  5,  5,  5,  6,  6,  6,
              6, 7, 7, 7, 8, 8, 8, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 12, 12, 12, 13, 13, 13}},
    {4, 8, {0, 0, 1, 1, 2, 2, 3, 3}},
    {6, 6, {0, 1, 2, 3, 4, 5}},
};

static void test_upsample(void **state) {
  struct backend *be = tk_backend();
  int nt = (int)(sizeof torch_nearest / sizeof *torch_nearest);
  for (int yi = 0; yi < nt; yi++)
    for (int xi = 0; xi < nt; xi++) {
      int H = torch_nearest[yi].in, Ho = torch_nearest[yi].out;
      int W = torch_nearest[xi].in, Wo = torch_nearest[xi].out;
      int64_t xs[4] = {2, 3, H, W}, os[4] = {2, 3, Ho, Wo};
      float *xh;
      struct tensor x = tk_rand(be, DT_F32, 4, xs, 1, &xh);
      struct tensor o = tk_tensor(be, DT_F32, 4, os, NULL, NULL);
      assert_int_equal(be_upsample_nearest(be, &o, &x), 0);
      float *got = tk_download(be, &o);
      for (int p = 0; p < 6; p++)
        for (int oy = 0; oy < Ho; oy++)
          for (int ox = 0; ox < Wo; ox++) {
            float want = xh[(p * H + torch_nearest[yi].idx[oy]) * W + torch_nearest[xi].idx[ox]];
            if (got[(p * Ho + oy) * Wo + ox] != want) {
              fprintf(stderr, "upsample %dx%d -> %dx%d: wrong at (%d, %d)\n", H, W, Ho, Wo, oy, ox);
              fail();
            }
          }
      free(got), free(xh);
      be_tensor_free(be, &x), be_tensor_free(be, &o);
    }
  be_destroy(be);
}

static void permute_case(struct backend *be, int nd, const int64_t *xs, const int *perm) {
  int64_t os[4], n = 1, xst[4];
  for (int i = 0; i < nd; i++) os[i] = xs[perm[i]], n *= xs[i];
  xst[nd - 1] = 1;
  for (int d = nd - 2; d >= 0; d--) xst[d] = xst[d + 1] * xs[d + 1];
  float *xh;
  struct tensor x = tk_rand(be, DT_F32, nd, xs, 1, &xh);
  struct tensor o = tk_tensor(be, DT_F32, nd, os, NULL, NULL);
  assert_int_equal(be_permute(be, &o, &x, perm), 0);
  float *got = tk_download(be, &o);
  for (int64_t i = 0; i < n; i++) {
    int64_t rem = i, off = 0;
    for (int d = nd - 1; d >= 0; d--) {
      off += (rem % os[d]) * xst[perm[d]];
      rem /= os[d];
    }
    if (got[i] != xh[off]) {
      fprintf(stderr, "permute nd%d perm %d%d%d%d: wrong at %lld\n", nd, perm[0], perm[1],
              nd > 2 ? perm[2] : 0, nd > 3 ? perm[3] : 0, (long long)i);
      fail();
    }
  }
  free(got), free(xh);
  be_tensor_free(be, &x), be_tensor_free(be, &o);
}

static void test_permute(void **state) {
  struct backend *be = tk_backend();
  int64_t s4[4] = {2, 3, 4, 5}, s4b[4] = {2, 37, 1, 45}, s3[3] = {3, 70, 33};
  for (int a = 0; a < 4; a++)
    for (int b = 0; b < 4; b++)
      for (int c = 0; c < 4; c++)
        for (int d = 0; d < 4; d++) {
          if (a == b || a == c || a == d || b == c || b == d || c == d) continue;
          int p[4] = {a, b, c, d};
          permute_case(be, 4, s4, p);
          permute_case(be, 4, s4b, p);
        }
  for (int a = 0; a < 3; a++)
    for (int b = 0; b < 3; b++) {
      if (a == b) continue;
      int p[3] = {a, b, 3 - a - b};
      permute_case(be, 3, s3, p);
    }
  int64_t big[4] = {2, 80, 64, 64};
  int nhwc[4] = {0, 2, 3, 1}, nchw[4] = {0, 3, 1, 2};
  permute_case(be, 4, big, nhwc);
  permute_case(be, 4, big, nchw);
  int bad[4] = {0, 1, 1, 2};
  int64_t os[4] = {2, 3, 3, 4};
  struct tensor x = tk_rand(be, DT_F32, 4, s4, 1, NULL),
                o = tk_tensor(be, DT_F32, 4, os, NULL, NULL);
  assert_int_equal(be_permute(be, &o, &x, bad), -EINVAL);
  be_tensor_free(be, &x), be_tensor_free(be, &o);
  be_destroy(be);
}

static void test_slice(void **state) {
  struct backend *be = tk_backend();
  int64_t xs[4] = {3, 4, 5, 6};
  float *xh;
  struct tensor x = tk_rand(be, DT_F32, 4, xs, 1, &xh);
  for (int dim = 0; dim < 4; dim++)
    for (int64_t start = 0; start < xs[dim]; start++)
      for (int64_t len = 1; start + len <= xs[dim]; len++) {
        int64_t os[4] = {3, 4, 5, 6};
        os[dim] = len;
        struct tensor o = tk_tensor(be, DT_F32, 4, os, NULL, NULL);
        assert_int_equal(be_slice(be, &o, &x, dim, start), 0);
        float *got = tk_download(be, &o);
        int64_t i = 0;
        for (int64_t a = 0; a < os[0]; a++)
          for (int64_t b = 0; b < os[1]; b++)
            for (int64_t c = 0; c < os[2]; c++)
              for (int64_t d = 0; d < os[3]; d++, i++) {
                int64_t ix[4] = {a, b, c, d};
                ix[dim] += start;
                assert_true(got[i] == xh[((ix[0] * 4 + ix[1]) * 5 + ix[2]) * 6 + ix[3]]);
              }
        free(got);
        be_tensor_free(be, &o);
      }
  int64_t os[4] = {3, 4, 3, 6};
  struct tensor o = tk_tensor(be, DT_F32, 4, os, NULL, NULL);
  assert_int_equal(be_slice(be, &o, &x, 2, 3), -EINVAL);
  assert_int_equal(be_slice(be, &o, &x, 4, 0), -EINVAL);
  free(xh);
  be_tensor_free(be, &x), be_tensor_free(be, &o);
  be_destroy(be);
}

static void temb_case(struct backend *be, int dim, int flip, float shift, float max_period) {
  float t[4] = {0.0f, 1.5f, 999.0f, 481.25f};
  int64_t os[2] = {4, dim};
  struct tensor o = tk_tensor(be, DT_F32, 2, os, NULL, NULL);
  assert_int_equal(be_timestep_embedding(be, &o, t, dim, flip, shift, max_period), 0);
  float *got = tk_download(be, &o);
  int half = dim / 2;
  for (int n = 0; n < 4; n++)
    for (int k = 0; k < half; k++) {
      /* diffusers computes the exponent in fp32: model its two roundings,
       * then everything else in double */
      float e = (float)-log((double)max_period) * (float)k;
      e = e / ((float)half - shift);
      double arg = (double)t[n] * exp((double)e);
      double tol = 2e-6 + 3e-7 * fabs(arg);
      double s = sin(arg), c = cos(arg);
      double gs = got[n * dim + (flip ? half + k : k)], gc = got[n * dim + (flip ? k : half + k)];
      if (fabs(gs - s) > tol || fabs(gc - c) > tol) {
        fprintf(stderr, "temb dim %d t %g k %d: got (%g, %g) want (%g, %g)\n", dim, (double)t[n], k,
                gs, gc, s, c);
        fail();
      }
    }
  if (dim % 2)
    for (int n = 0; n < 4; n++) assert_true(got[n * dim + dim - 1] == 0.0f);
  free(got);
  be_tensor_free(be, &o);
}

static void test_timestep_embedding(void **state) {
  struct backend *be = tk_backend();
  temb_case(be, 320, 1, 0.0f, 10000.0f);
  temb_case(be, 256, 0, 1.0f, 10000.0f);
  temb_case(be, 7, 1, 1.0f, 10000.0f);
  temb_case(be, 9, 0, 0.0f, 100.0f);
  int64_t os[2] = {2, 8};
  float t[2] = {1, 2};
  struct tensor o = tk_tensor(be, DT_F32, 2, os, NULL, NULL);
  assert_int_equal(be_timestep_embedding(be, &o, t, 6, 1, 0, 10000), -EINVAL);
  be_tensor_free(be, &o);
  be_destroy(be);
}

static void test_embedding(void **state) {
  struct backend *be = tk_backend();
  enum dtype dts[3] = {DT_F32, DT_F16, DT_BF16};
  for (int di = 0; di < 3; di++) {
    int64_t ts[2] = {50, 13}, os[3] = {2, 7, 13};
    float *th;
    struct tensor tab = tk_rand(be, dts[di], 2, ts, 1, &th);
    struct tensor o = tk_tensor(be, DT_F32, 3, os, NULL, NULL);
    int32_t ids[14];
    for (int i = 0; i < 14; i++) ids[i] = (i * 17 + 3) % 50;
    ids[0] = 0, ids[13] = 49;
    assert_int_equal(be_embedding(be, &o, ids, &tab), 0);
    float *got = tk_download(be, &o);
    for (int i = 0; i < 14; i++)
      for (int d = 0; d < 13; d++) assert_true(got[i * 13 + d] == th[ids[i] * 13 + d]);
    ids[5] = 50;
    assert_int_equal(be_embedding(be, &o, ids, &tab), -ERANGE);
    ids[5] = -1;
    assert_int_equal(be_embedding(be, &o, ids, &tab), -ERANGE);
    free(got), free(th);
    be_tensor_free(be, &tab), be_tensor_free(be, &o);
  }
  be_destroy(be);
}

static void test_memory(void **state) {
  struct backend *be = tk_backend();
  /* every half and every bfloat16 pattern widens exactly */
  int64_t s[1] = {65536};
  uint16_t *h = malloc(65536 * sizeof *h);
  for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
  float *f = malloc(65536 * sizeof *f);
  enum dtype hd[2] = {DT_F16, DT_BF16};
  for (int k = 0; k < 2; k++) {
    struct tensor t;
    assert_int_equal(be_tensor_alloc(be, &t, hd[k], 1, s), 0);
    assert_int_equal(be_upload(be, &t, h, hd[k]), 0);
    assert_int_equal(be_download_f32(be, &t, f), 0);
    for (int i = 0; i < 65536; i++) {
      float want = k ? bf16_to_f32(h[i]) : f16_to_f32(h[i]);
      uint32_t a, b;
      memcpy(&a, &f[i], 4), memcpy(&b, &want, 4);
      if (a != b) {
        fprintf(stderr, "%s %04x widened to %08x, want %08x\n", dtype_name(hd[k]), i, a, b);
        fail();
      }
    }
    be_tensor_free(be, &t);
  }
  /* F32 -> F16/BF16 upload rounds as tensor.c; copy converts */
  int64_t n = 200003, s2[2] = {1, 200003}; /* large enough to run over the pool */
  float *v = tk_randv(n, 70000.0f, 0.0f);
  v[0] = 1e-8f, v[1] = -0.0f;
  for (int k = 0; k < 2; k++) {
    struct tensor t, t32;
    assert_int_equal(be_tensor_alloc(be, &t, hd[k], 2, s2), 0);
    assert_int_equal(be_tensor_alloc(be, &t32, DT_F32, 2, s2), 0);
    assert_int_equal(be_upload(be, &t, v, DT_F32), 0);
    for (int64_t i = 0; i < n; i++)
      assert_int_equal(((uint16_t *)t.data)[i], k ? f32_to_bf16(v[i]) : f32_to_f16(v[i]));
    assert_int_equal(be_copy(be, &t32, &t), 0);
    for (int64_t i = 0; i < n; i++) {
      uint16_t q = ((uint16_t *)t.data)[i];
      float want = k ? bf16_to_f32(q) : f16_to_f32(q);
      assert_memory_equal(&((float *)t32.data)[i], &want, 4);
    }
    be_tensor_free(be, &t), be_tensor_free(be, &t32);
  }
  /* integers */
  int32_t ids[5] = {1, -2, 3, 2147483647, -2147483647 - 1};
  int64_t s5[1] = {5};
  struct tensor i64, i32;
  assert_int_equal(be_tensor_alloc(be, &i64, DT_I64, 1, s5), 0);
  assert_int_equal(be_tensor_alloc(be, &i32, DT_I32, 1, s5), 0);
  assert_int_equal(be_upload(be, &i64, ids, DT_I32), 0);
  assert_true(((int64_t *)i64.data)[4] == INT32_MIN);
  assert_int_equal(be_copy(be, &i32, &i64), 0);
  assert_memory_equal(i32.data, ids, sizeof ids);
  ((int64_t *)i64.data)[2] = INT64_C(1) << 40;
  assert_int_equal(be_copy(be, &i32, &i64), -ERANGE);
  int64_t s4[1] = {4};
  struct tensor f4;
  assert_int_equal(be_tensor_alloc(be, &f4, DT_F32, 1, s4), 0);
  assert_int_equal(be_copy(be, &f4, &i64), -EINVAL);
  assert_int_equal(be_synchronize(be), 0);
  int64_t neg[1] = {-1};
  struct tensor bad;
  assert_int_equal(be_tensor_alloc(be, &bad, DT_F32, 1, neg), -EINVAL);
  assert_int_equal(be_tensor_alloc(be, &bad, DT_F32, 5, s4), -EINVAL);
  be_tensor_free(be, &i64), be_tensor_free(be, &i32), be_tensor_free(be, &f4);
  free(h), free(f), free(v);
  be_destroy(be);
}

/* two host threads running ops on one backend get the results of running
 * them alone (ops are serialised by the backend) */
struct conc_arg {
  struct backend *be;
  struct tensor x, w, q, out_lin, out_att;
  float *want_lin, *want_att;
  int bad;
};

static void *conc_worker(void *p) {
  struct conc_arg *a = p;
  struct backend *be = a->be;
  int64_t nl = tensor_numel(&a->out_lin), na = tensor_numel(&a->out_att);
  float *g1 = malloc((size_t)nl * sizeof(float)), *g2 = malloc((size_t)na * sizeof(float));
  for (int it = 0; it < 30; it++) {
    if (be_linear(be, &a->out_lin, &a->x, &a->w, NULL) || be_download_f32(be, &a->out_lin, g1) ||
        memcmp(g1, a->want_lin, (size_t)nl * sizeof(float)))
      a->bad++;
    if (be_attention(be, &a->out_att, &a->q, &a->q, &a->q, 2, 0.25f, 0) ||
        be_download_f32(be, &a->out_att, g2) || memcmp(g2, a->want_att, (size_t)na * sizeof(float)))
      a->bad++;
  }
  free(g1), free(g2);
  return NULL;
}

static void test_concurrent_callers(void **state) {
  struct backend *be = tk_backend();
  struct conc_arg args[2];
  for (int i = 0; i < 2; i++) {
    struct conc_arg *a = &args[i];
    memset(a, 0, sizeof *a);
    a->be = be;
    int64_t xs[2] = {96 + 32 * i, 70}, ws[2] = {64 + 32 * i, 70},
            os[2] = {96 + 32 * i, 64 + 32 * i};
    int64_t qs[3] = {1, 200 + 50 * i, 32};
    a->x = tk_rand(be, DT_F32, 2, xs, 1, NULL);
    a->w = tk_rand(be, i ? DT_F16 : DT_F32, 2, ws, 1, NULL);
    a->q = tk_rand(be, DT_F32, 3, qs, 1, NULL);
    a->out_lin = tk_tensor(be, DT_F32, 2, os, NULL, NULL);
    a->out_att = tk_tensor(be, DT_F32, 3, qs, NULL, NULL);
    assert_int_equal(be_linear(be, &a->out_lin, &a->x, &a->w, NULL), 0);
    assert_int_equal(be_attention(be, &a->out_att, &a->q, &a->q, &a->q, 2, 0.25f, 0), 0);
    a->want_lin = tk_download(be, &a->out_lin);
    a->want_att = tk_download(be, &a->out_att);
  }
  pthread_t t[2];
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_create(&t[i], NULL, conc_worker, &args[i]), 0);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  for (int i = 0; i < 2; i++) {
    struct conc_arg *a = &args[i];
    assert_int_equal(a->bad, 0);
    free(a->want_lin), free(a->want_att);
    be_tensor_free(be, &a->x), be_tensor_free(be, &a->w), be_tensor_free(be, &a->q);
    be_tensor_free(be, &a->out_lin), be_tensor_free(be, &a->out_att);
  }
  be_destroy(be);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_unary),
      cmocka_unit_test(test_geglu),
      cmocka_unit_test(test_binary),
      cmocka_unit_test(test_concat),
      cmocka_unit_test(test_upsample),
      cmocka_unit_test(test_permute),
      cmocka_unit_test(test_slice),
      cmocka_unit_test(test_timestep_embedding),
      cmocka_unit_test(test_embedding),
      cmocka_unit_test(test_memory),
      cmocka_unit_test(test_concurrent_callers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
