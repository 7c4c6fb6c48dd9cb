/* soup_backend.h: the soup ops of a compute backend (CPU now, CUDA later).
 *
 * The soup engine (server/soup/) keeps, per tensor, an int64 accumulator
 * S[i] = sum_j kq_j * q_j[i] where q = soup_q(w, F) (below) and a scale
 * exponent F. These ops are the only code that touches accumulator and
 * inference-copy memory, so another device can supply them. Every backend
 * must produce the same bits: the rules are integer rules, or fixed
 * sequences of correctly rounded IEEE operations, written out here.
 *
 *  q(w, F)     = round_half_even(w * 2^F), computed exactly from the sign,
 *                exponent and significand bits of the F16/BF16/F32 value
 *                (no floating point). Defined only for finite w with
 *                |q| <= SOUP_Q_LIMIT; larger values are rejected by validate.
 *  materialize: x = (double)S      (int64 -> binary64, round to nearest even)
 *               y = x / (double)K  (binary64 division, round to nearest even)
 *               z = y * 2^-F       (exact: power-of-two scaling, never subnormal
 *                                   for the F range the engine uses)
 *               out = round_to_nearest_even(z) to F32/F16/BF16, in ONE rounding
 *                (binary64 -> F16/BF16 directly, never through F32).
 *  convert:     base value -> inference dtype, one correctly rounded step
 *               (round to nearest even), used when no shard is active.
 *  hash:        SHA-256 of the accumulator as int64 little-endian bytes.
 *
 * Memory passed to the ops is backend memory obtained from alloc (host memory
 * on the CPU). Sources (shard/base tensors) are always host memory. Ops on
 * different tensors may run concurrently from `parallel` host threads; one
 * call never runs concurrently with another on the same buffers.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* |q| may not exceed 2^36; with K <= 2^26 every |S| <= 2^62 (no overflow). */
#define SOUP_Q_LIMIT_BITS 36
#define SOUP_Q_LIMIT (INT64_C(1) << SOUP_Q_LIMIT_BITS)

struct soup_backend {
  const char *name; /* "cpu", "cuda:0" */
  int parallel;     /* host threads the engine may run ops from at once (0: online cores) */

  void *(*alloc)(size_t bytes); /* zero-filled; NULL on failure */
  void (*free)(void *p);

  /* Scans src[n] (host, src_dt F32/F16/BF16) for values that are NaN/Inf or
   * whose q(w, F) exceeds SOUP_Q_LIMIT in magnitude. Returns 0 if all are
   * valid, else 1 with *bad set to the first bad index. Never writes. */
  int (*validate)(const void *src, enum dtype src_dt, int64_t n, int F, int64_t *bad);

  /* acc[i] += kq * q(src[i], F) for i < n (kq may be negative; src already
   * validated). Fused, optionally: if out != NULL, out[i] = materialize(acc[i])
   * with the new acc and total weight K (out_dt F32/F16/BF16; K > 0);
   * if digest != NULL, digest = SHA-256 of the new acc[n] bytes (LE).
   * Returns 0, or negative on failure (no failure after the first write). */
  int (*accumulate)(int64_t *acc, const void *src, enum dtype src_dt, int64_t n, int F, int64_t kq,
                    void *out, enum dtype out_dt, int64_t K, uint8_t *digest);

  /* out[i] = materialize(acc[i]) (K > 0). */
  int (*materialize)(void *out, enum dtype out_dt, const int64_t *acc, int64_t n, int F, int64_t K);

  /* out[i] = src[i] converted to out_dt, rounded to nearest even (K == 0:
   * the soup is the base). */
  int (*convert)(void *out, enum dtype out_dt, const void *src, enum dtype src_dt, int64_t n);

  /* digest = SHA-256 of acc[n] as int64 little-endian bytes. */
  int (*hash)(const int64_t *acc, int64_t n, uint8_t digest[32]);

  /* 1 if alloc'd memory is host-addressable (CPU); else the engine moves
   * bytes with download/upload (export, snapshots). Either may be NULL on a
   * backend without them: those features then fail cleanly. */
  int host_memory;
  int (*download)(void *host, const void *mem, size_t bytes);
  int (*upload)(void *mem, const void *host, size_t bytes);
};

/* The CPU implementation (AVX2/AVX-512 clones where the CPU has them; same bits). */
const struct soup_backend *soup_backend_cpu(void);

#ifdef __cplusplus
}
#endif
