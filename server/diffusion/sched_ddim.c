/* sched_ddim.c: DDIM step (diffusers DDIMScheduler.step), eta = 0 or > 0
 * with caller-supplied noise. prev = t - T//N for every spacing; alphas at
 * prev < 0 are final_alpha_cumprod. Scalars are fp32, as torch computes them. */
#include <math.h>

#include "sched_impl.h"

int sched_step_ddim(struct sched *s, int i, const float *e, const float *x, float *out, size_t n,
                    const float *noise) {
  int64_t t = s->t_int[i];
  int64_t prev = t - s->step_ratio;
  float a_t = s->alphas_cumprod[t];
  float a_prev = prev >= 0 ? s->alphas_cumprod[prev] : s->final_alpha_cumprod;
  float beta_t = 1.0f - a_t;
  float beta_prev = 1.0f - a_prev;
  float sa = sqrtf(a_t), sb = sqrtf(beta_t);
  float variance = (beta_prev / beta_t) * (1.0f - a_t / a_prev);
  float std = s->eta * sqrtf(variance);
  float dir_c = sqrtf(1.0f - a_prev - std * std);
  float sa_prev = sqrtf(a_prev);
  float lo = -s->clip_sample_range, hi = s->clip_sample_range;
  for (size_t k = 0; k < n; k++) {
    float x0, eps;
    if (s->pred == SCHED_PRED_EPSILON) {
      x0 = (x[k] - sb * e[k]) / sa;
      eps = e[k];
    } else {
      x0 = sa * x[k] - sb * e[k];
      eps = sa * e[k] + sb * x[k];
    }
    if (s->clip_sample) x0 = x0 < lo ? lo : (x0 > hi ? hi : x0);
    float prev_sample = sa_prev * x0 + dir_c * eps;
    if (s->eta > 0) prev_sample = prev_sample + std * noise[k];
    out[k] = prev_sample;
  }
  return 0;
}
