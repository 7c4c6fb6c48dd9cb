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
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f")))
#define KC 512
#define MR 8
#define NR 32

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

/* c[rows, 32 (masks m0, m1)] (+)= a [kc][8] . b [kc][32] (+ bias on first) */
AVX512 static void ukr_8x32(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                            int first, const float *bias, int rows, __mmask16 m0, __mmask16 m1) {
  __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
         c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00,
         c70 = c00, c71 = c00;
  for (int64_t k = 0; k < kc; k++) {
    __m512 b0 = _mm512_loadu_ps(b + k * NR), b1 = _mm512_loadu_ps(b + k * NR + 16);
    const float *ak = a + k * MR;
    __m512 t = _mm512_set1_ps(ak[0]);
    c00 = _mm512_fmadd_ps(t, b0, c00), c01 = _mm512_fmadd_ps(t, b1, c01);
    t = _mm512_set1_ps(ak[1]);
    c10 = _mm512_fmadd_ps(t, b0, c10), c11 = _mm512_fmadd_ps(t, b1, c11);
    t = _mm512_set1_ps(ak[2]);
    c20 = _mm512_fmadd_ps(t, b0, c20), c21 = _mm512_fmadd_ps(t, b1, c21);
    t = _mm512_set1_ps(ak[3]);
    c30 = _mm512_fmadd_ps(t, b0, c30), c31 = _mm512_fmadd_ps(t, b1, c31);
    t = _mm512_set1_ps(ak[4]);
    c40 = _mm512_fmadd_ps(t, b0, c40), c41 = _mm512_fmadd_ps(t, b1, c41);
    t = _mm512_set1_ps(ak[5]);
    c50 = _mm512_fmadd_ps(t, b0, c50), c51 = _mm512_fmadd_ps(t, b1, c51);
    t = _mm512_set1_ps(ak[6]);
    c60 = _mm512_fmadd_ps(t, b0, c60), c61 = _mm512_fmadd_ps(t, b1, c61);
    t = _mm512_set1_ps(ak[7]);
    c70 = _mm512_fmadd_ps(t, b0, c70), c71 = _mm512_fmadd_ps(t, b1, c71);
  }
  __m512 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                       {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
  for (int i = 0; i < rows; i++) {
    float *ci = c + i * ldc;
    __m512 x0 = acc[i][0], x1 = acc[i][1];
    if (first) {
      __m512 bi = _mm512_set1_ps(bias ? bias[i] : 0.0f);
      x0 = _mm512_add_ps(x0, bi), x1 = _mm512_add_ps(x1, bi);
    } else {
      x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, ci));
      x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, ci + 16));
    }
    _mm512_mask_storeu_ps(ci, m0, x0);
    _mm512_mask_storeu_ps(ci + 16, m1, x1);
  }
}

static __mmask16 lane_mask(int64_t n) {
  return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

/* row [P] -> dst[p * stride + 0..32) per 32-pixel panel p, zero past P */
AVX512 static void pack_row(const float *row, int64_t P, int64_t np, float *dst, int64_t stride) {
  for (int64_t p = 0; p < np; p++) {
    int64_t w = P - p * NR;
    float *d = dst + p * stride;
    const float *r = row + p * NR;
    if (w >= NR) {
      _mm512_storeu_ps(d, _mm512_loadu_ps(r));
      _mm512_storeu_ps(d + 16, _mm512_loadu_ps(r + 16));
    } else {
      _mm512_storeu_ps(d, _mm512_maskz_loadu_ps(lane_mask(w), r));
      _mm512_storeu_ps(d + 16, _mm512_maskz_loadu_ps(lane_mask(w - 16), r + 16));
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
      __mmask16 m0 = lane_mask(w), m1 = lane_mask(w - 16);
      for (int64_t c0 = 0; c0 < g->Co; c0 += MR) {
        int rows = g->Co - c0 < MR ? (int)(g->Co - c0) : MR;
        ukr_8x32(kc, wp + c0 * g->K + k0 * MR, bp + p * kc * NR, out + c0 * HWo + p * NR, HWo,
                 k0 == 0, bias ? bias + c0 : NULL, rows, m0, m1);
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
