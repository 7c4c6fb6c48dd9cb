/* philox.c: Philox4x32-10 (Random123 constants and round structure) and the
 * Box-Muller normal transform documented in philox.h. Pure functions, no
 * state: the value of an element depends only on (seed, stream, index). */
#include "philox.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static void philox_round(uint32_t c[4], const uint32_t k[2]) {
  uint64_t p0 = (uint64_t)PHILOX_M0 * c[0];
  uint64_t p1 = (uint64_t)PHILOX_M1 * c[2];
  uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
  uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
  uint32_t n0 = hi1 ^ c[1] ^ k[0];
  uint32_t n2 = hi0 ^ c[3] ^ k[1];
  c[0] = n0;
  c[1] = lo1;
  c[2] = n2;
  c[3] = lo0;
}

void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
  uint32_t k[2] = {key[0], key[1]};
  for (int r = 0; r < 10; r++) {
    if (r > 0) {
      k[0] += PHILOX_W0;
      k[1] += PHILOX_W1;
    }
    philox_round(c, k);
  }
  for (int i = 0; i < 4; i++) out[i] = c[i];
}

static void box_muller(uint32_t xa, uint32_t xb, double *z0, double *z1) {
  const double two_m32 = 1.0 / 4294967296.0;
  double u1 = ((double)xa + 1.0) * two_m32; /* (0, 1] */
  double u2 = (double)xb * two_m32;         /* [0, 1) */
  double r = sqrt(-2.0 * log(u1));
  double th = 2.0 * M_PI * u2;
  *z0 = r * cos(th);
  *z1 = r * sin(th);
}

void philox_normal_fill(uint64_t seed, uint64_t stream, uint64_t offset, float *out, size_t n) {
  const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  size_t j = 0;
  while (j < n) {
    uint64_t i = offset + j;
    uint64_t block = i / 4;
    uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream,
                       (uint32_t)(stream >> 32)};
    uint32_t x[4];
    philox4x32_10(ctr, key, x);
    double z[4];
    box_muller(x[0], x[1], &z[0], &z[1]);
    box_muller(x[2], x[3], &z[2], &z[3]);
    for (unsigned w = (unsigned)(i % 4); w < 4 && j < n; w++, j++) out[j] = (float)z[w];
  }
}
