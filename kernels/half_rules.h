/* half_rules.h: F32 <-> F16 / BF16 bit conversions, the one copy that the
 * CPU backend, tensor.c and the CUDA kernels all compile (SOUPD_HD).
 *
 * Rules: widening is exact (F16 subnormals included; NaN payloads move to
 * the top of the F32 mantissa); narrowing rounds to nearest even, keeps a NaN
 * a quiet NaN of the same sign, and overflows to Inf. tests/unit/
 * test_kernels_half.c checks every F16 and BF16 bit pattern against an
 * independent formula. */
#pragma once

#include <stdint.h>
#include <string.h>

#include "hd.h"

SOUPD_HD static inline float soupd_bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
SOUPD_HD static inline uint32_t soupd_f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

SOUPD_HD static inline float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, em = h & 0x7fff;
  if (em >= 0x7c00) return soupd_bits_f32(sign | 0x7f800000u | ((em & 0x3ff) << 13));
  /* exact: the exponent and mantissa moved to F32 position, scaled by 2^112
   * (a subnormal F16 becomes a subnormal F32 first: no flush-to-zero here) */
  float f = soupd_bits_f32(em << 13) * 5.192296858534828e33f; /* 2^112 */
  return soupd_bits_f32(soupd_f32_bits(f) | sign);
}

SOUPD_HD static inline float bf16_to_f32(uint16_t b) {
  return soupd_bits_f32((uint32_t)b << 16);
}

SOUPD_HD static inline uint16_t f32_to_f16(float f) {
  uint32_t u = soupd_f32_bits(f);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
  uint32_t a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) /* Inf or NaN */
    return sign | 0x7c00 | (a > 0x7f800000u ? 0x200 : 0);
  if (a >= 0x477ff000u) /* rounds to >= 65520: overflow */
    return sign | 0x7c00;
  if (a < 0x38800000u) {              /* result subnormal or zero: value < 2^-14 */
    if (a < 0x33000000u) return sign; /* < 2^-25 rounds to 0 */
    uint32_t e = a >> 23, m = (a & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e; /* 14..24 */
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return sign | (uint16_t)q;
  }
  uint32_t q = ((a >> 13) - (112u << 10)), rem = a & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (q & 1))) q++;
  return sign | (uint16_t)q;
}

SOUPD_HD static inline uint16_t f32_to_bf16(float f) {
  uint32_t u = soupd_f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  u += 0x7fff + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}
