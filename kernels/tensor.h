/* tensor.h: the tensor type shared by every backend and by the model code.
 *
 * A tensor is a dtype, up to 4 dims (row-major, contiguous, NCHW for images,
 * [B, L, C] for token sequences) and a data pointer owned by the backend that
 * allocated it (be != NULL) or borrowed (be == NULL, e.g. a view into an mmap).
 * Invariant: data holds exactly tensor_numel() * dtype_size(dtype) bytes.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "half_rules.h"

#ifdef __cplusplus
extern "C" {
#endif

enum dtype { DT_F32 = 0, DT_F16, DT_BF16, DT_I32, DT_I64, DT_COUNT };

#define TENSOR_MAX_DIMS 4

struct backend;

struct tensor {
  enum dtype dtype;
  int ndim;
  int64_t shape[TENSOR_MAX_DIMS];
  void *data;
  struct backend *be; /* owner, or NULL for a borrowed view */
};

size_t dtype_size(enum dtype dt);
const char *dtype_name(enum dtype dt);
/* Parses "F32", "F16", "BF16", "I32", "I64"; returns -1 if unknown. */
int dtype_from_name(const char *name);

static inline int64_t tensor_numel(const struct tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

static inline size_t tensor_nbytes(const struct tensor *t) {
  return (size_t)tensor_numel(t) * dtype_size(t->dtype);
}

/* A borrowed view of host memory. */
static inline struct tensor tensor_view(enum dtype dt, int ndim, const int64_t *shape, void *data) {
  struct tensor t;
  memset(&t, 0, sizeof t);
  t.dtype = dt;
  t.ndim = ndim;
  for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
  t.data = data;
  return t;
}

/* IEEE half and bfloat16 conversions (round to nearest even, NaN kept):
 * f16_to_f32, bf16_to_f32, f32_to_f16, f32_to_bf16 in half_rules.h. */

#ifdef __cplusplus
}
#endif
