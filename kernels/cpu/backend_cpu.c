/* backend_cpu.c: the CPU backend object: the op table, memory ops,
 * parameter widening and the pooled GEMM.
 *
 * Memory is host memory (64-byte aligned). OpenBLAS is set to one thread at
 * creation: every GEMM is split over the backend's own pool, so no OpenBLAS
 * thread ever runs inside a pool task (no oversubscription).
 *
 * OpenBLAS 0.3.21 (DYNAMIC_ARCH) does not know recent Intel models (e.g.
 * family 6 model 0xCF) and falls back to its SSE3 "Prescott" kernels, four
 * times slower. When it reports Prescott, OPENBLAS_CORETYPE is unset and
 * the CPU has AVX-512 (or AVX2+FMA), the first backend re-selects SkylakeX
 * (or Haswell) kernels once, before any GEMM of the backend runs.
 */
#include <cblas.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "cpu_impl.h"
#include "vecmath.h"

#include <pthread.h>
#include <strings.h>

/* OpenBLAS DYNAMIC_ARCH internals (exported, not in cblas.h) */
extern void gotoblas_dynamic_init(void) __attribute__((weak));
extern void gotoblas_dynamic_quit(void) __attribute__((weak));

static void openblas_fix_coretype(void) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (getenv("OPENBLAS_CORETYPE") || !gotoblas_dynamic_init || !gotoblas_dynamic_quit) return;
  const char *core = openblas_get_corename();
  if (!core || strcasecmp(core, "prescott") != 0) return;
  __builtin_cpu_init();
  const char *want = NULL;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
    want = "SkylakeX";
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    want = "Haswell";
  if (!want) return;
  setenv("OPENBLAS_CORETYPE", want, 0);
  gotoblas_dynamic_quit();
  gotoblas_dynamic_init();
  unsetenv("OPENBLAS_CORETYPE");
#endif
}

static pthread_once_t openblas_once = PTHREAD_ONCE_INIT;

float *cpu_buf_get(struct cpu_buf *buf, size_t n) {
  if (n <= buf->cap) return buf->p;
  size_t cap = n + n / 4 + 16;
  void *p = NULL;
  if (posix_memalign(&p, 64, cap * sizeof(float)) != 0) return NULL;
  free(buf->p);
  buf->p = p;
  buf->cap = cap;
  return buf->p;
}

/* ---- widening ---- */

/* Exact: a half's exponent and mantissa bits moved into float position and
 * scaled by 2^112 give its value (normals and subnormals); Inf/NaN apart. */
CPU_CLONES static void widen_f16(float *dst, const uint16_t *src, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    uint32_t h = src[i];
    uint32_t em = h & 0x7fff, sign = (h & 0x8000) << 16;
    float f = vm_bits_to_float(em << 13) * 0x1p112f;
    uint32_t u;
    memcpy(&u, &f, 4);
    u = em >= 0x7c00 ? 0x7f800000u | ((em & 0x3ff) << 13) : u;
    u |= sign;
    memcpy(&dst[i], &u, 4);
  }
}

CPU_CLONES static void widen_bf16(float *dst, const uint16_t *src, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    uint32_t u = (uint32_t)src[i] << 16;
    memcpy(&dst[i], &u, 4);
  }
}

void cpu_widen_serial(float *dst, const void *src, enum dtype dt, int64_t n) {
  if (dt == DT_F32)
    memcpy(dst, src, (size_t)n * 4);
  else if (dt == DT_F16)
    widen_f16(dst, src, n);
  else
    widen_bf16(dst, src, n);
}

struct widen_job {
  float *dst;
  const void *src;
  enum dtype dt;
};

static void widen_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct widen_job *j = ctx;
  cpu_widen_serial(j->dst + i0, (const char *)j->src + (size_t)i0 * dtype_size(j->dt), j->dt,
                   i1 - i0);
}

void cpu_widen(struct backend *be, float *dst, const void *src, enum dtype dt, int64_t n) {
  struct widen_job j = {dst, src, dt};
  parallel_for(cpu_ctx(be)->pool, n, 1 << 16, widen_task, &j);
}

const float *cpu_param_f32(struct backend *be, const struct tensor *w, int slot, const char *what) {
  if (w->dtype == DT_F32) return w->data;
  int64_t n = tensor_numel(w);
  float *p = cpu_buf_get(&cpu_ctx(be)->wbuf[slot], (size_t)n);
  if (!p) {
    backend_fail(be, -ENOMEM, "%s: no memory to widen %lld elements", what, (long long)n);
    return NULL;
  }
  cpu_widen(be, p, w->data, w->dtype, n);
  return p;
}

/* ---- pooled GEMM ---- */

struct gemm_job {
  int ta, tb, split_n;
  int64_t M, N, K, lda, ldb, ldc, block;
  float alpha, beta;
  const float *A, *B;
  float *C;
};

static void gemm_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct gemm_job *j = ctx;
  enum CBLAS_TRANSPOSE ta = j->ta ? CblasTrans : CblasNoTrans;
  enum CBLAS_TRANSPOSE tb = j->tb ? CblasTrans : CblasNoTrans;
  int64_t s0 = i0 * j->block;
  int64_t s1 = i1 * j->block;
  if (j->split_n) {
    if (s1 > j->N) s1 = j->N;
    const float *B = j->tb ? j->B + s0 * j->ldb : j->B + s0;
    cblas_sgemm(CblasRowMajor, ta, tb, (int)j->M, (int)(s1 - s0), (int)j->K, j->alpha, j->A,
                (int)j->lda, B, (int)j->ldb, j->beta, j->C + s0, (int)j->ldc);
  } else {
    if (s1 > j->M) s1 = j->M;
    const float *A = j->ta ? j->A + s0 : j->A + s0 * j->lda;
    cblas_sgemm(CblasRowMajor, ta, tb, (int)(s1 - s0), (int)j->N, (int)j->K, j->alpha, A,
                (int)j->lda, j->B, (int)j->ldb, j->beta, j->C + s0 * j->ldc, (int)j->ldc);
  }
}

void cpu_sgemm(struct backend *be, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
               float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
               float *C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  struct cpu_ctx *c = cpu_ctx(be);
  int th = c->threads;
  struct gemm_job j = {trans_a, trans_b, 0, M, N, K, lda, ldb, ldc, 0, alpha, beta, A, B, C};
  double flops = 2.0 * (double)M * (double)N * (double)K;
  if (th == 1 || flops < 2e6) {
    j.block = M;
    gemm_task(&j, 0, 1, 0);
    return;
  }
  /* split the larger of M and N into th pieces (multiples of 16) */
  j.split_n = N > M;
  int64_t len = j.split_n ? N : M;
  int64_t block = (len + th - 1) / th;
  block = (block + 15) / 16 * 16;
  j.block = block;
  parallel_for(c->pool, (len + block - 1) / block, 1, gemm_task, &j);
}

/* ---- memory ops ---- */

static void *cpu_alloc(struct backend *be, size_t bytes) {
  void *p = NULL;
  if (posix_memalign(&p, 64, bytes ? (bytes + 63) / 64 * 64 : 64) != 0) {
    backend_fail(be, -ENOMEM, "tensor_alloc: no memory for %zu bytes", bytes);
    return NULL;
  }
  return p;
}

static void cpu_free(struct backend *be, void *p) {
  free(p);
}

struct narrow_job {
  uint16_t *dst;
  const void *src;
  enum dtype sd, dd;
};

static void narrow_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct narrow_job *j = ctx;
  for (int64_t i = i0; i < i1; i++) {
    float f = j->sd == DT_F32   ? ((const float *)j->src)[i]
              : j->sd == DT_F16 ? f16_to_f32(((const uint16_t *)j->src)[i])
                                : bf16_to_f32(((const uint16_t *)j->src)[i]);
    j->dst[i] = j->dd == DT_F16 ? f32_to_f16(f) : f32_to_bf16(f);
  }
}

/* Converts n elements of src (dtype sd) into dst (dtype dd). */
static int convert(struct backend *be, void *dst, enum dtype dd, const void *src, enum dtype sd,
                   int64_t n, const char *op) {
  if (dd == sd) {
    memmove(dst, src, (size_t)n * dtype_size(dd));
    return 0;
  }
  int fl_s = sd == DT_F32 || sd == DT_F16 || sd == DT_BF16;
  int fl_d = dd == DT_F32 || dd == DT_F16 || dd == DT_BF16;
  if (fl_s && dd == DT_F32) {
    cpu_widen(be, dst, src, sd, n);
    return 0;
  }
  if (fl_s && fl_d) { /* to F16/BF16: one rounding from the exact value */
    struct narrow_job j = {dst, src, sd, dd};
    parallel_for(cpu_ctx(be)->pool, n, 1 << 16, narrow_task, &j);
    return 0;
  }
  if (sd == DT_I32 && dd == DT_I64) {
    for (int64_t i = 0; i < n; i++) ((int64_t *)dst)[i] = ((const int32_t *)src)[i];
    return 0;
  }
  if (sd == DT_I64 && dd == DT_I32) {
    for (int64_t i = 0; i < n; i++) {
      int64_t v = ((const int64_t *)src)[i];
      if (v < INT32_MIN || v > INT32_MAX)
        return backend_fail(be, -ERANGE, "%s: I64 value %lld does not fit I32", op, (long long)v);
      ((int32_t *)dst)[i] = (int32_t)v;
    }
    return 0;
  }
  if (fl_s && (dd == DT_I32 || dd == DT_I64))
    return backend_fail(be, -EINVAL, "%s: no conversion from %s to %s", op, dtype_name(sd),
                        dtype_name(dd));
  if ((sd == DT_I32 || sd == DT_I64) && fl_d) {
    for (int64_t i = 0; i < n; i++) {
      float f = sd == DT_I32 ? (float)((const int32_t *)src)[i] : (float)((const int64_t *)src)[i];
      if (dd == DT_F32)
        ((float *)dst)[i] = f;
      else
        ((uint16_t *)dst)[i] = dd == DT_F16 ? f32_to_f16(f) : f32_to_bf16(f);
    }
    return 0;
  }
  return backend_fail(be, -EINVAL, "%s: no conversion from %s to %s", op, dtype_name(sd),
                      dtype_name(dd));
}

static int upload_cpu(struct backend *be, struct tensor *dst, const void *src, enum dtype src_dt) {
  return convert(be, dst->data, dst->dtype, src, src_dt, tensor_numel(dst), "upload");
}

static int download_f32_cpu(struct backend *be, const struct tensor *src, float *dst) {
  return convert(be, dst, DT_F32, src->data, src->dtype, tensor_numel(src), "download_f32");
}

static int copy_cpu(struct backend *be, struct tensor *dst, const struct tensor *src) {
  return convert(be, dst->data, dst->dtype, src->data, src->dtype, tensor_numel(src), "copy");
}

static int cpu_synchronize(struct backend *be) {
  return 0;
}

static void cpu_ctx_free(struct cpu_ctx *c) {
  if (!c) return;
  thread_pool_free(c->pool);
  for (int i = 0; i < CPU_W_COUNT; i++) free(c->wbuf[i].p);
  for (int i = 0; i < CPU_MAX_THREADS; i++) free(c->tbuf[i].p);
  free(c);
}

static void cpu_destroy(struct backend *be) {
  cpu_ctx_free(cpu_ctx(be));
}

static const struct backend_ops cpu_ops = {
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = upload_cpu,
    .download_f32 = download_f32_cpu,
    .copy = copy_cpu,
    .synchronize = cpu_synchronize,
    .conv2d = conv2d_cpu,
    .linear = linear_cpu,
    .matmul = matmul_cpu,
    .group_norm = group_norm_cpu,
    .layer_norm = layer_norm_cpu,
    .softmax = softmax_cpu,
    .attention = attention_cpu,
    .unary = unary_cpu,
    .geglu = geglu_cpu,
    .add = add_cpu,
    .mul = mul_cpu,
    .add_channel = add_channel_cpu,
    .axpby = axpby_cpu,
    .concat_channels = concat_channels_cpu,
    .upsample_nearest = upsample_nearest_cpu,
    .permute = permute_cpu,
    .slice = slice_cpu,
    .timestep_embedding = timestep_embedding_cpu,
    .embedding = embedding_cpu,
    .destroy = cpu_destroy,
};

struct backend *backend_cpu_new(int threads) {
  struct cpu_ctx *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->pool = thread_pool_new(threads);
  if (!c->pool) goto fail;
  c->threads = thread_pool_size(c->pool);
  if (c->threads > CPU_MAX_THREADS) goto fail;
  pthread_once(&openblas_once, openblas_fix_coretype);
  c->avx512 = conv_avx512_available() && attn_avx512_available() &&
              !(getenv("SOUPD_CPU_NO_AVX512") && atoi(getenv("SOUPD_CPU_NO_AVX512")));
  openblas_set_num_threads(1);
  struct backend *be = backend_new("cpu", c, &cpu_ops);
  if (be) return be;
fail:
  cpu_ctx_free(c);
  return NULL;
}
