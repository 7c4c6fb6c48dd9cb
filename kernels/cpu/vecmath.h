/* vecmath.h: 16-lane float vectors (GCC vector extensions) for the CPU
 * backend's hot loops, and the per-function ISA dispatch.
 *
 * CPU_CLONES compiles a function for AVX-512, AVX2 and baseline x86-64 and
 * picks one at load time (ifunc); the same vector code becomes zmm, ymm or
 * xmm instructions. Vector helpers are macros (statement expressions), so
 * no function ever passes a vector by value across an ISA boundary.
 *
 * VF_EXP: exp(x) via x = n*ln2 + r, |r| <= ln2/2 (Cody-Waite), a degree-6
 * polynomial for e^r (Cephes expf coefficients) and 2^n built in the
 * exponent bits in two halves; relative error about 2 ulp on
 * [-87.3, 88.7]; 0 below, +Inf above; NaN propagates.
 * VF_ERFC_POS: erfc(z) for z >= 0 with relative error < 1.2e-7 (the
 * Chebyshev-fitted formula t*exp(-z^2 + P(t)), t = 1/(1 + z/2)).
 */
#pragma once

#include <stdint.h>
#include <string.h>

#ifndef CPU_CLONES /* -DCPU_CLONES= builds one ISA (to test the baseline code) */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CPU_CLONES
#endif
#endif

#define VF_N 16
typedef float vf16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));
typedef float vf8 __attribute__((vector_size(32)));
typedef double vd8 __attribute__((vector_size(64)));

#define VF_LOAD(p)                                                                                 \
  ({                                                                                               \
    vf16 v_;                                                                                       \
    memcpy(&v_, (p), sizeof v_);                                                                   \
    v_;                                                                                            \
  })
#define VF_STORE(p, v)                                                                             \
  do {                                                                                             \
    vf16 v_ = (v);                                                                                 \
    memcpy((p), &v_, sizeof v_);                                                                   \
  } while (0)
/* the first n (< 16) lanes, the rest zero / stored back */
#define VF_LOAD_PART(p, n)                                                                         \
  ({                                                                                               \
    vf16 v_ = {0};                                                                                 \
    memcpy(&v_, (p), (size_t)(n) * sizeof(float));                                                 \
    v_;                                                                                            \
  })
#define VF_STORE_PART(p, v, n)                                                                     \
  do {                                                                                             \
    vf16 v_ = (v);                                                                                 \
    memcpy((p), &v_, (size_t)(n) * sizeof(float));                                                 \
  } while (0)
#define VF_SPLAT(s) ((vf16){0} + (float)(s))
/* m ? a : b per lane, m from a vector comparison */
#define VF_SEL(m, a, b) ((vf16)((((vi16)(a)) & (m)) | (((vi16)(b)) & ~(m))))
#define VF_MAX(a, b)                                                                               \
  ({                                                                                               \
    vf16 a_ = (a), b_ = (b);                                                                       \
    VF_SEL(a_ > b_, a_, b_);                                                                       \
  })

#define VF_EXP(x)                                                                                  \
  ({                                                                                               \
    vf16 x_ = (x);                                                                                 \
    vf16 hi_ = VF_SPLAT(88.7f), lo_ = VF_SPLAT(-87.3f);                                            \
    vf16 c_ = VF_SEL(x_ > hi_, hi_, x_);                                                           \
    c_ = VF_SEL(c_ < lo_, lo_, c_);                                                                \
    vf16 n_ = (c_ * 1.44269504088896341f + 12582912.0f) - 12582912.0f;                             \
    vf16 r_ = c_ - n_ * 0.693359375f;                                                              \
    r_ = r_ - n_ * -2.12194440e-4f;                                                                \
    vf16 p_ = r_ * 1.9875691500e-4f + 1.3981999507e-3f;                                            \
    p_ = p_ * r_ + 8.3334519073e-3f;                                                               \
    p_ = p_ * r_ + 4.1665795894e-2f;                                                               \
    p_ = p_ * r_ + 1.6666665459e-1f;                                                               \
    p_ = p_ * r_ + 5.0000001201e-1f;                                                               \
    p_ = p_ * r_ * r_ + r_ + 1.0f;                                                                 \
    vi16 ni_ = __builtin_convertvector(n_, vi16);                                                  \
    vi16 n1_ = ni_ >> 1, n2_ = ni_ - n1_;                                                          \
    vf16 y_ = p_ * (vf16)((n1_ + 127) << 23) * (vf16)((n2_ + 127) << 23);                          \
    y_ = VF_SEL(x_ > hi_, VF_SPLAT(__builtin_inff()), y_);                                         \
    y_ = VF_SEL(x_ < lo_, VF_SPLAT(0.0f), y_);                                                     \
    VF_SEL(x_ != x_, x_, y_);                                                                      \
  })

#define VF_ERFC_POS(z)                                                                             \
  ({                                                                                               \
    vf16 z_ = (z);                                                                                 \
    vf16 t_ = 1.0f / (1.0f + 0.5f * z_);                                                           \
    vf16 q_ = t_ * 0.17087277f - 0.82215223f;                                                      \
    q_ = q_ * t_ + 1.48851587f;                                                                    \
    q_ = q_ * t_ - 1.13520398f;                                                                    \
    q_ = q_ * t_ + 0.27886807f;                                                                    \
    q_ = q_ * t_ - 0.18628806f;                                                                    \
    q_ = q_ * t_ + 0.09678418f;                                                                    \
    q_ = q_ * t_ + 0.37409196f;                                                                    \
    q_ = q_ * t_ + 1.00002368f;                                                                    \
    q_ = q_ * t_ - 1.26551223f;                                                                    \
    t_ *VF_EXP(q_ - z_ * z_);                                                                      \
  })

/* gelu(x) = 0.5 x (1 + erf(x/sqrt2)) = 0.5 x erfc(-x/sqrt2) */
#define VF_GELU(x)                                                                                 \
  ({                                                                                               \
    vf16 g_ = (x);                                                                                 \
    vf16 z_ = g_ * -0.70710678118654752f;                                                          \
    vf16 az_ = VF_SEL(z_ < 0.0f, -z_, z_);                                                         \
    vf16 e_ = VF_ERFC_POS(az_);                                                                    \
    0.5f * g_ *VF_SEL(z_ < 0.0f, 2.0f - e_, e_);                                                   \
  })

/* x * sigmoid(k x) = x / (1 + exp(-k x)) */
#define VF_XSIGMOID(x, k)                                                                          \
  ({                                                                                               \
    vf16 s_ = (x);                                                                                 \
    s_ / (1.0f + VF_EXP(s_ * -(k)));                                                               \
  })

static inline float vm_bits_to_float(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
