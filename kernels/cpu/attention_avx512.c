/* attention_avx512.c: attention rows with AVX-512 register tiles and no
 * GEMM packing (the OpenBLAS path spends half its time packing when the
 * head dim is small).
 *
 * scratch layout (attn_avx512_scratch(R, keys, D) floats):
 *   KT [D, ldS] = k_h^T and Vp [ldS, D] = v_h for `keys` keys, zero-padded
 *   to ldS = lead_dim(keys) (keys rounded up to 16, +16 against L1
 *   aliasing; attn_pack_avx512, once per task);
 *   S [R, ldS] scores, inv [R] and lane maxima rmax [R, 16] for one block
 *   of R query rows.
 * attn_block_avx512, for query rows [r0, r0+R) (q and o point at row r0):
 *   S = scale * q_blk @ KT                  (4 rows x 64 keys per tile);
 *   P = exp(S - rowmax), zero past the row's last visible key (causal);
 *   o_blk = (P @ Vp) / rowsum                (4 rows x 64 dims per tile).
 * Only called when the CPU has AVX-512F (attn_avx512_available).
 */
#include "cpu_impl.h"
#include "vecmath.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f")))

int attn_avx512_available(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
}

static inline int64_t round16(int64_t n) {
  return (n + 15) / 16 * 16;
}

/* row stride of KT and S: keys rounded up to 16, plus 16 when that is a
 * multiple of 256 floats (rows 1 KB apart alias in L1 and thrash) */
static inline int64_t lead_dim(int64_t keys) {
  int64_t ld = round16(keys);
  return ld % 256 == 0 ? ld + 16 : ld;
}

size_t attn_avx512_scratch(int64_t R, int64_t keys, int64_t D) {
  int64_t ld = lead_dim(keys);
  return (size_t)(2 * D * ld + R * ld + 17 * R + 64);
}

/* The tiles below keep their accumulators in named registers (arrays of
 * __m512 indexed in loops end up on the stack). */

/* S[4 rows, 64 keys] = scale * q[4 rows] . kt[:, 64 keys] */
AVX512 static void qk_4x4(const float *q, int64_t ldq, const float *kt, int64_t ldS, int64_t D,
                          __m512 sc, float *S, float *rmax) {
  __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00,
         a12 = a00, a13 = a00, a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00,
         a32 = a00, a33 = a00;
  for (int64_t d = 0; d < D; d++) {
    const float *kr = kt + d * ldS;
    __m512 k0 = _mm512_loadu_ps(kr), k1 = _mm512_loadu_ps(kr + 16), k2 = _mm512_loadu_ps(kr + 32),
           k3 = _mm512_loadu_ps(kr + 48);
    __m512 b = _mm512_set1_ps(q[d]);
    a00 = _mm512_fmadd_ps(b, k0, a00), a01 = _mm512_fmadd_ps(b, k1, a01);
    a02 = _mm512_fmadd_ps(b, k2, a02), a03 = _mm512_fmadd_ps(b, k3, a03);
    b = _mm512_set1_ps(q[ldq + d]);
    a10 = _mm512_fmadd_ps(b, k0, a10), a11 = _mm512_fmadd_ps(b, k1, a11);
    a12 = _mm512_fmadd_ps(b, k2, a12), a13 = _mm512_fmadd_ps(b, k3, a13);
    b = _mm512_set1_ps(q[2 * ldq + d]);
    a20 = _mm512_fmadd_ps(b, k0, a20), a21 = _mm512_fmadd_ps(b, k1, a21);
    a22 = _mm512_fmadd_ps(b, k2, a22), a23 = _mm512_fmadd_ps(b, k3, a23);
    b = _mm512_set1_ps(q[3 * ldq + d]);
    a30 = _mm512_fmadd_ps(b, k0, a30), a31 = _mm512_fmadd_ps(b, k1, a31);
    a32 = _mm512_fmadd_ps(b, k2, a32), a33 = _mm512_fmadd_ps(b, k3, a33);
  }
#define ST4(r, x0, x1, x2, x3)                                                                     \
  do {                                                                                             \
    __m512 y0 = _mm512_mul_ps(x0, sc), y1 = _mm512_mul_ps(x1, sc), y2 = _mm512_mul_ps(x2, sc),     \
           y3 = _mm512_mul_ps(x3, sc);                                                             \
    _mm512_storeu_ps(S + (r)*ldS, y0), _mm512_storeu_ps(S + (r)*ldS + 16, y1);                     \
    _mm512_storeu_ps(S + (r)*ldS + 32, y2), _mm512_storeu_ps(S + (r)*ldS + 48, y3);                \
    __m512 mx = _mm512_max_ps(_mm512_max_ps(y0, y1), _mm512_max_ps(y2, y3));                       \
    _mm512_storeu_ps(rmax + 16 * (r), _mm512_max_ps(_mm512_loadu_ps(rmax + 16 * (r)), mx));        \
  } while (0)
  ST4(0, a00, a01, a02, a03);
  ST4(1, a10, a11, a12, a13);
  ST4(2, a20, a21, a22, a23);
  ST4(3, a30, a31, a32, a33);
#undef ST4
}

/* S[1 row, 16 keys] */
AVX512 static void qk_1x1(const float *q, const float *kt, int64_t ldS, int64_t D, __m512 sc,
                          float *S, float *rmax) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0;
  int64_t d = 0;
  for (; d + 2 <= D; d += 2) {
    a0 = _mm512_fmadd_ps(_mm512_set1_ps(q[d]), _mm512_loadu_ps(kt + d * ldS), a0);
    a1 = _mm512_fmadd_ps(_mm512_set1_ps(q[d + 1]), _mm512_loadu_ps(kt + (d + 1) * ldS), a1);
  }
  if (d < D) a0 = _mm512_fmadd_ps(_mm512_set1_ps(q[d]), _mm512_loadu_ps(kt + d * ldS), a0);
  __m512 y = _mm512_mul_ps(_mm512_add_ps(a0, a1), sc);
  _mm512_storeu_ps(S, y);
  _mm512_storeu_ps(rmax, _mm512_max_ps(_mm512_loadu_ps(rmax), y));
}

/* S [R, keys] = scale * q [R, D] (row stride ldq) @ kt [D, keys]; keys % 16 == 0.
 * rmax [R, 16] receives per-row lane maxima of S (all keys, padding included). */
AVX512 static void qk_block(const float *q, int64_t ldq, const float *kt, int64_t ldS, int64_t D,
                            int64_t R, int64_t keys, float scale, float *S, float *rmax) {
  __m512 sc = _mm512_set1_ps(scale);
  for (int64_t r = 0; r < R; r++)
    _mm512_storeu_ps(rmax + 16 * r, _mm512_set1_ps(-__builtin_inff()));
  int64_t j = 0;
  for (; j + 64 <= keys; j += 64) {
    int64_t r = 0;
    for (; r + 4 <= R; r += 4)
      qk_4x4(q + r * ldq, ldq, kt + j, ldS, D, sc, S + r * ldS + j, rmax + 16 * r);
    for (; r < R; r++)
      for (int c = 0; c < 4; c++)
        qk_1x1(q + r * ldq, kt + j + 16 * c, ldS, D, sc, S + r * ldS + j + 16 * c, rmax + 16 * r);
  }
  for (; j < keys; j += 16)
    for (int64_t r = 0; r < R; r++)
      qk_1x1(q + r * ldq, kt + j, ldS, D, sc, S + r * ldS + j, rmax + 16 * r);
}

/* o[4 rows, 64 dims] = inv[r] * P[4 rows, :n] @ vp[:n, 64 dims] */
AVX512 static void pv_4x4(const float *P, int64_t ldS, const float *vp, int64_t D, int64_t n,
                          float *o, int64_t ldo, const float *inv) {
  __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00,
         a12 = a00, a13 = a00, a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00,
         a32 = a00, a33 = a00;
  for (int64_t j = 0; j < n; j++) {
    const float *vr = vp + j * D;
    __m512 v0 = _mm512_loadu_ps(vr), v1 = _mm512_loadu_ps(vr + 16), v2 = _mm512_loadu_ps(vr + 32),
           v3 = _mm512_loadu_ps(vr + 48);
    __m512 b = _mm512_set1_ps(P[j]);
    a00 = _mm512_fmadd_ps(b, v0, a00), a01 = _mm512_fmadd_ps(b, v1, a01);
    a02 = _mm512_fmadd_ps(b, v2, a02), a03 = _mm512_fmadd_ps(b, v3, a03);
    b = _mm512_set1_ps(P[ldS + j]);
    a10 = _mm512_fmadd_ps(b, v0, a10), a11 = _mm512_fmadd_ps(b, v1, a11);
    a12 = _mm512_fmadd_ps(b, v2, a12), a13 = _mm512_fmadd_ps(b, v3, a13);
    b = _mm512_set1_ps(P[2 * ldS + j]);
    a20 = _mm512_fmadd_ps(b, v0, a20), a21 = _mm512_fmadd_ps(b, v1, a21);
    a22 = _mm512_fmadd_ps(b, v2, a22), a23 = _mm512_fmadd_ps(b, v3, a23);
    b = _mm512_set1_ps(P[3 * ldS + j]);
    a30 = _mm512_fmadd_ps(b, v0, a30), a31 = _mm512_fmadd_ps(b, v1, a31);
    a32 = _mm512_fmadd_ps(b, v2, a32), a33 = _mm512_fmadd_ps(b, v3, a33);
  }
#define ST4(r, x0, x1, x2, x3)                                                                     \
  do {                                                                                             \
    __m512 s_ = _mm512_set1_ps(inv[r]);                                                            \
    _mm512_storeu_ps(o + (r)*ldo, _mm512_mul_ps(x0, s_));                                          \
    _mm512_storeu_ps(o + (r)*ldo + 16, _mm512_mul_ps(x1, s_));                                     \
    _mm512_storeu_ps(o + (r)*ldo + 32, _mm512_mul_ps(x2, s_));                                     \
    _mm512_storeu_ps(o + (r)*ldo + 48, _mm512_mul_ps(x3, s_));                                     \
  } while (0)
  ST4(0, a00, a01, a02, a03);
  ST4(1, a10, a11, a12, a13);
  ST4(2, a20, a21, a22, a23);
  ST4(3, a30, a31, a32, a33);
#undef ST4
}

/* o[8 rows, 16 dims (mask m)] = inv[r] * P[8 rows, :n] @ vp[:n, 16 dims] */
AVX512 static void pv_8x1(const float *P, int64_t ldS, const float *vp, int64_t D, int64_t n,
                          __mmask16 m, float *o, int64_t ldo, const float *inv) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  for (int64_t j = 0; j < n; j++) {
    __m512 v = _mm512_maskz_loadu_ps(m, vp + j * D);
    a0 = _mm512_fmadd_ps(_mm512_set1_ps(P[j]), v, a0);
    a1 = _mm512_fmadd_ps(_mm512_set1_ps(P[ldS + j]), v, a1);
    a2 = _mm512_fmadd_ps(_mm512_set1_ps(P[2 * ldS + j]), v, a2);
    a3 = _mm512_fmadd_ps(_mm512_set1_ps(P[3 * ldS + j]), v, a3);
    a4 = _mm512_fmadd_ps(_mm512_set1_ps(P[4 * ldS + j]), v, a4);
    a5 = _mm512_fmadd_ps(_mm512_set1_ps(P[5 * ldS + j]), v, a5);
    a6 = _mm512_fmadd_ps(_mm512_set1_ps(P[6 * ldS + j]), v, a6);
    a7 = _mm512_fmadd_ps(_mm512_set1_ps(P[7 * ldS + j]), v, a7);
  }
  __m512 acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
  for (int r = 0; r < 8; r++)
    _mm512_mask_storeu_ps(o + r * ldo, m, _mm512_mul_ps(acc[r], _mm512_set1_ps(inv[r])));
}

/* o[1 row, 16 dims (mask m)] */
AVX512 static void pv_1x1(const float *P, const float *vp, int64_t D, int64_t n, __mmask16 m,
                          float *o, float inv) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0;
  int64_t j = 0;
  for (; j + 2 <= n; j += 2) {
    a0 = _mm512_fmadd_ps(_mm512_set1_ps(P[j]), _mm512_maskz_loadu_ps(m, vp + j * D), a0);
    a1 = _mm512_fmadd_ps(_mm512_set1_ps(P[j + 1]), _mm512_maskz_loadu_ps(m, vp + (j + 1) * D), a1);
  }
  if (j < n) a0 = _mm512_fmadd_ps(_mm512_set1_ps(P[j]), _mm512_maskz_loadu_ps(m, vp + j * D), a0);
  _mm512_mask_storeu_ps(o, m, _mm512_mul_ps(_mm512_add_ps(a0, a1), _mm512_set1_ps(inv)));
}

/* o [R, D] (row stride ldo) = diag(inv) P [R, n] @ vp [n, D] */
AVX512 static void pv_block(const float *P, int64_t ldS, const float *vp, int64_t D, int64_t R,
                            int64_t n, float *o, int64_t ldo, const float *inv) {
  int64_t d = 0;
  for (; d + 64 <= D; d += 64) {
    int64_t r = 0;
    for (; r + 4 <= R; r += 4)
      pv_4x4(P + r * ldS, ldS, vp + d, D, n, o + r * ldo + d, ldo, inv + r);
    for (; r < R; r++)
      for (int c = 0; c < 4; c++)
        pv_1x1(P + r * ldS, vp + d + 16 * c, D, n, 0xffff, o + r * ldo + d + 16 * c, inv[r]);
  }
  for (; d < D; d += 16) {
    int64_t w = D - d < 16 ? D - d : 16;
    __mmask16 m = (__mmask16)((1u << w) - 1);
    int64_t r = 0;
    for (; r + 8 <= R; r += 8)
      pv_8x1(P + r * ldS, ldS, vp + d, D, n, m, o + r * ldo + d, ldo, inv + r);
    for (; r < R; r++) pv_1x1(P + r * ldS, vp + d, D, n, m, o + r * ldo + d, inv[r]);
  }
}

/* exp(x) for x <= 0 (softmax arguments): Cody-Waite reduction, the Cephes
 * degree-6 polynomial with FMAs and scalef for 2^n; 0 below -87.3 (no
 * subnormals), NaN propagates. Relative error about 2 ulp. */
AVX512 static inline __m512 exp_neg512(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.3f);
  __mmask16 keep = _mm512_cmp_ps_mask(x, lo, _CMP_NLT_UQ); /* x >= lo or NaN */
  x = _mm512_max_ps(lo, x);                                /* NaN stays */
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
  p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(keep, p, n);
}

/* s[0..ld) := exp(s - max) for j < n, 0 after; returns 1/sum. The max is
 * taken from rmax16 (lane maxima over exactly s[0..n)) when non-NULL. */
AVX512 static float exp_row(float *s, int64_t n, int64_t ld, const float *rmax16) {
  float mx;
  if (rmax16) {
    mx = _mm512_reduce_max_ps(_mm512_loadu_ps(rmax16));
  } else {
    __m512 m0 = _mm512_set1_ps(-__builtin_inff()), m1 = m0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
      m0 = _mm512_max_ps(m0, _mm512_loadu_ps(s + i));
      m1 = _mm512_max_ps(m1, _mm512_loadu_ps(s + i + 16));
    }
    for (; i < n; i += 16) {
      __mmask16 k = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
      m0 = _mm512_mask_max_ps(m0, k, m0, _mm512_loadu_ps(s + i));
    }
    mx = _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
  }
  __m512 m = _mm512_set1_ps(mx);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m512 e0 = exp_neg512(_mm512_sub_ps(_mm512_loadu_ps(s + i), m));
    __m512 e1 = exp_neg512(_mm512_sub_ps(_mm512_loadu_ps(s + i + 16), m));
    acc0 = _mm512_add_ps(acc0, e0), acc1 = _mm512_add_ps(acc1, e1);
    _mm512_storeu_ps(s + i, e0), _mm512_storeu_ps(s + i + 16, e1);
  }
  for (; i < n; i += 16) { /* ld is a multiple of 16: the last vector fits */
    __mmask16 k = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
    __m512 e = _mm512_maskz_mov_ps(k, exp_neg512(_mm512_sub_ps(_mm512_loadu_ps(s + i), m)));
    acc0 = _mm512_add_ps(acc0, e);
    _mm512_storeu_ps(s + i, e);
  }
  for (; i < ld; i += 16) _mm512_storeu_ps(s + i, _mm512_setzero_ps());
  return 1.0f / _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

void attn_pack_avx512(const float *k, const float *v, int64_t HD, int64_t D, int64_t keys,
                      float *scratch) {
  int64_t ldS = lead_dim(keys);
  float *kt = scratch, *vp = kt + D * ldS;
  for (int64_t j0 = 0; j0 < ldS; j0 += 16) /* 16 keys at a time: rows of k read once */
    for (int64_t d = 0; d < D; d++)
      for (int64_t j = j0; j < j0 + 16; j++) kt[d * ldS + j] = j < keys ? k[j * HD + d] : 0.0f;
  for (int64_t j = 0; j < keys; j++) memcpy(vp + j * D, v + j * HD, (size_t)D * sizeof(float));
  memset(vp + keys * D, 0, (size_t)((ldS - keys) * D) * sizeof(float));
}

AVX512 void attn_block_avx512(const float *q, float *o, int64_t HD, int64_t D, int64_t R,
                              int64_t r0, int64_t keys, int causal, float scale, float *scratch) {
  int64_t ldS = lead_dim(keys);
  const float *kt = scratch, *vp = kt + D * ldS;
  float *S = scratch + 2 * D * ldS, *inv = S + R * ldS, *rmax = inv + R;
  /* rows of this block see keys [0, kb) */
  int64_t kb = causal && r0 + R < keys ? r0 + R : keys;
  int64_t ldb = round16(kb);
  qk_block(q, HD, kt, ldS, D, R, ldb, scale, S, rmax);
  for (int64_t r = 0; r < R; r++) {
    int64_t n = causal ? (r0 + r + 1 < kb ? r0 + r + 1 : kb) : kb;
    /* the fused lane maxima cover exactly the row when no key is masked
     * and there is no padding */
    inv[r] = exp_row(S + r * ldS, n, ldb, n == ldb ? rmax + 16 * r : NULL);
  }
  pv_block(S, ldS, vp, D, R, ldb, o, HD, inv);
}

#else
int attn_avx512_available(void) {
  return 0;
}
size_t attn_avx512_scratch(int64_t R, int64_t Lk, int64_t D) {
  return 0;
}
void attn_pack_avx512(const float *k, const float *v, int64_t HD, int64_t D, int64_t keys,
                      float *scratch) {}
void attn_block_avx512(const float *q, float *o, int64_t HD, int64_t D, int64_t R, int64_t r0,
                       int64_t keys, int causal, float scale, float *scratch) {}
#endif
