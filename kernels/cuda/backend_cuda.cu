/* backend_cuda.cu: the CUDA backend object: device discovery, the op table,
 * the caching device allocator, memory ops (upload/download/copy with dtype
 * conversion), scratch slots, parameter widening and the cuBLAS GEMM.
 *
 * Allocator: tensor memory is rounded up to a size class (256-byte steps up
 * to 4 KiB, then 2 classes per power of two: 1.5x and 2x) and returned to a per-class
 * free list on tensor_free, so a UNet forward reuses blocks instead of
 * calling cudaMalloc per op. A ptr -> class map remembers every live block.
 * When cudaMalloc fails, cached blocks are released and the call retried.
 * Freed blocks may be handed out again while earlier kernels that used them
 * are still queued: every op runs on the one stream, so stream order makes
 * that safe (as PyTorch's caching allocator on a single stream).
 *
 * Conversions follow kernels/tensor.c bit for bit (F16/BF16 rounding to
 * nearest even, NaN kept); integer conversions run on the host.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "cuda_impl.cuh"

void cuda_bind(struct backend *be) {
  int d = -1;
  int want = cuda_ctx(be)->device;
  if (cudaGetDevice(&d) != cudaSuccess || d != want) cudaSetDevice(want);
}

/* ---- caching allocator ---- */

/* class of a byte count and the class's block size */
static int ca_class(size_t bytes, size_t *block) {
  if (bytes <= 4096) {
    size_t b = bytes <= 256 ? 256 : (bytes + 255) / 256 * 256;
    *block = b;
    return (int)(b / 256) - 1; /* 0..15 */
  }
  int lg = 63 - __builtin_clzll((unsigned long long)(bytes - 1)); /* 2^lg < bytes <= 2^(lg+1) */
  size_t step = (size_t)1 << (lg - 1);                            /* half of 2^lg */
  size_t q = (bytes - ((size_t)1 << lg) + step - 1) / step;       /* 1..2 */
  size_t b = ((size_t)1 << lg) + q * step;
  *block = b;
  int cls = 16 + (lg - 12) * 2 + (int)(q - 1);
  return cls < CA_CLASSES ? cls : -1; /* -1: too big to cache */
}

static size_t ca_hash(void *p) {
  uint64_t x = (uint64_t)(uintptr_t)p;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return (size_t)x;
}

static int ca_live_put(struct cuda_alloc *a, void *p, int cls) {
  if ((a->live_n + 1) * 2 > a->live_cap) {
    size_t ncap = a->live_cap ? a->live_cap * 2 : 1024;
    struct ca_live *nl = (struct ca_live *)calloc(ncap, sizeof *nl);
    if (!nl) return -1;
    for (size_t i = 0; i < a->live_cap; i++)
      if (a->live[i].p) {
        size_t h = ca_hash(a->live[i].p) & (ncap - 1);
        while (nl[h].p) h = (h + 1) & (ncap - 1);
        nl[h] = a->live[i];
      }
    free(a->live);
    a->live = nl;
    a->live_cap = ncap;
  }
  size_t h = ca_hash(p) & (a->live_cap - 1);
  while (a->live[h].p) h = (h + 1) & (a->live_cap - 1);
  a->live[h].p = p;
  a->live[h].cls = cls;
  a->live_n++;
  return 0;
}

/* removes p; returns its class, -1 if it was uncached-size, -2 if unknown */
static int ca_live_take(struct cuda_alloc *a, void *p) {
  if (!a->live_cap) return -2;
  size_t m = a->live_cap - 1, h = ca_hash(p) & m;
  while (a->live[h].p && a->live[h].p != p) h = (h + 1) & m;
  if (!a->live[h].p) return -2;
  int cls = a->live[h].cls;
  a->live[h].p = NULL;
  a->live_n--;
  /* re-insert the rest of the cluster (linear probing deletion) */
  for (size_t j = (h + 1) & m; a->live[j].p; j = (j + 1) & m) {
    struct ca_live e = a->live[j];
    a->live[j].p = NULL;
    size_t k = ca_hash(e.p) & m;
    while (a->live[k].p) k = (k + 1) & m;
    a->live[k] = e;
  }
  return cls;
}

static void ca_release_cached(struct cuda_alloc *a) {
  for (int i = 0; i < CA_CLASSES; i++) {
    while (a->free_list[i]) {
      struct ca_block *b = a->free_list[i];
      a->free_list[i] = b->next;
      cudaFree(b->p);
      free(b);
    }
  }
  a->cached_bytes = 0;
}

static void *ca_malloc(struct backend *be, size_t bytes) {
  struct cuda_ctx *c = cuda_ctx(be);
  struct cuda_alloc *a = &c->alloc;
  size_t block = 0;
  int cls = ca_class(bytes ? bytes : 1, &block);
  if (cls < 0) block = (bytes + 4095) / 4096 * 4096;
  void *p = NULL;
  if (cls >= 0 && a->free_list[cls]) {
    struct ca_block *b = a->free_list[cls];
    a->free_list[cls] = b->next;
    p = b->p;
    free(b);
    a->cached_bytes -= block;
  } else {
    cudaError_t e = cudaMalloc(&p, block);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      cudaStreamSynchronize(c->stream);
      ca_release_cached(a);
      e = cudaMalloc(&p, block);
    }
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      backend_fail(be, -ENOMEM, "tensor_alloc: cudaMalloc(%zu) failed: %s", block,
                   cudaGetErrorString(e));
      return NULL;
    }
  }
  if (ca_live_put(a, p, cls)) {
    cudaFree(p);
    backend_fail(be, -ENOMEM, "tensor_alloc: no host memory for the allocator map");
    return NULL;
  }
  return p;
}

static void ca_free(struct backend *be, void *p) {
  struct cuda_ctx *c = cuda_ctx(be);
  struct cuda_alloc *a = &c->alloc;
  int cls = ca_live_take(a, p);
  if (cls == -2) return; /* not ours */
  size_t block = 0;
  if (cls >= 0) {
    /* block size of the class: invert ca_class */
    if (cls < 16) {
      block = (size_t)(cls + 1) * 256;
    } else {
      int lg = (cls - 16) / 2 + 12, q = (cls - 16) % 2 + 1;
      block = ((size_t)1 << lg) + (size_t)q * ((size_t)1 << (lg - 1));
    }
  }
  struct ca_block *b = cls >= 0 && a->cached_bytes + block <= a->limit_bytes
                           ? (struct ca_block *)malloc(sizeof *b)
                           : NULL;
  if (!b) {
    cudaFree(p); /* waits for the device: the block may be in use by queued work */
    return;
  }
  b->p = p;
  b->next = a->free_list[cls];
  a->free_list[cls] = b;
  a->cached_bytes += block;
}

/* ---- scratch ---- */

void *cuda_scratch(struct backend *be, int slot, size_t bytes) {
  struct cuda_buf *s = &cuda_ctx(be)->scratch[slot];
  if (bytes <= s->cap && s->p) return s->p;
  size_t cap = bytes + bytes / 4 + 256;
  if (s->p) cudaFree(s->p);
  s->p = NULL;
  s->cap = 0;
  cudaError_t e = cudaMalloc(&s->p, cap);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    cudaStreamSynchronize(cuda_ctx(be)->stream);
    ca_release_cached(&cuda_ctx(be)->alloc);
    e = cudaMalloc(&s->p, cap);
  }
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    s->p = NULL;
    backend_fail(be, -ENOMEM, "scratch: cudaMalloc(%zu) failed: %s", cap, cudaGetErrorString(e));
    return NULL;
  }
  s->cap = cap;
  return s->p;
}

/* ---- conversion kernels ---- */

__global__ void widen_kernel(float *dst, const void *src, int dt, int64_t n) {
  CU_FOR(i, n) dst[i] = cu_load(src, dt, i);
}

/* float dtype -> float dtype, rounding as kernels/tensor.c (via F32) */
__global__ void convert_kernel(void *dst, int dd, const void *src, int sd, int64_t n) {
  CU_FOR(i, n) {
    float f = cu_load(src, sd, i);
    if (dd == DT_F32)
      ((float *)dst)[i] = f;
    else
      ((uint16_t *)dst)[i] = dd == DT_F16 ? f32_to_f16(f) : f32_to_bf16(f);
  }
}

__global__ void bias_rows_kernel(float *out, const float *b, int64_t M, int64_t O) {
  CU_FOR(i, M * O) out[i] += b[i % O];
}

int cuda_widen(struct backend *be, float *dst, const void *src, enum dtype dt, int64_t n) {
  if (n <= 0) return 0;
  struct cuda_ctx *c = cuda_ctx(be);
  if (dt == DT_F32) {
    CU_TRY(be, cudaMemcpyAsync(dst, src, (size_t)n * 4, cudaMemcpyDeviceToDevice, c->stream));
    return 0;
  }
  widen_kernel<<<cu_blocks(n, 256), 256, 0, c->stream>>>(dst, src, (int)dt, n);
  CU_LAUNCHED(be);
  return 0;
}

const float *cuda_param_f32(struct backend *be, const struct tensor *w, int slot, const char *op) {
  if (w->dtype == DT_F32) return (const float *)w->data;
  int64_t n = tensor_numel(w);
  float *p = (float *)cuda_scratch(be, slot, (size_t)(n ? n : 1) * 4);
  if (!p) return NULL;
  if (cuda_widen(be, p, w->data, w->dtype, n)) return NULL;
  return p;
}

int cuda_add_bias_rows(struct backend *be, float *out, const float *b, int64_t M, int64_t O) {
  if (M * O == 0) return 0;
  bias_rows_kernel<<<cu_blocks(M * O, 256), 256, 0, cuda_ctx(be)->stream>>>(out, b, M, O);
  CU_LAUNCHED(be);
  return 0;
}

/* row-major GEMM through column-major cuBLAS: C^T = op(B)^T op(A)^T */
int cuda_sgemm(struct backend *be, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
               const float *A, int64_t lda, int64_t sa, const float *B, int64_t ldb, int64_t sb,
               float beta, float *C, int64_t ldc, int64_t sc, int64_t batch) {
  struct cuda_ctx *c = cuda_ctx(be);
  if (M <= 0 || N <= 0 || batch <= 0) return 0;
  if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX || lda > INT32_MAX || ldb > INT32_MAX ||
      ldc > INT32_MAX || batch > INT32_MAX)
    return backend_fail(be, -EINVAL, "gemm: dimensions beyond 2^31");
  cublasComputeType_t ct =
      c->math == CUDA_MATH_F32 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32;
  cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (batch == 1)
    CUBLAS_TRY(be, cublasGemmEx(c->blas, opb, opa, (int)N, (int)M, (int)K, &alpha, B, CUDA_R_32F,
                                (int)ldb, A, CUDA_R_32F, (int)lda, &beta, C, CUDA_R_32F, (int)ldc,
                                ct, CUBLAS_GEMM_DEFAULT));
  else
    CUBLAS_TRY(be, cublasGemmStridedBatchedEx(
                       c->blas, opb, opa, (int)N, (int)M, (int)K, &alpha, B, CUDA_R_32F, (int)ldb,
                       (long long)sb, A, CUDA_R_32F, (int)lda, (long long)sa, &beta, C, CUDA_R_32F,
                       (int)ldc, (long long)sc, (int)batch, ct, CUBLAS_GEMM_DEFAULT));
  return 0;
}

/* ---- memory ops ---- */

static void *cuda_alloc(struct backend *be, size_t bytes) {
  return ca_malloc(be, bytes);
}

static void cuda_free(struct backend *be, void *p) {
  ca_free(be, p);
}

/* host conversion with the CPU backend's rules; returns 0 or -EINVAL/-ERANGE */
static int host_convert(struct backend *be, void *dst, enum dtype dd, const void *src,
                        enum dtype sd, int64_t n, const char *op) {
  if (dd == sd) {
    memcpy(dst, src, (size_t)n * dtype_size(dd));
    return 0;
  }
  int fs = cu_is_float(sd), fd = cu_is_float(dd);
  for (int64_t i = 0; i < n; i++) {
    if (fs && fd) {
      float f = sd == DT_F32   ? ((const float *)src)[i]
                : sd == DT_F16 ? f16_to_f32(((const uint16_t *)src)[i])
                               : bf16_to_f32(((const uint16_t *)src)[i]);
      if (dd == DT_F32)
        ((float *)dst)[i] = f;
      else
        ((uint16_t *)dst)[i] = dd == DT_F16 ? f32_to_f16(f) : f32_to_bf16(f);
    } else if (sd == DT_I32 && dd == DT_I64) {
      ((int64_t *)dst)[i] = ((const int32_t *)src)[i];
    } else if (sd == DT_I64 && dd == DT_I32) {
      int64_t v = ((const int64_t *)src)[i];
      if (v < INT32_MIN || v > INT32_MAX)
        return backend_fail(be, -ERANGE, "%s: I64 value %lld does not fit I32", op, (long long)v);
      ((int32_t *)dst)[i] = (int32_t)v;
    } else if (!fs && fd) {
      float f = sd == DT_I32 ? (float)((const int32_t *)src)[i] : (float)((const int64_t *)src)[i];
      if (dd == DT_F32)
        ((float *)dst)[i] = f;
      else
        ((uint16_t *)dst)[i] = dd == DT_F16 ? f32_to_f16(f) : f32_to_bf16(f);
    } else {
      return backend_fail(be, -EINVAL, "%s: no conversion from %s to %s", op, dtype_name(sd),
                          dtype_name(dd));
    }
  }
  return 0;
}

static int cuda_upload(struct backend *be, struct tensor *dst, const void *src, enum dtype src_dt) {
  struct cuda_ctx *c = cuda_ctx(be);
  int64_t n = tensor_numel(dst);
  if (src_dt == dst->dtype) {
    CU_TRY(be, cudaMemcpyAsync(dst->data, src, (size_t)n * dtype_size(src_dt),
                               cudaMemcpyHostToDevice, c->stream));
    return 0;
  }
  if (cu_is_float(src_dt) && cu_is_float(dst->dtype)) { /* raw upload, convert on the device */
    void *tmp = cuda_scratch(be, CS_TMP, (size_t)n * dtype_size(src_dt));
    if (!tmp) return -ENOMEM;
    CU_TRY(be, cudaMemcpyAsync(tmp, src, (size_t)n * dtype_size(src_dt), cudaMemcpyHostToDevice,
                               c->stream));
    convert_kernel<<<cu_blocks(n, 256), 256, 0, c->stream>>>(dst->data, (int)dst->dtype, tmp,
                                                             (int)src_dt, n);
    CU_LAUNCHED(be);
    return 0;
  }
  void *h = malloc((size_t)n * dtype_size(dst->dtype));
  if (!h) return backend_fail(be, -ENOMEM, "upload: no host memory");
  int rc = host_convert(be, h, dst->dtype, src, src_dt, n, "upload");
  if (rc == 0) {
    /* on the op stream, and waited for: a pageable H2D copy may still be in
     * flight when cudaMemcpy returns, and h is freed below */
    cudaError_t e = cudaMemcpyAsync(dst->data, h, (size_t)n * dtype_size(dst->dtype),
                                    cudaMemcpyHostToDevice, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess)
      rc = backend_fail(be, -EIO, "upload: cudaMemcpy failed: %s", cudaGetErrorString(e));
  }
  free(h);
  return rc;
}

static int cuda_download_f32(struct backend *be, const struct tensor *src, float *dst) {
  struct cuda_ctx *c = cuda_ctx(be);
  int64_t n = tensor_numel(src);
  if (src->dtype == DT_F32) {
    CU_TRY(be, cudaMemcpyAsync(dst, src->data, (size_t)n * 4, cudaMemcpyDeviceToHost, c->stream));
    CU_TRY(be, cudaStreamSynchronize(c->stream));
    return 0;
  }
  if (cu_is_float(src->dtype)) {
    float *tmp = (float *)cuda_scratch(be, CS_TMP, (size_t)n * 4);
    if (!tmp || cuda_widen(be, tmp, src->data, src->dtype, n)) return -ENOMEM;
    CU_TRY(be, cudaMemcpyAsync(dst, tmp, (size_t)n * 4, cudaMemcpyDeviceToHost, c->stream));
    CU_TRY(be, cudaStreamSynchronize(c->stream));
    return 0;
  }
  size_t bytes = (size_t)n * dtype_size(src->dtype);
  void *h = malloc(bytes);
  if (!h) return backend_fail(be, -ENOMEM, "download_f32: no host memory");
  int rc = 0;
  cudaError_t e = cudaMemcpyAsync(h, src->data, bytes, cudaMemcpyDeviceToHost, c->stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
  if (e != cudaSuccess)
    rc = backend_fail(be, -EIO, "download_f32: copy failed: %s", cudaGetErrorString(e));
  else
    rc = host_convert(be, dst, DT_F32, h, src->dtype, n, "download_f32");
  free(h);
  return rc;
}

static int cuda_copy(struct backend *be, struct tensor *dst, const struct tensor *src) {
  struct cuda_ctx *c = cuda_ctx(be);
  int64_t n = tensor_numel(src);
  if (dst->dtype == src->dtype) {
    CU_TRY(be, cudaMemcpyAsync(dst->data, src->data, (size_t)n * dtype_size(src->dtype),
                               cudaMemcpyDeviceToDevice, c->stream));
    return 0;
  }
  if (cu_is_float(src->dtype) && cu_is_float(dst->dtype)) {
    convert_kernel<<<cu_blocks(n, 256), 256, 0, c->stream>>>(dst->data, (int)dst->dtype, src->data,
                                                             (int)src->dtype, n);
    CU_LAUNCHED(be);
    return 0;
  }
  /* integer conversions: through the host (rare) */
  size_t sb = (size_t)n * dtype_size(src->dtype), db = (size_t)n * dtype_size(dst->dtype);
  void *hs = malloc(sb), *hd = malloc(db);
  int rc = 0;
  if (!hs || !hd) {
    rc = backend_fail(be, -ENOMEM, "copy: no host memory");
  } else {
    cudaError_t e = cudaMemcpyAsync(hs, src->data, sb, cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) rc = backend_fail(be, -EIO, "copy: %s", cudaGetErrorString(e));
    if (!rc) rc = host_convert(be, hd, dst->dtype, hs, src->dtype, n, "copy");
    if (!rc) {
      e = cudaMemcpyAsync(dst->data, hd, db, cudaMemcpyHostToDevice, c->stream);
      if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
      if (e != cudaSuccess) rc = backend_fail(be, -EIO, "copy: %s", cudaGetErrorString(e));
    }
  }
  free(hs);
  free(hd);
  return rc;
}

static int cuda_synchronize(struct backend *be) {
  CU_TRY(be, cudaStreamSynchronize(cuda_ctx(be)->stream));
  return 0;
}

static void cuda_ctx_free(struct cuda_ctx *c) {
  if (c) {
    cudaSetDevice(c->device);
    if (c->stream) cudaStreamSynchronize(c->stream);
    ca_release_cached(&c->alloc);
    /* live blocks belong to tensors the caller did not free: release them too */
    for (size_t i = 0; i < c->alloc.live_cap; i++)
      if (c->alloc.live[i].p) cudaFree(c->alloc.live[i].p);
    free(c->alloc.live);
    for (int i = 0; i < CS_COUNT; i++)
      if (c->scratch[i].p) cudaFree(c->scratch[i].p);
    if (c->xd) cudnnDestroyTensorDescriptor(c->xd);
    if (c->yd) cudnnDestroyTensorDescriptor(c->yd);
    if (c->wd) cudnnDestroyFilterDescriptor(c->wd);
    if (c->cd) cudnnDestroyConvolutionDescriptor(c->cd);
    if (c->dnn) cudnnDestroy(c->dnn);
    if (c->blas) cublasDestroy(c->blas);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
  }
}

static void cuda_destroy(struct backend *be) {
  cuda_ctx_free(cuda_ctx(be));
}

static const struct backend_ops cuda_ops = {
    .enter = cuda_bind,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .upload = cuda_upload,
    .download_f32 = cuda_download_f32,
    .copy = cuda_copy,
    .synchronize = cuda_synchronize,
    .conv2d = conv2d_cuda,
    .linear = linear_cuda,
    .matmul = matmul_cuda,
    .group_norm = group_norm_cuda,
    .layer_norm = layer_norm_cuda,
    .softmax = softmax_cuda,
    .attention = attention_cuda,
    .unary = unary_cuda,
    .geglu = geglu_cuda,
    .add = add_cuda,
    .mul = mul_cuda,
    .add_channel = add_channel_cuda,
    .axpby = axpby_cuda,
    .concat_channels = concat_channels_cuda,
    .upsample_nearest = upsample_nearest_cuda,
    .permute = permute_cuda,
    .slice = slice_cuda,
    .timestep_embedding = timestep_embedding_cuda,
    .embedding = embedding_cuda,
    .destroy = cuda_destroy,
};

extern "C" int backend_cuda_device_count(void) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n > 0 ? n : 0;
}

static void set_err(char **err, const char *fmt, const char *a, const char *b) {
  if (!err) return;
  char buf[512];
  snprintf(buf, sizeof buf, fmt, a, b);
  *err = strdup(buf);
}

#define NEW_TRY(ok, what, msg)                                                                     \
  do {                                                                                             \
    if (!(ok)) {                                                                                   \
      set_err(err, "backend_cuda_new: %s failed: %s", what, msg);                                  \
      goto fail;                                                                                   \
    }                                                                                              \
  } while (0)

extern "C" struct backend *backend_cuda_new(int device, char **err) {
  if (err) *err = NULL;
  int count = backend_cuda_device_count();
  if (device < 0 || device >= count) {
    char d[32];
    snprintf(d, sizeof d, "%d", device);
    set_err(err, "backend_cuda_new: no CUDA device %s (%s usable)", d, count ? "fewer" : "none");
    return NULL;
  }
  struct backend *be = NULL;
  struct cuda_ctx *c = (struct cuda_ctx *)calloc(1, sizeof *c);
  cudaError_t e;
  cublasStatus_t bs;
  cudnnStatus_t ds;
  NEW_TRY(c, "calloc", "no memory");
  c->device = device;
  NEW_TRY((e = cudaSetDevice(device)) == cudaSuccess, "cudaSetDevice", cudaGetErrorString(e));
  NEW_TRY((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) == cudaSuccess,
          "cudaStreamCreate", cudaGetErrorString(e));
  NEW_TRY((bs = cublasCreate(&c->blas)) == CUBLAS_STATUS_SUCCESS, "cublasCreate",
          cublasGetStatusString(bs));
  NEW_TRY((bs = cublasSetStream(c->blas, c->stream)) == CUBLAS_STATUS_SUCCESS, "cublasSetStream",
          cublasGetStatusString(bs));
  NEW_TRY((ds = cudnnCreate(&c->dnn)) == CUDNN_STATUS_SUCCESS, "cudnnCreate",
          cudnnGetErrorString(ds));
  NEW_TRY((ds = cudnnSetStream(c->dnn, c->stream)) == CUDNN_STATUS_SUCCESS, "cudnnSetStream",
          cudnnGetErrorString(ds));
  NEW_TRY((ds = cudnnCreateTensorDescriptor(&c->xd)) == CUDNN_STATUS_SUCCESS &&
              (ds = cudnnCreateTensorDescriptor(&c->yd)) == CUDNN_STATUS_SUCCESS &&
              (ds = cudnnCreateFilterDescriptor(&c->wd)) == CUDNN_STATUS_SUCCESS &&
              (ds = cudnnCreateConvolutionDescriptor(&c->cd)) == CUDNN_STATUS_SUCCESS,
          "cudnnCreate*Descriptor", cudnnGetErrorString(ds));
  {
    const char *m = getenv("SOUPD_CUDA_MATH");
    c->math = m && strcmp(m, "tf32") == 0  ? CUDA_MATH_TF32
              : m && strcmp(m, "f16") == 0 ? CUDA_MATH_F16
                                           : CUDA_MATH_F32;
    /* exact-ish default: no TF32 in cuBLAS (pedantic math: no reduced precision) */
    NEW_TRY((bs = cublasSetMathMode(c->blas, c->math == CUDA_MATH_F32 ? CUBLAS_PEDANTIC_MATH
                                                                      : CUBLAS_DEFAULT_MATH)) ==
                CUBLAS_STATUS_SUCCESS,
            "cublasSetMathMode", cublasGetStatusString(bs));
    if (cudaDeviceGetAttribute(&c->sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        c->sms < 1)
      c->sms = 1;
    const char *cv = getenv("SOUPD_CUDA_CONV");
    c->conv_im2col = cv && strncmp(cv, "im2col", 6) == 0;
    c->conv_col_floats = cv && strcmp(cv, "im2col-rows") == 0 ? 1 : (int64_t)16 << 20;
    const char *at = getenv("SOUPD_CUDA_ATTN");
    c->attn_fused = at && strcmp(at, "fused") == 0;
    size_t freeb = 0, total = 0;
    cudaMemGetInfo(&freeb, &total);
    c->alloc.limit_bytes = total / 2; /* cache at most half of the device */
  }
  snprintf(c->name, sizeof c->name, "cuda:%d", device);
  be = backend_new(c->name, c, &cuda_ops);
  NEW_TRY(be, "backend_new", "no memory");
  return be;
fail:
  cuda_ctx_free(c);
  return NULL;
}
