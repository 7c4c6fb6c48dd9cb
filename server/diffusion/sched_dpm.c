/* sched_dpm.c: DPM-Solver++ multistep (DPMSolverMultistepScheduler.step,
 * algorithm dpmsolver++, order 1 or 2, midpoint or heun). The model output
 * is converted to x0; hist[0] keeps the previous step's x0. Step 0 and,
 * under lower_order_final / euler_at_final / final_sigmas_type "zero", the
 * last step are first order. With a final sigma of 0 the first-order update
 * is exactly x0 (lambda = +inf, exp(-h) = 0). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sched_impl.h"

static void alpha_sigma(float sigma, float *alpha_t, float *sigma_t) {
  *alpha_t = 1.0f / sqrtf(sigma * sigma + 1.0f);
  *sigma_t = sigma * *alpha_t;
}

int sched_step_dpm(struct sched *s, int i, const float *e, const float *x, float *out, size_t n) {
  if (!s->hist[0] && !(s->hist[0] = malloc(n * sizeof(float)))) return -1;
  if (!s->hist[1] && !(s->hist[1] = malloc(n * sizeof(float)))) return -1;
  int last = i == s->n_ts - 1;
  int lower_final =
      last && (s->euler_at_final || (s->lower_order_final && s->n_ts < 15) || s->final_sigmas_zero);
  int first_order = s->solver_order == 1 || s->lower_order_nums < 1 || lower_final;

  float a_s0, s_s0, a_t, s_t;
  alpha_sigma(s->sigmas[i], &a_s0, &s_s0);
  alpha_sigma(s->sigmas[i + 1], &a_t, &s_t);
  float lam_t = logf(a_t) - logf(s_t);
  float lam_s0 = logf(a_s0) - logf(s_s0);
  float h = lam_t - lam_s0;
  float ratio = s_t / s_s0;
  float em1 = expf(-h) - 1.0f;
  float c0 = a_t * em1;

  float *m0 = s->hist[1], *m1 = s->hist[0]; /* m0: this step's x0, m1: the previous one */
  for (size_t k = 0; k < n; k++)
    m0[k] = s->pred == SCHED_PRED_EPSILON ? (x[k] - s_s0 * e[k]) / a_s0 : a_s0 * x[k] - s_s0 * e[k];

  if (first_order) {
    for (size_t k = 0; k < n; k++) out[k] = ratio * x[k] - c0 * m0[k];
  } else {
    float a_s1, s_s1;
    alpha_sigma(s->sigmas[i - 1], &a_s1, &s_s1);
    float lam_s1 = logf(a_s1) - logf(s_s1);
    float h0 = lam_s0 - lam_s1;
    float r0 = h0 / h;
    float inv_r0 = 1.0f / r0;
    float c1 = s->solver_heun ? a_t * (em1 / h + 1.0f) : 0.5f * c0;
    for (size_t k = 0; k < n; k++) {
      float d1 = inv_r0 * (m0[k] - m1[k]);
      if (s->solver_heun)
        out[k] = ratio * x[k] - c0 * m0[k] + c1 * d1;
      else
        out[k] = ratio * x[k] - c0 * m0[k] - c1 * d1;
    }
  }
  /* shift history: this step's x0 becomes the previous one */
  s->hist[0] = m0;
  s->hist[1] = m1;
  if (s->lower_order_nums < s->solver_order) s->lower_order_nums++;
  return 0;
}
