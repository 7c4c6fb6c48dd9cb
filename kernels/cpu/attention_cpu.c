/* attention_cpu.c: multi-head scaled dot-product attention on the CPU.
 *
 * q [B, Lq, H*D], k and v [B, Lk, H*D] -> out [B, Lq, H*D]; per (b, h):
 * softmax(q_h k_h^T * scale) v_h, causal = mask key j > query i (top-left
 * aligned, as torch SDPA is_causal). Heads are read in place through the
 * GEMM leading dimension (no permute). A task is (b, h, chunk of blocks of
 * query rows); a block's scores [rows, Lk] live in the worker's scratch, so
 * memory is O(threads * rows * Lk), never O(Lq * Lk * heads). With AVX-512 and
 * D <= 160 a task packs k_h^T and v_h once and runs attn_block_avx512 per block
 * (register tiles, no GEMM packing); otherwise each block is two
 * single-threaded sgemm calls around a row softmax. SOUPD_CPU_NO_AVX512=1
 * forces the sgemm path (for tests and comparison).
 */
#include <cblas.h>
#include <stdlib.h>

#include "cpu_impl.h"

struct attn_job {
  const float *q, *k, *v;
  float *out;
  int64_t B, Lq, Lk, H, D;
  int64_t rows;   /* query rows per block */
  int64_t blocks; /* blocks per task */
  int64_t chunks; /* tasks per (b, h) */
  float scale;
  int causal, avx512;
  struct cpu_buf *tbuf;
  int failed;
};

/* sgemm path: one block of R rows starting at r0 seeing L keys */
static void attn_block_sgemm(const struct attn_job *j, const float *q, const float *k,
                             const float *v, float *o, int64_t R, int64_t r0, int64_t L, float *S) {
  int64_t HD = j->H * j->D;
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
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)R, (int)j->D, (int)L, 1.0f, S, (int)L,
              v, (int)HD, 0.0f, o, (int)HD);
}

/* a task = (b, h, chunk of `blocks` row blocks) */
static void attn_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct attn_job *j = ctx;
  int64_t HD = j->H * j->D;
  for (int64_t t = i0; t < i1; t++) {
    int64_t chunk = t % j->chunks, bh = t / j->chunks, h = bh % j->H, b = bh / j->H;
    int64_t c0 = chunk * j->blocks * j->rows;
    int64_t c1 = c0 + j->blocks * j->rows < j->Lq ? c0 + j->blocks * j->rows : j->Lq;
    if (c0 >= c1) continue;
    /* causal: rows < c1 see keys < c1 at most */
    int64_t keys = j->causal && c1 < j->Lk ? c1 : j->Lk;
    const float *k = j->k + b * j->Lk * HD + h * j->D;
    const float *v = j->v + b * j->Lk * HD + h * j->D;
    size_t need = j->avx512 ? attn_avx512_scratch(j->rows, keys, j->D) : (size_t)(j->rows * keys);
    float *S = cpu_buf_get(&j->tbuf[tid], need);
    if (!S) {
      j->failed = 1;
      return;
    }
    if (j->avx512) attn_pack_avx512(k, v, HD, j->D, keys, S);
    for (int64_t r0 = c0; r0 < c1; r0 += j->rows) {
      int64_t R = r0 + j->rows < c1 ? j->rows : c1 - r0;
      const float *q = j->q + (b * j->Lq + r0) * HD + h * j->D;
      float *o = j->out + (b * j->Lq + r0) * HD + h * j->D;
      if (j->avx512)
        attn_block_avx512(q, o, HD, j->D, R, r0, keys, j->causal, j->scale, S);
      else
        attn_block_sgemm(j, q, k, v, o, R, r0, j->causal && r0 + R < keys ? r0 + R : keys, S);
    }
  }
}

int attention_cpu(struct backend *be, struct tensor *out, const struct tensor *q,
                  const struct tensor *k, const struct tensor *v, int heads, float scale,
                  int causal) {
  int64_t B = q->shape[0], Lq = q->shape[1], Lk = k->shape[1], HD = q->shape[2];
  if (B == 0 || Lq == 0 || HD == 0) return 0;
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
  /* register tiles win up to the UNet head dims (<= 160); for wider heads
   * (the VAE's single 512-wide head) the blocked sgemm reuses k/v better */
  j.avx512 = c->avx512 && j.D <= 160;
  /* query rows per block: score block 128K floats (512 KB; 256 KB for the
   * sgemm path, which also packs), but at least D/2 rows so that the k and
   * v of a head (2*D*Lk floats, out of cache for large D) are reused over
   * enough rows; 16..512 rows */
  int64_t rows = (j.avx512 ? 1 << 17 : 1 << 16) / Lk;
  if (rows < j.D / 2) rows = j.D / 2;
  if (rows < 16) rows = 16;
  if (rows > 512) rows = 512;
  if (rows > Lq) rows = Lq;
  int64_t nblocks = (Lq + rows - 1) / rows;
  /* tasks: enough chunks per (b, h) for 4 tasks per thread; the avx512 path
   * packs k and v once per task, the sgemm path takes one block per task */
  int64_t chunks = nblocks;
  if (j.avx512) {
    int64_t want = (4 * c->threads + B * heads - 1) / (B * heads);
    chunks = want < nblocks ? want : nblocks;
  }
  j.rows = rows;
  j.blocks = (nblocks + chunks - 1) / chunks;
  j.chunks = (nblocks + j.blocks - 1) / j.blocks;
  parallel_for(c->pool, B * heads * j.chunks, 1, attn_task, &j);
  if (j.failed) return backend_fail(be, -ENOMEM, "attention: no memory for scores");
  return 0;
}
