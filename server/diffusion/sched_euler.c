/* sched_euler.c: Euler (EulerDiscreteScheduler.step with s_churn = 0) and
 * Euler ancestral (EulerAncestralDiscreteScheduler.step) on the fp32 sigma
 * table; x0 from epsilon or v; ancestral noise is caller-supplied. */
#include <math.h>

#include "sched_impl.h"

int sched_step_euler(struct sched *s, int i, const float *e, const float *x, float *out, size_t n,
                     const float *noise) {
  float sigma = s->sigmas[i], sigma_next = s->sigmas[i + 1];
  float s2p1 = sigma * sigma + 1.0f;
  float c_out = -sigma / sqrtf(s2p1);
  float dt, sigma_up = 0.0f;
  if (s->kind == SCHED_EULER_A) {
    float sf2 = sigma * sigma, st2 = sigma_next * sigma_next;
    sigma_up = sqrtf(st2 * (sf2 - st2) / sf2);
    float sigma_down = sqrtf(st2 - sigma_up * sigma_up);
    dt = sigma_down - sigma;
  } else {
    dt = sigma_next - sigma;
  }
  for (size_t k = 0; k < n; k++) {
    float x0;
    if (s->pred == SCHED_PRED_EPSILON)
      x0 = x[k] - sigma * e[k];
    else
      x0 = e[k] * c_out + x[k] / s2p1;
    float deriv = (x[k] - x0) / sigma;
    float prev = x[k] + deriv * dt;
    if (s->kind == SCHED_EULER_A) prev = prev + noise[k] * sigma_up;
    out[k] = prev;
  }
  return 0;
}
