/* ukr_avx512.h: the AVX-512 8x32 register micro-kernel shared by the
 * packed conv2d and linear paths (private to kernels/cpu; include only
 * under x86-64 GCC).
 *
 * The right operand is packed: b [kc][32] (32 columns, k-major); the left
 * one is read in place, 8 rows at stride lda. c is row-major with leading
 * dimension ldc; rows beyond `rows` and masked-off columns are never
 * touched. Accumulators live in 16 named zmm registers; each k step is 2
 * loads, 8 broadcasts and 16 FMAs.
 */
#pragma once

#include <immintrin.h>
#include <stdint.h>

#define UKR_AVX512 __attribute__((target("avx512f")))
#define UKR_KC 512 /* reduction rows per packed chunk */
#define UKR_MR 8
#define UKR_NR 32

static inline __mmask16 ukr_lane_mask(int64_t n) {
  return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

/* c[rows, 32 (masks m0, m1)] (+)= A [rows, kc] . b [kc][32], where row i
 * of A starts at a + i*lda (k contiguous, read in place); rows past `rows`
 * re-read the last valid row and are not stored. With first, c is
 * overwritten and the per-row bias brow[i] and/or per-column bias bcol[j]
 * (either may be NULL) added; otherwise c is accumulated into. */
UKR_AVX512 static inline void ukr_8x32_rows(int64_t kc, const float *a, int64_t lda, const float *b,
                                            float *c, int64_t ldc, int first, const float *brow,
                                            const float *bcol, int rows, __mmask16 m0,
                                            __mmask16 m1) {
  const float *r0 = a, *r1 = a + (rows > 1 ? 1 : rows - 1) * lda,
              *r2 = a + (rows > 2 ? 2 : rows - 1) * lda, *r3 = a + (rows > 3 ? 3 : rows - 1) * lda,
              *r4 = a + (rows > 4 ? 4 : rows - 1) * lda, *r5 = a + (rows > 5 ? 5 : rows - 1) * lda,
              *r6 = a + (rows > 6 ? 6 : rows - 1) * lda, *r7 = a + (rows > 7 ? 7 : rows - 1) * lda;
  __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
         c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00,
         c70 = c00, c71 = c00;
  for (int64_t k = 0; k < kc; k++) {
    __m512 b0 = _mm512_loadu_ps(b + k * UKR_NR), b1 = _mm512_loadu_ps(b + k * UKR_NR + 16);
    __m512 t = _mm512_set1_ps(r0[k]);
    c00 = _mm512_fmadd_ps(t, b0, c00), c01 = _mm512_fmadd_ps(t, b1, c01);
    t = _mm512_set1_ps(r1[k]);
    c10 = _mm512_fmadd_ps(t, b0, c10), c11 = _mm512_fmadd_ps(t, b1, c11);
    t = _mm512_set1_ps(r2[k]);
    c20 = _mm512_fmadd_ps(t, b0, c20), c21 = _mm512_fmadd_ps(t, b1, c21);
    t = _mm512_set1_ps(r3[k]);
    c30 = _mm512_fmadd_ps(t, b0, c30), c31 = _mm512_fmadd_ps(t, b1, c31);
    t = _mm512_set1_ps(r4[k]);
    c40 = _mm512_fmadd_ps(t, b0, c40), c41 = _mm512_fmadd_ps(t, b1, c41);
    t = _mm512_set1_ps(r5[k]);
    c50 = _mm512_fmadd_ps(t, b0, c50), c51 = _mm512_fmadd_ps(t, b1, c51);
    t = _mm512_set1_ps(r6[k]);
    c60 = _mm512_fmadd_ps(t, b0, c60), c61 = _mm512_fmadd_ps(t, b1, c61);
    t = _mm512_set1_ps(r7[k]);
    c70 = _mm512_fmadd_ps(t, b0, c70), c71 = _mm512_fmadd_ps(t, b1, c71);
  }
  __m512 acc[UKR_MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                           {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
  for (int i = 0; i < rows; i++) {
    float *ci = c + i * ldc;
    __m512 x0 = acc[i][0], x1 = acc[i][1];
    if (first) {
      if (brow) {
        __m512 bi = _mm512_set1_ps(brow[i]);
        x0 = _mm512_add_ps(x0, bi), x1 = _mm512_add_ps(x1, bi);
      }
      if (bcol) {
        x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, bcol));
        x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, bcol + 16));
      }
    } else {
      x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, ci));
      x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, ci + 16));
    }
    _mm512_mask_storeu_ps(ci, m0, x0);
    _mm512_mask_storeu_ps(ci + 16, m1, x1);
  }
}
