/* unet_impl.h: the UNet's private structures, shared by unet_config.c
 * (config parsing and the parameter table), unet.c (weights) and
 * unet_forward.c (the graph).
 *
 * The module tree mirrors diffusers: down blocks (resnets, optional
 * transformers, optional downsampler), a mid block (resnet, transformer,
 * resnet), up blocks (lpb+1 resnets, optional transformers, optional
 * upsampler). Each weight slot is a `const struct tensor *` filled by a bind;
 * the parameter table (struct unet_param) lists every slot with its diffusers
 * name and expected shape, in module order.
 */
#pragma once

#include "unet.h"

#define UNET_MAX_BLOCKS 6
#define UNET_MAX_LAYERS 4 /* resnets per down block (layers_per_block) */
#define UNET_MAX_TLAYERS 4

typedef const struct tensor *wslot;

struct unet_resnet {
  int cin, cout;
  wslot norm1_w, norm1_b, conv1_w, conv1_b, temb_w, temb_b;
  wslot norm2_w, norm2_b, conv2_w, conv2_b;
  wslot short_w, short_b; /* NULL when cin == cout */
};

struct unet_attn {
  wslot q, k, v, out_w, out_b;
};

struct unet_tblock {
  wslot norm1_w, norm1_b, norm2_w, norm2_b, norm3_w, norm3_b;
  struct unet_attn attn1, attn2;
  wslot ff0_w, ff0_b, ff2_w, ff2_b;
};

struct unet_transformer {
  int channels, heads, n_layers;
  wslot norm_w, norm_b, proj_in_w, proj_in_b, proj_out_w, proj_out_b;
  struct unet_tblock blocks[UNET_MAX_TLAYERS];
};

struct unet_down {
  int has_attn, has_down;
  struct unet_resnet res[UNET_MAX_LAYERS];
  struct unet_transformer attn[UNET_MAX_LAYERS];
  wslot down_w, down_b;
};

struct unet_up {
  int has_attn, has_up;
  struct unet_resnet res[UNET_MAX_LAYERS + 1];
  struct unet_transformer attn[UNET_MAX_LAYERS + 1];
  wslot up_w, up_b;
};

struct unet_config {
  int in_channels, out_channels, sample_size;
  int n_blocks, layers_per_block, transformer_layers;
  int block_out[UNET_MAX_BLOCKS];
  int down_attn[UNET_MAX_BLOCKS], up_attn[UNET_MAX_BLOCKS];
  int heads[UNET_MAX_BLOCKS]; /* per down block; up block i uses heads[n-1-i] */
  int cross_dim, linear_proj, groups;
  float norm_eps;
  int flip_sin_to_cos;
  float freq_shift;
  int time_dim; /* 4 * block_out[0] */
};

struct unet_param {
  char *name;
  int ndim;
  int64_t shape[4];
  wslot *slot;
};

struct unet {
  struct backend *be;
  struct unet_config cfg;
  wslot conv_in_w, conv_in_b, time1_w, time1_b, time2_w, time2_b;
  wslot norm_out_w, norm_out_b, conv_out_w, conv_out_b;
  struct unet_down down[UNET_MAX_BLOCKS];
  struct unet_resnet mid_res[2];
  struct unet_transformer mid_attn;
  struct unet_up up[UNET_MAX_BLOCKS];

  struct unet_param *params;
  int n_params, cap_params;
  struct tensor *owned; /* n_params tensors when the unet owns its weights, else NULL */
};

/* unet_config.c */
int unet_config_parse(const json_t *j, struct unet_config *c, char **err);
/* Fills u->params from u->cfg (the module tree's channel bookkeeping). */
int unet_params_build(struct unet *u, char **err);
void unet_params_free(struct unet *u);

/* A malloc'd printf string (NULL if out of memory). */
char *unet_strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
