/* sched_pndm.c: PNDM in PLMS mode (PNDMScheduler.step_plms, skip_prk_steps).
 * ets (hist[0..n_hist-1], oldest first, at most 4) holds raw model outputs;
 * counter 0 stores the sample, counter 1 redoes the first interval from it
 * with the mean of the two outputs (t + T//N -> t), then Adams-Bashforth of
 * order 2, 3, 4. v-prediction converts the combined output to epsilon with
 * the sample in _get_prev_sample. */
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

int sched_step_pndm(struct sched *s, int i, const float *e, const float *x, float *out, size_t n) {
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
  float a_t = s->alphas_cumprod[t];
  float a_prev = prev >= 0 ? s->alphas_cumprod[prev] : s->final_alpha_cumprod;
  float beta_t = 1.0f - a_t, beta_prev = 1.0f - a_prev;
  float sa = sqrtf(a_t), sb = sqrtf(beta_t);
  float coeff = sqrtf(a_prev / a_t);
  float denom = a_t * sqrtf(beta_prev) + sqrtf(a_t * beta_t * a_prev);
  float da = a_prev - a_t;
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
    float xk = xs[k];
    if (s->pred == SCHED_PRED_V) m = sa * m + sb * xk;
    out[k] = coeff * xk - da * m / denom;
  }
  return 0;
}
