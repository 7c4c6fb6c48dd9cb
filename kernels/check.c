/* check.c: the argument and shape checks of the compute ops, written once
 * for every backend and run by the front end (kernels/ops.c).
 *
 * Every backend validates its operands with the same rules and the same
 * messages (tests and API clients see them through be_last_error): each
 * function formats its message into a caller's buffer (the backend's
 * last-error buffer) and returns the status. What stays in a backend is
 * the limits of its device (e.g. INT32_MAX rows for a CUDA grid).
 */
#include "kernels/check.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

__attribute__((format(printf, 4, 5))) static int fail(char *msg, size_t len, int status,
                                                      const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, len, fmt, ap);
  va_end(ap);
  return status;
}

const char *check_shape_str(const struct tensor *t, char *buf, size_t n) {
  size_t o = 0;
  o += (size_t)snprintf(buf + o, n - o, "[");
  for (int i = 0; i < t->ndim && o < n; i++)
    o += (size_t)snprintf(buf + o, n - o, i ? ", %lld" : "%lld", (long long)t->shape[i]);
  if (o < n) snprintf(buf + o, n - o, "]");
  return buf;
}

/* ---- generic ---- */

static int check_common(char *msg, size_t len, const struct tensor *t, const char *op,
                        const char *what) {
  if (!t) return fail(msg, len, -EINVAL, "%s: %s is NULL", op, what);
  if (t->ndim < 1 || t->ndim > TENSOR_MAX_DIMS)
    return fail(msg, len, -EINVAL, "%s: %s has ndim %d", op, what, t->ndim);
  for (int i = 0; i < t->ndim; i++)
    if (t->shape[i] < 0) return fail(msg, len, -EINVAL, "%s: %s has a negative dim", op, what);
  if (!t->data && tensor_numel(t) > 0)
    return fail(msg, len, -EINVAL, "%s: %s has no data", op, what);
  return 0;
}

int check_act(char *msg, size_t len, const struct tensor *t, const char *op, const char *what) {
  int rc = check_common(msg, len, t, op, what);
  if (rc) return rc;
  if (t->dtype != DT_F32)
    return fail(msg, len, -EINVAL, "%s: %s must be F32, got %s", op, what, dtype_name(t->dtype));
  return 0;
}

int check_param(char *msg, size_t len, const struct tensor *t, const char *op, const char *what) {
  int rc = check_common(msg, len, t, op, what);
  if (rc) return rc;
  if (t->dtype != DT_F32 && t->dtype != DT_F16 && t->dtype != DT_BF16)
    return fail(msg, len, -EINVAL, "%s: %s must be F32, F16 or BF16, got %s", op, what,
                dtype_name(t->dtype));
  return 0;
}

int check_ndim(char *msg, size_t len, const struct tensor *t, const char *op, const char *what,
               int ndim_min, int ndim_max) {
  if (t->ndim >= ndim_min && t->ndim <= ndim_max) return 0;
  char s[96];
  if (ndim_min == ndim_max)
    return fail(msg, len, -EINVAL, "%s: %s must have %d dims, got %s", op, what, ndim_min,
                check_shape_str(t, s, sizeof s));
  return fail(msg, len, -EINVAL, "%s: %s must have %d..%d dims, got %s", op, what, ndim_min,
              ndim_max, check_shape_str(t, s, sizeof s));
}

int check_same_shape(char *msg, size_t len, const struct tensor *a, const struct tensor *b,
                     const char *op, const char *an, const char *bn) {
  int same = a->ndim == b->ndim;
  for (int i = 0; same && i < a->ndim; i++) same = a->shape[i] == b->shape[i];
  if (same) return 0;
  char s1[96], s2[96];
  return fail(msg, len, -EINVAL, "%s: %s %s and %s %s differ in shape", op, an,
              check_shape_str(a, s1, sizeof s1), bn, check_shape_str(b, s2, sizeof s2));
}

int check_same_numel(char *msg, size_t len, const struct tensor *a, const struct tensor *b,
                     const char *op, const char *an, const char *bn) {
  if (tensor_numel(a) == tensor_numel(b)) return 0;
  return fail(msg, len, -EINVAL, "%s: %s has %lld elements, %s %lld", op, an,
              (long long)tensor_numel(a), bn, (long long)tensor_numel(b));
}

/* ---- elementwise ---- */

int check_geglu(char *msg, size_t len, const struct tensor *out, const struct tensor *x) {
  int64_t D2 = x->shape[x->ndim - 1], D = D2 / 2;
  int ok = x->ndim == out->ndim && D2 % 2 == 0 && out->shape[out->ndim - 1] == D;
  for (int i = 0; ok && i < x->ndim - 1; i++) ok = x->shape[i] == out->shape[i];
  char s1[96], s2[96];
  if (!ok)
    return fail(msg, len, -EINVAL, "geglu: x %s, out %s do not fit [..., 2D] -> [..., D]",
                check_shape_str(x, s1, sizeof s1), check_shape_str(out, s2, sizeof s2));
  if (out->data == x->data) return fail(msg, len, -EINVAL, "geglu: out may not alias x");
  return 0;
}

int check_add_channel(char *msg, size_t len, const struct tensor *out, const struct tensor *a,
                      const struct tensor *b) {
  int64_t N = a->shape[0], C = a->shape[1];
  char s1[96], s2[96];
  int ok = (b->ndim == 2 && b->shape[0] == N && b->shape[1] == C) ||
           (b->ndim == 4 && b->shape[0] == N && b->shape[1] == C && b->shape[2] == 1 &&
            b->shape[3] == 1);
  if (!ok)
    return fail(msg, len, -EINVAL, "add_channel: b %s is not [N, C] for a %s",
                check_shape_str(b, s1, sizeof s1), check_shape_str(a, s2, sizeof s2));
  return 0;
}

/* ---- layout ---- */

int check_concat_channels(char *msg, size_t len, const struct tensor *out, const struct tensor *a,
                          const struct tensor *b) {
  char s1[96], s2[96], s3[96];
  int ok = a->ndim == b->ndim && a->ndim == out->ndim && a->shape[0] == b->shape[0] &&
           out->shape[0] == a->shape[0] && out->shape[1] == a->shape[1] + b->shape[1];
  for (int i = 2; ok && i < a->ndim; i++)
    ok = a->shape[i] == b->shape[i] && out->shape[i] == a->shape[i];
  if (!ok)
    return fail(msg, len, -EINVAL, "concat_channels: a %s, b %s, out %s do not fit",
                check_shape_str(a, s1, sizeof s1), check_shape_str(b, s2, sizeof s2),
                check_shape_str(out, s3, sizeof s3));
  return 0;
}

int check_upsample_nearest(char *msg, size_t len, const struct tensor *out,
                           const struct tensor *x) {
  char s1[96], s2[96];
  if (out->shape[0] != x->shape[0] || out->shape[1] != x->shape[1] ||
      (tensor_numel(out) > 0 && (x->shape[2] == 0 || x->shape[3] == 0)))
    return fail(msg, len, -EINVAL, "upsample_nearest: x %s, out %s do not fit",
                check_shape_str(x, s1, sizeof s1), check_shape_str(out, s2, sizeof s2));
  return 0;
}

int check_permute(char *msg, size_t len, const struct tensor *out, const struct tensor *x,
                  const int *perm) {
  if (!perm) return fail(msg, len, -EINVAL, "permute: perm is NULL");
  int nd = x->ndim, seen[TENSOR_MAX_DIMS] = {0};
  char s1[96], s2[96];
  if (out->ndim != nd)
    return fail(msg, len, -EINVAL, "permute: out ndim %d, x ndim %d", out->ndim, nd);
  for (int i = 0; i < nd; i++) {
    if (perm[i] < 0 || perm[i] >= nd || seen[perm[i]]++)
      return fail(msg, len, -EINVAL, "permute: perm is not a permutation of 0..%d", nd - 1);
    if (out->shape[i] != x->shape[perm[i]])
      return fail(msg, len, -EINVAL, "permute: out %s is not x %s permuted",
                  check_shape_str(out, s1, sizeof s1), check_shape_str(x, s2, sizeof s2));
  }
  return 0;
}

int check_slice(char *msg, size_t len, const struct tensor *out, const struct tensor *x, int dim,
                int64_t start) {
  char s1[96], s2[96];
  int ok = out->ndim == x->ndim && dim >= 0 && dim < x->ndim && start >= 0 &&
           start + out->shape[dim] <= x->shape[dim];
  for (int i = 0; ok && i < x->ndim; i++) ok = i == dim || out->shape[i] == x->shape[i];
  if (!ok)
    return fail(msg, len, -EINVAL, "slice: out %s is not x %s [dim %d from %lld]",
                check_shape_str(out, s1, sizeof s1), check_shape_str(x, s2, sizeof s2), dim,
                (long long)start);
  return 0;
}

/* ---- embeddings ---- */

int check_timestep_embedding(char *msg, size_t len, const struct tensor *out, const float *t,
                             int dim, float freq_shift, float max_period) {
  if (dim < 1 || out->shape[1] != dim)
    return fail(msg, len, -EINVAL, "timestep_embedding: out width %lld, dim %d",
                (long long)out->shape[1], dim);
  if (out->shape[0] > 0 && !t) return fail(msg, len, -EINVAL, "timestep_embedding: t is NULL");
  int half = dim / 2;
  if (!(max_period > 0.0f) || (half > 0 && (float)half - freq_shift == 0.0f))
    return fail(msg, len, -EINVAL, "timestep_embedding: bad max_period or freq_shift");
  return 0;
}

int check_embedding(char *msg, size_t len, const struct tensor *out, const int32_t *ids,
                    const struct tensor *table) {
  int64_t V = table->shape[0], D = table->shape[1];
  char s1[96], s2[96];
  if (out->shape[out->ndim - 1] != D)
    return fail(msg, len, -EINVAL, "embedding: out %s does not end in the table width of %s",
                check_shape_str(out, s1, sizeof s1), check_shape_str(table, s2, sizeof s2));
  int64_t n = D ? tensor_numel(out) / D : 0;
  if (n > 0 && !ids) return fail(msg, len, -EINVAL, "embedding: ids is NULL");
  for (int64_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= V)
      return fail(msg, len, -ERANGE, "embedding: id %d at %lld outside [0, %lld)", (int)ids[i],
                  (long long)i, (long long)V);
  return 0;
}

/* ---- dense ---- */

int check_conv2d(char *msg, size_t len, const struct tensor *out, const struct tensor *x,
                 const struct tensor *w, const struct tensor *b, int stride, int pad) {
  if (stride < 1 || pad < 0)
    return fail(msg, len, -EINVAL, "conv2d: bad stride %d or pad %d", stride, pad);
  int64_t N = x->shape[0], Ci = x->shape[1], H = x->shape[2], W = x->shape[3];
  int64_t Co = w->shape[0], kh = w->shape[2], kw = w->shape[3];
  char s1[96], s2[96];
  if (w->shape[1] != Ci)
    return fail(msg, len, -EINVAL, "conv2d: w %s does not take x %s (channels)",
                check_shape_str(w, s1, sizeof s1), check_shape_str(x, s2, sizeof s2));
  if (kh < 1 || kw < 1 || H + 2 * pad < kh || W + 2 * pad < kw)
    return fail(msg, len, -EINVAL, "conv2d: kernel %s larger than padded x %s",
                check_shape_str(w, s1, sizeof s1), check_shape_str(x, s2, sizeof s2));
  int64_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
  if (out->shape[0] != N || out->shape[1] != Co || out->shape[2] != Ho || out->shape[3] != Wo)
    return fail(msg, len, -EINVAL, "conv2d: out %s, expected [%lld, %lld, %lld, %lld]",
                check_shape_str(out, s1, sizeof s1), (long long)N, (long long)Co, (long long)Ho,
                (long long)Wo);
  if (b && b->shape[0] != Co)
    return fail(msg, len, -EINVAL, "conv2d: b has %lld entries for %lld channels",
                (long long)b->shape[0], (long long)Co);
  if (out->data == x->data) return fail(msg, len, -EINVAL, "conv2d: out may not alias x");
  return 0;
}

int check_linear(char *msg, size_t len, const struct tensor *out, const struct tensor *x,
                 const struct tensor *w, const struct tensor *b) {
  int64_t O = w->shape[0], In = w->shape[1];
  char s1[96], s2[96], s3[96];
  int ok = x->ndim == out->ndim && x->shape[x->ndim - 1] == In && out->shape[out->ndim - 1] == O;
  for (int i = 0; ok && i < x->ndim - 1; i++) ok = x->shape[i] == out->shape[i];
  if (!ok)
    return fail(msg, len, -EINVAL, "linear: x %s, w %s, out %s do not fit [..., I] [O, I] [..., O]",
                check_shape_str(x, s1, sizeof s1), check_shape_str(w, s2, sizeof s2),
                check_shape_str(out, s3, sizeof s3));
  if (b && b->shape[0] != O)
    return fail(msg, len, -EINVAL, "linear: b has %lld entries for %lld outputs",
                (long long)b->shape[0], (long long)O);
  if (out->data == x->data) return fail(msg, len, -EINVAL, "linear: out may not alias x");
  return 0;
}

int check_matmul(char *msg, size_t len, const struct tensor *out, const struct tensor *a,
                 int trans_a, const struct tensor *b, int trans_b) {
  char s1[96], s2[96], s3[96];
  int d = a->ndim - 2;
  int64_t B = d ? a->shape[0] : 1;
  int64_t M = trans_a ? a->shape[d + 1] : a->shape[d], K = trans_a ? a->shape[d] : a->shape[d + 1];
  int64_t Kb = trans_b ? b->shape[d + 1] : b->shape[d], N = trans_b ? b->shape[d] : b->shape[d + 1];
  int ok = a->ndim == b->ndim && a->ndim == out->ndim && K == Kb &&
           (!d || (b->shape[0] == B && out->shape[0] == B)) && out->shape[d] == M &&
           out->shape[d + 1] == N;
  if (!ok)
    return fail(msg, len, -EINVAL, "matmul: a %s%s, b %s%s, out %s do not fit",
                check_shape_str(a, s1, sizeof s1), trans_a ? "^T" : "",
                check_shape_str(b, s2, sizeof s2), trans_b ? "^T" : "",
                check_shape_str(out, s3, sizeof s3));
  if (out->data == a->data || out->data == b->data)
    return fail(msg, len, -EINVAL, "matmul: out may not alias a or b");
  return 0;
}

/* ---- norms and attention ---- */

/* an optional per-channel parameter of C entries */
static int check_affine(char *msg, size_t len, const struct tensor *p, int64_t C, const char *op,
                        const char *what) {
  if (!p) return 0;
  int rc = check_param(msg, len, p, op, what);
  if (rc) return rc;
  if (tensor_numel(p) != C)
    return fail(msg, len, -EINVAL, "%s: %s has %lld entries for %lld channels", op, what,
                (long long)tensor_numel(p), (long long)C);
  return 0;
}

int check_group_norm(char *msg, size_t len, const struct tensor *x, const struct tensor *gamma,
                     const struct tensor *beta, int groups, float eps) {
  static const char *op = "group_norm";
  int64_t C = x->shape[1];
  int rc;
  if (groups < 1 || C % groups != 0)
    return fail(msg, len, -EINVAL, "group_norm: %lld channels not divisible into %d groups",
                (long long)C, groups);
  if (!(eps >= 0.0f)) return fail(msg, len, -EINVAL, "group_norm: bad eps");
  if ((rc = check_affine(msg, len, gamma, C, op, "gamma")) ||
      (rc = check_affine(msg, len, beta, C, op, "beta")))
    return rc;
  return 0;
}

int check_layer_norm(char *msg, size_t len, const struct tensor *x, const struct tensor *gamma,
                     const struct tensor *beta, float eps) {
  static const char *op = "layer_norm";
  int64_t C = x->shape[x->ndim - 1];
  int rc;
  if (!(eps >= 0.0f)) return fail(msg, len, -EINVAL, "layer_norm: bad eps");
  if ((rc = check_affine(msg, len, gamma, C, op, "gamma")) ||
      (rc = check_affine(msg, len, beta, C, op, "beta")))
    return rc;
  return 0;
}

int check_attention(char *msg, size_t len, const struct tensor *out, const struct tensor *q,
                    const struct tensor *k, const struct tensor *v, int heads) {
  int64_t B = q->shape[0], HD = q->shape[2];
  char s1[96], s2[96];
  if (k->shape[0] != B || k->shape[2] != HD)
    return fail(msg, len, -EINVAL, "attention: k %s does not fit q %s",
                check_shape_str(k, s1, sizeof s1), check_shape_str(q, s2, sizeof s2));
  if (heads < 1 || HD % heads != 0)
    return fail(msg, len, -EINVAL, "attention: width %lld not divisible into %d heads",
                (long long)HD, heads);
  if (out->data == q->data || out->data == k->data || out->data == v->data)
    return fail(msg, len, -EINVAL, "attention: out may not alias q, k or v");
  return 0;
}
