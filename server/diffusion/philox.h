/* philox.h: the seeded counter-based generator (Philox4x32-10, Salmon et al.,
 * SC'11, with the Random123 constants) and its normal transform. It makes the
 * initial latents and the ancestral / eta noise of a request, identically on
 * every backend and every run.
 *
 * Exact mapping (seed, stream, element index i) -> value, so that a device
 * kernel can reproduce it:
 *   key     = { (uint32)seed, (uint32)(seed >> 32) }
 *   block   = i / 4, word = i % 4
 *   counter = { (uint32)block, (uint32)(block >> 32),
 *               (uint32)stream, (uint32)(stream >> 32) }
 *   x[0..3] = philox4x32_10(counter, key)
 *   Box-Muller on the pairs (x0, x1) and (x2, x3), in IEEE double:
 *     u1 = ((double)xa + 1) * 2^-32        in (0, 1]
 *     u2 = (double)xb * 2^-32              in [0, 1)
 *     r  = sqrt(-2 * log(u1)),  th = 2*pi*u2   (pi = M_PI as a double)
 *     word 0 = r*cos(th), word 1 = r*sin(th)   of pair (x0, x1)
 *     word 2 = r*cos(th), word 3 = r*sin(th)   of pair (x2, x3)
 *   value   = (float)(that double), round to nearest.
 * Generating on the host and uploading is the reference path (latents are
 * small); a device twin that uses double log/sqrt/sin/cos agrees except when
 * a libm difference of an ulp of a double changes the float rounding.
 *
 * Streams: PHILOX_STREAM_LATENTS for the initial latents [4, h, w] of one
 * image; philox_stream_step(k) for the noise the scheduler adds at step k.
 * Each image of a batch has its own seed, so a batch is reproducible image by
 * image.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define PHILOX_STREAM_LATENTS 0ULL

/* The stream of the scheduler noise at step index k (0-based). */
static inline uint64_t philox_stream_step(uint32_t k) {
  return (1ULL << 32) | (uint64_t)k;
}

/* One Philox4x32-10 block: out = bijection of ctr under key. */
void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* out[j] = the normal of element (offset + j) of (seed, stream), j < n. */
void philox_normal_fill(uint64_t seed, uint64_t stream, uint64_t offset, float *out, size_t n);
