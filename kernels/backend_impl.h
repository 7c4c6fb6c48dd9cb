/* backend_impl.h: what a backend implements (private to kernels/).
 *
 * A backend fills one static struct backend_ops and creates its object with
 * backend_new. The front end (kernels/ops.c) has already checked every
 * operand with kernels/check.c's rules, holds be->mu, and has called
 * ops->enter (if set) when an op runs, so an op implements the maths and
 * only the limits of its own device (e.g. INT32_MAX rows for a CUDA grid).
 * The memory ops get validated arguments too: alloc gets a byte count,
 * upload/download_f32/copy at least one element with data on both sides.
 * An op reports a failure with backend_fail, into be->err.
 */
#pragma once

#include <pthread.h>

#include "backend.h"
#include "check.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct backend B_;
typedef struct tensor T_;

struct backend_ops {
  /* called first by every front-end function (e.g. to bind the CUDA device); may be NULL */
  void (*enter)(B_ *be);
  /* bytes of zero-or-more bytes; NULL (with the error set) on failure */
  void *(*alloc)(B_ *be, size_t bytes);
  void (*free)(B_ *be, void *p);
  int (*upload)(B_ *be, T_ *dst, const void *src, enum dtype src_dt);
  int (*download_f32)(B_ *be, const T_ *src, float *dst);
  int (*copy)(B_ *be, T_ *dst, const T_ *src);
  int (*synchronize)(B_ *be);
  int (*conv2d)(B_ *be, T_ *out, const T_ *x, const T_ *w, const T_ *b, int stride, int pad);
  int (*linear)(B_ *be, T_ *out, const T_ *x, const T_ *w, const T_ *b);
  int (*matmul)(B_ *be, T_ *out, const T_ *a, int trans_a, const T_ *b, int trans_b, float alpha);
  int (*group_norm)(B_ *be, T_ *out, const T_ *x, const T_ *gamma, const T_ *beta, int groups,
                    float eps, int fuse_silu);
  int (*layer_norm)(B_ *be, T_ *out, const T_ *x, const T_ *gamma, const T_ *beta, float eps);
  int (*softmax)(B_ *be, T_ *out, const T_ *x);
  int (*attention)(B_ *be, T_ *out, const T_ *q, const T_ *k, const T_ *v, int heads, float scale,
                   int causal);
  int (*unary)(B_ *be, T_ *out, const T_ *x, enum unary_op op);
  int (*geglu)(B_ *be, T_ *out, const T_ *x);
  int (*add)(B_ *be, T_ *out, const T_ *a, const T_ *b);
  int (*mul)(B_ *be, T_ *out, const T_ *a, const T_ *b);
  int (*add_channel)(B_ *be, T_ *out, const T_ *a, const T_ *b);
  int (*axpby)(B_ *be, T_ *out, float alpha, const T_ *x, float beta, const T_ *y);
  int (*concat_channels)(B_ *be, T_ *out, const T_ *a, const T_ *b);
  int (*upsample_nearest)(B_ *be, T_ *out, const T_ *x);
  int (*permute)(B_ *be, T_ *out, const T_ *x, const int *perm);
  int (*slice)(B_ *be, T_ *out, const T_ *x, int dim, int64_t start);
  int (*timestep_embedding)(B_ *be, T_ *out, const float *t, int dim, int flip_sin_to_cos,
                            float freq_shift, float max_period);
  int (*embedding)(B_ *be, T_ *out, const int32_t *ids, const T_ *table);
  /* frees be->ctx and what it holds (not be itself) */
  void (*destroy)(B_ *be);
};

struct backend {
  const char *name; /* "cpu", "cuda:0": owned by the backend (static or in ctx) */
  void *ctx;        /* the backend's own state */
  const struct backend_ops *ops;
  pthread_mutex_t mu; /* held by every front-end call */
  char err[CHECK_MSG_LEN];
};

/* A backend object for ctx and ops; NULL when out of memory. */
struct backend *backend_new(const char *name, void *ctx, const struct backend_ops *ops);

/* Records a message as the last error and returns status (negative). */
int backend_fail(struct backend *be, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif
