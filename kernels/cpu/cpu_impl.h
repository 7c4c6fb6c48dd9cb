/* cpu_impl.h: what the CPU backend's op files share (private to kernels/cpu).
 *
 * struct cpu_ctx is be->ctx for the CPU backend: the thread pool and scratch
 * buffers. Scratch is reused across calls and only grows; per-thread slots
 * are touched only by their own worker. The front end (kernels/ops.c)
 * serialises the ops of one backend, so callers on several host threads wait
 * for each other instead of sharing scratch, and it has checked every
 * operand before an op here runs.
 *
 * Weights in F16/BF16 are widened per call into a weight scratch slot (conv,
 * norms) or panel by panel while packing (linear); nothing is cached by
 * pointer, since soup materialisation rewrites weights in place.
 * avx512 selects the AVX-512 kernels (attention_avx512.c, conv_avx512.c,
 * gemm_avx512.c); without it every op runs portable vector code + OpenBLAS.
 */
#pragma once

#include <errno.h>
#include <pthread.h>
#include <stdint.h>

#include "kernels/backend_impl.h"
#include "threads.h"

#define CPU_MAX_THREADS 256

/* scratch slots for widened parameters (one per operand of an op) */
enum { CPU_W_WEIGHT = 0, CPU_W_BIAS, CPU_W_GAMMA, CPU_W_BETA, CPU_W_PACK, CPU_W_COUNT };

struct cpu_buf {
  float *p;
  size_t cap; /* floats */
};

struct cpu_ctx {
  struct thread_pool *pool;
  int threads;
  int avx512; /* use the AVX-512 kernels (CPU has them, SOUPD_CPU_NO_AVX512 unset) */
  struct cpu_buf wbuf[CPU_W_COUNT];
  struct cpu_buf tbuf[CPU_MAX_THREADS]; /* per-thread scratch */
};

static inline struct cpu_ctx *cpu_ctx(struct backend *be) {
  return (struct cpu_ctx *)be->ctx;
}

/* Grows buf to hold n floats; returns NULL on allocation failure. */
float *cpu_buf_get(struct cpu_buf *buf, size_t n);

/* Returns w as F32: w->data itself if F32, else a widened copy in slot.
 * Returns NULL (with last_error set) for other dtypes or no memory. */
const float *cpu_param_f32(struct backend *be, const struct tensor *w, int slot, const char *what);

/* Widens n elements of src (F32/F16/BF16) to dst in the calling thread. */
void cpu_widen_serial(float *dst, const void *src, enum dtype dt, int64_t n);
/* Widens n elements of src (F32/F16/BF16) to dst; parallel for large n. */
void cpu_widen(struct backend *be, float *dst, const void *src, enum dtype dt, int64_t n);

/* ---- GEMM over the pool (row-major, OpenBLAS single-threaded per piece) ----
 * C[M,N] = alpha * op(A) op(B) + beta * C, split over M or N between threads. */
void cpu_sgemm(struct backend *be, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
               float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
               float *C, int64_t ldc);

/* Softmax of one row x[n] into y (y == x allowed). */
void softmax_row_cpu(float *y, const float *x, int64_t n);

/* attention_avx512.c: rows [r0, r0+R) of one head (see that file) */
int attn_avx512_available(void);
size_t attn_avx512_scratch(int64_t R, int64_t keys, int64_t D);
void attn_pack_avx512(const float *k, const float *v, int64_t HD, int64_t D, int64_t keys,
                      float *scratch);
void attn_block_avx512(const float *q, float *o, int64_t HD, int64_t D, int64_t R, int64_t r0,
                       int64_t keys, int causal, float scale, float *scratch);

/* ---- conv2d pieces (conv_cpu.c, conv_avx512.c) ---- */
struct conv_geom {
  int64_t Ci, H, W, Co, kh, kw, Ho, Wo, K; /* K = Ci*kh*kw */
  int stride, pad;
};
/* row k (= (ci*kh + ky)*kw + kx) of the im2col matrix for output rows
 * [oy0, oy1) of image xn [Ci, H, W]: (oy1-oy0)*Wo floats */
void conv_im2col_row(const struct conv_geom *g, const float *xn, int64_t k, int64_t oy0,
                     int64_t oy1, float *row);
int conv_avx512_available(void);
size_t conv_avx512_scratch_floats(int64_t P);
/* out rows [oy0, oy1) of one image: outn [Co, Ho*Wo] = w [Co, K] @ im2col(xn) + bias */
void conv_avx512_tile(const struct conv_geom *g, const float *xn, const float *w, const float *bias,
                      float *outn, int64_t oy0, int64_t oy1, float *scratch);

/* ---- packed GEMM for linear (gemm_avx512.c) ---- */
/* B [N, K] -> B^T panels [ceil(N/32)][K][32] */
size_t gemm_avx512_bpack_floats(int64_t N, int64_t K);
void gemm_avx512_pack_bt(const float *b, int64_t N, int64_t K, float *bp);
/* c [rows, N] (ldc) = a [rows, K] (lda) @ B^T + bias [N] (bias may be NULL) */
void gemm_avx512_rows(const float *a, int64_t lda, int64_t rows, int64_t K, const float *bp,
                      int64_t N, const float *bias, float *c, int64_t ldc);

/* ---- ops (one file per concern) ---- */
int conv2d_cpu(struct backend *be, struct tensor *out, const struct tensor *x,
               const struct tensor *w, const struct tensor *b, int stride, int pad);
int linear_cpu(struct backend *be, struct tensor *out, const struct tensor *x,
               const struct tensor *w, const struct tensor *b);
int matmul_cpu(struct backend *be, struct tensor *out, const struct tensor *a, int trans_a,
               const struct tensor *b, int trans_b, float alpha);
int group_norm_cpu(struct backend *be, struct tensor *out, const struct tensor *x,
                   const struct tensor *gamma, const struct tensor *beta, int groups, float eps,
                   int fuse_silu);
int layer_norm_cpu(struct backend *be, struct tensor *out, const struct tensor *x,
                   const struct tensor *gamma, const struct tensor *beta, float eps);
int softmax_cpu(struct backend *be, struct tensor *out, const struct tensor *x);
int attention_cpu(struct backend *be, struct tensor *out, const struct tensor *q,
                  const struct tensor *k, const struct tensor *v, int heads, float scale,
                  int causal);
int unary_cpu(struct backend *be, struct tensor *out, const struct tensor *x, enum unary_op op);
int geglu_cpu(struct backend *be, struct tensor *out, const struct tensor *x);
int add_cpu(struct backend *be, struct tensor *out, const struct tensor *a, const struct tensor *b);
int mul_cpu(struct backend *be, struct tensor *out, const struct tensor *a, const struct tensor *b);
int add_channel_cpu(struct backend *be, struct tensor *out, const struct tensor *a,
                    const struct tensor *b);
int axpby_cpu(struct backend *be, struct tensor *out, float alpha, const struct tensor *x,
              float beta, const struct tensor *y);
int concat_channels_cpu(struct backend *be, struct tensor *out, const struct tensor *a,
                        const struct tensor *b);
int upsample_nearest_cpu(struct backend *be, struct tensor *out, const struct tensor *x);
int permute_cpu(struct backend *be, struct tensor *out, const struct tensor *x, const int *perm);
int slice_cpu(struct backend *be, struct tensor *out, const struct tensor *x, int dim,
              int64_t start);
int timestep_embedding_cpu(struct backend *be, struct tensor *out, const float *t, int dim,
                           int flip_sin_to_cos, float freq_shift, float max_period);
int embedding_cpu(struct backend *be, struct tensor *out, const int32_t *ids,
                  const struct tensor *table);
