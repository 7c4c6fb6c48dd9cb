/* test_kernels_half.c: kernels/half_rules.h and the binary64 -> F16/BF16
 * rounding of kernels/soup_rules.h, checked exhaustively where cheap (every
 * F16 and every BF16 bit pattern) and against independent references: exact
 * ldexp formulas for widening, GCC's correctly rounded _Float16 conversions
 * (libgcc) for narrowing to F16, and a nearest-of-two-candidates search in
 * double for narrowing to BF16. */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <setjmp.h>
#include <cmocka.h>

#include "kernels/soup_rules.h"
#include "kernels/tensor.h"

static uint32_t bits32(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static float from32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* The value of an F16 pattern by its definition (non-NaN, non-Inf). */
static double f16_value(uint16_t h) {
  int e = (h >> 10) & 31, m = h & 1023;
  double v = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
  return (h & 0x8000) ? -v : v;
}

static void test_f16_widen_every_pattern(void **state) {
  int bad = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    float f = f16_to_f32((uint16_t)h);
    int e = (h >> 10) & 31, m = h & 1023;
    uint32_t u = bits32(f);
    if (e == 31) { /* Inf or NaN: payload moved up, sign kept */
      uint32_t want = ((h & 0x8000u) << 16) | 0x7f800000u | ((uint32_t)m << 13);
      if (u != want && bad++ < 5) printf("f16 %04x -> %08x, want %08x\n", h, u, want);
      continue;
    }
    if ((double)f != f16_value((uint16_t)h) || !!signbit(f) != !!(h & 0x8000)) {
      if (bad++ < 5) printf("f16 %04x -> %a, want %a\n", h, (double)f, f16_value((uint16_t)h));
    }
  }
  assert_int_equal(bad, 0);
}

static void test_f16_round_trip_and_nan(void **state) {
  int bad = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    uint16_t back = f32_to_f16(f16_to_f32((uint16_t)h));
    int nan = ((h >> 10) & 31) == 31 && (h & 1023);
    int ok = nan ? ((back & 0x7c00) == 0x7c00 && (back & 0x200) && (back & 0x8000) == (h & 0x8000))
                 : back == h;
    if (!ok && bad++ < 5) printf("f16 %04x -> f32 -> %04x\n", h, back);
  }
  assert_int_equal(bad, 0);
}

static void test_bf16_every_pattern(void **state) {
  int bad = 0;
  for (uint32_t b = 0; b < 65536; b++) {
    float f = bf16_to_f32((uint16_t)b);
    if (bits32(f) != b << 16 && bad++ < 5) printf("bf16 %04x -> %08x\n", b, bits32(f));
    uint16_t back = f32_to_bf16(f);
    int nan = ((b >> 7) & 255) == 255 && (b & 127);
    int ok = nan ? ((back & 0x7f80) == 0x7f80 && (back & 0x40) && (back & 0x8000) == (b & 0x8000))
                 : back == b;
    if (!ok && bad++ < 5) printf("bf16 %04x -> f32 -> %04x\n", b, back);
  }
  assert_int_equal(bad, 0);
}

/* bf16 nearest to a finite float, ties to even, by comparing the two
 * candidates' exact values in double (overflow: past the largest finite
 * bf16 by half an ulp or more -> Inf). */
static uint16_t bf16_reference(float f) {
  uint32_t u = bits32(f);
  uint16_t lo = (uint16_t)(u >> 16), hi = (uint16_t)(lo + 1);
  double x = fabs((double)f), vlo = fabs((double)from32((uint32_t)lo << 16));
  double vhi = (hi & 0x7f80) == 0x7f80 ? ldexp(1.0, 128) : fabs((double)from32((uint32_t)hi << 16));
  if (x - vlo < vhi - x) return lo;
  if (x - vlo > vhi - x) return hi;
  return (lo & 1) ? hi : lo;
}

/* Every float in a stride over all bit patterns, plus every midpoint
 * between consecutive F16 values and its float neighbours (the ties). */
static void test_narrowing_against_references(void **state) {
  int bad = 0;
  long n = 0;
  for (uint64_t u = 0; u < (1ull << 32); u += 65521) {
    float f = from32((uint32_t)u);
    if (isnan(f)) continue;
    n++;
    uint16_t h = f32_to_f16(f), hr;
    _Float16 r = (_Float16)f;
    memcpy(&hr, &r, 2);
    if (h != hr && bad++ < 5) printf("f32 %08x -> f16 %04x, want %04x\n", (uint32_t)u, h, hr);
    if (!isinf(f)) {
      uint16_t b = f32_to_bf16(f), br = bf16_reference(f);
      if (b != br && bad++ < 5) printf("f32 %08x -> bf16 %04x, want %04x\n", (uint32_t)u, b, br);
    }
  }
  for (uint32_t h = 0; h < 0x7bff; h++) {
    float mid = (float)((f16_value((uint16_t)h) + f16_value((uint16_t)(h + 1))) / 2);
    for (int d = -1; d <= 1; d++) {
      float f = from32(bits32(mid) + d), nf = -f;
      for (int s = 0; s < 2; s++) {
        float g = s ? nf : f;
        uint16_t got = f32_to_f16(g), want;
        _Float16 r = (_Float16)g;
        memcpy(&want, &r, 2);
        n++;
        if (got != want && bad++ < 5) printf("tie %a -> f16 %04x, want %04x\n", g, got, want);
      }
    }
  }
  printf("narrowing: %ld floats checked\n", n);
  assert_int_equal(bad, 0);
}

/* soup_rules.h's binary64 -> F16 (materialize) against libgcc's correctly
 * rounded double -> _Float16, on the ties between F16 values and their
 * double neighbours, and on a spread of magnitudes. */
static void test_soup_d_to_f16(void **state) {
  int bad = 0;
  for (uint32_t h = 0; h < 0x7bff; h++) {
    double mid = (f16_value((uint16_t)h) + f16_value((uint16_t)(h + 1))) / 2;
    double cands[] = {mid, nextafter(mid, 0), nextafter(mid, 1e9), -mid, f16_value((uint16_t)h)};
    for (int i = 0; i < 5; i++) {
      uint16_t got = soup_d_to_f16(cands[i]), want;
      _Float16 r = (_Float16)cands[i];
      memcpy(&want, &r, 2);
      if (got != want && bad++ < 5) printf("d %a -> f16 %04x, want %04x\n", cands[i], got, want);
    }
  }
  for (int e = -40; e <= 20; e++)
    for (int k = 0; k < 1000; k++) {
      double z = ldexp(1.0 + k / 1000.0, e);
      uint16_t got = soup_d_to_f16(z), want;
      _Float16 r = (_Float16)z;
      memcpy(&want, &r, 2);
      if (got != want && bad++ < 5) printf("d %a -> f16 %04x, want %04x\n", z, got, want);
    }
  assert_int_equal(bad, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_f16_widen_every_pattern),
      cmocka_unit_test(test_f16_round_trip_and_nan),
      cmocka_unit_test(test_bf16_every_pattern),
      cmocka_unit_test(test_narrowing_against_references),
      cmocka_unit_test(test_soup_d_to_f16),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
