/* test_kernels_cuda_ops.c: every op of struct backend on the CPU backend
 * (the reference) and the CUDA backend from the same random inputs.
 *
 * Shapes include sizes that are not multiples of 8; parameters are tried as
 * F32, F16 and BF16 (both backends hold the same rounded bits). Each output
 * is guarded (writes outside it fail), checked for NaN/Inf where the CPU is
 * finite, then for the normalised error max|gpu-cpu| / max|cpu|. Bounds:
 *  - data movement (copy, concat, upsample, permute, slice, embedding,
 *    timestep embedding (computed on the host by both)): 0, bit-exact;
 *  - add/mul/axpby/add_channel: 1e-7 (one rounding, same formula);
 *  - unary/geglu (CUDA expf/erfcf vs the CPU polynomial): 2e-6;
 *  - group/layer norm (double statistics, other summation order): 2e-6;
 *  - softmax: 2e-6;
 *  - linear, matmul, conv2d, attention (F32 GEMM, other summation order):
 *    2e-5 by default; 5e-3 when SOUPD_CUDA_MATH selects tf32/f16.
 * Attention runs twice: the default two-pass path and the opt-in fused kernel
 * (a second backend created with SOUPD_CUDA_ATTN=fused), and conv2d through
 * the im2col fallback too (SOUPD_CUDA_CONV=im2col-rows).
 * Exit 77 (skipped) without a CUDA device; 1 on any failure.
 */
#include "gpu_test_util.h"

static struct backend *C, *G;
static double TOL_GEMM = 2e-5;

static int64_t S1(int64_t a, int64_t *s) {
  s[0] = a;
  return a;
}

#define DTS 3
static const enum dtype PDT[DTS] = {DT_F32, DT_F16, DT_BF16};

static void report_rc(const char *what, int rc_c, int rc_g) {
  if (rc_c || rc_g) {
    printf("FAIL %-60s rc cpu %d (%s) gpu %d (%s)\n", what, rc_c, rc_c ? be_last_error(C) : "",
           rc_g, rc_g ? be_last_error(G) : "");
    g_fail++;
  }
}

static void test_conv(void) {
  struct {
    int64_t x[4], w[4];
    int stride, pad, bias;
  } cs[] = {{{2, 5, 9, 7}, {6, 5, 3, 3}, 1, 1, 1},
            {{2, 5, 9, 7}, {6, 5, 3, 3}, 2, 1, 1},
            {{1, 5, 8, 8}, {4, 5, 1, 1}, 1, 0, 0},
            {{3, 13, 11, 10}, {9, 13, 3, 3}, 1, 1, 1},
            {{1, 4, 6, 5}, {3, 4, 2, 3}, 1, 0, 1}};
  for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++)
    for (int d = 0; d < DTS; d++) {
      struct pair x, w, b;
      int64_t bs[1] = {cs[k].w[0]};
      if (rand_both(C, G, &x, DT_F32, 4, cs[k].x, 1.0f) ||
          rand_both(C, G, &w, PDT[d], 4, cs[k].w, 0.3f) || rand_both(C, G, &b, PDT[d], 1, bs, 0.5f))
        return;
      int64_t Ho = (cs[k].x[2] + 2 * cs[k].pad - cs[k].w[2]) / cs[k].stride + 1;
      int64_t Wo = (cs[k].x[3] + 2 * cs[k].pad - cs[k].w[3]) / cs[k].stride + 1;
      int64_t os[4] = {cs[k].x[0], cs[k].w[0], Ho, Wo};
      struct gout o;
      if (gout_new(C, G, &o, 4, os)) return;
      int rc1 = be_conv2d(C, &o.c, &x.c, &w.c, cs[k].bias ? &b.c : NULL, cs[k].stride, cs[k].pad);
      int rc2 = be_conv2d(G, &o.g, &x.g, &w.g, cs[k].bias ? &b.g : NULL, cs[k].stride, cs[k].pad);
      char what[96];
      snprintf(what, sizeof what, "conv2d case %zu w %s", k, dtype_name(PDT[d]));
      report_rc(what, rc1, rc2);
      if (!rc1 && !rc2) gout_check(C, G, &o, what, TOL_GEMM);
      gout_free(C, G, &o);
      free_both(C, G, &x);
      free_both(C, G, &w);
      free_both(C, G, &b);
    }
}

static void test_linear(void) {
  for (int d = 0; d < DTS; d++)
    for (int bias = 0; bias < 2; bias++) {
      int64_t xs[3] = {3, 7, 13}, ws[2] = {11, 13}, bs[1] = {11}, os[3] = {3, 7, 11};
      struct pair x, w, b;
      struct gout o;
      if (rand_both(C, G, &x, DT_F32, 3, xs, 1.0f) || rand_both(C, G, &w, PDT[d], 2, ws, 0.3f) ||
          rand_both(C, G, &b, PDT[d], 1, bs, 0.5f) || gout_new(C, G, &o, 3, os))
        return;
      int rc1 = be_linear(C, &o.c, &x.c, &w.c, bias ? &b.c : NULL);
      int rc2 = be_linear(G, &o.g, &x.g, &w.g, bias ? &b.g : NULL);
      char what[96];
      snprintf(what, sizeof what, "linear w %s bias %d", dtype_name(PDT[d]), bias);
      report_rc(what, rc1, rc2);
      if (!rc1 && !rc2) gout_check(C, G, &o, what, TOL_GEMM);
      gout_free(C, G, &o);
      free_both(C, G, &x);
      free_both(C, G, &w);
      free_both(C, G, &b);
    }
}

static void test_matmul(void) {
  for (int nd = 2; nd <= 3; nd++)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        int64_t B = 3, M = 9, K = 5, N = 7;
        int64_t as[3], bs[3], os[3];
        int o0 = nd - 2;
        if (nd == 3) as[0] = bs[0] = os[0] = B;
        as[o0] = ta ? K : M;
        as[o0 + 1] = ta ? M : K;
        bs[o0] = tb ? N : K;
        bs[o0 + 1] = tb ? K : N;
        os[o0] = M;
        os[o0 + 1] = N;
        struct pair a, b;
        struct gout o;
        if (rand_both(C, G, &a, DT_F32, nd, as, 1.0f) ||
            rand_both(C, G, &b, DT_F32, nd, bs, 1.0f) || gout_new(C, G, &o, nd, os))
          return;
        int rc1 = be_matmul(C, &o.c, &a.c, ta, &b.c, tb, 0.5f);
        int rc2 = be_matmul(G, &o.g, &a.g, ta, &b.g, tb, 0.5f);
        char what[96];
        snprintf(what, sizeof what, "matmul %dd ta %d tb %d", nd, ta, tb);
        report_rc(what, rc1, rc2);
        if (!rc1 && !rc2) gout_check(C, G, &o, what, TOL_GEMM);
        gout_free(C, G, &o);
        free_both(C, G, &a);
        free_both(C, G, &b);
      }
}

static void test_norms(void) {
  /* group norm: one block per group, and (few large groups) the split path */
  static const int64_t gshape[2][4] = {{2, 12, 5, 3}, {1, 32, 96, 97}};
  static const int ggroups[2] = {4, 8};
  for (int k = 0; k < 2; k++)
    for (int d = 0; d < DTS; d++)
      for (int silu = 0; silu < 2; silu++)
        for (int inplace = 0; inplace < 2; inplace++) {
          const int64_t *xs = gshape[k];
          int64_t gs[1] = {xs[1]};
          struct pair x, ga, be;
          struct gout o;
          if (rand_both(C, G, &x, DT_F32, 4, xs, 2.0f) ||
              rand_both(C, G, &ga, PDT[d], 1, gs, 1.0f) ||
              rand_both(C, G, &be, PDT[d], 1, gs, 1.0f) || gout_new(C, G, &o, 4, xs))
            return;
          int rc1, rc2;
          if (inplace) { /* out == x: copy x into the guarded output first */
            int64_t n = numel_of(4, xs);
            float *h = malloc((size_t)n * 4);
            be_download_f32(C, &x.c, h);
            gout_fill(C, G, &o, h);
            free(h);
            rc1 = be_group_norm(C, &o.c, &o.c, &ga.c, &be.c, ggroups[k], 1e-5f, silu);
            rc2 = be_group_norm(G, &o.g, &o.g, &ga.g, &be.g, ggroups[k], 1e-5f, silu);
          } else {
            rc1 = be_group_norm(C, &o.c, &x.c, &ga.c, &be.c, ggroups[k], 1e-5f, silu);
            rc2 = be_group_norm(G, &o.g, &x.g, &ga.g, &be.g, ggroups[k], 1e-5f, silu);
          }
          char what[96];
          snprintf(what, sizeof what, "group_norm [%lld,%lld,%lld,%lld]/%d %s silu %d inplace %d",
                   (long long)xs[0], (long long)xs[1], (long long)xs[2], (long long)xs[3],
                   ggroups[k], dtype_name(PDT[d]), silu, inplace);
          report_rc(what, rc1, rc2);
          if (!rc1 && !rc2) gout_check(C, G, &o, what, 2e-6);
          gout_free(C, G, &o);
          free_both(C, G, &x);
          free_both(C, G, &ga);
          free_both(C, G, &be);
        }
  for (int d = 0; d < DTS; d++) {
    int64_t xs[3] = {3, 7, 37}, gs[1] = {37};
    struct pair x, ga, be;
    struct gout o;
    if (rand_both(C, G, &x, DT_F32, 3, xs, 3.0f) || rand_both(C, G, &ga, PDT[d], 1, gs, 1.0f) ||
        rand_both(C, G, &be, PDT[d], 1, gs, 1.0f) || gout_new(C, G, &o, 3, xs))
      return;
    int rc1 = be_layer_norm(C, &o.c, &x.c, &ga.c, &be.c, 1e-5f);
    int rc2 = be_layer_norm(G, &o.g, &x.g, &ga.g, &be.g, 1e-5f);
    char what[96];
    snprintf(what, sizeof what, "layer_norm %s", dtype_name(PDT[d]));
    report_rc(what, rc1, rc2);
    if (!rc1 && !rc2) gout_check(C, G, &o, what, 2e-6);
    rc1 = be_layer_norm(C, &o.c, &x.c, NULL, NULL, 1e-6f);
    rc2 = be_layer_norm(G, &o.g, &x.g, NULL, NULL, 1e-6f);
    snprintf(what, sizeof what, "layer_norm %s no affine", dtype_name(PDT[d]));
    report_rc(what, rc1, rc2);
    if (!rc1 && !rc2) gout_check(C, G, &o, what, 2e-6);
    gout_free(C, G, &o);
    free_both(C, G, &x);
    free_both(C, G, &ga);
    free_both(C, G, &be);
  }
  int64_t shapes[3][2] = {{5, 33}, {3, 1000}, {1, 7}};
  for (int k = 0; k < 3; k++) {
    struct pair x;
    struct gout o;
    if (rand_both(C, G, &x, DT_F32, 2, shapes[k], 20.0f) || gout_new(C, G, &o, 2, shapes[k]))
      return;
    int rc1 = be_softmax(C, &o.c, &x.c), rc2 = be_softmax(G, &o.g, &x.g);
    char what[96];
    snprintf(what, sizeof what, "softmax [%lld, %lld]", (long long)shapes[k][0],
             (long long)shapes[k][1]);
    report_rc(what, rc1, rc2);
    if (!rc1 && !rc2) gout_check(C, G, &o, what, 2e-6);
    gout_free(C, G, &o);
    free_both(C, G, &x);
  }
}

static void test_attention(void) {
  struct {
    int64_t B, Lq, Lk, H, D;
    int causal;
  } as[] = {{2, 17, 23, 4, 12, 0}, {2, 19, 19, 3, 8, 1},   {1, 9, 9, 1, 160, 0},
            {2, 64, 77, 5, 64, 0}, {1, 33, 21, 2, 40, 1},  {1, 300, 300, 2, 64, 1},
            {1, 10, 70, 2, 24, 1}, {2, 70, 70, 3, 100, 0}, {1, 5, 3, 7, 1, 0}};
  for (size_t k = 0; k < sizeof as / sizeof as[0]; k++) {
    int64_t qs[3] = {as[k].B, as[k].Lq, as[k].H * as[k].D};
    int64_t ks[3] = {as[k].B, as[k].Lk, as[k].H * as[k].D};
    struct pair q, kk, v;
    struct gout o;
    if (rand_both(C, G, &q, DT_F32, 3, qs, 1.0f) || rand_both(C, G, &kk, DT_F32, 3, ks, 1.0f) ||
        rand_both(C, G, &v, DT_F32, 3, ks, 1.0f) || gout_new(C, G, &o, 3, qs))
      return;
    float scale = 1.0f / sqrtf((float)as[k].D);
    int rc1 = be_attention(C, &o.c, &q.c, &kk.c, &v.c, (int)as[k].H, scale, as[k].causal);
    int rc2 = be_attention(G, &o.g, &q.g, &kk.g, &v.g, (int)as[k].H, scale, as[k].causal);
    char what[96];
    snprintf(what, sizeof what, "attention B%lld Lq%lld Lk%lld H%lld D%lld causal %d",
             (long long)as[k].B, (long long)as[k].Lq, (long long)as[k].Lk, (long long)as[k].H,
             (long long)as[k].D, as[k].causal);
    report_rc(what, rc1, rc2);
    if (!rc1 && !rc2) gout_check(C, G, &o, what, TOL_GEMM);
    gout_free(C, G, &o);
    free_both(C, G, &q);
    free_both(C, G, &kk);
    free_both(C, G, &v);
  }
}

static void test_elementwise(void) {
  int64_t s[1];
  static const char *names[4] = {"silu", "gelu", "gelu_tanh", "quick_gelu"};
  for (int op = 0; op < 4; op++) {
    struct pair x;
    struct gout o;
    if (rand_both(C, G, &x, DT_F32, 1, (S1(1001, s), s), 8.0f) || gout_new(C, G, &o, 1, s)) return;
    int rc1 = be_unary(C, &o.c, &x.c, (enum unary_op)op);
    int rc2 = be_unary(G, &o.g, &x.g, (enum unary_op)op);
    char what[96];
    snprintf(what, sizeof what, "unary %s", names[op]);
    report_rc(what, rc1, rc2);
    if (!rc1 && !rc2) gout_check(C, G, &o, what, 2e-6);
    gout_free(C, G, &o);
    free_both(C, G, &x);
  }
  {
    int64_t xs[3] = {3, 5, 38}, os[3] = {3, 5, 19};
    struct pair x;
    struct gout o;
    if (rand_both(C, G, &x, DT_F32, 3, xs, 4.0f) || gout_new(C, G, &o, 3, os)) return;
    int rc1 = be_geglu(C, &o.c, &x.c), rc2 = be_geglu(G, &o.g, &x.g);
    report_rc("geglu", rc1, rc2);
    if (!rc1 && !rc2) gout_check(C, G, &o, "geglu [3,5,38]", 2e-6);
    gout_free(C, G, &o);
    free_both(C, G, &x);
  }
  {
    int64_t xs[4] = {2, 7, 5, 3}, bs[2] = {2, 7};
    struct pair a, b, cb;
    struct gout o;
    if (rand_both(C, G, &a, DT_F32, 4, xs, 1.0f) || rand_both(C, G, &b, DT_F32, 4, xs, 1.0f) ||
        rand_both(C, G, &cb, DT_F32, 2, bs, 1.0f) || gout_new(C, G, &o, 4, xs))
      return;
    int rc1 = be_add(C, &o.c, &a.c, &b.c), rc2 = be_add(G, &o.g, &a.g, &b.g);
    report_rc("add", rc1, rc2);
    if (!rc1 && !rc2) gout_check(C, G, &o, "add", 1e-7);
    rc1 = be_mul(C, &o.c, &a.c, &b.c), rc2 = be_mul(G, &o.g, &a.g, &b.g);
    report_rc("mul", rc1, rc2);
    if (!rc1 && !rc2) gout_check(C, G, &o, "mul", 1e-7);
    rc1 = be_axpby(C, &o.c, 0.75f, &a.c, -1.25f, &b.c);
    rc2 = be_axpby(G, &o.g, 0.75f, &a.g, -1.25f, &b.g);
    report_rc("axpby", rc1, rc2);
    if (!rc1 && !rc2) gout_check(C, G, &o, "axpby", 1e-7);
    rc1 = be_axpby(C, &o.c, 0.75f, &a.c, 0.0f, NULL);
    rc2 = be_axpby(G, &o.g, 0.75f, &a.g, 0.0f, NULL);
    report_rc("axpby y NULL", rc1, rc2);
    if (!rc1 && !rc2) gout_check(C, G, &o, "axpby y NULL", 1e-7);
    rc1 = be_add_channel(C, &o.c, &a.c, &cb.c), rc2 = be_add_channel(G, &o.g, &a.g, &cb.g);
    report_rc("add_channel", rc1, rc2);
    if (!rc1 && !rc2) gout_check(C, G, &o, "add_channel", 1e-7);
    gout_free(C, G, &o);
    free_both(C, G, &a);
    free_both(C, G, &b);
    free_both(C, G, &cb);
  }
}

static void test_layout(void) {
  {
    int64_t as[4] = {2, 3, 5, 4}, bs[4] = {2, 6, 5, 4}, os[4] = {2, 9, 5, 4};
    struct pair a, b;
    struct gout o;
    if (rand_both(C, G, &a, DT_F32, 4, as, 1.0f) || rand_both(C, G, &b, DT_F32, 4, bs, 1.0f) ||
        gout_new(C, G, &o, 4, os))
      return;
    int rc1 = be_concat_channels(C, &o.c, &a.c, &b.c),
        rc2 = be_concat_channels(G, &o.g, &a.g, &b.g);
    report_rc("concat_channels", rc1, rc2);
    if (!rc1 && !rc2) gout_check(C, G, &o, "concat_channels", 0.0);
    gout_free(C, G, &o);
    free_both(C, G, &a);
    free_both(C, G, &b);
  }
  int64_t ups[3][2] = {{10, 14}, {11, 13}, {5, 7}};
  for (int k = 0; k < 3; k++) {
    int64_t xs[4] = {2, 3, 5, 7}, os[4] = {2, 3, ups[k][0], ups[k][1]};
    struct pair x;
    struct gout o;
    if (rand_both(C, G, &x, DT_F32, 4, xs, 1.0f) || gout_new(C, G, &o, 4, os)) return;
    int rc1 = be_upsample_nearest(C, &o.c, &x.c), rc2 = be_upsample_nearest(G, &o.g, &x.g);
    char what[96];
    snprintf(what, sizeof what, "upsample_nearest 5x7 -> %lldx%lld", (long long)ups[k][0],
             (long long)ups[k][1]);
    report_rc(what, rc1, rc2);
    if (!rc1 && !rc2) gout_check(C, G, &o, what, 0.0);
    gout_free(C, G, &o);
    free_both(C, G, &x);
  }
  static const int perms[4][4] = {{0, 2, 3, 1}, {3, 1, 0, 2}, {0, 1, 3, 2}, {1, 0, 2, 3}};
  for (int k = 0; k < 4; k++) {
    int64_t xs[4] = {2, 3, 5, 7}, os[4];
    for (int i = 0; i < 4; i++) os[i] = xs[perms[k][i]];
    struct pair x;
    struct gout o;
    if (rand_both(C, G, &x, DT_F32, 4, xs, 1.0f) || gout_new(C, G, &o, 4, os)) return;
    int rc1 = be_permute(C, &o.c, &x.c, perms[k]), rc2 = be_permute(G, &o.g, &x.g, perms[k]);
    char what[96];
    snprintf(what, sizeof what, "permute {%d,%d,%d,%d}", perms[k][0], perms[k][1], perms[k][2],
             perms[k][3]);
    report_rc(what, rc1, rc2);
    if (!rc1 && !rc2) gout_check(C, G, &o, what, 0.0);
    gout_free(C, G, &o);
    free_both(C, G, &x);
  }
  for (int dim = 0; dim < 3; dim++) {
    int64_t xs[3] = {4, 10, 6}, os[3] = {4, 10, 6};
    os[dim] = xs[dim] - 3;
    struct pair x;
    struct gout o;
    if (rand_both(C, G, &x, DT_F32, 3, xs, 1.0f) || gout_new(C, G, &o, 3, os)) return;
    int rc1 = be_slice(C, &o.c, &x.c, dim, 2), rc2 = be_slice(G, &o.g, &x.g, dim, 2);
    char what[96];
    snprintf(what, sizeof what, "slice dim %d", dim);
    report_rc(what, rc1, rc2);
    if (!rc1 && !rc2) gout_check(C, G, &o, what, 0.0);
    gout_free(C, G, &o);
    free_both(C, G, &x);
  }
}

static void test_embeddings(void) {
  int dims[3] = {33, 320, 1};
  for (int k = 0; k < 3; k++) {
    float t[3] = {0.0f, 17.5f, 999.0f};
    int64_t os[2] = {3, dims[k]};
    struct gout o;
    if (gout_new(C, G, &o, 2, os)) return;
    int rc1 = be_timestep_embedding(C, &o.c, t, dims[k], k == 0, k == 0 ? 1.0f : 0.0f, 10000.0f);
    int rc2 = be_timestep_embedding(G, &o.g, t, dims[k], k == 0, k == 0 ? 1.0f : 0.0f, 10000.0f);
    char what[96];
    snprintf(what, sizeof what, "timestep_embedding dim %d", dims[k]);
    report_rc(what, rc1, rc2);
    if (!rc1 && !rc2) gout_check(C, G, &o, what, 0.0);
    gout_free(C, G, &o);
  }
  for (int d = 0; d < DTS; d++) {
    int64_t ts[2] = {50, 24}, os[3] = {2, 7, 24};
    int32_t ids[14];
    for (int i = 0; i < 14; i++) ids[i] = (int32_t)(rnd_u64() % 50);
    struct pair tb;
    struct gout o;
    if (rand_both(C, G, &tb, PDT[d], 2, ts, 1.0f) || gout_new(C, G, &o, 3, os)) return;
    int rc1 = be_embedding(C, &o.c, ids, &tb.c), rc2 = be_embedding(G, &o.g, ids, &tb.g);
    char what[96];
    snprintf(what, sizeof what, "embedding table %s", dtype_name(PDT[d]));
    report_rc(what, rc1, rc2);
    if (!rc1 && !rc2) gout_check(C, G, &o, what, 0.0);
    ids[3] = 50; /* out of range: both refuse */
    rc1 = be_embedding(C, &o.c, ids, &tb.c);
    rc2 = be_embedding(G, &o.g, ids, &tb.g);
    if (rc1 != rc2 || rc1 == 0) {
      printf("FAIL embedding bad id: rc cpu %d gpu %d\n", rc1, rc2);
      g_fail++;
    }
    gout_free(C, G, &o);
    free_both(C, G, &tb);
  }
}

static void test_memory(void) {
  /* upload/copy/download conversions: bit-exact with the CPU */
  int64_t s[1] = {1003};
  float *h = malloc(1003 * 4);
  for (int i = 0; i < 1003; i++) h[i] = rnd() * (i % 7 == 0 ? 70000.0f : 3.0f);
  h[1] = NAN;
  h[2] = INFINITY;
  h[3] = 1e-8f;
  for (int sd = 0; sd < DTS; sd++)
    for (int dd = 0; dd < DTS; dd++) {
      struct pair a, b;
      struct gout o;
      if (upload_both(C, G, &a, PDT[sd], 1, s, h) || rand_both(C, G, &b, PDT[dd], 1, s, 1.0f) ||
          gout_new(C, G, &o, 1, s))
        return;
      int rc1 = be_copy(C, &b.c, &a.c), rc2 = be_copy(G, &b.g, &a.g);
      if (!rc1) rc1 = be_copy(C, &o.c, &b.c);
      if (!rc2) rc2 = be_copy(G, &o.g, &b.g);
      char what[96];
      snprintf(what, sizeof what, "copy %s -> %s -> F32", dtype_name(PDT[sd]), dtype_name(PDT[dd]));
      report_rc(what, rc1, rc2);
      if (!rc1 && !rc2) gout_check(C, G, &o, what, 0.0);
      gout_free(C, G, &o);
      free_both(C, G, &a);
      free_both(C, G, &b);
    }
  free(h);
  /* many alloc/free cycles through the caching allocator */
  for (int i = 0; i < 2000; i++) {
    struct tensor t;
    int64_t n = 1 + (int64_t)(rnd_u64() % 100000);
    if (be_tensor_alloc(G, &t, DT_F32, 1, &n)) {
      printf("FAIL tensor_alloc: %s\n", be_last_error(G));
      g_fail++;
      break;
    }
    be_tensor_free(G, &t);
  }
}

int main(void) {
  int skip = gpu_test_skip_reason();
  if (skip) return skip;
  char *err = NULL;
  C = backend_cpu_new(0);
  G = gpu_backend_new(&err);
  if (!C || !G) {
    printf("FAIL: backend creation: %s\n", err ? err : "cpu backend");
    free(err);
    return 1;
  }
  const char *m = getenv("SOUPD_CUDA_MATH");
  if (m && (strcmp(m, "tf32") == 0 || strcmp(m, "f16") == 0)) TOL_GEMM = 5e-3;
  printf("cpu vs %s\n", be_name(G));
  test_memory();
  test_conv();
  test_linear();
  test_matmul();
  test_norms();
  test_attention();
  test_elementwise();
  test_layout();
  test_embeddings();
  /* the opt-in fused attention kernel (SOUPD_CUDA_ATTN=fused), same cases */
  setenv("SOUPD_CUDA_ATTN", "fused", 1);
  struct backend *F = gpu_backend_new(&err), *G0 = G;
  unsetenv("SOUPD_CUDA_ATTN");
  if (!F) {
    printf("FAIL: fused-attention backend: %s\n", err ? err : "?");
    free(err);
    g_fail++;
  } else {
    printf("fused attention (SOUPD_CUDA_ATTN=fused):\n");
    G = F;
    test_attention();
    G = G0;
    be_destroy(F);
  }
  /* the im2col + GEMM conv fallback, one output row per tile */
  setenv("SOUPD_CUDA_CONV", "im2col-rows", 1);
  F = gpu_backend_new(&err);
  unsetenv("SOUPD_CUDA_CONV");
  if (!F) {
    printf("FAIL: im2col backend: %s\n", err ? err : "?");
    free(err);
    g_fail++;
  } else {
    printf("conv2d through im2col + GEMM (SOUPD_CUDA_CONV=im2col-rows):\n");
    G = F;
    test_conv();
    G = G0;
    be_destroy(F);
  }
  if (be_synchronize(G)) {
    printf("FAIL synchronize: %s\n", be_last_error(G));
    g_fail++;
  }
  be_destroy(G);
  be_destroy(C);
  return gpu_test_exit();
}
