/* attention_cuda.cu: multi-head scaled dot-product attention on the GPU.
 *
 * q [B, Lq, H*D], k and v [B, Lk, H*D] -> out [B, Lq, H*D]; per (b, h):
 * softmax(q_h k_h^T * scale) v_h; causal masks key j > query i (top-left
 * aligned, as torch SDPA is_causal and the CPU backend).
 *
 * Two passes per block of query rows, all heads of one image at once: a
 * strided-batched GEMM (batch = heads, heads read in place through the
 * leading dimension) writes the scores S [H, R, Lk], a row softmax (with the
 * causal mask) turns them into probabilities in place, a second batched GEMM
 * writes out rows. Memory is bounded: R is chosen so that H * R * Lk floats
 * stay under ATTN_SCORE_FLOATS (128 MiB), never O(Lq * Lk * heads) for long
 * sequences. The GEMMs follow the backend's math mode (F32 by default).
 * (A fused online-softmax kernel would avoid the score round trip; not
 * written yet.)
 */
#include "cuda_impl.cuh"

#define ATTN_SCORE_FLOATS ((int64_t)32 << 20)

int attention_cuda(struct backend *be, struct tensor *out, const struct tensor *q,
                   const struct tensor *k, const struct tensor *v, int heads, float scale,
                   int causal) {
  static const char *op = "attention";
  int rc;
  if ((rc = cuda_check_act(be, q, op, "q")) || (rc = cuda_check_ndim(be, q, op, "q", 3, 3)) ||
      (rc = cuda_check_act(be, k, op, "k")) || (rc = cuda_check_ndim(be, k, op, "k", 3, 3)) ||
      (rc = cuda_check_act(be, v, op, "v")) || (rc = cuda_check_ndim(be, v, op, "v", 3, 3)) ||
      (rc = cuda_check_act(be, out, op, "out")) ||
      (rc = cuda_check_same_shape(be, out, q, op, "out", "q")) ||
      (rc = cuda_check_same_shape(be, v, k, op, "v", "k")))
    return rc;
  int64_t B = q->shape[0], Lq = q->shape[1], Lk = k->shape[1], HD = q->shape[2];
  char s1[96], s2[96];
  if (k->shape[0] != B || k->shape[2] != HD)
    return cuda_fail(be, -EINVAL, "attention: k %s does not fit q %s",
                     cuda_shape_str(k, s1, sizeof s1), cuda_shape_str(q, s2, sizeof s2));
  if (heads < 1 || HD % heads != 0)
    return cuda_fail(be, -EINVAL, "attention: width %lld not divisible into %d heads",
                     (long long)HD, heads);
  if (out->data == q->data || out->data == k->data || out->data == v->data)
    return cuda_fail(be, -EINVAL, "attention: out may not alias q, k or v");
  if (B == 0 || Lq == 0 || HD == 0) return 0;
  if (Lk == 0) return cuda_fail(be, -EINVAL, "attention: no keys (Lk = 0)");
  int64_t H = heads, D = HD / heads;
  int64_t R = ATTN_SCORE_FLOATS / (H * Lk);
  if (R < 1) R = 1;
  if (R > Lq) R = Lq;
  float *S = (float *)cuda_scratch(be, CS_SCORES, (size_t)(H * R * Lk) * 4);
  if (!S) return -ENOMEM;
  const float *qd = (const float *)q->data, *kd = (const float *)k->data,
              *vd = (const float *)v->data;
  float *od = (float *)out->data;
  for (int64_t b = 0; b < B; b++) {
    for (int64_t r0 = 0; r0 < Lq; r0 += R) {
      int64_t rows = Lq - r0 < R ? Lq - r0 : R;
      /* causal: these rows see keys 0..r0+rows-1 at most */
      int64_t L = causal && r0 + rows < Lk ? r0 + rows : Lk;
      const float *qb = qd + (b * Lq + r0) * HD;
      const float *kb = kd + b * Lk * HD, *vb = vd + b * Lk * HD;
      float *ob = od + (b * Lq + r0) * HD;
      /* S[h] [rows, L] = scale * q_h [rows, D] @ k_h [L, D]^T */
      if ((rc = cuda_sgemm(be, 0, 1, rows, L, D, scale, qb, HD, D, kb, HD, D, 0.0f, S, L, rows * L,
                           H)))
        return rc;
      if ((rc = cuda_softmax_rows(be, S, H * rows, L, causal ? r0 : -1, rows))) return rc;
      /* out_h [rows, D] = P[h] [rows, L] @ v_h [L, D] */
      if ((rc = cuda_sgemm(be, 0, 0, rows, D, L, 1.0f, S, L, rows * L, vb, HD, D, 0.0f, ob, HD, D,
                           H)))
        return rc;
    }
  }
  return 0;
}
