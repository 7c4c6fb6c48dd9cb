/* layout_cuda.cu: concat_channels, upsample_nearest, permute, slice,
 * timestep_embedding and embedding on the GPU.
 *
 * Pure data movement is bit-exact with the CPU backend: upsample_nearest
 * uses PyTorch's legacy source index (same size -> same, exactly 2x -> dst>>1,
 * else min(floor(dst * (float)(in/out)), in-1) in float); permute maps each
 * output element to its input offset through per-dim strides. The timestep
 * embedding is computed on the host with the CPU backend's formula (the
 * values are then bit-identical to the CPU's) and uploaded; embedding
 * checks ids on the host, uploads them and gathers rows, widening F16/BF16.
 * No op here allows out to alias its input.
 */
#include <math.h>
#include <stdlib.h>

#include "cuda_impl.cuh"

__global__ void concat_kernel(float *out, const float *a, const float *b, int64_t N, int64_t na,
                              int64_t nb) {
  CU_FOR(i, N * (na + nb)) {
    int64_t n = i / (na + nb), j = i % (na + nb);
    out[i] = j < na ? a[n * na + j] : b[n * nb + j - na];
  }
}

__device__ static int64_t nearest_src(int64_t dst, int64_t in, int64_t out) {
  if (out == in) return dst;
  if (out == 2 * in) return dst >> 1;
  float scale = __fdiv_rn((float)in, (float)out);
  int64_t s = (int64_t)floorf(__fmul_rn((float)dst, scale));
  return s < in - 1 ? s : in - 1;
}

__global__ void upsample_kernel(float *out, const float *x, int64_t planes, int64_t H, int64_t W,
                                int64_t Ho, int64_t Wo) {
  CU_FOR(i, planes * Ho * Wo) {
    int64_t ox = i % Wo, oy = (i / Wo) % Ho, p = i / (Wo * Ho);
    out[i] = x[(p * H + nearest_src(oy, H, Ho)) * W + nearest_src(ox, W, Wo)];
  }
}

struct perm_args {
  int nd;
  int64_t oshape[TENSOR_MAX_DIMS], xstride[TENSOR_MAX_DIMS];
};

__global__ void permute_kernel(float *out, const float *x, int64_t n, struct perm_args a) {
  CU_FOR(i, n) {
    int64_t rem = i, off = 0;
    for (int d = a.nd - 1; d >= 0; d--) {
      off += (rem % a.oshape[d]) * a.xstride[d];
      rem /= a.oshape[d];
    }
    out[i] = x[off];
  }
}

__global__ void slice_kernel(float *out, const float *x, int64_t outer, int64_t len, int64_t xlen) {
  CU_FOR(i, outer * len) out[i] = x[(i / len) * xlen + i % len];
}

__global__ void embedding_kernel(float *out, const int32_t *ids, const void *table, int dt,
                                 int64_t n, int64_t D) {
  CU_FOR(i, n * D) out[i] = cu_load(table, dt, (int64_t)ids[i / D] * D + i % D);
}

int concat_channels_cuda(struct backend *be, struct tensor *out, const struct tensor *a,
                         const struct tensor *b) {
  int64_t N = a->shape[0];
  if (N == 0 || tensor_numel(out) == 0) return 0;
  int64_t na = tensor_numel(a) / N, nb = tensor_numel(b) / N;
  concat_kernel<<<cu_blocks(N * (na + nb), 256), 256, 0, cuda_ctx(be)->stream>>>(
      (float *)out->data, (const float *)a->data, (const float *)b->data, N, na, nb);
  CU_LAUNCHED(be);
  return 0;
}

int upsample_nearest_cuda(struct backend *be, struct tensor *out, const struct tensor *x) {
  int64_t n = tensor_numel(out);
  if (n == 0) return 0;
  upsample_kernel<<<cu_blocks(n, 256), 256, 0, cuda_ctx(be)->stream>>>(
      (float *)out->data, (const float *)x->data, x->shape[0] * x->shape[1], x->shape[2],
      x->shape[3], out->shape[2], out->shape[3]);
  CU_LAUNCHED(be);
  return 0;
}

int permute_cuda(struct backend *be, struct tensor *out, const struct tensor *x, const int *perm) {
  int nd = x->ndim;
  int64_t n = tensor_numel(x);
  if (n == 0) return 0;
  int64_t xs[TENSOR_MAX_DIMS];
  xs[nd - 1] = 1;
  for (int d = nd - 2; d >= 0; d--) xs[d] = xs[d + 1] * x->shape[d + 1];
  struct perm_args a;
  memset(&a, 0, sizeof a);
  a.nd = nd;
  for (int i = 0; i < nd; i++) {
    a.oshape[i] = out->shape[i];
    a.xstride[i] = xs[perm[i]];
  }
  permute_kernel<<<cu_blocks(n, 256), 256, 0, cuda_ctx(be)->stream>>>((float *)out->data,
                                                                      (const float *)x->data, n, a);
  CU_LAUNCHED(be);
  return 0;
}

int slice_cuda(struct backend *be, struct tensor *out, const struct tensor *x, int dim,
               int64_t start) {
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < dim; i++) outer *= x->shape[i];
  for (int i = dim + 1; i < x->ndim; i++) inner *= x->shape[i];
  if (tensor_numel(out) == 0) return 0;
  int64_t len = out->shape[dim] * inner;
  slice_kernel<<<cu_blocks(outer * len, 256), 256, 0, cuda_ctx(be)->stream>>>(
      (float *)out->data, (const float *)x->data + start * inner, outer, len,
      x->shape[dim] * inner);
  CU_LAUNCHED(be);
  return 0;
}

int timestep_embedding_cuda(struct backend *be, struct tensor *out, const float *t, int dim,
                            int flip_sin_to_cos, float freq_shift, float max_period) {
  int64_t N = out->shape[0];
  int half = dim / 2;
  if (N == 0) return 0;
  float *h = (float *)malloc((size_t)(N * dim) * sizeof(float));
  if (!h) return backend_fail(be, -ENOMEM, "timestep_embedding: no host memory");
  float neg_log = (float)-log((double)max_period);
  float denom = (float)half - freq_shift;
  for (int64_t n = 0; n < N; n++) {
    float *row = h + n * dim;
    for (int k = 0; k < half; k++) {
      float e = neg_log * (float)k;
      e = e / denom;
      float arg = t[n] * expf(e);
      float s = sinf(arg), c = cosf(arg);
      row[flip_sin_to_cos ? half + k : k] = s;
      row[flip_sin_to_cos ? k : half + k] = c;
    }
    if (dim % 2) row[dim - 1] = 0.0f;
  }
  struct cuda_ctx *c = cuda_ctx(be);
  cudaError_t e =
      cudaMemcpyAsync(out->data, h, (size_t)(N * dim) * 4, cudaMemcpyHostToDevice, c->stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream); /* h is pageable: wait before free */
  free(h);
  if (e != cudaSuccess)
    return backend_fail(be, -EIO, "timestep_embedding: copy failed: %s", cudaGetErrorString(e));
  return 0;
}

int embedding_cuda(struct backend *be, struct tensor *out, const int32_t *ids,
                   const struct tensor *table) {
  int64_t D = table->shape[1], n = D ? tensor_numel(out) / D : 0;
  if (n == 0) return 0;
  struct cuda_ctx *c = cuda_ctx(be);
  int32_t *dids = (int32_t *)cuda_scratch(be, CS_IDS, (size_t)n * 4);
  if (!dids) return -ENOMEM;
  /* pageable source: the copy is complete when cudaMemcpyAsync returns for
   * H2D of pageable memory only after staging; synchronous copy to be safe */
  CU_TRY(be, cudaMemcpyAsync(dids, ids, (size_t)n * 4, cudaMemcpyHostToDevice, c->stream));
  CU_TRY(be, cudaStreamSynchronize(c->stream));
  embedding_kernel<<<cu_blocks(n * D, 256), 256, 0, c->stream>>>(
      (float *)out->data, dids, table->data, (int)table->dtype, n, D);
  CU_LAUNCHED(be);
  return 0;
}
