/* sched_pndm.c: PNDM (PNDMScheduler). With skip_prk_steps (SD's configs)
 * only PLMS runs: ets (hist[0..n_hist-1], oldest first, at most 4) holds raw
 * model outputs; counter 0 stores the sample, counter 1 redoes the first
 * interval from it with the mean of the two outputs (t + T//N -> t), then
 * Adams-Bashforth of order 2, 3, 4. Without it, the first prk_count calls
 * are the Runge-Kutta warm-up (step_prk: four calls per interval, weights
 * 1/6, 1/3, 1/3, 1/6, half steps of T//N//2), then PLMS. v-prediction
 * converts the combined output to epsilon with the sample in
 * _get_prev_sample. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sched_impl.h"

static int ets_push(struct sched *s, const float *e, size_t n) {
  float *buf;
  if (s->n_hist == SCHED_MAX_HISTORY) { /* keep the last 3, reuse the oldest buffer */
    buf = s->hist[0];
    memmove(s->hist, s->hist + 1, (SCHED_MAX_HISTORY - 1) * sizeof s->hist[0]);
    s->n_hist--;
  } else {
    buf = s->hist[s->n_hist];
    if (!buf && !(buf = malloc(n * sizeof(float)))) return -1;
  }
  memcpy(buf, e, n * sizeof(float));
  s->hist[s->n_hist++] = buf;
  return 0;
}

/* _get_prev_sample's fp32 scalars for the interval t -> prev. */
struct pndm_coef {
  float sa, sb, coeff, denom, da;
};

static struct pndm_coef pndm_coef(const struct sched *s, int64_t t, int64_t prev) {
  float a_t = s->alphas_cumprod[t];
  float a_prev = prev >= 0 ? s->alphas_cumprod[prev] : s->final_alpha_cumprod;
  float beta_t = 1.0f - a_t, beta_prev = 1.0f - a_prev;
  struct pndm_coef c = {sqrtf(a_t), sqrtf(beta_t), sqrtf(a_prev / a_t),
                        a_t * sqrtf(beta_prev) + sqrtf(a_t * beta_t * a_prev), a_prev - a_t};
  return c;
}

static inline float pndm_prev(const struct sched *s, const struct pndm_coef *c, float x, float m) {
  if (s->pred == SCHED_PRED_V) m = c->sa * m + c->sb * x;
  return c->coeff * x - c->da * m / c->denom;
}

static int step_prk(struct sched *s, int i, const float *e, const float *x, float *out, size_t n) {
  int64_t diff = (i % 2) ? 0 : s->step_ratio / 2;
  int64_t prev = s->t_int[i] - diff;
  int64_t t = s->t_int[i / 4 * 4];
  if (!s->prk_acc && !(s->prk_acc = malloc(n * sizeof(float)))) return -1;
  if (!s->cur_sample && !(s->cur_sample = malloc(n * sizeof(float)))) return -1;
  const float sixth = (float)(1.0 / 6.0), third = (float)(1.0 / 3.0);
  if (i % 4 == 0) {
    if (ets_push(s, e, n) < 0) return -1;
    memcpy(s->cur_sample, x, n * sizeof(float));
  }
  struct pndm_coef c = pndm_coef(s, t, prev);
  float *acc = s->prk_acc;
  for (size_t k = 0; k < n; k++) {
    float m = e[k];
    if (i % 4 == 0)
      acc[k] = sixth * e[k];
    else if (i % 4 == 3)
      m = acc[k] + sixth * e[k];
    else
      acc[k] = acc[k] + third * e[k];
    out[k] = pndm_prev(s, &c, s->cur_sample[k], m);
  }
  return 0;
}

int sched_step_pndm(struct sched *s, int i, const float *e, const float *x, float *out, size_t n) {
  if (i < s->prk_count) return step_prk(s, i, e, x, out, n);
  int counter = i;
  int64_t t = s->t_int[i];
  int64_t prev = t - s->step_ratio;
  if (counter != 1) {
    if (ets_push(s, e, n) < 0) return -1;
  } else {
    prev = t;
    t = t + s->step_ratio;
  }
  const float *xs = x;
  if (counter == 0) {
    if (!s->cur_sample && !(s->cur_sample = malloc(n * sizeof(float)))) return -1;
    memcpy(s->cur_sample, x, n * sizeof(float));
  } else if (counter == 1) {
    xs = s->cur_sample;
  }
  struct pndm_coef c = pndm_coef(s, t, prev);
  const float inv24 = (float)(1.0 / 24.0);
  int ne = s->n_hist;
  float *const *h = s->hist;
  for (size_t k = 0; k < n; k++) {
    float m;
    if (ne == 1 && counter == 0)
      m = e[k];
    else if (ne == 1 && counter == 1)
      m = (e[k] + h[0][k]) / 2.0f;
    else if (ne == 2)
      m = (3.0f * h[1][k] - h[0][k]) / 2.0f;
    else if (ne == 3)
      m = (23.0f * h[2][k] - 16.0f * h[1][k] + 5.0f * h[0][k]) / 12.0f;
    else
      m = inv24 * (55.0f * h[3][k] - 59.0f * h[2][k] + 37.0f * h[1][k] - 9.0f * h[0][k]);
    out[k] = pndm_prev(s, &c, xs[k], m);
  }
  return 0;
}
