/* test_soup_rules.c: the bit-level rules of the CPU soup ops against
 * independent references.
 *  - q(w, F) = round_half_even(w * 2^F): every F16 and BF16 bit pattern and
 *    random F32 values, against nearbyint(ldexp(w, F)) in binary64 (exact:
 *    w * 2^F is representable, nearbyint rounds half to even by default);
 *  - validate: the limit is exactly |w| * 2^F <= 2^36 + 1/2, NaN/Inf rejected;
 *  - binary64 -> F16/BF16 in one rounding, against a brute-force nearest
 *    search over all finite values (ties to the even pattern);
 *  - accumulate/materialize through the backend vtable against fp64 sums.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/soup_backend.h"

int64_t soup_cpu_q(enum dtype dt, uint32_t bits, int F);
uint16_t soup_cpu_d_to_f16(double z);
uint16_t soup_cpu_d_to_bf16(double z);

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) { /* splitmix64 */
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static double val16(enum dtype dt, uint16_t b) {
  return dt == DT_F16 ? (double)f16_to_f32(b) : (double)bf16_to_f32(b);
}
static double val32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static const int Fs[] = {-70, -20, -1, 0, 7, 16, 24, 29, 30, 35, 46};

static void check_q(enum dtype dt, uint32_t bits, double w, int F, int *checked) {
  const struct soup_backend *be = soup_backend_cpu();
  double ref = nearbyint(ldexp(w, F));
  int valid_ref = isfinite(w) && fabs(ldexp(w, F)) <= ldexp(1, SOUP_Q_LIMIT_BITS) + 0.5;
  int64_t bad = -1;
  int invalid = dt == DT_F32 ? be->validate(&bits, dt, 1, F, &bad)
                             : be->validate(&(uint16_t){(uint16_t)bits}, dt, 1, F, &bad);
  if (invalid == valid_ref)
    fail_msg("dt %d bits %x F %d: validate %d, ref valid %d", dt, bits, F, invalid, valid_ref);
  if (!valid_ref) return;
  int64_t q = soup_cpu_q(dt, bits, F);
  if ((double)q != ref || fabs(ref) > 0x1p36)
    fail_msg("dt %d bits %x F %d: q %lld ref %.17g", dt, bits, F, (long long)q, ref);
  (*checked)++;
}

static void test_q_f16_bf16_exhaustive(void **state) {
  (void)state;
  for (int d = 0; d < 2; d++) {
    enum dtype dt = d ? DT_BF16 : DT_F16;
    for (size_t f = 0; f < sizeof Fs / sizeof Fs[0]; f++) {
      int checked = 0;
      for (uint32_t b = 0; b < 65536; b++) check_q(dt, b, val16(dt, (uint16_t)b), Fs[f], &checked);
      assert_true(checked > 1000);
    }
  }
}

static void test_q_f32_random(void **state) {
  (void)state;
  for (size_t f = 0; f < sizeof Fs / sizeof Fs[0]; f++) {
    int checked = 0;
    for (int i = 0; i < 200000; i++) {
      uint32_t u = (uint32_t)rnd();
      /* bias towards the interesting range: exponents near 2^-F */
      if (i & 1) {
        int e = 127 - Fs[f] + (int)(rnd() % 60) - 40;
        e = e < 0 ? 0 : e > 254 ? 254 : e;
        u = (u & 0x807fffffu) | ((uint32_t)e << 23);
      }
      check_q(DT_F32, u, val32(u), Fs[f], &checked);
    }
    /* exact ties: (k + 1/2) * 2^-F for small k, both signs */
    for (int k = 0; k < 64; k++) {
      float w = (float)ldexp(k + 0.5, -Fs[f]);
      uint32_t u;
      memcpy(&u, &w, 4);
      if (val32(u) == ldexp(k + 0.5, -Fs[f])) {
        check_q(DT_F32, u, val32(u), Fs[f], &checked);
        check_q(DT_F32, u | 0x80000000u, -val32(u), Fs[f], &checked);
      }
    }
    assert_true(checked > 10000);
  }
}

/* Brute-force correctly rounded binary64 -> 16-bit float (ties to even). */
static uint16_t ref_round16(enum dtype dt, double z) {
  uint16_t maxfin = dt == DT_F16 ? 0x7bff : 0x7f7f, inf = dt == DT_F16 ? 0x7c00 : 0x7f80;
  uint16_t sign = signbit(z) ? 0x8000 : 0;
  double a = fabs(z);
  /* overflow threshold: halfway between the largest finite and the next binade step */
  double top = val16(dt, maxfin),
         next = val16(dt, maxfin) + (val16(dt, maxfin) - val16(dt, maxfin - 1));
  if (a >= (top + next) / 2) return sign | inf;
  uint32_t lo = 0, hi = maxfin; /* largest pattern with value <= a */
  while (lo < hi) {
    uint32_t mid = (lo + hi + 1) / 2;
    if (val16(dt, (uint16_t)mid) <= a)
      lo = mid;
    else
      hi = mid - 1;
  }
  if (lo == maxfin) return sign | maxfin;
  double x = val16(dt, (uint16_t)lo), y = val16(dt, (uint16_t)(lo + 1));
  double mid = (x + y) / 2; /* exact: few significant bits */
  if (a < mid) return sign | (uint16_t)lo;
  if (a > mid) return sign | (uint16_t)(lo + 1);
  return sign | (uint16_t)((lo & 1) ? lo + 1 : lo);
}

static void test_round_to_16(void **state) {
  (void)state;
  for (int d = 0; d < 2; d++) {
    enum dtype dt = d ? DT_BF16 : DT_F16;
    int emin = dt == DT_F16 ? -30 : -140, emax = dt == DT_F16 ? 17 : 129;
    for (int i = 0; i < 300000; i++) {
      double z;
      if (i % 3 == 0) { /* exact midpoints and neighbours */
        uint16_t b = (uint16_t)(rnd() % (dt == DT_F16 ? 0x7bff : 0x7f7f));
        double mid = (val16(dt, b) + val16(dt, (uint16_t)(b + 1))) / 2;
        int k = (int)(rnd() % 3);
        z = k == 0 ? mid : k == 1 ? nextafter(mid, 0) : nextafter(mid, INFINITY);
      } else {
        z = ldexp((double)(rnd() >> 11) / 0x1p53 + 0.5,
                  emin + (int)(rnd() % (unsigned)(emax - emin)));
      }
      if (rnd() & 1) z = -z;
      uint16_t got = dt == DT_F16 ? soup_cpu_d_to_f16(z) : soup_cpu_d_to_bf16(z);
      uint16_t ref = ref_round16(dt, z);
      if (got != ref) fail_msg("dt %d z %.17g: got %04x ref %04x", dt, z, got, ref);
    }
    assert_int_equal(dt == DT_F16 ? soup_cpu_d_to_f16(0.0) : soup_cpu_d_to_bf16(0.0), 0);
    assert_int_equal(dt == DT_F16 ? soup_cpu_d_to_f16(-0.0) : soup_cpu_d_to_bf16(-0.0), 0x8000);
  }
}

/* Whole backend path: accumulate kq_j * q(w_j) over 3 sources in 3 dtypes and
 * materialize; compare with fp64 sums of the reference q and the documented
 * materialize sequence, and the digest with a SHA-256 of the same bytes. */
static void test_backend_accumulate(void **state) {
  (void)state;
  const struct soup_backend *be = soup_backend_cpu();
  enum { N = 20011 };
  int F = 29;
  uint16_t *h = malloc(N * 2), *b = malloc(N * 2);
  float *f = malloc(N * 4);
  int64_t *acc = be->alloc(N * 8);
  double *ref = calloc(N, 8);
  float *out = malloc(N * 4);
  uint16_t *out16 = malloc(N * 2);
  for (int i = 0; i < N; i++) {
    double x = ((double)(rnd() >> 11) / 0x1p53 - 0.5) * 3;
    h[i] = f32_to_f16((float)x);
    b[i] = f32_to_bf16((float)(x * 0.9));
    f[i] = (float)(x * 1.1);
  }
  int64_t kq[3] = {65536, 3 * 65536 / 2, 12345};
  const void *src[3] = {h, b, f};
  enum dtype dts[3] = {DT_F16, DT_BF16, DT_F32};
  uint8_t dg[32];
  for (int j = 0; j < 3; j++) {
    int64_t bad;
    assert_int_equal(be->validate(src[j], dts[j], N, F, &bad), 0);
    assert_int_equal(
        be->accumulate(acc, src[j], dts[j], N, F, kq[j], NULL, DT_F32, 0, j == 2 ? dg : NULL), 0);
    for (int i = 0; i < N; i++) {
      double w = j == 0 ? f16_to_f32(h[i]) : j == 1 ? bf16_to_f32(b[i]) : f[i];
      ref[i] += (double)kq[j] * nearbyint(ldexp(w, F)); /* < 2^53: exact */
    }
  }
  int64_t K = kq[0] + kq[1] + kq[2];
  for (int i = 0; i < N; i++) assert_true((double)acc[i] == ref[i]);
  uint8_t dg2[32];
  assert_int_equal(be->hash(acc, N, dg2), 0);
  assert_memory_equal(dg, dg2, 32);
  assert_int_equal(be->materialize(out, DT_F32, acc, N, F, K), 0);
  assert_int_equal(be->materialize(out16, DT_F16, acc, N, F, K), 0);
  for (int i = 0; i < N; i++) {
    double z = ldexp(ref[i] / (double)K, -F);
    assert_true(out[i] == (float)z);
    assert_int_equal(out16[i], ref_round16(DT_F16, z));
  }
  /* exact reversal */
  for (int j = 0; j < 3; j++)
    assert_int_equal(be->accumulate(acc, src[j], dts[j], N, F, -kq[j], NULL, DT_F32, 0, NULL), 0);
  for (int i = 0; i < N; i++) assert_true(acc[i] == 0);
  free(h);
  free(b);
  free(f);
  be->free(acc);
  free(ref);
  free(out);
  free(out16);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_q_f16_bf16_exhaustive),
      cmocka_unit_test(test_q_f32_random),
      cmocka_unit_test(test_round_to_16),
      cmocka_unit_test(test_backend_accumulate),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
