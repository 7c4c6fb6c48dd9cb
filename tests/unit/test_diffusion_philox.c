/* test_diffusion_philox.c: Philox4x32-10 against the published Random123
 * known-answer vectors (kat_vectors, the three "philox4x32 10" lines), and
 * the normal transform: determinism, offset/chunking independence, stream
 * separation, and mean / variance / tail statistics of 2^20 draws. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "diffusion/philox.h"

static void test_kat(void **state) {
  (void)state;
  /* Random123 kat_vectors: counter[4] key[2] -> expected[4]. */
  static const uint32_t v[3][10] = {
      {0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x6627e8d5,
       0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
      {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
       0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
      {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
       0x94fdcceb, 0x5001e420, 0x24126ea1},
  };
  for (int t = 0; t < 3; t++) {
    uint32_t out[4];
    philox4x32_10(v[t], v[t] + 4, out);
    for (int i = 0; i < 4; i++) {
      if (out[i] != v[t][6 + i])
        fprintf(stderr, "kat %d word %d: %08x != %08x\n", t, i, out[i], v[t][6 + i]);
      assert_int_equal(out[i], v[t][6 + i]);
    }
  }
}

static void test_mapping(void **state) {
  (void)state;
  /* Element i of (seed, stream) is Box-Muller of block i/4, as documented. */
  uint64_t seed = 0x123456789abcdefULL, stream = philox_stream_step(7);
  uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  uint32_t ctr[4] = {5, 0, (uint32_t)stream, (uint32_t)(stream >> 32)};
  uint32_t x[4];
  philox4x32_10(ctr, key, x);
  double u1 = ((double)x[2] + 1.0) / 4294967296.0, u2 = (double)x[3] / 4294967296.0;
  float want = (float)(sqrt(-2.0 * log(u1)) * sin(2.0 * M_PI * u2));
  float got;
  philox_normal_fill(seed, stream, 5 * 4 + 3, &got, 1);
  assert_true(got == want);
}

static void test_chunking_and_streams(void **state) {
  (void)state;
  enum { N = 1037 };
  float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b), *c = malloc(N * sizeof *c);
  philox_normal_fill(42, PHILOX_STREAM_LATENTS, 0, a, N);
  /* Any split of the range gives the same values. */
  size_t cuts[] = {0, 1, 3, 4, 9, 500, 1030, N};
  for (size_t k = 0; k + 1 < sizeof cuts / sizeof cuts[0]; k++)
    philox_normal_fill(42, PHILOX_STREAM_LATENTS, cuts[k], b + cuts[k], cuts[k + 1] - cuts[k]);
  for (int i = 0; i < N; i++) assert_true(a[i] == b[i]);
  /* Other seed / other stream: different values. */
  int same_seed = 0, same_stream = 0;
  philox_normal_fill(43, PHILOX_STREAM_LATENTS, 0, b, N);
  philox_normal_fill(42, philox_stream_step(0), 0, c, N);
  for (int i = 0; i < N; i++) {
    same_seed += a[i] == b[i];
    same_stream += a[i] == c[i];
  }
  assert_true(same_seed < 3 && same_stream < 3);
  free(a);
  free(b);
  free(c);
}

static void test_normal_statistics(void **state) {
  (void)state;
  enum { N = 1 << 20 };
  float *z = malloc(N * sizeof *z);
  philox_normal_fill(2024, PHILOX_STREAM_LATENTS, 0, z, N);
  double s = 0, s2 = 0, s4 = 0;
  long tail2 = 0, tail3 = 0;
  for (int i = 0; i < N; i++) {
    double v = z[i];
    assert_true(isfinite(v));
    s += v;
    s2 += v * v;
    s4 += v * v * v * v;
    tail2 += fabs(v) > 2.0;
    tail3 += fabs(v) > 3.0;
  }
  double mean = s / N, var = s2 / N - mean * mean, kurt = s4 / N;
  printf("mean %.5f var %.5f E[z^4] %.4f P(|z|>2) %.5f P(|z|>3) %.6f\n", mean, var, kurt,
         (double)tail2 / N, (double)tail3 / N);
  /* Standard errors for N = 2^20: mean 0.001, var 0.0014, E[z^4] 0.01. Bounds at ~5 sigma. */
  assert_true(fabs(mean) < 0.005);
  assert_true(fabs(var - 1.0) < 0.007);
  assert_true(fabs(kurt - 3.0) < 0.05);
  assert_true(fabs((double)tail2 / N - 0.0455003) < 0.0011);
  assert_true(fabs((double)tail3 / N - 0.0026998) < 0.00026);
  free(z);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_kat),
      cmocka_unit_test(test_mapping),
      cmocka_unit_test(test_chunking_and_streams),
      cmocka_unit_test(test_normal_statistics),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
