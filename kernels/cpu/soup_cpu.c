/* soup_cpu.c: the CPU implementation of the soup ops (kernels/soup_backend.h).
 *
 * Everything that decides a bit is integer code or a correctly rounded IEEE
 * binary64 operation, so a GPU twin written from the same rules produces the
 * same accumulators and the same materialized bits:
 *  - q(w, F) = round_half_even(sig * 2^(exp2 + F)) from the significand and
 *    exponent bits of w (soup_q_parts; every rule is in ../soup_rules.h,
 *    which the CUDA twin compiles too);
 *  - materialize: x = (double)S; y = x / (double)K; z = y * 2^-F (exact);
 *    out = one round-to-nearest-even step from binary64 to the output dtype
 *    (hardware conversion for F32, integer code for F16/BF16).
 * The inner loops are branch-free so that GCC vectorizes them; they are built
 * for x86-64-v4 (AVX-512), x86-64-v3 (AVX2) and baseline, chosen at load time
 * (target_clones); all clones compute the same integers. Work is done in
 * chunks of SOUP_CPU_CHUNK parameters so that the fused accumulate ->
 * materialize -> SHA-256 steps find the chunk in cache. Memory is host memory.
 */
/* O3 for the whole file: the vectorizer's cheap -O2 model skips these loops. */
#pragma GCC optimize("O3")

#include <math.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../soup_backend.h"
#include "../soup_rules.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "soup_cpu.c hashes int64 accumulators as stored: little-endian hosts only"
#endif

#define SOUP_CPU_CHUNK 8192 /* parameters per fused step: 64 KiB of accumulator */

#if defined(SOUP_CLONES)
/* given on the command line (tests of one clone) */
#elif defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define SOUP_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SOUP_CLONES
#endif

/* Sources may be unaligned (safetensors offsets are arbitrary): load through
 * memcpy, which compiles to plain (vector) loads. */
static inline uint64_t ld16(const unsigned char *p, int64_t i) {
  uint16_t v;
  memcpy(&v, p + 2 * i, 2);
  return v;
}
static inline uint64_t ld32(const unsigned char *p, int64_t i) {
  uint32_t v;
  memcpy(&v, p + 4 * i, 4);
  return v;
}

/* ---- accumulate: acc += kq * q(src) ---- */

SOUP_CLONES static void acc_f16(int64_t *restrict acc, const unsigned char *restrict s, int64_t n,
                                int64_t F, int64_t kq) {
  for (int64_t i = 0; i < n; i++) acc[i] += kq * soup_q_f16(ld16(s, i), F);
}
SOUP_CLONES static void acc_bf16(int64_t *restrict acc, const unsigned char *restrict s, int64_t n,
                                 int64_t F, int64_t kq) {
  for (int64_t i = 0; i < n; i++) acc[i] += kq * soup_q_bf16(ld16(s, i), F);
}
SOUP_CLONES static void acc_f32(int64_t *restrict acc, const unsigned char *restrict s, int64_t n,
                                int64_t F, int64_t kq) {
  for (int64_t i = 0; i < n; i++) acc[i] += kq * soup_q_f32(ld32(s, i), F);
}

/* ---- materialize: out = round(((double)S / K) * 2^-F) ---- */

/* (double)S, correctly rounded, in a form AVX2 vectorizes (it has no int64 ->
 * double instruction): (hi * 2^32 + 2^31) is exact ((2 hi + 1) 2^31 with
 * |2 hi + 1| < 2^32), lo - 2^31 is exact, so their sum is S rounded once. */
static inline double i64_to_f64(int64_t S) {
  double hi = (double)(int32_t)(S >> 32) * 4294967296.0 + 2147483648.0;
  double lo = (double)(int32_t)((uint32_t)S ^ 0x80000000u);
  return hi + lo;
}

SOUP_CLONES static void mat_f32(float *restrict out, const int64_t *restrict acc, int64_t n,
                                double Kd, double scale) {
  for (int64_t i = 0; i < n; i++) out[i] = (float)((i64_to_f64(acc[i]) / Kd) * scale);
}
SOUP_CLONES static void mat_f16(uint16_t *restrict out, const int64_t *restrict acc, int64_t n,
                                double Kd, double scale) {
  for (int64_t i = 0; i < n; i++) out[i] = soup_d_to_f16((i64_to_f64(acc[i]) / Kd) * scale);
}
SOUP_CLONES static void mat_bf16(uint16_t *restrict out, const int64_t *restrict acc, int64_t n,
                                 double Kd, double scale) {
  for (int64_t i = 0; i < n; i++) out[i] = soup_d_to_bf16((i64_to_f64(acc[i]) / Kd) * scale);
}

/* ---- validation ---- */

SOUP_CLONES static uint32_t absmax16(const unsigned char *restrict s, int64_t n) {
  uint16_t mx = 0;
  for (int64_t i = 0; i < n; i++) {
    uint16_t a = (uint16_t)(ld16(s, i) & 0x7fff);
    mx = a > mx ? a : mx;
  }
  return mx;
}
SOUP_CLONES static uint32_t absmax32(const unsigned char *restrict s, int64_t n) {
  uint32_t mx = 0;
  for (int64_t i = 0; i < n; i++) {
    uint32_t a = (uint32_t)(ld32(s, i) & 0x7fffffffu);
    mx = a > mx ? a : mx;
  }
  return mx;
}

static int cpu_validate(const void *src, enum dtype dt, int64_t n, int F, int64_t *bad) {
  uint32_t lim = soup_valid_limit(dt, F);
  uint32_t mx = dt == DT_F32 ? absmax32(src, n) : absmax16(src, n);
  if (mx <= lim) return 0;
  for (int64_t i = 0; i < n; i++) {
    uint32_t a =
        dt == DT_F32 ? (uint32_t)(ld32(src, i) & 0x7fffffffu) : (uint32_t)(ld16(src, i) & 0x7fffu);
    if (a > lim) {
      *bad = i;
      return 1;
    }
  }
  return 1; /* unreachable */
}

/* ---- fused ops ---- */

static int mat_chunk(void *out, enum dtype out_dt, const int64_t *acc, int64_t n, int F,
                     int64_t K) {
  double Kd = (double)K, scale = ldexp(1.0, -F);
  switch (out_dt) {
  case DT_F32:
    mat_f32(out, acc, n, Kd, scale);
    return 0;
  case DT_F16:
    mat_f16(out, acc, n, Kd, scale);
    return 0;
  case DT_BF16:
    mat_bf16(out, acc, n, Kd, scale);
    return 0;
  default:
    return -1;
  }
}

static int cpu_accumulate(int64_t *acc, const void *src, enum dtype src_dt, int64_t n, int F,
                          int64_t kq, void *out, enum dtype out_dt, int64_t K, uint8_t *digest) {
  size_t isz = dtype_size(src_dt), osz = dtype_size(out_dt);
  if (src_dt != DT_F32 && src_dt != DT_F16 && src_dt != DT_BF16) return -1;
  if (out && (osz == 0 || out_dt == DT_I32 || out_dt == DT_I64 || K <= 0)) return -1;
  EVP_MD_CTX *ctx = NULL;
  if (digest) {
    ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
      EVP_MD_CTX_free(ctx);
      return -1;
    }
  }
  for (int64_t off = 0; off < n; off += SOUP_CPU_CHUNK) {
    int64_t m = n - off < SOUP_CPU_CHUNK ? n - off : SOUP_CPU_CHUNK;
    const uint8_t *s = (const uint8_t *)src + (size_t)off * isz;
    if (src_dt == DT_F16)
      acc_f16(acc + off, s, m, F, kq);
    else if (src_dt == DT_BF16)
      acc_bf16(acc + off, s, m, F, kq);
    else
      acc_f32(acc + off, s, m, F, kq);
    if (out) mat_chunk((uint8_t *)out + (size_t)off * osz, out_dt, acc + off, m, F, K);
    if (ctx) EVP_DigestUpdate(ctx, acc + off, (size_t)m * 8);
  }
  if (ctx) {
    unsigned int len = 0;
    int ok = EVP_DigestFinal_ex(ctx, digest, &len) == 1 && len == 32;
    EVP_MD_CTX_free(ctx);
    if (!ok) return -1;
  }
  return 0;
}

static int cpu_materialize(void *out, enum dtype out_dt, const int64_t *acc, int64_t n, int F,
                           int64_t K) {
  if (K <= 0) return -1;
  size_t osz = dtype_size(out_dt);
  for (int64_t off = 0; off < n; off += SOUP_CPU_CHUNK) {
    int64_t m = n - off < SOUP_CPU_CHUNK ? n - off : SOUP_CPU_CHUNK;
    if (mat_chunk((uint8_t *)out + (size_t)off * osz, out_dt, acc + off, m, F, K)) return -1;
  }
  return 0;
}

/* Base -> inference dtype: widen exactly to double, then one rounding step. */
static int cpu_convert(void *out, enum dtype out_dt, const void *src, enum dtype src_dt,
                       int64_t n) {
  if (src_dt == out_dt && (src_dt == DT_F32 || src_dt == DT_F16 || src_dt == DT_BF16)) {
    memcpy(out, src, (size_t)n * dtype_size(src_dt));
    return 0;
  }
  for (int64_t i = 0; i < n; i++) {
    double z;
    if (src_dt == DT_F32) {
      uint32_t u = (uint32_t)ld32(src, i);
      float f;
      memcpy(&f, &u, 4);
      z = (double)f;
    } else if (src_dt == DT_F16)
      z = (double)f16_to_f32((uint16_t)ld16(src, i));
    else if (src_dt == DT_BF16)
      z = (double)bf16_to_f32((uint16_t)ld16(src, i));
    else
      return -1;
    if (out_dt == DT_F32)
      ((float *)out)[i] = (float)z;
    else if (!isfinite(z)) /* NaN/Inf in the base: keep it */
      ((uint16_t *)out)[i] = out_dt == DT_F16 ? f32_to_f16((float)z) : f32_to_bf16((float)z);
    else if (out_dt == DT_F16)
      ((uint16_t *)out)[i] = soup_d_to_f16(z);
    else if (out_dt == DT_BF16)
      ((uint16_t *)out)[i] = soup_d_to_bf16(z);
    else
      return -1;
  }
  return 0;
}

static int cpu_hash(const int64_t *acc, int64_t n, uint8_t digest[32]) {
  unsigned int len = 0;
  if (EVP_Digest(acc, (size_t)n * 8, digest, &len, EVP_sha256(), NULL) != 1 || len != 32) return -1;
  return 0;
}

static int cpu_copy_out(void *host, const void *mem, size_t bytes) {
  memcpy(host, mem, bytes);
  return 0;
}
static int cpu_copy_in(void *mem, const void *host, size_t bytes) {
  memcpy(mem, host, bytes);
  return 0;
}

/* Zero-filled; large blocks are prefaulted (MADV_POPULATE_WRITE) so that the
 * memory is committed at allocation (a soup that cannot get its O(M) memory
 * fails at start, not at its first update) and the first update does not pay
 * the page faults. */
static void *cpu_alloc(size_t bytes) {
  void *p = calloc(1, bytes ? bytes : 1);
#ifdef MADV_POPULATE_WRITE
  if (p && bytes >= ((size_t)2 << 20)) {
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + pg - 1) & ~(pg - 1), b = ((uintptr_t)p + bytes) & ~(pg - 1);
    if (b > a) madvise((void *)a, b - a, MADV_POPULATE_WRITE); /* best effort */
  }
#endif
  return p;
}
static void cpu_free(void *p) {
  free(p);
}

const struct soup_backend *soup_backend_cpu(void) {
  static struct soup_backend be = {
      .name = "cpu",
      .parallel = 0,
      .alloc = cpu_alloc,
      .free = cpu_free,
      .validate = cpu_validate,
      .accumulate = cpu_accumulate,
      .materialize = cpu_materialize,
      .convert = cpu_convert,
      .hash = cpu_hash,
      .host_memory = 1,
      .download = cpu_copy_out,
      .upload = cpu_copy_in,
  };
  return &be;
}

/* Exposed for the unit tests (declared there): the scalar rules. */
int64_t soup_cpu_q(enum dtype dt, uint32_t bits, int F);
uint16_t soup_cpu_d_to_f16(double z);
uint16_t soup_cpu_d_to_bf16(double z);
int64_t soup_cpu_q(enum dtype dt, uint32_t bits, int F) {
  return dt == DT_F16    ? soup_q_f16((uint16_t)bits, F)
         : dt == DT_BF16 ? soup_q_bf16((uint16_t)bits, F)
                         : soup_q_f32(bits, F);
}
uint16_t soup_cpu_d_to_f16(double z) {
  return soup_d_to_f16(z);
}
uint16_t soup_cpu_d_to_bf16(double z) {
  return soup_d_to_bf16(z);
}
