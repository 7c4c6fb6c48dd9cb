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
 *
 * Opt-in (SOUPD_CUDA_ATTN=fused at backend creation, head dims <= 160): a
 * fused F32 kernel with online softmax (flash-attention style, no score
 * memory at all). A block owns ATT_BQ query rows of one (b, h); 4 threads
 * per row; K/V tiles of ATT_BK keys go through shared memory (rows padded
 * to D+1 floats against bank conflicts); each thread keeps D/4 output
 * accumulators in registers (template on the per-thread width). Rows and
 * keys past the end and causally masked keys score -Inf; a row's running
 * max starts at -Inf and the correction factor is guarded so that a tile
 * that is entirely masked for a row changes nothing.
 */
#include <math.h>

#include "cuda_impl.cuh"

#define ATTN_SCORE_FLOATS ((int64_t)32 << 20)
#define ATT_BQ 64
#define ATT_BK 32
#define ATT_THREADS (ATT_BQ * 4)

template <int DPT> /* output dims per thread: ceil(D / 4) <= DPT */
__global__ void __launch_bounds__(ATT_THREADS)
    attention_fused_kernel(float *out, const float *q, const float *k, const float *v, int64_t Lq,
                           int64_t Lk, int64_t H, int64_t D, float scale, int causal) {
  extern __shared__ float sm[];
  const int64_t ld = D + 1;
  float *Qs = sm;               /* [ATT_BQ][D+1] */
  float *Ks = Qs + ATT_BQ * ld; /* [ATT_BK][D+1] */
  float *Vs = Ks + ATT_BK * ld; /* [ATT_BK][D+1] */
  float *Ps = Vs + ATT_BK * ld; /* [ATT_BQ][ATT_BK+1] */
  const int tid = threadIdx.x, row = tid >> 2, t4 = tid & 3;
  const int64_t h = blockIdx.y, b = blockIdx.z, q0 = (int64_t)blockIdx.x * ATT_BQ;
  const int64_t HD = H * D;
  const float *qb = q + b * Lq * HD + h * D, *kb = k + b * Lk * HD + h * D,
              *vb = v + b * Lk * HD + h * D;
  for (int64_t i = tid; i < ATT_BQ * D; i += ATT_THREADS) {
    int64_t r = i / D, d = i % D;
    Qs[r * ld + d] = q0 + r < Lq ? qb[(q0 + r) * HD + d] : 0.0f;
  }
  float o[DPT];
#pragma unroll
  for (int j = 0; j < DPT; j++) o[j] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  const int64_t qi = q0 + row;
  /* keys this block needs: all, or up to its last row when causal */
  int64_t kend = Lk;
  if (causal) {
    int64_t last = q0 + ATT_BQ < Lq ? q0 + ATT_BQ : Lq; /* rows < last */
    kend = last < Lk ? last : Lk;
  }
  for (int64_t k0 = 0; k0 < kend; k0 += ATT_BK) {
    __syncthreads(); /* previous tile fully consumed (and Qs written) */
    for (int64_t i = tid; i < ATT_BK * D; i += ATT_THREADS) {
      int64_t r = i / D, d = i % D;
      int in = k0 + r < Lk;
      Ks[r * ld + d] = in ? kb[(k0 + r) * HD + d] : 0.0f;
      Vs[r * ld + d] = in ? vb[(k0 + r) * HD + d] : 0.0f;
    }
    __syncthreads();
    float s[ATT_BK / 4];
    float tmax = -INFINITY;
#pragma unroll
    for (int jj = 0; jj < ATT_BK / 4; jj++) {
      int j = t4 + 4 * jj;
      int64_t kj = k0 + j;
      float acc = 0.0f;
      for (int64_t d = 0; d < D; d++) acc = fmaf(Qs[row * ld + d], Ks[j * ld + d], acc);
      acc *= scale;
      if (kj >= Lk || (causal && kj > qi)) acc = -INFINITY;
      s[jj] = acc;
      tmax = fmaxf(tmax, acc);
    }
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
    float mnew = fmaxf(m, tmax);
    float corr = mnew == -INFINITY ? 1.0f : expf(m - mnew); /* m == -Inf: exp(-Inf) = 0 */
    float psum = 0.0f;
#pragma unroll
    for (int jj = 0; jj < ATT_BK / 4; jj++) {
      float p = mnew == -INFINITY ? 0.0f : expf(s[jj] - mnew);
      Ps[row * (ATT_BK + 1) + t4 + 4 * jj] = p;
      psum += p;
    }
    psum += __shfl_xor_sync(0xffffffffu, psum, 1);
    psum += __shfl_xor_sync(0xffffffffu, psum, 2);
    l = l * corr + psum;
    m = mnew;
    __syncwarp(); /* the 4 threads of a row are in one warp */
#pragma unroll
    for (int dd = 0; dd < DPT; dd++) {
      int64_t d = t4 + 4 * dd;
      if (d < D) {
        float acc = o[dd] * corr;
        for (int j = 0; j < ATT_BK; j++)
          acc = fmaf(Ps[row * (ATT_BK + 1) + j], Vs[j * ld + d], acc);
        o[dd] = acc;
      }
    }
  }
  if (qi < Lq) {
    float inv = 1.0f / l;
    float *ob = out + (b * Lq + qi) * HD + h * D;
#pragma unroll
    for (int dd = 0; dd < DPT; dd++) {
      int64_t d = t4 + 4 * dd;
      if (d < D) ob[d] = o[dd] * inv;
    }
  }
}

template <int DPT>
static int launch_fused(struct backend *be, float *out, const float *q, const float *k,
                        const float *v, int64_t B, int64_t Lq, int64_t Lk, int64_t H, int64_t D,
                        float scale, int causal) {
  size_t smem = (size_t)((ATT_BQ + 2 * ATT_BK) * (D + 1) + ATT_BQ * (ATT_BK + 1)) * 4;
  CU_TRY(be, cudaFuncSetAttribute(attention_fused_kernel<DPT>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  dim3 grid((unsigned)((Lq + ATT_BQ - 1) / ATT_BQ), (unsigned)H, (unsigned)B);
  attention_fused_kernel<DPT><<<grid, ATT_THREADS, smem, cuda_ctx(be)->stream>>>(
      out, q, k, v, Lq, Lk, H, D, scale, causal);
  CU_LAUNCHED(be);
  return 0;
}

static int attention_fused(struct backend *be, float *out, const float *q, const float *k,
                           const float *v, int64_t B, int64_t Lq, int64_t Lk, int64_t H, int64_t D,
                           float scale, int causal) {
  if (D <= 32) return launch_fused<8>(be, out, q, k, v, B, Lq, Lk, H, D, scale, causal);
  if (D <= 64) return launch_fused<16>(be, out, q, k, v, B, Lq, Lk, H, D, scale, causal);
  if (D <= 96) return launch_fused<24>(be, out, q, k, v, B, Lq, Lk, H, D, scale, causal);
  if (D <= 128) return launch_fused<32>(be, out, q, k, v, B, Lq, Lk, H, D, scale, causal);
  return launch_fused<40>(be, out, q, k, v, B, Lq, Lk, H, D, scale, causal);
}

int attention_cuda(struct backend *be, struct tensor *out, const struct tensor *q,
                   const struct tensor *k, const struct tensor *v, int heads, float scale,
                   int causal) {
  int rc;
  int64_t B = q->shape[0], Lq = q->shape[1], Lk = k->shape[1], HD = q->shape[2];
  if (B == 0 || Lq == 0 || HD == 0) return 0;
  int64_t H = heads, D = HD / heads;
  if (cuda_ctx(be)->attn_fused && D <= 160 && H <= 65535 && B <= 65535 &&
      (Lq + ATT_BQ - 1) / ATT_BQ <= INT32_MAX)
    return attention_fused(be, (float *)out->data, (const float *)q->data, (const float *)k->data,
                           (const float *)v->data, B, Lq, Lk, H, D, scale, causal != 0);
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
