/* keymap_apply.h: renames the tensors of an opened checkpoint from original
 * LDM single-file names to diffusers UNet names (keymap_ldm.h), so a shard
 * saved by the original Stable Diffusion code registers like a diffusers one.
 * Tensors of other models in the file (VAE, text encoder) are dropped from
 * the view; the data stays mapped and untouched. */
#pragma once

#include <jansson.h>

#include "safetensors.h"

/* 1 if the file holds LDM UNet keys (model.diffusion_model.*). */
int st_is_ldm(const struct st_file *f);
/* Renames in place (the file view; not the file). Returns 0, or -1 with *err
 * naming a key that has no diffusers name or a duplicate after renaming. */
int st_apply_ldm_names(struct st_file *f, const json_t *unet_config, char **err);
