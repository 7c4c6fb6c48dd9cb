/* soup.h: the exact soup engine (DESIGN.md section 5), the API the HTTP and
 * registry glue calls.
 *
 * The soup is sum_i k_i w_i / sum_i k_i over the active shards, or the base
 * UNet when none is active. Weights are quantized to kq = round(k * 2^16),
 * 1 <= kq <= SOUP_KQ_MAX; K = sum kq <= SOUP_K_MAX. Per tensor t an int64
 * accumulator S_t[i] = sum kq_j * q(w_j[i], F_t) (rules in
 * kernels/soup_backend.h), with F_t fixed at soup_new from the base:
 *   e_t = smallest e with max|w_base| < 2^e, clamped to [-10, 100] (an
 *   all-zero base tensor gets e = -10: its shards may hold |w| <= 2^-4);
 *   F_t = SOUP_Q_LIMIT_BITS - SOUP_HEADROOM_BITS - e_t  (= 30 - e_t),
 * so a shard value may be up to 2^6 = 64 times the base tensor's largest
 * magnitude (beyond that, or NaN/Inf, the shard is rejected), and
 * |S| <= K * 2^36 <= 2^62 can never overflow.
 *
 * Invariants: integer sums are exact and commutative, so after any sequence
 * of apply(+kq) / apply(-kq) the accumulator is bit-identical to a fresh one
 * over the final active set (and so is every materialized bit and the hash).
 * A rejected shard changes nothing (validation is a separate pass before the
 * first write). Memory is O(M): one accumulator, two inference copies (live
 * and spare), no per-shard state.
 *
 * Error bound (stated and tested): for each parameter, with the soup
 * w* = sum kq_j w_j / K in exact arithmetic,
 *   |materialized - w*| <= 2^-(F_t+1) + 2^-51 |w*| + half an ulp of the
 *   inference dtype at the result (quantization |q - w 2^F| <= 1/2 averaged
 *   with weights kq/K; two binary64 roundings; the final rounding).
 *   Relative to the tensor's largest base magnitude m < 2^e the first term
 *   is below 2^-30 m: finer than an F32 ulp of m (2^-23 m).
 *
 * Soup hash (byte encoding in soup_hash.c): SHA-256 over K and, per tensor in
 * name order, name, shape, F and the SHA-256 of the int64 LE accumulator; it
 * does not depend on the device or the inference dtype.
 *
 * Update protocol (build aside, atomic switch):
 *   soup_check_shard()            at upload, without any lock: 422 details
 *   soup_apply(+kq / -kq / new-old) accumulator updated in place and the
 *                                 spare inference copy materialized in the
 *                                 same pass; the live copy is untouched
 *   registry commit               (the caller)
 *   soup_switch(version)          on success: publish the spare as live
 *   soup_rollback()               on failure: exact undo (apply of -kq_delta)
 * Start-up: soup_snapshot_load, or soup_accumulate per active shard; then
 * soup_materialize_spare and soup_switch(version).
 * Calls that modify the soup (apply, rollback, materialize, switch) must be
 * serialized by the caller (one writer); soup_acquire/release and the
 * readers of a version may run on any thread at any time.
 */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../../kernels/soup_backend.h"
#include "../../kernels/tensor.h"
#include "../formats/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SOUP_KQ_UNIT_BITS 16           /* weights are multiples of 2^-16 */
#define SOUP_KQ_MAX (INT64_C(1) << 20) /* k <= 16 */
#define SOUP_K_MAX (INT64_C(1) << 26)  /* sum of k <= 1024 */
#define SOUP_HEADROOM_BITS 6

/* One tensor of a shard or of the base: a host view (not owned). */
struct soup_view {
  const char *name;
  enum st_dtype dtype; /* ST_F32, ST_F16 or ST_BF16 */
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  const void *data; /* numel elements, little-endian */
};

/* A tensor of a materialized soup version (inference dtype). */
struct soup_tensor {
  const char *name;
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  int64_t numel;
  int F;      /* the tensor's scale exponent */
  void *data; /* backend memory, numel * dtype_size(dtype) bytes */
};

/* A published soup version; valid between soup_acquire and soup_release. */
struct soup_version {
  uint64_t version; /* assigned by the caller at soup_switch (0 at soup_new) */
  char hash_hex[65];
  int64_t K; /* total quantized weight; 0 = the base */
  enum dtype dtype;
  size_t n_tensors;
  const struct soup_tensor *tensors; /* sorted by name */
  const struct soup_backend *be;     /* owner of the tensors' memory */
};

struct soup_stats {
  int64_t params;
  size_t n_tensors;
  size_t bytes; /* accumulator + both inference copies */
  int64_t K;
  uint64_t live_version;
  double last_update_ms;      /* last soup_apply (validate + accumulate + spare) */
  double last_validate_ms;    /* its validation pass */
  double last_materialize_ms; /* last soup_materialize_spare */
};

struct soup;

/* k -> kq = round(k * 2^16); fails (err) unless 1 <= kq <= SOUP_KQ_MAX and k finite. */
int soup_weight_quantize(double k, int64_t *kq, char **err);
static inline double soup_weight_value(int64_t kq) {
  return (double)kq / 65536.0;
}

/* Views of every tensor of an st_file (malloc'd array, views point into f). */
int soup_views_from_st(const struct st_file *f, struct soup_view **views, size_t *n, char **err);

/* Creates an empty soup (== base) over the base UNet tensors, materialized and
 * live as version 0. The base data must outlive the soup (it is re-read when
 * the last shard is withdrawn). infer: DT_F32, DT_F16 or DT_BF16. */
int soup_new(const struct st_file *base, const struct soup_backend *be, enum dtype infer,
             struct soup **out, char **err);
int soup_new_views(const struct soup_view *base, size_t n, const struct soup_backend *be,
                   enum dtype infer, struct soup **out, char **err);
void soup_free(struct soup *s);

/* How long apply/materialize wait for readers of the spare copy (the previous
 * live version) to release it before failing with -EBUSY (default 30000 ms). */
void soup_set_wait_ms(struct soup *s, int ms);

/* Validation for a 422: names and shapes equal to the base, dtype F32/F16/BF16,
 * every value finite and within the tensor's range. Appends up to max_errors
 * {"field", "message"} objects to errors (field = tensor name, message names
 * the first bad index and value). Returns 0 valid, -1 invalid. Reads only the
 * engine's immutable per-tensor data: safe to call while an update runs. */
int soup_check_shard(const struct soup *s, const struct soup_view *v, size_t n, json_t *errors,
                     int max_errors);
int soup_check_shard_st(const struct soup *s, const struct st_file *f, json_t *errors,
                        int max_errors);

/* Adds kq_delta * shard to the accumulator (kq_delta > 0 registers, < 0
 * withdraws, new - old reweights), after a validation pass (nothing changes if
 * it fails, or if K would leave [0, SOUP_K_MAX]). The spare inference copy is
 * materialized in the same pass (waiting for its readers first; -EBUSY and no
 * change if they do not release it in time) and the new hash computed.
 * Returns 0 or negative with *err. */
int soup_apply(struct soup *s, const struct soup_view *v, size_t n, int64_t kq_delta, char **err);
int soup_apply_st(struct soup *s, const struct st_file *f, int64_t kq_delta, char **err);
/* Exact undo of the last soup_apply (same shard, same kq_delta) when the
 * registry commit failed. The live copy was never touched; the spare becomes
 * stale. */
int soup_rollback(struct soup *s, const struct soup_view *v, size_t n, int64_t kq_delta,
                  char **err);
int soup_rollback_st(struct soup *s, const struct st_file *f, int64_t kq_delta, char **err);

/* Start-up / bulk path: like soup_apply (same validation, same exact
 * accumulator) but neither materializes nor hashes; the spare copy and the
 * hash are stale (soup_hash_hex gives "") until soup_materialize_spare. For
 * n shards this costs n light passes plus one materialize+hash pass instead
 * of n full ones. Not undoable with soup_rollback (use the opposite delta). */
int soup_accumulate(struct soup *s, const struct soup_view *v, size_t n, int64_t kq_delta,
                    char **err);
int soup_accumulate_st(struct soup *s, const struct st_file *f, int64_t kq_delta, char **err);

/* Materializes the accumulator (or the base if K == 0) into the spare copy,
 * recomputing the hash if it is stale (after soup_accumulate). Not needed
 * after soup_apply, which already did both. */
int soup_materialize_spare(struct soup *s, char **err);

/* Publishes the spare copy as the live version `version` (pointer swap under
 * a lock). Fails if the spare is not materialized from the current
 * accumulator. The previous live copy becomes the spare; its readers keep it
 * until they release it. */
int soup_switch(struct soup *s, uint64_t version, char **err);

/* Live version for a generation: holds it (never overwritten) until released. */
const struct soup_version *soup_acquire(struct soup *s);
void soup_release(struct soup *s, const struct soup_version *v);

/* Hash of the current accumulator state (== live hash after a switch); ""
 * while stale (after soup_accumulate, before soup_materialize_spare). */
void soup_hash_hex(const struct soup *s, char hex[65]);
void soup_stats_get(const struct soup *s, struct soup_stats *st);

/* One source of a from-scratch rebuild. */
struct soup_source {
  const struct soup_view *v;
  size_t n;
  int64_t kq;
};
/* Builds a fresh accumulator over srcs (tensor by tensor, bounded memory, the
 * live soup untouched) and returns its hash: POST /soup/verify. Sources are
 * validated as by soup_check_shard. */
int soup_rebuild_hash(const struct soup *s, const struct soup_source *srcs, size_t n_srcs,
                      char hex[65], char **err);

/* A soup built from scratch over a recipe (per-request mixes, search
 * candidates): the same rules as the live soup, so equal recipes give equal
 * bits and hashes (a recipe equal to the live members has the live hash);
 * n_srcs == 0 gives the base. Standalone: its own inference copy of
 * soup_built_bytes(s) bytes on the soup's backend, version 0; the live soup
 * is untouched and the call may run on any thread while an update runs.
 * Free with soup_built_free (after the soup's last use of the backend, and
 * before soup_free). */
int soup_build(const struct soup *s, const struct soup_source *srcs, size_t n_srcs,
               struct soup_version **out, char **err);
void soup_built_free(struct soup_version *v);
size_t soup_built_bytes(const struct soup *s);

/* Accumulator snapshot for fast restarts (safetensors, one I64 tensor per
 * soup tensor, metadata soup_version/soup_hash/soup_K). Write: atomic (tmp,
 * fsync, rename). Load: verified against its recorded hash with this soup's
 * base (names, shapes, F) before anything changes; then the spare is stale:
 * call soup_materialize_spare and soup_switch(version). Writer thread only. */
int soup_snapshot_write(struct soup *s, const char *path, uint64_t version, char **err);
int soup_snapshot_load(struct soup *s, const char *path, uint64_t *version, char hash[65],
                       char **err);

/* Writes a version (acquired by the caller) as a safetensors file, diffusers
 * names, inference dtype; metadata may be NULL (soup version and hash are
 * added). */
int soup_export_fp(const struct soup_version *v, FILE *fp, const json_t *metadata, char **err);
int soup_export(const struct soup_version *v, const char *path, const json_t *metadata, char **err);

#ifdef __cplusplus
}
#endif
