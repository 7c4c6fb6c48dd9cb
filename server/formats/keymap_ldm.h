/* keymap_ldm.h: tensor-name conversion between original LDM single-file
 * checkpoints ("model.diffusion_model.input_blocks.1.0.in_layers.0.weight")
 * and diffusers names ("down_blocks.0.resnets.0.norm1.weight"): all the
 * renaming lives in keymap_ldm.c.
 *
 * The UNet mapping depends on the layout: number of blocks, layers_per_block
 * (LDM numbers input_blocks/output_blocks consecutively) and which up blocks
 * have attention (the upsampler is output_blocks.K.1 without attention,
 * .K.2 with). It is read from a diffusers unet/config.json.
 *
 * Invariant: on the keys of a checkpoint of that layout, the two directions
 * are inverse bijections (to_diffusers(from_diffusers(k)) == k).
 */
#pragma once

#include <jansson.h>
#include <stddef.h>

#define KEYMAP_LDM_UNET_PREFIX "model.diffusion_model."
#define KEYMAP_LDM_MAX_BLOCKS 8

struct keymap_ldm_unet {
  int n_blocks;
  int layers_per_block;
  int up_attn[KEYMAP_LDM_MAX_BLOCKS]; /* up block i is CrossAttnUpBlock2D */
  int down_attn[KEYMAP_LDM_MAX_BLOCKS];
};

/* Reads block_out_channels, layers_per_block, down/up_block_types. Returns
 * 0, or -1 with *err (malloc'd) naming the bad field. */
int keymap_ldm_unet_init(struct keymap_ldm_unet *km, const json_t *unet_config, char **err);

/* LDM key -> diffusers name in out[n]. Returns 1 when mapped; 0 when the key
 * is not a UNet key (VAE, text encoder, EMA copies: another model's tensor);
 * -1 when it is under the UNet prefix but has no diffusers name in this
 * layout, or out is too small. */
int keymap_ldm_unet_to_diffusers(const struct keymap_ldm_unet *km, const char *ldm_key, char *out,
                                 size_t n);

/* diffusers name -> LDM key (with the prefix). Returns 1, or -1 if unknown. */
int keymap_ldm_unet_from_diffusers(const struct keymap_ldm_unet *km, const char *key, char *out,
                                   size_t n);
