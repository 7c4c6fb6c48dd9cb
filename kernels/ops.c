/* ops.c: the front end of every backend (kernels/backend.h).
 *
 * Each function takes the backend's lock, lets the backend bind its device
 * (ops->enter), checks the operands with kernels/check.c's rules, writing a
 * failure straight into be->err, and only then dispatches to the backend's
 * op table. The checks are written here once, in the order the backends
 * used to run them, so every backend refuses the same operands with the
 * same message.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend_impl.h"

struct backend *backend_new(const char *name, void *ctx, const struct backend_ops *ops) {
  struct backend *be = calloc(1, sizeof *be);
  if (!be) return NULL;
  be->name = name;
  be->ctx = ctx;
  be->ops = ops;
  pthread_mutex_init(&be->mu, NULL);
  return be;
}

int backend_fail(struct backend *be, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(be->err, sizeof be->err, fmt, ap);
  va_end(ap);
  return status;
}

const char *be_name(const struct backend *be) {
  return be->name;
}

const char *be_last_error(struct backend *be) {
  return be->err;
}

void be_destroy(struct backend *be) {
  if (!be) return;
  be->ops->destroy(be);
  pthread_mutex_destroy(&be->mu);
  free(be);
}

static void enter(struct backend *be) {
  pthread_mutex_lock(&be->mu);
  if (be->ops->enter) be->ops->enter(be);
}

static int leave(struct backend *be, int rc) {
  pthread_mutex_unlock(&be->mu);
  return rc;
}

/* the checks' message buffer: the backend's last error */
#define E be->err, sizeof be->err

/* ---- memory ---- */

int be_tensor_alloc(struct backend *be, struct tensor *t, enum dtype dt, int ndim,
                    const int64_t *shape) {
  enter(be);
  if (!t) return leave(be, backend_fail(be, -EINVAL, "tensor_alloc: tensor is NULL"));
  memset(t, 0, sizeof *t);
  if ((unsigned)dt >= DT_COUNT)
    return leave(be, backend_fail(be, -EINVAL, "tensor_alloc: bad dtype %d", dt));
  if (ndim < 1 || ndim > TENSOR_MAX_DIMS)
    return leave(
        be, backend_fail(be, -EINVAL, "tensor_alloc: ndim %d out of 1..%d", ndim, TENSOR_MAX_DIMS));
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0 || (shape[i] > 0 && n > INT64_MAX / 16 / shape[i]))
      return leave(be,
                   backend_fail(be, -EINVAL, "tensor_alloc: bad dim %lld", (long long)shape[i]));
    n *= shape[i];
  }
  void *p = be->ops->alloc(be, (size_t)n * dtype_size(dt));
  if (!p) return leave(be, -ENOMEM);
  t->dtype = dt;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
  t->data = p;
  t->be = be;
  return leave(be, 0);
}

void be_tensor_free(struct backend *be, struct tensor *t) {
  if (!t) return;
  enter(be);
  if (t->be == be && t->data) be->ops->free(be, t->data);
  memset(t, 0, sizeof *t);
  leave(be, 0);
}

int be_upload(struct backend *be, struct tensor *dst, const void *src, enum dtype src_dt) {
  enter(be);
  if (!dst || (!dst->data && tensor_numel(dst) > 0))
    return leave(be, backend_fail(be, -EINVAL, "upload: dst has no data"));
  if ((unsigned)src_dt >= DT_COUNT || (unsigned)dst->dtype >= DT_COUNT)
    return leave(be, backend_fail(be, -EINVAL, "upload: bad dtype"));
  if (tensor_numel(dst) == 0) return leave(be, 0);
  if (!src) return leave(be, backend_fail(be, -EINVAL, "upload: src is NULL"));
  return leave(be, be->ops->upload(be, dst, src, src_dt));
}

int be_download_f32(struct backend *be, const struct tensor *src, float *dst) {
  enter(be);
  if (!src || (!src->data && tensor_numel(src) > 0))
    return leave(be, backend_fail(be, -EINVAL, "download_f32: src has no data"));
  if ((unsigned)src->dtype >= DT_COUNT)
    return leave(be, backend_fail(be, -EINVAL, "download_f32: bad dtype"));
  if (tensor_numel(src) == 0) return leave(be, 0);
  if (!dst) return leave(be, backend_fail(be, -EINVAL, "download_f32: dst is NULL"));
  return leave(be, be->ops->download_f32(be, src, dst));
}

int be_copy(struct backend *be, struct tensor *dst, const struct tensor *src) {
  enter(be);
  if (!dst || !src) return leave(be, backend_fail(be, -EINVAL, "copy: NULL tensor"));
  if (tensor_numel(dst) != tensor_numel(src))
    return leave(be, backend_fail(be, -EINVAL, "copy: numel %lld vs %lld",
                                  (long long)tensor_numel(dst), (long long)tensor_numel(src)));
  if ((unsigned)src->dtype >= DT_COUNT || (unsigned)dst->dtype >= DT_COUNT)
    return leave(be, backend_fail(be, -EINVAL, "copy: bad dtype"));
  if (tensor_numel(dst) == 0) return leave(be, 0);
  if (!dst->data || !src->data)
    return leave(be, backend_fail(be, -EINVAL, "copy: tensor has no data"));
  return leave(be, be->ops->copy(be, dst, src));
}

int be_synchronize(struct backend *be) {
  enter(be);
  return leave(be, be->ops->synchronize(be));
}

/* ---- dense ---- */

/* b, if given, is a parameter with one dim */
static int check_bias(struct backend *be, const struct tensor *b, const char *op) {
  int rc = 0;
  if (b) (void)((rc = check_param(E, b, op, "b")) || (rc = check_ndim(E, b, op, "b", 1, 1)));
  return rc;
}

int be_conv2d(struct backend *be, struct tensor *out, const struct tensor *x,
              const struct tensor *w, const struct tensor *b, int stride, int pad) {
  static const char *op = "conv2d";
  int rc;
  enter(be);
  if ((rc = check_act(E, x, op, "x")) || (rc = check_ndim(E, x, op, "x", 4, 4)) ||
      (rc = check_param(E, w, op, "w")) || (rc = check_ndim(E, w, op, "w", 4, 4)) ||
      (rc = check_act(E, out, op, "out")) || (rc = check_ndim(E, out, op, "out", 4, 4)) ||
      (rc = check_bias(be, b, op)) || (rc = check_conv2d(E, out, x, w, b, stride, pad)))
    return leave(be, rc);
  return leave(be, be->ops->conv2d(be, out, x, w, b, stride, pad));
}

int be_linear(struct backend *be, struct tensor *out, const struct tensor *x,
              const struct tensor *w, const struct tensor *b) {
  static const char *op = "linear";
  int rc;
  enter(be);
  if ((rc = check_act(E, x, op, "x")) || (rc = check_param(E, w, op, "w")) ||
      (rc = check_ndim(E, w, op, "w", 2, 2)) || (rc = check_act(E, out, op, "out")) ||
      (rc = check_bias(be, b, op)) || (rc = check_linear(E, out, x, w, b)))
    return leave(be, rc);
  return leave(be, be->ops->linear(be, out, x, w, b));
}

int be_matmul(struct backend *be, struct tensor *out, const struct tensor *a, int trans_a,
              const struct tensor *b, int trans_b, float alpha) {
  static const char *op = "matmul";
  int rc;
  enter(be);
  if ((rc = check_act(E, a, op, "a")) || (rc = check_ndim(E, a, op, "a", 2, 3)) ||
      (rc = check_act(E, b, op, "b")) || (rc = check_ndim(E, b, op, "b", 2, 3)) ||
      (rc = check_act(E, out, op, "out")) || (rc = check_ndim(E, out, op, "out", 2, 3)) ||
      (rc = check_matmul(E, out, a, trans_a, b, trans_b)))
    return leave(be, rc);
  return leave(be, be->ops->matmul(be, out, a, trans_a, b, trans_b, alpha));
}

/* ---- normalisation ---- */

int be_group_norm(struct backend *be, struct tensor *out, const struct tensor *x,
                  const struct tensor *gamma, const struct tensor *beta, int groups, float eps,
                  int fuse_silu) {
  static const char *op = "group_norm";
  int rc;
  enter(be);
  if ((rc = check_act(E, x, op, "x")) || (rc = check_ndim(E, x, op, "x", 2, 4)) ||
      (rc = check_act(E, out, op, "out")) || (rc = check_same_shape(E, out, x, op, "out", "x")) ||
      (rc = check_group_norm(E, x, gamma, beta, groups, eps)))
    return leave(be, rc);
  return leave(be, be->ops->group_norm(be, out, x, gamma, beta, groups, eps, fuse_silu));
}

int be_layer_norm(struct backend *be, struct tensor *out, const struct tensor *x,
                  const struct tensor *gamma, const struct tensor *beta, float eps) {
  static const char *op = "layer_norm";
  int rc;
  enter(be);
  if ((rc = check_act(E, x, op, "x")) || (rc = check_act(E, out, op, "out")) ||
      (rc = check_same_shape(E, out, x, op, "out", "x")) ||
      (rc = check_layer_norm(E, x, gamma, beta, eps)))
    return leave(be, rc);
  return leave(be, be->ops->layer_norm(be, out, x, gamma, beta, eps));
}

int be_softmax(struct backend *be, struct tensor *out, const struct tensor *x) {
  static const char *op = "softmax";
  int rc;
  enter(be);
  if ((rc = check_act(E, x, op, "x")) || (rc = check_act(E, out, op, "out")) ||
      (rc = check_same_shape(E, out, x, op, "out", "x")))
    return leave(be, rc);
  return leave(be, be->ops->softmax(be, out, x));
}

/* ---- attention ---- */

int be_attention(struct backend *be, struct tensor *out, const struct tensor *q,
                 const struct tensor *k, const struct tensor *v, int heads, float scale,
                 int causal) {
  static const char *op = "attention";
  int rc;
  enter(be);
  if ((rc = check_act(E, q, op, "q")) || (rc = check_ndim(E, q, op, "q", 3, 3)) ||
      (rc = check_act(E, k, op, "k")) || (rc = check_ndim(E, k, op, "k", 3, 3)) ||
      (rc = check_act(E, v, op, "v")) || (rc = check_ndim(E, v, op, "v", 3, 3)) ||
      (rc = check_act(E, out, op, "out")) || (rc = check_same_shape(E, out, q, op, "out", "q")) ||
      (rc = check_same_shape(E, v, k, op, "v", "k")) ||
      (rc = check_attention(E, out, q, k, v, heads)))
    return leave(be, rc);
  if (tensor_numel(q) == 0) return leave(be, 0);
  if (k->shape[1] == 0) return leave(be, backend_fail(be, -EINVAL, "attention: no keys (Lk = 0)"));
  return leave(be, be->ops->attention(be, out, q, k, v, heads, scale, causal));
}

/* ---- elementwise ---- */

/* out and the input x are activations of the same numel */
static int check_pair(struct backend *be, const struct tensor *out, const struct tensor *x,
                      const char *op) {
  int rc;
  (void)((rc = check_act(E, x, op, "x")) || (rc = check_act(E, out, op, "out")) ||
         (rc = check_same_numel(E, out, x, op, "out", "input")));
  return rc;
}

int be_unary(struct backend *be, struct tensor *out, const struct tensor *x, enum unary_op op) {
  int rc;
  enter(be);
  if ((rc = check_pair(be, out, x, "unary"))) return leave(be, rc);
  if ((unsigned)op > UNARY_QUICK_GELU)
    return leave(be, backend_fail(be, -EINVAL, "unary: bad op %d", (int)op));
  return leave(be, be->ops->unary(be, out, x, op));
}

int be_geglu(struct backend *be, struct tensor *out, const struct tensor *x) {
  static const char *op = "geglu";
  int rc;
  enter(be);
  if ((rc = check_act(E, x, op, "x")) || (rc = check_act(E, out, op, "out")) ||
      (rc = check_geglu(E, out, x)))
    return leave(be, rc);
  return leave(be, be->ops->geglu(be, out, x));
}

static int check_binary(struct backend *be, const struct tensor *out, const struct tensor *a,
                        const struct tensor *b, const char *op) {
  int rc;
  (void)((rc = check_pair(be, out, a, op)) || (rc = check_act(E, b, op, "b")) ||
         (rc = check_same_numel(E, a, b, op, "a", "b")));
  return rc;
}

int be_add(struct backend *be, struct tensor *out, const struct tensor *a, const struct tensor *b) {
  int rc;
  enter(be);
  if ((rc = check_binary(be, out, a, b, "add"))) return leave(be, rc);
  return leave(be, be->ops->add(be, out, a, b));
}

int be_mul(struct backend *be, struct tensor *out, const struct tensor *a, const struct tensor *b) {
  int rc;
  enter(be);
  if ((rc = check_binary(be, out, a, b, "mul"))) return leave(be, rc);
  return leave(be, be->ops->mul(be, out, a, b));
}

int be_add_channel(struct backend *be, struct tensor *out, const struct tensor *a,
                   const struct tensor *b) {
  static const char *op = "add_channel";
  int rc;
  enter(be);
  if ((rc = check_act(E, a, op, "a")) || (rc = check_ndim(E, a, op, "a", 2, 4)) ||
      (rc = check_act(E, out, op, "out")) || (rc = check_same_shape(E, out, a, op, "out", "a")) ||
      (rc = check_act(E, b, op, "b")) || (rc = check_add_channel(E, out, a, b)))
    return leave(be, rc);
  return leave(be, be->ops->add_channel(be, out, a, b));
}

int be_axpby(struct backend *be, struct tensor *out, float alpha, const struct tensor *x,
             float beta, const struct tensor *y) {
  int rc;
  enter(be);
  if ((rc = check_pair(be, out, x, "axpby"))) return leave(be, rc);
  if (y) {
    if ((rc = check_act(E, y, "axpby", "y")) || (rc = check_same_numel(E, x, y, "axpby", "x", "y")))
      return leave(be, rc);
  } else if (beta != 0.0f) {
    return leave(be, backend_fail(be, -EINVAL, "axpby: y is NULL but beta is %g", (double)beta));
  }
  return leave(be, be->ops->axpby(be, out, alpha, x, beta, y));
}

/* ---- layout ---- */

/* x and out are distinct activations */
static int check_io(struct backend *be, const struct tensor *out, const struct tensor *x,
                    const char *op) {
  int rc;
  if ((rc = check_act(E, x, op, "x")) || (rc = check_act(E, out, op, "out"))) return rc;
  if (out->data == x->data && tensor_numel(x) > 0)
    return backend_fail(be, -EINVAL, "%s: out may not alias the input", op);
  return 0;
}

int be_concat_channels(struct backend *be, struct tensor *out, const struct tensor *a,
                       const struct tensor *b) {
  static const char *op = "concat_channels";
  int rc;
  enter(be);
  if ((rc = check_io(be, out, a, op)) || (rc = check_io(be, out, b, op)) ||
      (rc = check_ndim(E, a, op, "a", 2, 4)) || (rc = check_concat_channels(E, out, a, b)))
    return leave(be, rc);
  return leave(be, be->ops->concat_channels(be, out, a, b));
}

int be_upsample_nearest(struct backend *be, struct tensor *out, const struct tensor *x) {
  static const char *op = "upsample_nearest";
  int rc;
  enter(be);
  if ((rc = check_io(be, out, x, op)) || (rc = check_ndim(E, x, op, "x", 4, 4)) ||
      (rc = check_ndim(E, out, op, "out", 4, 4)) || (rc = check_upsample_nearest(E, out, x)))
    return leave(be, rc);
  if (tensor_numel(out) == 0) return leave(be, 0);
  return leave(be, be->ops->upsample_nearest(be, out, x));
}

int be_permute(struct backend *be, struct tensor *out, const struct tensor *x, const int *perm) {
  static const char *op = "permute";
  int rc;
  enter(be);
  if ((rc = check_io(be, out, x, op)) || (rc = check_permute(E, out, x, perm)))
    return leave(be, rc);
  return leave(be, be->ops->permute(be, out, x, perm));
}

int be_slice(struct backend *be, struct tensor *out, const struct tensor *x, int dim,
             int64_t start) {
  static const char *op = "slice";
  int rc;
  enter(be);
  if ((rc = check_io(be, out, x, op)) || (rc = check_slice(E, out, x, dim, start)))
    return leave(be, rc);
  return leave(be, be->ops->slice(be, out, x, dim, start));
}

/* ---- embeddings ---- */

int be_timestep_embedding(struct backend *be, struct tensor *out, const float *t, int dim,
                          int flip_sin_to_cos, float freq_shift, float max_period) {
  static const char *op = "timestep_embedding";
  int rc;
  enter(be);
  if ((rc = check_act(E, out, op, "out")) || (rc = check_ndim(E, out, op, "out", 2, 2)) ||
      (rc = check_timestep_embedding(E, out, t, dim, freq_shift, max_period)))
    return leave(be, rc);
  return leave(
      be, be->ops->timestep_embedding(be, out, t, dim, flip_sin_to_cos, freq_shift, max_period));
}

int be_embedding(struct backend *be, struct tensor *out, const int32_t *ids,
                 const struct tensor *table) {
  static const char *op = "embedding";
  int rc;
  enter(be);
  if ((rc = check_act(E, out, op, "out")) || (rc = check_param(E, table, op, "table")) ||
      (rc = check_ndim(E, table, op, "table", 2, 2)) || (rc = check_embedding(E, out, ids, table)))
    return leave(be, rc);
  return leave(be, be->ops->embedding(be, out, ids, table));
}
