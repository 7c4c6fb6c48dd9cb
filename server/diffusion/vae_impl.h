/* vae_impl.h: the loaded AutoencoderKL shared by vae.c (config, weights,
 * shape checks) and vae_forward.c (decode / encode). Private to
 * server/diffusion. Invariant: every tensor the configured architecture
 * uses was found with the right shape by vae_load. */
#pragma once

#include "vae.h"

#define VAE_MAX_BLOCKS 8
#define VAE_EPS 1e-6f

struct vae {
  struct backend *be;
  int in_ch, out_ch, lc, nb, layers, groups;
  int ch[VAE_MAX_BLOCKS];
  float scaling;
  int has_encoder, use_quant, use_post_quant, mid_attn;
  size_t n_w;
  char **names;     /* sorted canonical names */
  struct tensor *w; /* w[i] is names[i] */
};

/* Weight by canonical name (printf-style), NULL if absent. */
const struct tensor *vae_w(const struct vae *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Sets *err (malloc'd) and returns -1. */
int vae_errf(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
