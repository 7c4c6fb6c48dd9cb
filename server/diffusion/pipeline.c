/* pipeline.c: StableDiffusionPipeline.__call__ over soupd's parts (see
 * pipeline.h for the contract and the seed streams).
 *
 * Order of operations, as diffusers:
 *  1. text states: prompt with clip_skip; under guidance (scale > 1) the
 *     negative prompt ("" when none) without clip_skip; context =
 *     [uncond x n, cond x n] // [2n or n, 77, D];
 *  2. latents = N(0,1) * init_noise_sigma                 // [n, 4, h, w];
 *  3. for each timestep t: x_in = scale_model_input(latents), duplicated under
 *     guidance // [2n, 4, h, w]; eps = UNet(x_in, t, context); eps = u +
 *     g (c - u) (+ rescale); latents = scheduler step (+ Philox noise);
 *  4. image = VAE decode(latents) (divides by scaling_factor)  // [n, 3, H, W];
 *     rgb = round_half_even(clamp(image / 2 + 0.5) * 255)    // [n, H, W, 3].
 * Latents live on the host between UNet calls (the schedulers are host code;
 * 4 h w floats per image are small); UNet and VAE run on the backend. The
 * VAE decodes one image at a time so its memory does not grow with n.
 */
#include "pipeline.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clip_text.h"
#include "formats/model_dir.h"
#include "philox.h"
#include "schedulers.h"
#include "tokenizer.h"
#include "vae.h"

#define PIPELINE_MAX_N 64
#define PIPELINE_MAX_STEPS 1000

struct pipeline {
  struct backend *be;
  struct tokenizer *tok;
  struct clip_text *te;
  struct unet *unet;
  struct vae *vae;
  json_t *sched_config;      /* scheduler/scheduler_config.json */
  const char *sched_default; /* kind name of the config's class, or NULL */
  int vae_scale, latent_ch, text_dim, sample_size, text_layers;
};

static int errf(char **err, int rc, const char *fmt, ...) {
  if (err) {
    free(*err);
    *err = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(err, fmt, ap) < 0) *err = NULL;
    va_end(ap);
  }
  return rc;
}

/* Prefixes an error string a component returned. */
static int wrap(char **err, int rc, const char *what) {
  char *inner = err ? *err : NULL;
  if (err) *err = NULL;
  errf(err, rc < 0 ? rc : -EIO, "%s: %s", what, inner ? inner : "failed");
  free(inner);
  return rc < 0 ? rc : -EIO;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static const char *const SCHED_CLASSES[][2] = {
    {"DDIMScheduler", "ddim"},
    {"EulerDiscreteScheduler", "euler"},
    {"EulerAncestralDiscreteScheduler", "euler_a"},
    {"DPMSolverMultistepScheduler", "dpmpp_2m"},
    {"PNDMScheduler", "pndm"},
};

/* StableDiffusionPipeline.__init__'s fixes, applied once to the loaded
 * scheduler's config (as diffusers does, not to a scheduler a request swaps
 * in): steps_offset (class default 0) becomes 1; a DDIM config whose
 * clip_sample (class default true) is true gets false. A scheduler built later
 * from this config with another class therefore sees steps_offset 1, and a
 * DDIM built from a config without clip_sample (e.g. an SD1 PNDM config
 * lacking the key) clips x0 to [-1, 1], as diffusers' from_config does.
 * Known gap: when the file lacks steps_offset, diffusers' from_config for
 * another class drops the fixed value again (_use_default_values); soupd
 * keeps 1. Also records the config class's scheduler name. */
static void sched_config_fixups(struct pipeline *p) {
  json_t *c = p->sched_config;
  const char *cls = json_string_value(json_object_get(c, "_class_name"));
  p->sched_default = NULL;
  for (size_t i = 0; cls && i < sizeof SCHED_CLASSES / sizeof *SCHED_CLASSES; i++)
    if (strcmp(cls, SCHED_CLASSES[i][0]) == 0) p->sched_default = SCHED_CLASSES[i][1];
  if (!p->sched_default) return;
  json_t *so = json_object_get(c, "steps_offset");
  if (!json_is_number(so) || json_number_value(so) != 1)
    json_object_set_new(c, "steps_offset", json_integer(1));
  if (strcmp(p->sched_default, "ddim") == 0 && !json_is_false(json_object_get(c, "clip_sample")))
    json_object_set_new(c, "clip_sample", json_false());
}

int pipeline_load(const char *model_dir, struct backend *be, struct pipeline **out, char **err) {
  *out = NULL;
  struct model_dir *md = NULL;
  int rc = model_dir_open(model_dir, &md, err);
  if (rc < 0) return wrap(err, rc, "pipeline: model folder");
  rc = pipeline_load_dir(md, be, out, err);
  model_dir_close(md);
  return rc;
}

int pipeline_load_dir(const struct model_dir *md, struct backend *be, struct pipeline **out,
                      char **err) {
  *out = NULL;
  struct pipeline *p = calloc(1, sizeof *p);
  int rc = 0;
  if (!p) return errf(err, -ENOMEM, "pipeline: out of memory");
  p->be = be;
  if (!md->tokenizer_dir || !md->text_encoder_dir || !md->vae_dir || !md->scheduler_dir) {
    rc = errf(err, -ENOENT, "pipeline: model folder lacks %s/",
              !md->tokenizer_dir      ? "tokenizer"
              : !md->text_encoder_dir ? "text_encoder"
              : !md->vae_dir          ? "vae"
                                      : "scheduler");
    goto fail;
  }
  if ((rc = tokenizer_load(md->tokenizer_dir, &p->tok, err)) < 0) {
    rc = wrap(err, rc, "pipeline: tokenizer");
    goto fail;
  }
  if ((rc = clip_text_load_file(md->text_encoder_dir, md->text_encoder_weights, be, &p->te, err)) <
      0) {
    rc = wrap(err, rc, "pipeline: text_encoder");
    goto fail;
  }
  char *unet_dir = model_dir_path(md, "unet");
  if (!unet_dir) {
    rc = errf(err, -ENOMEM, "pipeline: out of memory");
    goto fail;
  }
  rc = unet_load_file(unet_dir, md->unet_weights, be, &p->unet, err);
  free(unet_dir);
  if (rc < 0) {
    rc = wrap(err, rc, "pipeline: unet");
    goto fail;
  }
  if ((rc = vae_load_file(md->vae_dir, md->vae_weights, be, &p->vae, err)) < 0) {
    rc = wrap(err, rc, "pipeline: vae");
    goto fail;
  }
  if ((rc = model_dir_read_json(md, "scheduler/scheduler_config.json", &p->sched_config, err)) <
      0) {
    rc = wrap(err, rc, "pipeline: scheduler");
    goto fail;
  }
  sched_config_fixups(p);
  p->vae_scale = vae_downscale(p->vae);
  p->latent_ch = vae_latent_channels(p->vae);
  p->text_dim = clip_text_hidden_size(p->te);
  p->text_layers = clip_text_config(p->te)->layers;
  p->sample_size = unet_sample_size(p->unet);
  if (unet_in_channels(p->unet) != p->latent_ch || unet_out_channels(p->unet) != p->latent_ch) {
    rc = errf(err, -EINVAL, "pipeline: unet in/out channels %d/%d but vae latent_channels %d",
              unet_in_channels(p->unet), unet_out_channels(p->unet), p->latent_ch);
    goto fail;
  }
  if (unet_cross_attention_dim(p->unet) != p->text_dim) {
    rc = errf(err, -EINVAL, "pipeline: unet cross_attention_dim %d but text_encoder hidden_size %d",
              unet_cross_attention_dim(p->unet), p->text_dim);
    goto fail;
  }
  *out = p;
  return 0;
fail:
  pipeline_free(p);
  return rc;
}

void pipeline_free(struct pipeline *p) {
  if (!p) return;
  tokenizer_free(p->tok);
  clip_text_free(p->te);
  unet_free(p->unet);
  vae_free(p->vae);
  json_decref(p->sched_config);
  free(p);
}

int pipeline_bind_unet(struct pipeline *p, unet_lookup_fn lookup, void *ctx, char **err) {
  int rc = unet_bind_weights(p->unet, lookup, ctx, err);
  return rc < 0 ? wrap(err, rc, "pipeline: bind unet") : 0;
}

void pipeline_defaults(const struct pipeline *p, struct gen_params *g) {
  memset(g, 0, sizeof *g);
  g->steps = 50;
  g->guidance_scale = 7.5f;
  g->width = g->height = p->sample_size * p->vae_scale;
  g->n = 1;
  g->scheduler = p->sched_default;
}

int pipeline_vae_scale(const struct pipeline *p) {
  return p->vae_scale;
}
int pipeline_text_dim(const struct pipeline *p) {
  return p->text_dim;
}
int pipeline_latent_channels(const struct pipeline *p) {
  return p->latent_ch;
}

int pipeline_check_params(const struct pipeline *p, const struct gen_params *g, char **err) {
  if (g->steps < 1 || g->steps > PIPELINE_MAX_STEPS)
    return errf(err, -EINVAL, "steps: %d not in [1, %d]", g->steps, PIPELINE_MAX_STEPS);
  if (g->n < 1 || g->n > PIPELINE_MAX_N)
    return errf(err, -EINVAL, "n: %d not in [1, %d]", g->n, PIPELINE_MAX_N);
  if (g->width < p->vae_scale || g->width % p->vae_scale || g->width > 16384)
    return errf(err, -EINVAL, "width: %d is not a positive multiple of %d", g->width, p->vae_scale);
  if (g->height < p->vae_scale || g->height % p->vae_scale || g->height > 16384)
    return errf(err, -EINVAL, "height: %d is not a positive multiple of %d", g->height,
                p->vae_scale);
  if (!isfinite(g->guidance_scale))
    return errf(err, -EINVAL, "guidance_scale: not a finite number");
  if (!(g->guidance_rescale >= 0 && g->guidance_rescale <= 1))
    return errf(err, -EINVAL, "guidance_rescale: not in [0, 1]");
  if (!(g->eta >= 0 && g->eta <= 1)) return errf(err, -EINVAL, "eta: not in [0, 1]");
  if (g->clip_skip < 0 || g->clip_skip > p->text_layers)
    return errf(err, -EINVAL, "clip_skip: %d not in [0, %d]", g->clip_skip, p->text_layers);
  if (g->scheduler && sched_kind_from_name(g->scheduler) < 0)
    return errf(err, -EINVAL, "scheduler: unknown \"%s\"", g->scheduler);
  if (!g->scheduler && !p->sched_default)
    return errf(err, -EINVAL, "scheduler: the model's scheduler class is not supported; name one");
  if (g->timestep_spacing && strcmp(g->timestep_spacing, "leading") &&
      strcmp(g->timestep_spacing, "linspace") && strcmp(g->timestep_spacing, "trailing"))
    return errf(err, -EINVAL, "timestep_spacing: unknown \"%s\"", g->timestep_spacing);
  if (g->prediction_type && strcmp(g->prediction_type, "epsilon") &&
      strcmp(g->prediction_type, "v_prediction"))
    return errf(err, -EINVAL, "prediction_type: unknown \"%s\"", g->prediction_type);
  return 0;
}

/* Text states of one text; label names the request field in errors. */
static int encode_text(struct pipeline *p, const char *text, int clip_skip, float *out,
                       const char *label, char **err) {
  int32_t ids[TOKENIZER_MAX_LEN];
  struct tensor t = {0};
  int rc = tokenizer_encode(p->tok, text ? text : "", ids, NULL, err);
  if (rc < 0) return wrap(err, rc, label);
  const int64_t shape[3] = {1, TOKENIZER_MAX_LEN, p->text_dim};
  if ((rc = be_tensor_alloc(p->be, &t, DT_F32, 3, shape)) < 0)
    return errf(err, rc, "%s: %s", label, be_last_error(p->be));
  rc = clip_text_forward(p->te, &t, ids, 1, clip_skip, err); // [1, 77, D]
  if (rc < 0) {
    rc = wrap(err, rc, "text_encoder");
    goto done;
  }
  if ((rc = be_download_f32(p->be, &t, out)) < 0)
    rc = errf(err, rc, "%s: %s", label, be_last_error(p->be));
done:
  be_tensor_free(p->be, &t);
  return rc;
}

int pipeline_encode_text(struct pipeline *p, const char *text, int clip_skip, float *out,
                         char **err) {
  if (clip_skip < 0 || clip_skip > p->text_layers)
    return errf(err, -EINVAL, "clip_skip: %d not in [0, %d]", clip_skip, p->text_layers);
  return encode_text(p, text, clip_skip, out, "prompt", err);
}

/* The denoising loop and the decode, from text states. */
/* cond/uncond: [77, D] shared by the n images (cstride 0) or [n, 77, D]
 * (cstride 77 * D); seeds: NULL (image b uses g->seed + b) or [n]. */
static int generate(struct pipeline *p, const struct gen_params *g, const float *cond,
                    const float *uncond, size_t cstride, const uint64_t *seeds,
                    const float *init_latents, uint8_t *rgb, float *image_f32,
                    pipeline_progress_fn progress, void *ctx, struct gen_timings *tm, double t_text,
                    char **err) {
  struct backend *be = p->be;
  const int n = g->n, cfg = g->guidance_scale > 1.0f;
  const int nb = cfg ? 2 * n : n; /* UNet batch */
  const int h = g->height / p->vae_scale, w = g->width / p->vae_scale, C = p->latent_ch;
  const size_t per = (size_t)C * h * w, L = TOKENIZER_MAX_LEN, D = p->text_dim;
  const size_t img_per = (size_t)3 * g->height * g->width;
  struct sched *s = NULL;
  struct tensor t_ctx = {0}, t_x = {0}, t_eps = {0}, t_lat = {0}, t_img = {0};
  float *lat = NULL, *x_in = NULL, *eps = NULL, *noise = NULL, *ts = NULL, *img = NULL;
  int rc = 0;
  double t0 = now_ms();

  struct sched_overrides ov = {.name = g->scheduler,
                               .spacing = g->timestep_spacing,
                               .prediction_type = g->prediction_type,
                               .eta = g->eta,
                               .sd_pipeline_fixups = 0};
  if ((rc = sched_new(p->sched_config, &ov, g->steps, &s, err)) < 0) {
    rc = wrap(err, rc, "scheduler");
    goto done;
  }
  const int T = sched_num_timesteps(s);
  lat = malloc(n * per * sizeof *lat);                     // [n, C, h, w]
  x_in = malloc(nb * per * sizeof *x_in);                  // [nb, C, h, w]
  eps = malloc(nb * per * sizeof *eps);                    // [nb, C, h, w]
  noise = malloc(n * per * sizeof *noise);                 // [n, C, h, w]
  ts = malloc(nb * sizeof *ts);                            // [nb]
  float *ctx_host = malloc(nb * L * D * sizeof *ctx_host); // [nb, 77, D]
  if (!lat || !x_in || !eps || !noise || !ts || !ctx_host) {
    free(ctx_host);
    rc = errf(err, -ENOMEM, "generate: out of memory");
    goto done;
  }
  /* context [uncond x n, cond x n] under guidance, [cond x n] without */
  for (int b = 0; b < nb; b++) {
    int i = cfg && b >= n ? b - n : b; /* the image this row belongs to */
    memcpy(ctx_host + b * L * D, ((cfg && b < n) ? uncond : cond) + (size_t)i * cstride,
           L * D * sizeof(float));
  }
  const int64_t ctx_shape[3] = {nb, (int64_t)L, (int64_t)D};
  const int64_t x_shape[4] = {nb, C, h, w}, lat_shape[4] = {1, C, h, w};
  const int64_t img_shape[4] = {1, 3, g->height, g->width};
  if ((rc = be_tensor_alloc(be, &t_ctx, DT_F32, 3, ctx_shape)) < 0 ||
      (rc = be_upload(be, &t_ctx, ctx_host, DT_F32)) < 0 ||
      (rc = be_tensor_alloc(be, &t_x, DT_F32, 4, x_shape)) < 0 ||
      (rc = be_tensor_alloc(be, &t_eps, DT_F32, 4, x_shape)) < 0) {
    free(ctx_host);
    rc = errf(err, rc, "generate: %s", be_last_error(be));
    goto done;
  }
  free(ctx_host);

  /* initial latents */
  if (init_latents)
    memcpy(lat, init_latents, n * per * sizeof *lat);
  else
    for (int b = 0; b < n; b++)
      philox_normal_fill(seeds ? seeds[b] : g->seed + (uint64_t)b, PHILOX_STREAM_LATENTS, 0,
                         lat + b * per, per);
  const float sigma0 = sched_init_noise_sigma(s);
  for (size_t i = 0; i < n * per; i++) lat[i] = lat[i] * sigma0;

  const float *tlist = sched_timesteps(s);
  const int need_noise = sched_needs_noise(s);
  for (int k = 0; k < T; k++) {
    sched_scale_model_input(s, k, lat, x_in, n * per);
    if (cfg) memcpy(x_in + n * per, x_in, n * per * sizeof *x_in);
    for (int b = 0; b < nb; b++) ts[b] = tlist[k];
    if ((rc = be_upload(be, &t_x, x_in, DT_F32)) < 0) {
      rc = errf(err, rc, "generate: %s", be_last_error(be));
      goto done;
    }
    if ((rc = unet_forward(p->unet, &t_eps, &t_x, ts, &t_ctx, err)) < 0) { // [nb, C, h, w]
      rc = wrap(err, rc, "unet");
      goto done;
    }
    if ((rc = be_download_f32(be, &t_eps, eps)) < 0) {
      rc = errf(err, rc, "generate: %s", be_last_error(be));
      goto done;
    }
    if (cfg) cfg_combine(eps, eps + n * per, g->guidance_scale, g->guidance_rescale, eps, per, n);
    if (need_noise)
      for (int b = 0; b < n; b++)
        philox_normal_fill(seeds ? seeds[b] : g->seed + (uint64_t)b,
                           philox_stream_step((uint32_t)k), 0, noise + b * per, per);
    if ((rc = sched_step(s, k, eps, lat, lat, n * per, need_noise ? noise : NULL, err)) < 0) {
      rc = wrap(err, rc, "scheduler");
      goto done;
    }
    if (progress && progress(ctx, k + 1, T)) {
      rc = errf(err, -ECANCELED, "cancelled after step %d of %d", k + 1, T);
      goto done;
    }
  }
  be_tensor_free(be, &t_x);
  be_tensor_free(be, &t_eps);
  be_tensor_free(be, &t_ctx);
  double t1 = now_ms();

  /* decode image by image */
  img = image_f32 ? image_f32 : malloc(n * img_per * sizeof *img); // [n, 3, H, W]
  if (!img) {
    rc = errf(err, -ENOMEM, "generate: out of memory");
    goto done;
  }
  if ((rc = be_tensor_alloc(be, &t_lat, DT_F32, 4, lat_shape)) < 0 ||
      (rc = be_tensor_alloc(be, &t_img, DT_F32, 4, img_shape)) < 0) {
    rc = errf(err, rc, "generate: %s", be_last_error(be));
    goto done;
  }
  for (int b = 0; b < n; b++) {
    if ((rc = be_upload(be, &t_lat, lat + b * per, DT_F32)) < 0) {
      rc = errf(err, rc, "generate: %s", be_last_error(be));
      goto done;
    }
    if ((rc = vae_decode(p->vae, &t_img, &t_lat, err)) < 0) { // [1, 3, H, W]
      rc = wrap(err, rc, "vae");
      goto done;
    }
    if ((rc = be_download_f32(be, &t_img, img + b * img_per)) < 0) {
      rc = errf(err, rc, "generate: %s", be_last_error(be));
      goto done;
    }
  }
  vae_image_to_rgb8(img, n, g->height, g->width, rgb);
  if (tm) {
    tm->text_ms = t_text;
    tm->denoise_ms = t1 - t0;
    tm->decode_ms = now_ms() - t1;
  }
done:
  be_tensor_free(be, &t_ctx);
  be_tensor_free(be, &t_x);
  be_tensor_free(be, &t_eps);
  be_tensor_free(be, &t_lat);
  be_tensor_free(be, &t_img);
  if (img != image_f32) free(img);
  free(lat);
  free(x_in);
  free(eps);
  free(noise);
  free(ts);
  sched_free(s);
  return rc;
}

int pipeline_generate_embeds(struct pipeline *p, const struct gen_params *g, const float *cond,
                             const float *uncond, const float *init_latents, uint8_t *rgb,
                             float *image_f32, pipeline_progress_fn progress, void *ctx,
                             struct gen_timings *t, char **err) {
  int rc = pipeline_check_params(p, g, err);
  if (rc < 0) return rc;
  if (!cond || !rgb || (g->guidance_scale > 1.0f && !uncond))
    return errf(err, -EINVAL, "generate: missing text states or output buffer");
  return generate(p, g, cond, uncond, 0, NULL, init_latents, rgb, image_f32, progress, ctx, t, 0.0,
                  err);
}

int pipeline_generate(struct pipeline *p, const struct gen_params *g, const float *init_latents,
                      uint8_t *rgb, float *image_f32, pipeline_progress_fn progress, void *ctx,
                      struct gen_timings *t, char **err) {
  int rc = pipeline_check_params(p, g, err);
  if (rc < 0) return rc;
  if (!rgb) return errf(err, -EINVAL, "generate: no output buffer");
  const size_t LD = (size_t)TOKENIZER_MAX_LEN * p->text_dim;
  float *cond = malloc(2 * LD * sizeof *cond); // [2, 77, D]: cond, uncond
  if (!cond) return errf(err, -ENOMEM, "generate: out of memory");
  float *uncond = NULL;
  double t0 = now_ms();
  if ((rc = encode_text(p, g->prompt, g->clip_skip, cond, "prompt", err)) < 0) goto done;
  if (g->guidance_scale > 1.0f) {
    uncond = cond + LD;
    /* diffusers: "" when there is no negative prompt; never clip_skip */
    const char *neg = g->negative_prompt ? g->negative_prompt : "";
    if ((rc = encode_text(p, neg, 0, uncond, "negative_prompt", err)) < 0) goto done;
  }
  rc = generate(p, g, cond, uncond, 0, NULL, init_latents, rgb, image_f32, progress, ctx, t,
                now_ms() - t0, err);
done:
  free(cond);
  return rc;
}

int pipeline_generate_batch(struct pipeline *p, const struct gen_params *g,
                            const char *const *prompts, const char *const *negative_prompts,
                            const uint64_t *seeds, uint8_t *rgb, pipeline_progress_fn progress,
                            void *ctx, struct gen_timings *t, char **err) {
  int rc = pipeline_check_params(p, g, err);
  if (rc < 0) return rc;
  if (!rgb || !prompts || !seeds) return errf(err, -EINVAL, "generate: missing arguments");
  const int n = g->n, cfg = g->guidance_scale > 1.0f;
  const size_t LD = (size_t)TOKENIZER_MAX_LEN * p->text_dim;
  float *cond = malloc((size_t)(cfg ? 2 : 1) * n * LD * sizeof *cond); // [2, n, 77, D]
  if (!cond) return errf(err, -ENOMEM, "generate: out of memory");
  float *uncond = cfg ? cond + (size_t)n * LD : NULL;
  double t0 = now_ms();
  for (int b = 0; b < n && rc == 0; b++) {
    /* images of one request share their prompts: encode each text once */
    if (b > 0 && strcmp(prompts[b], prompts[b - 1]) == 0)
      memcpy(cond + b * LD, cond + (b - 1) * LD, LD * sizeof *cond);
    else
      rc = encode_text(p, prompts[b], g->clip_skip, cond + b * LD, "prompt", err);
    if (rc == 0 && cfg) {
      const char *neg = negative_prompts && negative_prompts[b] ? negative_prompts[b] : "";
      const char *prev =
          b > 0 && negative_prompts && negative_prompts[b - 1] ? negative_prompts[b - 1] : "";
      if (b > 0 && strcmp(neg, prev) == 0)
        memcpy(uncond + b * LD, uncond + (b - 1) * LD, LD * sizeof *cond);
      else
        rc = encode_text(p, neg, 0, uncond + b * LD, "negative_prompt", err);
    }
  }
  if (rc == 0)
    rc = generate(p, g, cond, uncond, LD, seeds, NULL, rgb, NULL, progress, ctx, t, now_ms() - t0,
                  err);
  free(cond);
  return rc;
}
