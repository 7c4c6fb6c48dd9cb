/* backend.h: the compute ops, the one front end of every backend.
 *
 * Model code in server/diffusion/ calls only these functions and never knows
 * the device. Each one checks its operands once (the rules and messages are
 * kernels/check.c's), takes the backend's lock, and dispatches to the
 * backend's op table (kernels/backend_impl.h), so a backend only implements
 * the maths. Conventions for every op:
 *  - returns 0 on success, a negative errno-style status on failure; the
 *    backend keeps a human-readable message for the last failure
 *    (be_last_error);
 *  - the output tensor is allocated by the caller (be_tensor_alloc) with the
 *    shape the op documents; ops never allocate their outputs;
 *  - activations are F32; weights (conv/linear/norm parameters, embedding
 *    tables) may be F32, F16 or BF16 and are widened on the fly;
 *  - out may not alias an input unless the op says so (the elementwise ops
 *    allow out == a);
 *  - ops of one backend are serialised (callers on several host threads
 *    wait for each other); the last error is the most recent of any caller.
 */
#pragma once

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

enum unary_op { UNARY_SILU = 0, UNARY_GELU /* erf */, UNARY_GELU_TANH, UNARY_QUICK_GELU };

struct backend; /* opaque: kernels/backend_impl.h */

/* The CPU backend; threads = 0 uses every online core. */
struct backend *backend_cpu_new(int threads);

/* "cpu", "cuda:0" */
const char *be_name(const struct backend *be);
/* The message of the last failure ("" if none yet). */
const char *be_last_error(struct backend *be);
/* Frees the backend and what it still holds (be may be NULL). */
void be_destroy(struct backend *be);

/* ---- memory ---- */
/* Allocates t with dtype and shape (data uninitialised); t->be = be. */
int be_tensor_alloc(struct backend *be, struct tensor *t, enum dtype dt, int ndim,
                    const int64_t *shape);
/* Frees t's data if be allocated it, and clears t (t may be NULL). */
void be_tensor_free(struct backend *be, struct tensor *t);
/* Host -> device: src holds numel(dst) elements of src_dt, converted to dst->dtype. */
int be_upload(struct backend *be, struct tensor *dst, const void *src, enum dtype src_dt);
/* Device -> host as F32 (dst holds numel(src) floats). */
int be_download_f32(struct backend *be, const struct tensor *src, float *dst);
/* Device -> device copy of the same numel, converting dtype if needed. */
int be_copy(struct backend *be, struct tensor *dst, const struct tensor *src);
int be_synchronize(struct backend *be);

/* ---- dense ---- */
/* out[N,Co,Ho,Wo] = conv(x[N,Ci,H,W], w[Co,Ci,kh,kw]) + b[Co] (b may be NULL);
 * Ho = (H + 2*pad - kh)/stride + 1. */
int be_conv2d(struct backend *be, struct tensor *out, const struct tensor *x,
              const struct tensor *w, const struct tensor *b, int stride, int pad);
/* out[..., O] = x[..., I] @ w[O, I]^T + b[O] (b may be NULL). */
int be_linear(struct backend *be, struct tensor *out, const struct tensor *x,
              const struct tensor *w, const struct tensor *b);
/* out[B,M,N] = alpha * op(a) @ op(b); a is [B,M,K] ([B,K,M] if trans_a),
 * b is [B,K,N] ([B,N,K] if trans_b). */
int be_matmul(struct backend *be, struct tensor *out, const struct tensor *a, int trans_a,
              const struct tensor *b, int trans_b, float alpha);

/* ---- normalisation ---- */
/* x [N, C, ...]: groups of C/groups channels; gamma, beta [C]; optional SiLU after. */
int be_group_norm(struct backend *be, struct tensor *out, const struct tensor *x,
                  const struct tensor *gamma, const struct tensor *beta, int groups, float eps,
                  int fuse_silu);
/* Over the last dim C of x [..., C]; gamma, beta [C]. */
int be_layer_norm(struct backend *be, struct tensor *out, const struct tensor *x,
                  const struct tensor *gamma, const struct tensor *beta, float eps);
/* Softmax over the last dim. */
int be_softmax(struct backend *be, struct tensor *out, const struct tensor *x);

/* ---- attention ---- */
/* q [B, Lq, H*D], k [B, Lk, H*D], v [B, Lk, H*D] -> out [B, Lq, H*D];
 * per head softmax(q k^T * scale [+ causal mask]) v. */
int be_attention(struct backend *be, struct tensor *out, const struct tensor *q,
                 const struct tensor *k, const struct tensor *v, int heads, float scale,
                 int causal);

/* ---- elementwise ---- */
int be_unary(struct backend *be, struct tensor *out, const struct tensor *x, enum unary_op op);
/* x [..., 2D] -> out [..., D] = x[..., :D] * gelu_erf(x[..., D:]). */
int be_geglu(struct backend *be, struct tensor *out, const struct tensor *x);
/* out = a + b, same numel. */
int be_add(struct backend *be, struct tensor *out, const struct tensor *a, const struct tensor *b);
/* out = a * b, same numel. */
int be_mul(struct backend *be, struct tensor *out, const struct tensor *a, const struct tensor *b);
/* out[N,C,...] = a[N,C,...] + b[N,C] broadcast over the trailing dims. */
int be_add_channel(struct backend *be, struct tensor *out, const struct tensor *a,
                   const struct tensor *b);
/* out = alpha * x + beta * y (y may be NULL when beta == 0). */
int be_axpby(struct backend *be, struct tensor *out, float alpha, const struct tensor *x,
             float beta, const struct tensor *y);

/* ---- layout ---- */
/* out[N, Ca+Cb, H, W] = cat(a[N,Ca,H,W], b[N,Cb,H,W]) on dim 1. */
int be_concat_channels(struct backend *be, struct tensor *out, const struct tensor *a,
                       const struct tensor *b);
/* Nearest-neighbour resize of x [N,C,H,W] to out [N,C,Ho,Wo] (2x, or the skip's size). */
int be_upsample_nearest(struct backend *be, struct tensor *out, const struct tensor *x);
/* out = x permuted by perm (ndim entries), e.g. NCHW -> NHWC with {0,2,3,1}. */
int be_permute(struct backend *be, struct tensor *out, const struct tensor *x, const int *perm);
/* out[:, start:start+len_of_out] along dim of x (a slice along one dim). */
int be_slice(struct backend *be, struct tensor *out, const struct tensor *x, int dim,
             int64_t start);

/* ---- embeddings ---- */
/* out [N, dim] from host timesteps t[N] (diffusers get_timestep_embedding). */
int be_timestep_embedding(struct backend *be, struct tensor *out, const float *t, int dim,
                          int flip_sin_to_cos, float freq_shift, float max_period);
/* out [N, L, D] = table[ids] with host ids [N*L]; table [V, D]. */
int be_embedding(struct backend *be, struct tensor *out, const int32_t *ids,
                 const struct tensor *table);

#ifdef __cplusplus
}
#endif
