/* soup_internal.h: the engine's private state, shared by the C files of server/soup
 * files only (the public API is soup.h).
 *
 * Invariants: tensors are sorted by name; acc_state names the exact content
 * of the accumulator (a fresh id from next_state at every change, restored by
 * rollback); a buffer whose state equals acc_state holds exactly
 * materialize(acc) (or the base when K == 0). The live buffer is never
 * written; the spare is written only while it has no readers (refs == 0).
 */
#pragma once

#include <pthread.h>
#include <string.h>

#include "soup.h"

struct soup_meta {
  char *name;
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  int64_t numel;
  int F;
  enum dtype base_dt;
  const void *base_data; /* host, owned by the caller */
  int64_t *acc;          /* [numel] backend memory, slice of s->acc_mem */
};

struct soup_buf {
  struct soup_version ver;
  struct soup_tensor *tensors; /* [n] */
  void *mem;                   /* one backend allocation, cut into tensors */
  int refs;                    /* readers holding ver */
  uint64_t state;              /* acc_state it was materialized from, 0 = stale */
};

struct soup {
  const struct soup_backend *be;
  enum dtype infer;
  int threads;
  size_t n;
  struct soup_meta *t; /* [n] sorted by name */
  size_t *order;       /* [n] tensor indices, largest first (scheduling) */
  int64_t params;
  int64_t *acc_mem;
  int64_t K;
  uint8_t (*digest)[32]; /* [n] SHA-256 of each accumulator (LE bytes) */
  uint64_t acc_state, next_state;
  char hash_hex[65]; /* "" while the digests are stale */
  int digests_stale;

  /* undo record of the last apply */
  int undo_valid;
  int64_t undo_K;
  uint64_t undo_state;
  char undo_hash[65];
  uint8_t (*undo_digest)[32]; /* [n] */

  pthread_mutex_t mu; /* guards bufs' refs, live, versions */
  pthread_cond_t cv;
  struct soup_buf buf[2];
  int live;
  int wait_ms;

  double last_update_ms, last_validate_ms, last_materialize_ms;
};

/* Runs fn(ctx, i) for every tensor i (largest first) on s->threads threads;
 * returns the first negative status (fn's), else 0. */
int soup_par_for(const struct soup *s, int (*fn)(void *ctx, size_t i), void *ctx);

/* Matches the views to the tensors by name: map[i] = view index of tensor i.
 * Checks names, shapes and dtypes; appends {"field","message"} errors to
 * errors (if not NULL, up to max_errors) and sets *err to the first. Returns
 * 0 or -1. */
int soup_match(const struct soup *s, const struct soup_view *v, size_t n, size_t *map,
               json_t *errors, int max_errors, char **err);
/* Validates the values of the matched views (parallel over tensors). */
int soup_validate_values(const struct soup *s, const struct soup_view *v, const size_t *map,
                         json_t *errors, int max_errors, char **err);

/* Combines K and the per-tensor digests into the soup hash (hex). */
void soup_hash_combine(const struct soup *s, int64_t K, const uint8_t (*digests)[32], char hex[65]);

/* st_dtype (F32/F16/BF16) -> dtype, or -1. */
int soup_st_to_dtype(enum st_dtype dt);
double soup_now_ms(void);
char *soup_strdupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Loads from possibly unaligned tensor data (safetensors offsets are arbitrary). */
static inline uint16_t soup_load_u16(const void *p, int64_t i) {
  uint16_t v;
  memcpy(&v, (const unsigned char *)p + 2 * i, 2);
  return v;
}
static inline float soup_load_f32(const void *p, int64_t i) {
  float v;
  memcpy(&v, (const unsigned char *)p + 4 * i, 4);
  return v;
}

/* Host-readable bytes of backend memory: mem itself on a host-memory backend,
 * else a malloc'd copy (*to_free, caller frees). NULL with *err on failure. */
const void *soup_host_bytes(const struct soup_backend *be, const void *mem, size_t bytes,
                            void **to_free, char **err);
