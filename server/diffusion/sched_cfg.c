/* sched_cfg.c: classifier-free guidance (StableDiffusionPipeline) and
 * rescale_noise_cfg (Lin et al. 2023, diffusers): per sample, std unbiased
 * over every element of that sample; sums in double. */
#include <math.h>

#include "schedulers.h"

static double std_unbiased(const float *v, size_t n) {
  if (n < 2) return 0.0;
  double mean = 0;
  for (size_t i = 0; i < n; i++) mean += v[i];
  mean /= (double)n;
  double ss = 0;
  for (size_t i = 0; i < n; i++) ss += ((double)v[i] - mean) * ((double)v[i] - mean);
  return sqrt(ss / (double)(n - 1));
}

void cfg_combine(const float *uncond, const float *cond, float scale, float guidance_rescale,
                 float *out, size_t n_per_sample, int batch) {
  for (int b = 0; b < batch; b++) {
    const float *u = uncond + (size_t)b * n_per_sample, *c = cond + (size_t)b * n_per_sample;
    float *o = out + (size_t)b * n_per_sample;
    for (size_t i = 0; i < n_per_sample; i++) o[i] = u[i] + scale * (c[i] - u[i]);
    if (guidance_rescale > 0.0f) {
      float ratio = (float)(std_unbiased(c, n_per_sample) / std_unbiased(o, n_per_sample));
      float r = guidance_rescale, one_minus = 1.0f - guidance_rescale;
      for (size_t i = 0; i < n_per_sample; i++) o[i] = r * (o[i] * ratio) + one_minus * o[i];
    }
  }
}
