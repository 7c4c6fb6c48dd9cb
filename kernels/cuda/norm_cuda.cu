/* norm_cuda.cu: group_norm (+SiLU), layer_norm and softmax on the GPU.
 *
 * Same numerics as kernels/cpu/norm_cpu.c up to summation order: two-pass
 * statistics (mean, then mean of squared deviations) accumulated in double,
 * biased variance, y = (x - mean) * (gamma * rstd) + beta in double rounded
 * once to float, SiLU after in float. One thread block per row (layer
 * norm, softmax) and per group for group norm when there are enough groups
 * to fill the device; otherwise (large images, few groups) group norm splits
 * each group over several blocks: partial sums per (group, split) in double,
 * reduced in a fixed order (deterministic), first for the mean, then for the
 * squared deviations, then an elementwise pass applies the affine map. out may alias x (each block
 * reads all of its data before the writing pass touches it: the statistics pass completes before
 * the write pass starts). Softmax: a row of -Inf gives NaN (as PyTorch and the CPU backend).
 */
#include <math.h>

#include "cuda_impl.cuh"

#define NB 256 /* threads per block */

/* sum over the block (NB threads); result valid in every thread */
__device__ static double block_sum(double v, double *sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  __syncthreads(); /* sh may still be read from a previous call */
  if (lane == 0) sh[wid] = v;
  __syncthreads();
  double s = 0;
  for (int i = 0; i < NB / 32; i++) s += sh[i];
  return s;
}
__device__ static float block_maxf(float v, float *sh) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) sh[wid] = v;
  __syncthreads();
  float m = sh[0];
  for (int i = 1; i < NB / 32; i++) m = fmaxf(m, sh[i]);
  return m;
}
__device__ static float block_sumf(float v, float *sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) sh[wid] = v;
  __syncthreads();
  float s = 0;
  for (int i = 0; i < NB / 32; i++) s += sh[i];
  return s;
}

__device__ static void moments(const float *x, int64_t n, double *sh, double *mean, double *var) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += NB) s += (double)x[i];
  double m = n ? block_sum(s, sh) / (double)n : 0.0;
  double q = 0;
  for (int64_t i = threadIdx.x; i < n; i += NB) {
    double d = (double)x[i] - m;
    q = fma(d, d, q);
  }
  double v = block_sum(q, sh);
  *mean = m;
  *var = n ? v / (double)n : 0.0;
}

__device__ static float silu_f(float v) {
  return v / (1.0f + expf(-v));
}

/* block t = n * groups + g over x viewed as [N*groups, cpg, S] */
__global__ void group_norm_kernel(float *out, const float *x, const void *gamma, const void *beta,
                                  int gdt, int bdt, int64_t groups, int64_t cpg, int64_t S,
                                  float eps, int silu) {
  __shared__ double sh[NB / 32];
  int64_t t = blockIdx.x, g = t % groups;
  const float *xg = x + t * cpg * S;
  float *yg = out + t * cpg * S;
  double mean, var;
  moments(xg, cpg * S, sh, &mean, &var);
  double rstd = 1.0 / sqrt(var + (double)eps);
  __syncthreads(); /* every read of this group done before out (maybe == x) is written */
  for (int64_t i = threadIdx.x; i < cpg * S; i += NB) {
    int64_t ch = g * cpg + i / S;
    double a = (gamma ? (double)cu_load(gamma, gdt, ch) : 1.0) * rstd;
    double c = beta ? (double)cu_load(beta, bdt, ch) : 0.0;
    float v = (float)(((double)xg[i] - mean) * a + c);
    yg[i] = silu ? silu_f(v) : v;
  }
}

__global__ void layer_norm_kernel(float *out, const float *x, const void *gamma, const void *beta,
                                  int gdt, int bdt, int64_t C, float eps) {
  __shared__ double sh[NB / 32];
  const float *xr = x + (int64_t)blockIdx.x * C;
  float *yr = out + (int64_t)blockIdx.x * C;
  double mean, var;
  moments(xr, C, sh, &mean, &var);
  double rstd = 1.0 / sqrt(var + (double)eps);
  __syncthreads();
  for (int64_t i = threadIdx.x; i < C; i += NB) {
    double v = ((double)xr[i] - mean) * rstd;
    float g = gamma ? cu_load(gamma, gdt, i) : 1.0f, b = beta ? cu_load(beta, bdt, i) : 0.0f;
    yr[i] = (float)(v * (double)g + (double)b);
  }
}

/* softmax of rows of length C; causal_base >= 0: row r keeps only its first
 * min(causal_base + r % rows_per_mat + 1, C) entries, the rest become 0 */
__global__ void softmax_kernel(float *out, const float *x, int64_t C, int64_t causal_base,
                               int64_t rows_per_mat) {
  __shared__ float sh[NB / 32];
  int64_t r = blockIdx.x;
  const float *xr = x + r * C;
  float *yr = out + r * C;
  int64_t n = C;
  if (causal_base >= 0) {
    int64_t lim = causal_base + r % rows_per_mat + 1;
    n = lim < C ? lim : C;
  }
  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += NB) m = fmaxf(m, xr[i]);
  m = block_maxf(m, sh);
  float s = 0;
  for (int64_t i = threadIdx.x; i < n; i += NB) s += expf(xr[i] - m);
  s = block_sumf(s, sh);
  float inv = 1.0f / s;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < C; i += NB) yr[i] = i < n ? expf(xr[i] - m) * inv : 0.0f;
}

/* block (t, sp): partial sum over elements [sp*chunk, (sp+1)*chunk) of
 * group t (E elements), of x (mean == NULL) or of (x - mean[t])^2 */
__global__ void gn_partial_kernel(double *part, const float *x, int64_t E, int64_t chunk,
                                  int splits, const double *mean) {
  __shared__ double sh[NB / 32];
  int64_t t = blockIdx.x;
  int sp = (int)blockIdx.y;
  const float *xg = x + t * E;
  int64_t i0 = (int64_t)sp * chunk, i1 = i0 + chunk < E ? i0 + chunk : E;
  double m = mean ? mean[t] : 0.0, acc = 0;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += NB) {
    double d = (double)xg[i] - m;
    acc = mean ? fma(d, d, acc) : acc + d;
  }
  acc = block_sum(acc, sh);
  if (threadIdx.x == 0) part[t * splits + sp] = acc;
}

/* one thread per group: out[t] = sum of its splits / E; rstd: 1/sqrt(. + eps) */
__global__ void gn_reduce_kernel(double *out, const double *part, int64_t T, int splits, int64_t E,
                                 int rstd, float eps) {
  CU_FOR(t, T) {
    double s = 0;
    for (int k = 0; k < splits; k++) s += part[t * splits + k];
    double v = s / (double)E;
    out[t] = rstd ? 1.0 / sqrt(v + (double)eps) : v;
  }
}

__global__ void gn_apply_kernel(float *out, const float *x, const double *mean, const double *rstd,
                                const void *gamma, const void *beta, int gdt, int bdt,
                                int64_t groups, int64_t cpg, int64_t S, int64_t n, int silu) {
  CU_FOR(i, n) {
    int64_t E = cpg * S, t = i / E, g = t % groups, ch = g * cpg + (i % E) / S;
    double a = (gamma ? (double)cu_load(gamma, gdt, ch) : 1.0) * rstd[t];
    double c = beta ? (double)cu_load(beta, bdt, ch) : 0.0;
    float v = (float)(((double)x[i] - mean[t]) * a + c);
    out[i] = silu ? silu_f(v) : v;
  }
}

/* used by attention: in-place softmax over [rows, C] with optional causal mask */
int cuda_softmax_rows(struct backend *be, float *p, int64_t rows, int64_t C, int64_t causal_base,
                      int64_t rows_per_mat) {
  if (rows <= 0 || C <= 0) return 0;
  if (rows > INT32_MAX) return backend_fail(be, -EINVAL, "softmax: too many rows");
  softmax_kernel<<<(unsigned)rows, NB, 0, cuda_ctx(be)->stream>>>(p, p, C, causal_base,
                                                                  rows_per_mat);
  CU_LAUNCHED(be);
  return 0;
}

int group_norm_cuda(struct backend *be, struct tensor *out, const struct tensor *x,
                    const struct tensor *gamma, const struct tensor *beta, int groups, float eps,
                    int fuse_silu) {
  int64_t N = x->shape[0], C = x->shape[1];
  if (N == 0 || C == 0) return 0;
  int64_t S = tensor_numel(x) / (N * C);
  if (N * groups > INT32_MAX) return backend_fail(be, -EINVAL, "group_norm: too many groups");
  struct cuda_ctx *c = cuda_ctx(be);
  int64_t T = N * groups, cpg = C / groups, E = cpg * S;
  const void *gp = gamma ? gamma->data : NULL, *bp = beta ? beta->data : NULL;
  int gdt = gamma ? (int)gamma->dtype : 0, bdt = beta ? (int)beta->dtype : 0;
  int64_t want = 4 * (int64_t)c->sms; /* blocks that fill the device */
  if (T >= 2 * (int64_t)c->sms || E <= 16384) {
    group_norm_kernel<<<(unsigned)T, NB, 0, c->stream>>>((float *)out->data, (const float *)x->data,
                                                         gp, bp, gdt, bdt, groups, cpg, S, eps,
                                                         fuse_silu != 0);
    CU_LAUNCHED(be);
    return 0;
  }
  int64_t splits = (want + T - 1) / T, max_splits = (E + 8191) / 8192;
  if (splits > max_splits) splits = max_splits;
  if (splits > 1024) splits = 1024;
  if (splits < 1) splits = 1;
  int64_t chunk = (E + splits - 1) / splits;
  double *st = (double *)cuda_scratch(be, CS_STATS, (size_t)(T * splits + 2 * T) * 8);
  if (!st) return -ENOMEM;
  double *part = st, *mean = st + T * splits, *rstd = mean + T;
  dim3 grid((unsigned)T, (unsigned)splits);
  const float *xd = (const float *)x->data;
  gn_partial_kernel<<<grid, NB, 0, c->stream>>>(part, xd, E, chunk, (int)splits, NULL);
  CU_LAUNCHED(be);
  gn_reduce_kernel<<<cu_blocks(T, 128), 128, 0, c->stream>>>(mean, part, T, (int)splits, E, 0, eps);
  CU_LAUNCHED(be);
  gn_partial_kernel<<<grid, NB, 0, c->stream>>>(part, xd, E, chunk, (int)splits, mean);
  CU_LAUNCHED(be);
  gn_reduce_kernel<<<cu_blocks(T, 128), 128, 0, c->stream>>>(rstd, part, T, (int)splits, E, 1, eps);
  CU_LAUNCHED(be);
  int64_t n = T * E;
  gn_apply_kernel<<<cu_blocks(n, 256), 256, 0, c->stream>>>(
      (float *)out->data, xd, mean, rstd, gp, bp, gdt, bdt, groups, cpg, S, n, fuse_silu != 0);
  CU_LAUNCHED(be);
  return 0;
}

int layer_norm_cuda(struct backend *be, struct tensor *out, const struct tensor *x,
                    const struct tensor *gamma, const struct tensor *beta, float eps) {
  int64_t C = x->shape[x->ndim - 1];
  if (C == 0 || tensor_numel(x) == 0) return 0;
  int64_t rows = tensor_numel(x) / C;
  if (rows > INT32_MAX) return backend_fail(be, -EINVAL, "layer_norm: too many rows");
  layer_norm_kernel<<<(unsigned)rows, NB, 0, cuda_ctx(be)->stream>>>(
      (float *)out->data, (const float *)x->data, gamma ? gamma->data : NULL,
      beta ? beta->data : NULL, gamma ? (int)gamma->dtype : 0, beta ? (int)beta->dtype : 0, C, eps);
  CU_LAUNCHED(be);
  return 0;
}

int softmax_cuda(struct backend *be, struct tensor *out, const struct tensor *x) {
  int64_t C = x->shape[x->ndim - 1];
  if (C == 0 || tensor_numel(x) == 0) return 0;
  int64_t rows = tensor_numel(x) / C;
  if (rows > INT32_MAX) return backend_fail(be, -EINVAL, "softmax: too many rows");
  softmax_kernel<<<(unsigned)rows, NB, 0, cuda_ctx(be)->stream>>>((float *)out->data,
                                                                  (const float *)x->data, C, -1, 1);
  CU_LAUNCHED(be);
  return 0;
}
