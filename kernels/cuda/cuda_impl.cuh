/* cuda_impl.cuh: what the CUDA backend's files share (private to kernels/cuda).
 *
 * struct cuda_ctx is be->ctx: the device, the one stream every op is queued
 * on, the cuBLAS and cuDNN handles, the caching allocator, grow-only scratch
 * slots. The front end (kernels/ops.c) serialises the ops of one backend,
 * binds the device (cuda_bind, as ops->enter) and checks every operand
 * first. Scratch slots are only reused by ops queued on the same stream, so
 * stream order makes reuse safe; growing a slot frees the old buffer with
 * cudaFree, which waits for the device.
 *
 * Errors: CU_TRY / CUBLAS_TRY / CUDNN_TRY record the failing call, file and
 * line into the last error and return a negative status from the enclosing
 * function (which must return int). No code here exits the process.
 *
 * The dtype and half rules are kernels/tensor.h's and half_rules.h's, the
 * same code the CPU compiles (the half conversions in device code too).
 */
#pragma once

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "kernels/backend_cuda.h"
#include "kernels/backend_impl.h"

enum cuda_math { CUDA_MATH_F32 = 0, CUDA_MATH_TF32, CUDA_MATH_F16 };

/* scratch slots (one per operand kind of an op) */
enum {
  CS_WEIGHT = 0, /* widened weight */
  CS_BIAS,
  CS_GAMMA,
  CS_BETA,
  CS_SCORES, /* attention scores */
  CS_COL,    /* im2col */
  CS_HALF,   /* F16 activations (f16 math mode) */
  CS_WORK,   /* cuDNN workspace */
  CS_IDS,    /* embedding ids */
  CS_TMP,    /* conversions */
  CS_STATS,  /* group norm partial statistics */
  CS_COUNT
};

struct cuda_buf {
  void *p;
  size_t cap; /* bytes */
};

/* caching allocator: free lists per size class */
#define CA_CLASSES 160
struct ca_block {
  void *p;
  struct ca_block *next;
};
struct ca_live { /* open addressing map ptr -> class */
  void *p;
  int cls;
};
struct cuda_alloc {
  struct ca_block *free_list[CA_CLASSES];
  struct ca_live *live;
  size_t live_cap, live_n;
  size_t cached_bytes, limit_bytes;
};

struct conv_algo_entry {
  int64_t key[9];
  int algo; /* cudnnConvolutionFwdAlgo_t, or -1: use im2col */
  size_t ws;
};
#define CONV_CACHE 128

struct cuda_ctx {
  int device;
  cudaStream_t stream;
  cublasHandle_t blas;
  cudnnHandle_t dnn;
  cudnnTensorDescriptor_t xd, yd;
  cudnnFilterDescriptor_t wd;
  cudnnConvolutionDescriptor_t cd;
  int math;
  int sms;                 /* multiprocessors of the device */
  int attn_fused;          /* SOUPD_CUDA_ATTN=fused: the fused attention kernel */
  int conv_im2col;         /* SOUPD_CUDA_CONV=im2col[-rows]: no cuDNN */
  int64_t conv_col_floats; /* im2col scratch bound (floats) */
  struct cuda_alloc alloc;
  struct cuda_buf scratch[CS_COUNT];
  struct conv_algo_entry conv[CONV_CACHE];
  int conv_n;
  char name[32];
};

static inline struct cuda_ctx *cuda_ctx(struct backend *be) {
  return (struct cuda_ctx *)be->ctx;
}

#define CU_TRY(be, call)                                                                           \
  do {                                                                                             \
    cudaError_t e_ = (call);                                                                       \
    if (e_ != cudaSuccess)                                                                         \
      return backend_fail((be), -EIO, "%s failed: %s (%s:%d)", #call, cudaGetErrorString(e_),      \
                          __FILE__, __LINE__);                                                     \
  } while (0)
#define CUBLAS_TRY(be, call)                                                                       \
  do {                                                                                             \
    cublasStatus_t s_ = (call);                                                                    \
    if (s_ != CUBLAS_STATUS_SUCCESS)                                                               \
      return backend_fail((be), -EIO, "%s failed: cuBLAS status %d (%s:%d)", #call, (int)s_,       \
                          __FILE__, __LINE__);                                                     \
  } while (0)
#define CUDNN_TRY(be, call)                                                                        \
  do {                                                                                             \
    cudnnStatus_t s_ = (call);                                                                     \
    if (s_ != CUDNN_STATUS_SUCCESS)                                                                \
      return backend_fail((be), -EIO, "%s failed: %s (%s:%d)", #call, cudnnGetErrorString(s_),     \
                          __FILE__, __LINE__);                                                     \
  } while (0)
/* after a kernel launch */
#define CU_LAUNCHED(be) CU_TRY(be, cudaGetLastError())

/* ---- dtype helpers (dtype_size, dtype_name, tensor_numel: kernels/tensor.h) ---- */
static inline int cu_is_float(enum dtype dt) {
  return dt == DT_F32 || dt == DT_F16 || dt == DT_BF16;
}

/* f32 bits <-> f16/bf16 bits: kernels/half_rules.h (via tensor.h), the same
 * code the CPU compiles. */
/* element i of a float-typed buffer as F32 */
__device__ static inline float cu_load(const void *p, int dt, int64_t i) {
  if (dt == DT_F32) return ((const float *)p)[i];
  if (dt == DT_F16) return f16_to_f32(((const uint16_t *)p)[i]);
  return bf16_to_f32(((const uint16_t *)p)[i]);
}

/* ---- launch helpers ---- */
static inline unsigned cu_blocks(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  return (unsigned)(b < 1 ? 1 : b > 65535LL * 32 ? 65535LL * 32 : b);
}
/* grid-stride loop over int64 indices */
#define CU_FOR(i, n)                                                                               \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                        \
       i += (int64_t)gridDim.x * blockDim.x)

/* ---- shared services (backend_cuda.cu) ---- */
/* makes the backend's device current in the calling thread (ops may be
 * called from any one host thread at a time; the operand checks call it) */
void cuda_bind(struct backend *be);
/* scratch slot grown to at least bytes; NULL (error set) on failure */
void *cuda_scratch(struct backend *be, int slot, size_t bytes);
/* device F32 view of a parameter: w->data if F32, else widened into slot */
const float *cuda_param_f32(struct backend *be, const struct tensor *w, int slot, const char *op);
/* widen n elements of a device buffer (dt) into dst (F32) on the stream */
int cuda_widen(struct backend *be, float *dst, const void *src, enum dtype dt, int64_t n);
/* add b[O] to each row of out[M, O] */
int cuda_add_bias_rows(struct backend *be, float *out, const float *b, int64_t M, int64_t O);
/* row-major C[M,N] = alpha op(A) op(B) (+ beta C), batched with strides;
 * F32 in and out, math per ctx->math (tf32 allowed when math != F32) */
int cuda_sgemm(struct backend *be, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
               const float *A, int64_t lda, int64_t sa, const float *B, int64_t ldb, int64_t sb,
               float beta, float *C, int64_t ldc, int64_t sc, int64_t batch);

/* ---- ops (one file per concern) ---- */
int conv2d_cuda(struct backend *be, struct tensor *out, const struct tensor *x,
                const struct tensor *w, const struct tensor *b, int stride, int pad);
int linear_cuda(struct backend *be, struct tensor *out, const struct tensor *x,
                const struct tensor *w, const struct tensor *b);
int matmul_cuda(struct backend *be, struct tensor *out, const struct tensor *a, int trans_a,
                const struct tensor *b, int trans_b, float alpha);
int group_norm_cuda(struct backend *be, struct tensor *out, const struct tensor *x,
                    const struct tensor *gamma, const struct tensor *beta, int groups, float eps,
                    int fuse_silu);
int layer_norm_cuda(struct backend *be, struct tensor *out, const struct tensor *x,
                    const struct tensor *gamma, const struct tensor *beta, float eps);
int softmax_cuda(struct backend *be, struct tensor *out, const struct tensor *x);
int attention_cuda(struct backend *be, struct tensor *out, const struct tensor *q,
                   const struct tensor *k, const struct tensor *v, int heads, float scale,
                   int causal);
int unary_cuda(struct backend *be, struct tensor *out, const struct tensor *x, enum unary_op op);
int geglu_cuda(struct backend *be, struct tensor *out, const struct tensor *x);
int add_cuda(struct backend *be, struct tensor *out, const struct tensor *a,
             const struct tensor *b);
int mul_cuda(struct backend *be, struct tensor *out, const struct tensor *a,
             const struct tensor *b);
int add_channel_cuda(struct backend *be, struct tensor *out, const struct tensor *a,
                     const struct tensor *b);
int axpby_cuda(struct backend *be, struct tensor *out, float alpha, const struct tensor *x,
               float beta, const struct tensor *y);
int concat_channels_cuda(struct backend *be, struct tensor *out, const struct tensor *a,
                         const struct tensor *b);
int upsample_nearest_cuda(struct backend *be, struct tensor *out, const struct tensor *x);
int permute_cuda(struct backend *be, struct tensor *out, const struct tensor *x, const int *perm);
int slice_cuda(struct backend *be, struct tensor *out, const struct tensor *x, int dim,
               int64_t start);
int timestep_embedding_cuda(struct backend *be, struct tensor *out, const float *t, int dim,
                            int flip_sin_to_cos, float freq_shift, float max_period);
int embedding_cuda(struct backend *be, struct tensor *out, const int32_t *ids,
                   const struct tensor *table);
/* in-place softmax over rows of p [rows, C] (norm_cuda.cu); causal_base >= 0:
 * row r keeps its first causal_base + r % rows_per_mat + 1 entries, zeroes
 * the rest */
int cuda_softmax_rows(struct backend *be, float *p, int64_t rows, int64_t C, int64_t causal_base,
                      int64_t rows_per_mat);
