/* soup_rules.h: the exact soup's bit rules, the one copy that the CPU soup
 * ops (cpu/soup_cpu.c) and the CUDA soup ops (cuda/soup_cuda.cu) compile, so
 * both devices make the same integers and the same materialized bits.
 *
 *  - q(w, F) = round_half_even(sig * 2^(exp2 + F)) from the significand and
 *    exponent bits of w (soup_q_parts and the decoders soup_q_f16/bf16/f32);
 *  - binary64 -> F16/BF16 in one round-to-nearest-even step, integer code
 *    (soup_d_to_small);
 *  - the validation limit: the largest absolute bit pattern whose q fits in
 *    SOUP_Q_LIMIT_BITS (host only).
 * Branch-free integer code, so GCC vectorizes the CPU loops. */
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "hd.h"
#include "soup_backend.h"

/* round_half_even(sig * 2^sh) with sign; sig < 2^24. For sh > 0 the caller
 * guarantees the result fits (validated input); shifts are clamped so that
 * unvalidated input is merely wrong, never undefined. */
SOUPD_HD static inline int64_t soup_q_parts(uint64_t sig, int64_t sh, uint64_t neg) {
  int64_t l = sh > 0 ? sh : 0;
  int64_t r = sh < 0 ? -sh : 0;
  l = l < 39 ? l : 39;
  r = r < 63 ? r : 63;
  uint64_t v = sig << l;
  /* t = v >> (r - 1) keeps the rounding bit; sticky: any bit below it. (No
   * constant << variable: GCC 12 does not vectorize that form.) */
  int64_t r1 = r > 0 ? r - 1 : 0;
  uint64_t s1 = r > 0 ? 1 : 0;
  uint64_t t = v >> r1;
  uint64_t sticky = (t << r1) != v;
  uint64_t kept = t >> s1;
  uint64_t up = t & s1 & (sticky | kept);
  int64_t q = (int64_t)(kept + up);
  int64_t m = -(int64_t)neg; /* 0 or all ones */
  return (q ^ m) - m;
}

/* Decoders: (sig, exp2, neg) with |w| = sig * 2^exp2. */
SOUPD_HD static inline int64_t soup_q_f16(uint64_t h, int64_t F) {
  uint64_t e = (h >> 10) & 31, m = h & 1023;
  uint64_t sig = e ? (m | 1024) : m;
  int64_t ex = (int64_t)(e ? e : 1) - 25;
  return soup_q_parts(sig, ex + F, h >> 15);
}
SOUPD_HD static inline int64_t soup_q_bf16(uint64_t b, int64_t F) {
  uint64_t e = (b >> 7) & 255, m = b & 127;
  uint64_t sig = e ? (m | 128) : m;
  int64_t ex = (int64_t)(e ? e : 1) - 134;
  return soup_q_parts(sig, ex + F, b >> 15);
}
SOUPD_HD static inline int64_t soup_q_f32(uint64_t u, int64_t F) {
  uint64_t e = (u >> 23) & 255, m = u & 0x7fffff;
  uint64_t sig = e ? (m | 0x800000) : m;
  int64_t ex = (int64_t)(e ? e : 1) - 150;
  return soup_q_parts(sig, ex + F, u >> 31);
}

SOUPD_HD static inline uint64_t soup_f64_bits(double z) {
  uint64_t u;
  memcpy(&u, &z, 8);
  return u;
}

/* binary64 -> a 16-bit float with mbits mantissa bits and minimum normal
 * exponent emin, rounded to nearest even in one step (z finite). */
SOUPD_HD static inline uint16_t soup_d_to_small(double z, int64_t mbits, int64_t emin,
                                                uint64_t inf_bits) {
  uint64_t u = soup_f64_bits(z);
  uint64_t sign = u >> 63, a = u & 0x7fffffffffffffffull;
  int64_t E = (int64_t)(a >> 52) - 1023;
  uint64_t sig = (a & 0xfffffffffffffull) | (1ull << 52);
  int64_t sub = emin - E;
  sub = sub > 0 ? sub : 0;
  int64_t sh = 52 - mbits + sub;
  sh = sh > 63 ? 63 : sh;
  uint64_t t = sig >> (sh - 1); /* sh >= 42: kept bits and the rounding bit */
  uint64_t sticky = (t << (sh - 1)) != sig;
  uint64_t kept = t >> 1;
  kept += t & 1 & (sticky | kept);
  uint64_t base = E >= emin ? (uint64_t)(E - emin) << mbits : 0;
  uint64_t r = base + kept;
  r = r > inf_bits ? inf_bits : r;
  return (uint16_t)(r | (sign << 15));
}
SOUPD_HD static inline uint16_t soup_d_to_f16(double z) {
  return soup_d_to_small(z, 10, -14, 0x7c00);
}
SOUPD_HD static inline uint16_t soup_d_to_bf16(double z) {
  return soup_d_to_small(z, 7, -126, 0x7f80);
}

/* |w| as a double from the absolute bits of a dtype value (host). */
static inline double soup_abs_value(enum dtype dt, uint32_t absbits) {
  if (dt == DT_F16) {
    uint32_t e = absbits >> 10, m = absbits & 1023;
    return e ? ldexp((double)(m | 1024), (int)e - 25) : ldexp((double)m, -24);
  }
  uint32_t u = dt == DT_BF16 ? absbits << 16 : absbits;
  float f;
  memcpy(&f, &u, 4);
  return (double)f;
}

/* Largest absolute bit pattern that is finite with |q| <= SOUP_Q_LIMIT, i.e.
 * |w| * 2^F <= 2^36 + 1/2 (a tie there rounds to the even 2^36). Absolute bit
 * patterns are ordered like magnitudes, so validity is absbits <= limit
 * (host). */
static inline uint32_t soup_valid_limit(enum dtype dt, int F) {
  uint32_t lo = 0, hi = dt == DT_F16 ? 0x7bff : dt == DT_BF16 ? 0x7f7f : 0x7f7fffff;
  double cap = ldexp(1.0, SOUP_Q_LIMIT_BITS) + 0.5;
  if (ldexp(soup_abs_value(dt, hi), F) <= cap) return hi;
  while (hi - lo > 1) { /* invariant: lo valid, hi invalid */
    uint32_t mid = lo + (hi - lo) / 2;
    if (ldexp(soup_abs_value(dt, mid), F) <= cap)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}
