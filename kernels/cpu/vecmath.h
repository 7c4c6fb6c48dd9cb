/* vecmath.h: branch-free float math that GCC vectorises, and the
 * per-function ISA dispatch used by the hot loops.
 *
 * vm_expf: exp(x) via x = n*ln2 + r, |r| <= ln2/2, a degree-6 polynomial
 * for e^r and 2^n built in the exponent bits; relative error < 2 ulp over
 * [-87.3, 88.7], 0 below (no subnormals), +Inf above; NaN propagates.
 * CPU_CLONES compiles a function for AVX-512, AVX2 and baseline x86-64 and
 * picks one at load time (ifunc); elsewhere it is empty.
 */
#pragma once

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CPU_CLONES
#endif

static inline float vm_bits_to_float(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static inline float vm_expf(float x) {
  const float hi = 88.7f, lo = -87.3f;
  int nan = x != x;
  float xc = x > hi ? hi : x;
  xc = xc < lo ? lo : xc;
  /* n = round(x / ln2) with the 1.5*2^23 trick (round to nearest even) */
  float t = xc * 1.44269504088896341f + 12582912.0f;
  float n = t - 12582912.0f;
  /* r = x - n*ln2 in two steps (Cody-Waite) */
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t ni = (int32_t)n;
  /* 2^n for n in [-126, 128]: split to keep the exponent field in range */
  int32_t n1 = ni >> 1, n2 = ni - n1;
  float s1 = vm_bits_to_float((uint32_t)(n1 + 127) << 23);
  float s2 = vm_bits_to_float((uint32_t)(n2 + 127) << 23);
  float y = p * s1 * s2;
  y = x > hi ? __builtin_inff() : y;
  y = x < lo ? 0.0f : y;
  return nan ? x : y;
}

/* 1 / (1 + exp(-x)), exact limits 0 and 1. */
static inline float vm_sigmoidf(float x) {
  return 1.0f / (1.0f + vm_expf(-x));
}
