/* pipeline.h: text-to-image generation, as diffusers' StableDiffusionPipeline
 * (__call__ with output_type "pil"): tokenize -> CLIP text encoder (prompt,
 * and the negative prompt under guidance) -> initial latents -> scheduler
 * loop with classifier-free guidance over the UNet -> VAE decode -> 8-bit RGB.
 *
 * A pipeline holds one model folder's tokenizer, text encoder, UNet, VAE and
 * scheduler config on one backend. The UNet starts with the folder's own
 * weights; pipeline_bind_unet points it at an external weight set (the live
 * soup version) instead.
 *
 * Reproducibility (documented streams of server/diffusion/philox.h): image b
 * of a request (0 <= b < n) uses seed + b. Its initial latents are the N(0,1)
 * values of (seed + b, PHILOX_STREAM_LATENTS) in [4, h, w] order, multiplied
 * by the scheduler's init_noise_sigma; the noise a scheduler adds at step k
 * (Euler ancestral, DDIM with eta > 0) is (seed + b, philox_stream_step(k)).
 * So an image depends only on its own seed, not on n or its batch mates, up
 * to float rounding: a larger UNet batch may round differently (GEMM
 * blocking), so a batch image can differ from the single image of its seed
 * by a few bytes off by 1. The same request always gives identical bytes.
 *
 * Schedulers: the config gets StableDiffusionPipeline.__init__'s fixes once
 * at load (steps_offset 1; clip_sample false for a DDIM config); a request
 * naming another scheduler builds it from that config as diffusers'
 * from_config does (absent keys take the new class's defaults, so e.g. "ddim"
 * on a PNDM config without clip_sample clips x0, as in diffusers).
 *
 * Invariants: one generate at a time per pipeline (not thread-safe); a failed
 * or cancelled generate leaves the pipeline usable; every buffer a generate
 * allocates is freed before it returns.
 */
#pragma once

#include <stdint.h>

#include "kernels/backend.h"
#include "unet.h"

struct pipeline;

struct gen_params {
  const char *prompt;           /* UTF-8; NULL means "" */
  const char *negative_prompt;  /* NULL: "" under guidance (as diffusers) */
  int steps;                    /* num_inference_steps, >= 1 */
  float guidance_scale;         /* guidance on when > 1 */
  float guidance_rescale;       /* 0..1; 0 = off */
  float eta;                    /* DDIM only (noise when > 0) */
  int width, height;            /* multiples of the VAE scale factor (8) */
  uint64_t seed;                /* image b uses seed + b */
  int n;                        /* images, >= 1 */
  const char *scheduler;        /* "ddim"|"euler"|"euler_a"|"dpmpp_2m"|"pndm"; NULL: config class */
  const char *timestep_spacing; /* "leading"|"linspace"|"trailing"; NULL: config / class */
  const char *prediction_type;  /* "epsilon"|"v_prediction"; NULL: config */
  int clip_skip; /* 0: last layer; k: output of layer L-k (prompt only, as diffusers) */
};

struct gen_timings {
  double text_ms, denoise_ms, decode_ms;
};

/* Loads <model_dir>'s tokenizer/, text_encoder/, unet/, vae/ and
 * scheduler/scheduler_config.json onto be (borrowed: it must outlive the
 * pipeline). Returns 0, or a negative status with *err (malloc'd). */
int pipeline_load(const char *model_dir, struct backend *be, struct pipeline **out, char **err);
/* The same from an open model folder (its variant's weights); md is not kept. */
struct model_dir;
int pipeline_load_dir(const struct model_dir *md, struct backend *be, struct pipeline **out,
                      char **err);
void pipeline_free(struct pipeline *p);

/* Binds the UNet to an external weight set (see unet_bind_weights); a failed
 * bind keeps the previous weights. */
int pipeline_bind_unet(struct pipeline *p, unet_lookup_fn lookup, void *ctx, char **err);

/* diffusers' defaults for this model: 50 steps, guidance 7.5, rescale 0,
 * eta 0, width = height = unet sample_size * VAE scale factor, the config's
 * scheduler (its name, or NULL if the class is not one soupd knows), seed 0,
 * n 1, no overrides, clip_skip 0, prompts NULL. */
void pipeline_defaults(const struct pipeline *p, struct gen_params *g);

/* Checks g against the model (steps 1..1000, n 1..64, sizes, names,
 * clip_skip 0..text encoder layers) before any compute (pipeline_generate
 * calls it too; a server may call it before queueing). Returns 0, or -EINVAL with *err naming the
 * field. */
int pipeline_check_params(const struct pipeline *p, const struct gen_params *g, char **err);

/* Progress callback: after each scheduler step (step = 1..steps, steps =
 * number of UNet calls). Returning nonzero cancels: generate stops before the
 * next step and returns -ECANCELED. */
typedef int (*pipeline_progress_fn)(void *ctx, int step, int steps);

/* Generates g->n images.
 *  init_latents: NULL, or [n, 4, h, w] N(0,1) values (h = height / 8) used
 *    instead of the Philox latents (still multiplied by init_noise_sigma,
 *    like diffusers' latents= argument);
 *  rgb: [n, height, width, 3] bytes (required);
 *  image_f32: NULL, or [n, 3, height, width] floats, the VAE output before
 *    the 8-bit conversion (not denormalised, not clamped);
 *  progress: may be NULL; t: may be NULL.
 * Returns 0, -ECANCELED, or another negative status with *err. */
int pipeline_generate(struct pipeline *p, const struct gen_params *g, const float *init_latents,
                      uint8_t *rgb, float *image_f32, pipeline_progress_fn progress, void *ctx,
                      struct gen_timings *t, char **err);

/* The same from precomputed text states instead of prompts (as diffusers'
 * prompt_embeds= / negative_prompt_embeds=): cond [77, D] for the prompt,
 * uncond [77, D] (required when guidance_scale > 1, ignored otherwise);
 * g->prompt, g->negative_prompt and g->clip_skip are ignored. */
int pipeline_generate_embeds(struct pipeline *p, const struct gen_params *g, const float *cond,
                             const float *uncond, const float *init_latents, uint8_t *rgb,
                             float *image_f32, pipeline_progress_fn progress, void *ctx,
                             struct gen_timings *t, char **err);

/* Generates g->n images of different requests in one batch (the server's
 * batching): image b has its own prompt, negative prompt and seed; the
 * other parameters of g (size, steps, scheduler, guidance, eta, clip_skip)
 * are shared. Image b equals what pipeline_generate gives for its own
 * request up to float rounding of the larger UNet batch (see above). */
int pipeline_generate_batch(struct pipeline *p, const struct gen_params *g,
                            const char *const *prompts, const char *const *negative_prompts,
                            const uint64_t *seeds, uint8_t *rgb, pipeline_progress_fn progress,
                            void *ctx, struct gen_timings *t, char **err);

/* Text states [77, D] of one prompt (clip_skip as in gen_params), into out. */
int pipeline_encode_text(struct pipeline *p, const char *text, int clip_skip, float *out,
                         char **err);

/* Model facts. */
int pipeline_vae_scale(const struct pipeline *p);       /* 8 */
int pipeline_text_dim(const struct pipeline *p);        /* cross_attention_dim D */
int pipeline_latent_channels(const struct pipeline *p); /* 4 */
