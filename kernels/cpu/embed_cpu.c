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
  int64_t N = out->shape[0];
  int half = dim / 2;
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
  int64_t D = table->shape[1], n = D ? tensor_numel(out) / D : 0;
  size_t es = dtype_size(table->dtype);
  for (int64_t i = 0; i < n; i++)
    cpu_widen(be, (float *)out->data + i * D, (const char *)table->data + (size_t)ids[i] * D * es,
              table->dtype, D);
  return 0;
}
