/* gemm_cpu.c: linear and batched matmul on the CPU.
 *
 * linear: out [..., O] = x [..., I] @ w [O, I]^T + b [O]; x viewed as [M, I].
 * With AVX-512 and M >= 32: w^T packed into 32-column panels per call
 * (F16/BF16 widened panel by panel), then row blocks of x over the pool
 * with the 8x32 micro-kernel (gemm_avx512.c), bias fused. Otherwise
 * cpu_sgemm (OpenBLAS, split over the pool) and a bias pass.
 * matmul: out [B, M, N] = alpha * op(a) @ op(b) (2-dim tensors mean B = 1),
 * OpenBLAS per batch (batches over the pool, or each GEMM split).
 */
#include <cblas.h>
#include <stdlib.h>

#include "cpu_impl.h"

struct bias_job {
  float *out;
  const float *b;
  int64_t O;
};

static void bias_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct bias_job *j = ctx;
  for (int64_t r = i0; r < i1; r++) {
    float *o = j->out + r * j->O;
    for (int64_t k = 0; k < j->O; k++) o[k] += j->b[k];
  }
}

/* AVX-512 path: W^T packed per 32-output panel, then row blocks */
struct pack_job {
  const void *w; /* [O, In] in dt */
  enum dtype dt;
  float *bp;
  int64_t O, In;
  struct cpu_buf *tbuf;
  int failed;
};

/* packs 32-output panels [i0, i1), widening F16/BF16 rows through the
 * worker's scratch (no full-size F32 copy) */
static void pack_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct pack_job *j = ctx;
  for (int64_t p = i0; p < i1; p++) {
    int64_t n = j->O - p * 32 < 32 ? j->O - p * 32 : 32;
    const float *src = (const float *)j->w + p * 32 * j->In;
    if (j->dt != DT_F32) {
      float *tmp = cpu_buf_get(&j->tbuf[tid], (size_t)(n * j->In));
      if (!tmp) {
        j->failed = 1;
        return;
      }
      cpu_widen_serial(tmp, (const char *)j->w + (size_t)(p * 32 * j->In) * dtype_size(j->dt),
                       j->dt, n * j->In);
      src = tmp;
    }
    gemm_avx512_pack_bt(src, n, j->In, j->bp + p * 32 * j->In);
  }
}

struct lin_job {
  const float *x, *bp, *b;
  float *out;
  int64_t M, In, O, mb;
  struct cpu_buf *tbuf;
  int failed;
};

static void lin_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct lin_job *j = ctx;
  for (int64_t t = i0; t < i1; t++) {
    int64_t r0 = t * j->mb, rows = r0 + j->mb < j->M ? j->mb : j->M - r0;
    gemm_avx512_rows(j->x + r0 * j->In, j->In, rows, j->In, j->bp, j->O, j->b, j->out + r0 * j->O,
                     j->O);
  }
}

int linear_cpu(struct backend *be, struct tensor *out, const struct tensor *x,
               const struct tensor *w, const struct tensor *b) {
  static const char *op = "linear";
  int64_t O = w->shape[0], In = w->shape[1];
  int64_t M = In ? tensor_numel(x) / In : tensor_numel(out) / (O ? O : 1);
  if (M == 0 || O == 0) return 0;
  const float *bf = NULL;
  if (b && !(bf = cpu_param_f32(be, b, CPU_W_BIAS, op))) return -ENOMEM;
  struct cpu_ctx *c = cpu_ctx(be);
  if (c->avx512 && In > 0 && M >= 32) {
    float *bp = cpu_buf_get(&c->wbuf[CPU_W_PACK], gemm_avx512_bpack_floats(O, In));
    if (!bp) return backend_fail(be, -ENOMEM, "linear: no memory to pack weights");
    struct pack_job pj = {w->data, w->dtype, bp, O, In, c->tbuf, 0};
    parallel_for(c->pool, (O + 31) / 32, 1, pack_task, &pj);
    if (pj.failed) return backend_fail(be, -ENOMEM, "linear: no memory to widen weights");
    /* rows per task: a multiple of 8, 4 tasks per thread, at most 256 */
    int64_t mb = (M + 4 * c->threads - 1) / (4 * c->threads);
    mb = (mb + 7) / 8 * 8;
    if (mb > 256) mb = 256;
    struct lin_job lj = {x->data, bp, bf, out->data, M, In, O, mb, c->tbuf, 0};
    parallel_for(c->pool, (M + mb - 1) / mb, 1, lin_task, &lj);
    if (lj.failed) return backend_fail(be, -ENOMEM, "linear: no memory for packing");
    return 0;
  }
  const float *wf = cpu_param_f32(be, w, CPU_W_WEIGHT, op);
  if (!wf) return -ENOMEM;
  if (In == 0)
    memset(out->data, 0, (size_t)(M * O) * sizeof(float));
  else
    cpu_sgemm(be, 0, 1, M, O, In, 1.0f, x->data, In, wf, In, 0.0f, out->data, O);
  if (bf) {
    struct bias_job j = {out->data, bf, O};
    parallel_for(cpu_ctx(be)->pool, M, (1 << 14) / (O + 1) + 1, bias_task, &j);
  }
  return 0;
}

struct bmm_job {
  int ta, tb;
  int64_t M, N, K, sa, sb, sc;
  float alpha;
  const float *a, *b;
  float *c;
};

static void bmm_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct bmm_job *j = ctx;
  for (int64_t i = i0; i < i1; i++)
    cblas_sgemm(CblasRowMajor, j->ta ? CblasTrans : CblasNoTrans, j->tb ? CblasTrans : CblasNoTrans,
                (int)j->M, (int)j->N, (int)j->K, j->alpha, j->a + i * j->sa,
                j->ta ? (int)j->M : (int)j->K, j->b + i * j->sb, j->tb ? (int)j->K : (int)j->N,
                0.0f, j->c + i * j->sc, (int)j->N);
}

int matmul_cpu(struct backend *be, struct tensor *out, const struct tensor *a, int trans_a,
               const struct tensor *b, int trans_b, float alpha) {
  int d = a->ndim - 2;
  int64_t B = d ? a->shape[0] : 1;
  int64_t M = trans_a ? a->shape[d + 1] : a->shape[d], K = trans_a ? a->shape[d] : a->shape[d + 1];
  int64_t N = trans_b ? b->shape[d] : b->shape[d + 1];
  if (B == 0 || M == 0 || N == 0) return 0;
  if (K == 0) {
    memset(out->data, 0, (size_t)(B * M * N) * sizeof(float));
    return 0;
  }
  struct cpu_ctx *c = cpu_ctx(be);
  struct bmm_job j = {trans_a != 0, trans_b != 0, M,     N,       K,       M * K,
                      K * N,        M * N,        alpha, a->data, b->data, out->data};
  if (B >= 2 * c->threads || (B >= c->threads && 2.0 * M * N * K < 4e7)) {
    parallel_for(c->pool, B, 1, bmm_task, &j);
  } else {
    for (int64_t i = 0; i < B; i++)
      cpu_sgemm(be, j.ta, j.tb, M, N, K, alpha, j.a + i * j.sa, j.ta ? M : K, j.b + i * j.sb,
                j.tb ? K : N, 0.0f, j.c + i * j.sc, N);
  }
  return 0;
}
