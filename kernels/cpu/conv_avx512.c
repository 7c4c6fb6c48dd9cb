/* conv_avx512.c: conv2d tiles as a packed GEMM with an AVX-512 8x32
 * register micro-kernel (im2col written straight into the packed layout,
 * so nothing is copied twice as with im2col + sgemm).
 *
 * For one image and output rows [oy0, oy1) (P pixels), per chunk of KC
 * reduction rows: B = im2col chunk packed as [ceil(P/32)][KC][32] (zero
 * past P); A = weights packed once per call as [ceil(Co/8)][K][8]; every
 * (32-pixel panel, 8-channel panel) pair runs the micro-kernel over the
 * chunk, accumulating into out (bias added with the first chunk). Partial
 * panels are zero-padded on input and masked on output.
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

size_t conv_avx512_wpack_floats(int64_t Co, int64_t K) {
  return (size_t)((Co + MR - 1) / MR * MR * K);
}

void conv_avx512_pack_w(const float *w, int64_t Co, int64_t K, float *wp) {
  for (int64_t c0 = 0; c0 < Co; c0 += MR) {
    float *pan = wp + c0 * K;
    for (int64_t k = 0; k < K; k++)
      for (int i = 0; i < MR; i++) pan[k * MR + i] = c0 + i < Co ? w[(c0 + i) * K + k] : 0.0f;
  }
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

void conv_avx512_tile(const struct conv_geom *g, const float *xn, const float *wp,
                      const float *bias, float *outn, int64_t oy0, int64_t oy1, float *scratch) {
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
      int64_t w = P - p * NR;
      __mmask16 m0 = ukr_lane_mask(w), m1 = ukr_lane_mask(w - 16);
      for (int64_t c0 = 0; c0 < g->Co; c0 += MR) {
        int rows = g->Co - c0 < MR ? (int)(g->Co - c0) : MR;
        ukr_8x32(kc, wp + c0 * g->K + k0 * MR, bp + p * kc * NR, out + c0 * HWo + p * NR, HWo,
                 k0 == 0, bias ? bias + c0 : NULL, NULL, rows, m0, m1);
      }
    }
  }
}

#else
int conv_avx512_available(void) {
  return 0;
}
size_t conv_avx512_wpack_floats(int64_t Co, int64_t K) {
  return 0;
}
void conv_avx512_pack_w(const float *w, int64_t Co, int64_t K, float *wp) {}
size_t conv_avx512_scratch_floats(int64_t P) {
  return 0;
}
void conv_avx512_tile(const struct conv_geom *g, const float *xn, const float *wp,
                      const float *bias, float *outn, int64_t oy0, int64_t oy1, float *scratch) {}
#endif
