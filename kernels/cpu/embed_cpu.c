/* embed_cpu.c: sinusoidal timestep embedding and table lookup on the CPU.
 *
 * timestep_embedding follows diffusers get_timestep_embedding in fp32:
 * exponent[k] = (-ln(max_period) * k) / (half - freq_shift), freq = exp(.),
 * arg = t * freq, out = [sin(arg), cos(arg)] ([cos, sin] when flipped), a
 * zero column appended when dim is odd. embedding copies rows of a
 * F32/F16/BF16 table [V, D] into out [..., D] (ids checked against V).
 */
#include <math.h>

#include "cpu_impl.h"

int timestep_embedding_cpu(struct backend *be, struct tensor *out, const float *t, int dim,
                           int flip_sin_to_cos, float freq_shift, float max_period) {
  static const char *op = "timestep_embedding";
  int rc;
  if ((rc = cpu_check_act(be, out, op, "out")) || (rc = cpu_check_ndim(be, out, op, "out", 2, 2)))
    return rc;
  if (dim < 1 || out->shape[1] != dim)
    return cpu_fail(be, -EINVAL, "timestep_embedding: out width %lld, dim %d",
                    (long long)out->shape[1], dim);
  int64_t N = out->shape[0];
  if (N > 0 && !t) return cpu_fail(be, -EINVAL, "timestep_embedding: t is NULL");
  int half = dim / 2;
  if (!(max_period > 0.0f) || (half > 0 && (float)half - freq_shift == 0.0f))
    return cpu_fail(be, -EINVAL, "timestep_embedding: bad max_period or freq_shift");
  float *o = out->data;
  float neg_log = (float)-log((double)max_period);
  float denom = (float)half - freq_shift;
  for (int64_t n = 0; n < N; n++) {
    float *row = o + n * dim;
    for (int k = 0; k < half; k++) {
      float e = neg_log * (float)k;
      e = e / denom;
      float arg = t[n] * expf(e);
      float s = sinf(arg), c = cosf(arg);
      row[flip_sin_to_cos ? half + k : k] = s;
      row[flip_sin_to_cos ? k : half + k] = c;
    }
    if (dim % 2) row[dim - 1] = 0.0f;
  }
  return 0;
}

int embedding_cpu(struct backend *be, struct tensor *out, const int32_t *ids,
                  const struct tensor *table) {
  static const char *op = "embedding";
  int rc;
  if ((rc = cpu_check_act(be, out, op, "out")) || (rc = cpu_check_param(be, table, op, "table")) ||
      (rc = cpu_check_ndim(be, table, op, "table", 2, 2)))
    return rc;
  int64_t V = table->shape[0], D = table->shape[1];
  char s1[96], s2[96];
  if (out->shape[out->ndim - 1] != D)
    return cpu_fail(be, -EINVAL, "embedding: out %s does not end in the table width of %s",
                    cpu_shape_str(out, s1, sizeof s1), cpu_shape_str(table, s2, sizeof s2));
  int64_t n = D ? tensor_numel(out) / D : 0;
  if (n > 0 && !ids) return cpu_fail(be, -EINVAL, "embedding: ids is NULL");
  for (int64_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= V)
      return cpu_fail(be, -ERANGE, "embedding: id %d at %lld outside [0, %lld)", (int)ids[i],
                      (long long)i, (long long)V);
  size_t es = dtype_size(table->dtype);
  for (int64_t i = 0; i < n; i++)
    cpu_widen(be, (float *)out->data + i * D, (const char *)table->data + (size_t)ids[i] * D * es,
              table->dtype, D);
  return 0;
}
