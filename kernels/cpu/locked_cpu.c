/* locked_cpu.c: the CPU backend's op table, each op wrapped in the
 * backend's mutex.
 *
 * Ops share per-backend scratch (widened weights, per-worker buffers) and
 * one thread pool, so two host threads must not run ops on the same backend
 * at once; the wrappers serialise them instead of corrupting scratch. The
 * lock is uncontended in the usual single-caller case (tens of ns per op).
 * last_error still reports the most recent failure of any caller.
 */
#include <pthread.h>

#include "cpu_impl.h"

#define LOCKED(name, params, args)                                                                 \
  static int name##_locked params {                                                                \
    struct cpu_ctx *c = cpu_ctx(be);                                                               \
    pthread_mutex_lock(&c->mu);                                                                    \
    int rc = name##_cpu args;                                                                      \
    pthread_mutex_unlock(&c->mu);                                                                  \
    return rc;                                                                                     \
  }

typedef struct backend B;
typedef struct tensor T;

LOCKED(upload, (B * be, T *dst, const void *src, enum dtype dt), (be, dst, src, dt))
LOCKED(download_f32, (B * be, const T *src, float *dst), (be, src, dst))
LOCKED(copy, (B * be, T *dst, const T *src), (be, dst, src))
LOCKED(conv2d, (B * be, T *out, const T *x, const T *w, const T *b, int stride, int pad),
       (be, out, x, w, b, stride, pad))
LOCKED(linear, (B * be, T *out, const T *x, const T *w, const T *b), (be, out, x, w, b))
LOCKED(matmul, (B * be, T *out, const T *a, int ta, const T *b, int tb, float alpha),
       (be, out, a, ta, b, tb, alpha))
LOCKED(group_norm,
       (B * be, T *out, const T *x, const T *g, const T *b, int groups, float eps, int silu),
       (be, out, x, g, b, groups, eps, silu))
LOCKED(layer_norm, (B * be, T *out, const T *x, const T *g, const T *b, float eps),
       (be, out, x, g, b, eps))
LOCKED(softmax, (B * be, T *out, const T *x), (be, out, x))
LOCKED(attention,
       (B * be, T *out, const T *q, const T *k, const T *v, int heads, float scale, int causal),
       (be, out, q, k, v, heads, scale, causal))
LOCKED(unary, (B * be, T *out, const T *x, enum unary_op op), (be, out, x, op))
LOCKED(geglu, (B * be, T *out, const T *x), (be, out, x))
LOCKED(add, (B * be, T *out, const T *a, const T *b), (be, out, a, b))
LOCKED(mul, (B * be, T *out, const T *a, const T *b), (be, out, a, b))
LOCKED(add_channel, (B * be, T *out, const T *a, const T *b), (be, out, a, b))
LOCKED(axpby, (B * be, T *out, float alpha, const T *x, float beta, const T *y),
       (be, out, alpha, x, beta, y))
LOCKED(concat_channels, (B * be, T *out, const T *a, const T *b), (be, out, a, b))
LOCKED(upsample_nearest, (B * be, T *out, const T *x), (be, out, x))
LOCKED(permute, (B * be, T *out, const T *x, const int *perm), (be, out, x, perm))
LOCKED(slice, (B * be, T *out, const T *x, int dim, int64_t start), (be, out, x, dim, start))
LOCKED(timestep_embedding,
       (B * be, T *out, const float *t, int dim, int flip, float shift, float max_period),
       (be, out, t, dim, flip, shift, max_period))
LOCKED(embedding, (B * be, T *out, const int32_t *ids, const T *table), (be, out, ids, table))

void cpu_ops_install(struct backend *be) {
  be->upload = upload_locked;
  be->download_f32 = download_f32_locked;
  be->copy = copy_locked;
  be->conv2d = conv2d_locked;
  be->linear = linear_locked;
  be->matmul = matmul_locked;
  be->group_norm = group_norm_locked;
  be->layer_norm = layer_norm_locked;
  be->softmax = softmax_locked;
  be->attention = attention_locked;
  be->unary = unary_locked;
  be->geglu = geglu_locked;
  be->add = add_locked;
  be->mul = mul_locked;
  be->add_channel = add_channel_locked;
  be->axpby = axpby_locked;
  be->concat_channels = concat_channels_locked;
  be->upsample_nearest = upsample_nearest_locked;
  be->permute = permute_locked;
  be->slice = slice_locked;
  be->timestep_embedding = timestep_embedding_locked;
  be->embedding = embedding_locked;
}
