/* conv_avx512.c: conv2d tiles as a packed GEMM with an AVX-512 8x32
 * register micro-kernel (im2col written straight into the packed layout,
 * so nothing is copied twice as with im2col + sgemm).
 *
 * For one image and output rows [oy0, oy1) (P pixels), per chunk of KC
 * reduction rows: B = im2col chunk packed as [ceil(P/32)][KC][32] (zero
 * past P); A = the weights [Co, K] read in place (ukr_8x32_rows); every
 * (32-pixel panel, 8-channel panel) pair runs the micro-kernel over the
 * chunk, accumulating into out (bias added with the first chunk). Partial
 * pixel panels are zero-padded on input and masked on output; partial
 * channel panels are not stored.
 */
#include "cpu_impl.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include "ukr_avx512.h"

#define KC UKR_KC
#define MR UKR_MR
#define NR UKR_NR

int conv_avx512_available(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
}

size_t conv_avx512_scratch_floats(int64_t P) {
  return (size_t)((P + NR - 1) / NR * NR * KC + P + 64);
}

/* row [P] -> dst[p * stride + 0..32) per 32-pixel panel p, zero past P */
UKR_AVX512 static void pack_row(const float *row, int64_t P, int64_t np, float *dst,
                                int64_t stride) {
  for (int64_t p = 0; p < np; p++) {
    int64_t w = P - p * NR;
    float *d = dst + p * stride;
    const float *r = row + p * NR;
    if (w >= NR) {
      _mm512_storeu_ps(d, _mm512_loadu_ps(r));
      _mm512_storeu_ps(d + 16, _mm512_loadu_ps(r + 16));
    } else {
      _mm512_storeu_ps(d, _mm512_maskz_loadu_ps(ukr_lane_mask(w), r));
      _mm512_storeu_ps(d + 16, _mm512_maskz_loadu_ps(ukr_lane_mask(w - 16), r + 16));
    }
  }
}

void conv_avx512_tile(const struct conv_geom *g, const float *xn, const float *w, const float *bias,
                      float *outn, int64_t oy0, int64_t oy1, float *scratch) {
  int64_t P = (oy1 - oy0) * g->Wo, HWo = g->Ho * g->Wo, np = (P + NR - 1) / NR;
  float *bp = scratch, *row = scratch + np * NR * KC;
  float *out = outn + oy0 * g->Wo;
  for (int64_t k0 = 0; k0 < g->K; k0 += KC) {
    int64_t kc = g->K - k0 < KC ? g->K - k0 : KC;
    /* pack the im2col chunk: bp[panel][k][32] */
    for (int64_t k = 0; k < kc; k++) {
      conv_im2col_row(g, xn, k0 + k, oy0, oy1, row);
      pack_row(row, P, np, bp + k * NR, kc * NR);
    }
    for (int64_t p = 0; p < np; p++) {
      int64_t pw = P - p * NR;
      __mmask16 m0 = ukr_lane_mask(pw), m1 = ukr_lane_mask(pw - 16);
      for (int64_t c0 = 0; c0 < g->Co; c0 += MR) {
        int rows = g->Co - c0 < MR ? (int)(g->Co - c0) : MR;
        ukr_8x32_rows(kc, w + c0 * g->K + k0, g->K, bp + p * kc * NR, out + c0 * HWo + p * NR, HWo,
                      k0 == 0, bias ? bias + c0 : NULL, NULL, rows, m0, m1);
      }
    }
  }
}

#else
int conv_avx512_available(void) {
  return 0;
}
size_t conv_avx512_scratch_floats(int64_t P) {
  return 0;
}
void conv_avx512_tile(const struct conv_geom *g, const float *xn, const float *w, const float *bias,
                      float *outn, int64_t oy0, int64_t oy1, float *scratch) {}
#endif
