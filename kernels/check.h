/* check.h: the operand rules of the compute ops (check.c), run once by the
 * front end (kernels/ops.c) for every backend.
 *
 * Every function writes a message of at most len bytes into msg and returns
 * a negative status (-EINVAL, or -ERANGE for an embedding id out of range)
 * when an operand is wrong, and returns 0 without touching msg otherwise.
 * The front end passes the backend's last-error buffer as msg. The
 * check_<op> functions run after the generic checks of the op's operands
 * (check_act / check_param / check_ndim, see each function), so they may
 * rely on non-NULL tensors of the right dtype and rank.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "kernels/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* room for any message below (the size of the backends' last-error buffers) */
#define CHECK_MSG_LEN 512

/* Formats a shape like "[2, 3, 4]" into buf (n bytes); returns buf. */
const char *check_shape_str(const struct tensor *t, char *buf, size_t n);

/* ---- generic operand checks ---- */
/* An activation: non-NULL, 1..TENSOR_MAX_DIMS dims, none negative, with data, F32. */
int check_act(char *msg, size_t len, const struct tensor *t, const char *op, const char *what);
/* A parameter: as an activation, but F32, F16 or BF16. */
int check_param(char *msg, size_t len, const struct tensor *t, const char *op, const char *what);
/* t has ndim_min..ndim_max dims ("op: what must have 4 dims, got [2, 3]"). */
int check_ndim(char *msg, size_t len, const struct tensor *t, const char *op, const char *what,
               int ndim_min, int ndim_max);
int check_same_shape(char *msg, size_t len, const struct tensor *a, const struct tensor *b,
                     const char *op, const char *an, const char *bn);
/* a and b hold as many elements ("op: an has A elements, bn B"). */
int check_same_numel(char *msg, size_t len, const struct tensor *a, const struct tensor *b,
                     const char *op, const char *an, const char *bn);

/* ---- per op (after the checks named) ---- */
/* geglu: x, out activations. */
int check_geglu(char *msg, size_t len, const struct tensor *out, const struct tensor *x);
/* add_channel: a (2..4 dims), out (shape of a) and b activations. */
int check_add_channel(char *msg, size_t len, const struct tensor *out, const struct tensor *a,
                      const struct tensor *b);
/* concat_channels: a, b, out activations, a with 2..4 dims. */
int check_concat_channels(char *msg, size_t len, const struct tensor *out, const struct tensor *a,
                          const struct tensor *b);
/* upsample_nearest: x, out activations with 4 dims. */
int check_upsample_nearest(char *msg, size_t len, const struct tensor *out, const struct tensor *x);
/* permute: x, out activations. */
int check_permute(char *msg, size_t len, const struct tensor *out, const struct tensor *x,
                  const int *perm);
/* slice: x, out activations. */
int check_slice(char *msg, size_t len, const struct tensor *out, const struct tensor *x, int dim,
                int64_t start);
/* timestep_embedding: out activation with 2 dims. */
int check_timestep_embedding(char *msg, size_t len, const struct tensor *out, const float *t,
                             int dim, float freq_shift, float max_period);
/* embedding: out activation, table parameter with 2 dims; -ERANGE for a bad id. */
int check_embedding(char *msg, size_t len, const struct tensor *out, const int32_t *ids,
                    const struct tensor *table);
/* conv2d: x, out activations and w parameter with 4 dims, b (if any) parameter with 1 dim. */
int check_conv2d(char *msg, size_t len, const struct tensor *out, const struct tensor *x,
                 const struct tensor *w, const struct tensor *b, int stride, int pad);
/* linear: x, out activations, w parameter with 2 dims, b (if any) parameter with 1 dim. */
int check_linear(char *msg, size_t len, const struct tensor *out, const struct tensor *x,
                 const struct tensor *w, const struct tensor *b);
/* matmul: a, b, out activations with 2..3 dims. */
int check_matmul(char *msg, size_t len, const struct tensor *out, const struct tensor *a,
                 int trans_a, const struct tensor *b, int trans_b);
/* group_norm: x (2..4 dims), out (shape of x) activations; gamma, beta may be NULL. */
int check_group_norm(char *msg, size_t len, const struct tensor *x, const struct tensor *gamma,
                     const struct tensor *beta, int groups, float eps);
/* layer_norm: x, out (shape of x) activations; gamma, beta may be NULL. */
int check_layer_norm(char *msg, size_t len, const struct tensor *x, const struct tensor *gamma,
                     const struct tensor *beta, float eps);
/* attention: q, k, v activations with 3 dims, out shaped as q, v as k. */
int check_attention(char *msg, size_t len, const struct tensor *out, const struct tensor *q,
                    const struct tensor *k, const struct tensor *v, int heads);

#ifdef __cplusplus
}
#endif
