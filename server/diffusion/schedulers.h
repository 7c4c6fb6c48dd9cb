/* schedulers.h: the diffusion samplers (diffusers DDIM, Euler, Euler
 * ancestral, DPM-Solver++ 2M and PNDM/PLMS) and classifier-free guidance.
 *
 * Host-side, fp32, on flat float arrays (latents are small). A scheduler is
 * built from a diffusers scheduler/scheduler_config.json object plus
 * per-request overrides; keys absent from the config take the default of the
 * chosen class (as diffusers' from_config does), so e.g. "euler" on an SD1.5
 * PNDM config gets "linspace" spacing unless the file names a spacing.
 * The arithmetic follows diffusers' torch fp32 code operation by operation
 * (reference: sd-inference-digest.md sections 1, 5, 6).
 *
 * Invariant: sched_step is called with step_index = 0, 1, ..., n-1 in order
 * (multistep solvers keep history) and the same element count n each time;
 * n covers the whole batch [B, 4, h, w].
 */
#pragma once

#include <jansson.h>
#include <stddef.h>

enum sched_kind { SCHED_DDIM = 0, SCHED_EULER, SCHED_EULER_A, SCHED_DPMPP_2M, SCHED_PNDM };
enum sched_spacing { SCHED_SPACING_LEADING = 0, SCHED_SPACING_LINSPACE, SCHED_SPACING_TRAILING };
enum sched_prediction { SCHED_PRED_EPSILON = 0, SCHED_PRED_V };

/* Per-request overrides; NULL / negative fields keep the config's value. */
struct sched_overrides {
  const char *name;    /* "ddim"|"euler"|"euler_a"|"dpmpp_2m"|"pndm"; NULL: config class */
  const char *spacing; /* "leading"|"linspace"|"trailing"; NULL: config, else class default */
  const char *prediction_type; /* "epsilon"|"v_prediction"; NULL: config */
  float eta;                   /* DDIM only; < 0 means 0 (the pipeline default) */
  /* 1: apply StableDiffusionPipeline.__init__'s fixes (steps_offset = 1,
   * clip_sample = false) before building. */
  int sd_pipeline_fixups;
};

struct sched;

/* Builds a scheduler for `steps` inference steps. config is the parsed
 * scheduler_config.json (may be NULL: every key takes the class default;
 * then overrides->name is required). On failure returns < 0 and *err. */
int sched_new(const json_t *config, const struct sched_overrides *ov, int steps, struct sched **out,
              char **err);
void sched_free(struct sched *s);

enum sched_kind sched_kind(const struct sched *s);
/* Parses a scheduler name ("ddim", ...); -1 if unknown. */
int sched_kind_from_name(const char *name);
const char *sched_kind_name(enum sched_kind k);

/* Number of UNet calls (= length of the timestep list; steps + 1 for PNDM). */
int sched_num_timesteps(const struct sched *s);
/* The timesteps to give the UNet, in call order (fractional for Euler linspace). */
const float *sched_timesteps(const struct sched *s);
/* The factor of the initial N(0,1) latents. */
float sched_init_noise_sigma(const struct sched *s);
/* 1 if sched_step needs a noise array (Euler ancestral; DDIM with eta > 0). */
int sched_needs_noise(const struct sched *s);
/* alphas_cumprod[num_train_timesteps] as diffusers computes it (fp32). */
const float *sched_alphas_cumprod(const struct sched *s, int *n);
/* sigmas[num_timesteps + 1] of Euler / DPM, NULL for the others. */
const float *sched_sigmas(const struct sched *s);

/* out[i] = the UNet input for step step_index (Euler family divides by
 * sqrt(sigma^2 + 1), the others copy). out may equal in. */
void sched_scale_model_input(const struct sched *s, int step_index, const float *in, float *out,
                             size_t n);

/* One step: out = the sample after step step_index, from the (guided) model
 * output and the current sample. noise: n N(0,1) values, required when
 * sched_needs_noise, ignored otherwise (Philox stream philox_stream_step(k)).
 * out may equal sample. Returns 0 or < 0 with *err. */
int sched_step(struct sched *s, int step_index, const float *model_output, const float *sample,
               float *out, size_t n, const float *noise, char **err);

/* Classifier-free guidance for a UNet batch [uncond x batch, cond x batch]:
 * out[b] = u[b] + scale * (c[b] - u[b]), then if guidance_rescale > 0
 * diffusers' rescale_noise_cfg per sample b: out = r * out * std(c)/std(out)
 * + (1 - r) * out, std unbiased over all n_per_sample elements. uncond and
 * cond each hold batch * n_per_sample floats; out may equal uncond. */
void cfg_combine(const float *uncond, const float *cond, float scale, float guidance_rescale,
                 float *out, size_t n_per_sample, int batch);
