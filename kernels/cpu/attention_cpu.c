/* attention_cpu.c: multi-head scaled dot-product attention on the CPU.
 *
 * q [B, Lq, H*D], k and v [B, Lk, H*D] -> out [B, Lq, H*D]; per (b, h):
 * softmax(q_h k_h^T * scale) v_h, causal = mask key j > query i (top-left
 * aligned, as torch SDPA is_causal). Heads are read in place through the
 * GEMM leading dimension (no permute). A task is (b, h, block of query
 * rows); its score block [rows, Lk] lives in the worker's scratch, so memory
 * is O(threads * rows * Lk), never O(Lq * Lk * heads).
 */
#include <cblas.h>

#include "cpu_impl.h"

struct attn_job {
  const float *q, *k, *v;
  float *out;
  int64_t B, Lq, Lk, H, D, rows, blocks;
  float scale;
  int causal;
  struct cpu_buf *tbuf;
  int failed;
};

static void attn_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct attn_job *j = ctx;
  int64_t HD = j->H * j->D;
  for (int64_t t = i0; t < i1; t++) {
    int64_t blk = t % j->blocks, bh = t / j->blocks, h = bh % j->H, b = bh / j->H;
    int64_t r0 = blk * j->rows, r1 = r0 + j->rows < j->Lq ? r0 + j->rows : j->Lq, R = r1 - r0;
    /* causal: rows r0..r1-1 see keys 0..r1-1 at most */
    int64_t L = j->causal && r1 < j->Lk ? r1 : j->Lk;
    float *S = cpu_buf_get(&j->tbuf[tid], (size_t)(R * L));
    if (!S) {
      j->failed = 1;
      return;
    }
    const float *q = j->q + (b * j->Lq + r0) * HD + h * j->D;
    const float *k = j->k + b * j->Lk * HD + h * j->D;
    const float *v = j->v + b * j->Lk * HD + h * j->D;
    float *o = j->out + (b * j->Lq + r0) * HD + h * j->D;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)R, (int)L, (int)j->D, j->scale, q,
                (int)HD, k, (int)HD, 0.0f, S, (int)L);
    for (int64_t r = 0; r < R; r++) {
      float *s = S + r * L;
      int64_t n = L;
      if (j->causal) {
        n = r0 + r + 1 < L ? r0 + r + 1 : L;
        for (int64_t c = n; c < L; c++) s[c] = 0.0f;
      }
      softmax_row_cpu(s, s, n);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)R, (int)j->D, (int)L, 1.0f, S,
                (int)L, v, (int)HD, 0.0f, o, (int)HD);
  }
}

int attention_cpu(struct backend *be, struct tensor *out, const struct tensor *q,
                  const struct tensor *k, const struct tensor *v, int heads, float scale,
                  int causal) {
  static const char *op = "attention";
  int rc;
  if ((rc = cpu_check_act(be, q, op, "q")) || (rc = cpu_check_ndim(be, q, op, "q", 3, 3)) ||
      (rc = cpu_check_act(be, k, op, "k")) || (rc = cpu_check_ndim(be, k, op, "k", 3, 3)) ||
      (rc = cpu_check_act(be, v, op, "v")) || (rc = cpu_check_ndim(be, v, op, "v", 3, 3)) ||
      (rc = cpu_check_act(be, out, op, "out")) ||
      (rc = cpu_check_same_shape(be, out, q, op, "out", "q")) ||
      (rc = cpu_check_same_shape(be, v, k, op, "v", "k")))
    return rc;
  int64_t B = q->shape[0], Lq = q->shape[1], Lk = k->shape[1], HD = q->shape[2];
  char s1[96], s2[96];
  if (k->shape[0] != B || k->shape[2] != HD)
    return cpu_fail(be, -EINVAL, "attention: k %s does not fit q %s",
                    cpu_shape_str(k, s1, sizeof s1), cpu_shape_str(q, s2, sizeof s2));
  if (heads < 1 || HD % heads != 0)
    return cpu_fail(be, -EINVAL, "attention: width %lld not divisible into %d heads", (long long)HD,
                    heads);
  if (out->data == q->data || out->data == k->data || out->data == v->data)
    return cpu_fail(be, -EINVAL, "attention: out may not alias q, k or v");
  if (B == 0 || Lq == 0 || HD == 0) return 0;
  if (Lk == 0) return cpu_fail(be, -EINVAL, "attention: no keys (Lk = 0)");
  struct cpu_ctx *c = cpu_ctx(be);
  struct attn_job j = {.q = q->data,
                       .k = k->data,
                       .v = v->data,
                       .out = out->data,
                       .B = B,
                       .Lq = Lq,
                       .Lk = Lk,
                       .H = heads,
                       .D = HD / heads,
                       .scale = scale,
                       .causal = causal != 0,
                       .tbuf = c->tbuf};
  /* query rows per task: score block about 64K floats (256 KB), 16..512 rows */
  int64_t rows = (1 << 16) / Lk;
  if (rows < 16) rows = 16;
  if (rows > 512) rows = 512;
  if (rows > Lq) rows = Lq;
  while (rows > 16 && B * heads * ((Lq + rows - 1) / rows) < 4 * c->threads) rows = (rows + 1) / 2;
  j.rows = rows;
  j.blocks = (Lq + rows - 1) / rows;
  parallel_for(c->pool, B * heads * j.blocks, 1, attn_task, &j);
  if (j.failed) return cpu_fail(be, -ENOMEM, "attention: no memory for scores");
  return 0;
}
