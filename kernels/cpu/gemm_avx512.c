/* gemm_avx512.c: row-major C [M, N] = A [M, K] @ B^T + bias with the 8x32
 * AVX-512 micro-kernel, where B [N, K] (a linear layer's weight) is packed
 * once per call and A is read in place.
 *
 * bp = B^T packed as [ceil(N/32)][K][32] (zero columns past N). For a block
 * of rows, per KC chunk, for each 32-column panel and each 8-row panel the
 * micro-kernel (ukr_8x32_rows, A rows at stride lda) accumulates into C
 * (bias added with the first chunk).
 */
#include "cpu_impl.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include "ukr_avx512.h"

size_t gemm_avx512_bpack_floats(int64_t N, int64_t K) {
  return (size_t)((N + UKR_NR - 1) / UKR_NR * UKR_NR * K);
}

void gemm_avx512_pack_bt(const float *b, int64_t N, int64_t K, float *bp) {
  for (int64_t n0 = 0; n0 < N; n0 += UKR_NR) {
    float *pan = bp + n0 * K;
    int64_t w = N - n0 < UKR_NR ? N - n0 : UKR_NR;
    for (int64_t k = 0; k < K; k++) {
      for (int64_t j = 0; j < w; j++) pan[k * UKR_NR + j] = b[(n0 + j) * K + k];
      for (int64_t j = w; j < UKR_NR; j++) pan[k * UKR_NR + j] = 0.0f;
    }
  }
}

void gemm_avx512_rows(const float *a, int64_t lda, int64_t rows, int64_t K, const float *bp,
                      int64_t N, const float *bias, float *c, int64_t ldc) {
  int64_t nmp = (rows + UKR_MR - 1) / UKR_MR, nnp = (N + UKR_NR - 1) / UKR_NR;
  for (int64_t k0 = 0; k0 < K; k0 += UKR_KC) {
    int64_t kc = K - k0 < UKR_KC ? K - k0 : UKR_KC;
    for (int64_t np = 0; np < nnp; np++) {
      int64_t w = N - np * UKR_NR;
      __mmask16 m0 = ukr_lane_mask(w), m1 = ukr_lane_mask(w - 16);
      const float *bpan = bp + np * UKR_NR * K + k0 * UKR_NR;
      for (int64_t mp = 0; mp < nmp; mp++) {
        int nr = rows - mp * UKR_MR < UKR_MR ? (int)(rows - mp * UKR_MR) : UKR_MR;
        ukr_8x32_rows(kc, a + mp * UKR_MR * lda + k0, lda, bpan,
                      c + mp * UKR_MR * ldc + np * UKR_NR, ldc, k0 == 0, NULL,
                      bias ? bias + np * UKR_NR : NULL, nr, m0, m1);
      }
    }
  }
}

#else
size_t gemm_avx512_bpack_floats(int64_t N, int64_t K) {
  return 0;
}
void gemm_avx512_pack_bt(const float *b, int64_t N, int64_t K, float *bp) {}
void gemm_avx512_rows(const float *a, int64_t lda, int64_t rows, int64_t K, const float *bp,
                      int64_t N, const float *bias, float *c, int64_t ldc) {}
#endif
