/* unet.h: the Stable Diffusion UNet (diffusers UNet2DConditionModel, the
 * SD1.x / SD2.x family) written once against kernels/backend.h.
 *
 * A unet is built from unet/config.json; every hyper-parameter is checked
 * against the shapes of the weights it is given. Weights are addressed by
 * their diffusers names ("down_blocks.0.resnets.0.conv1.weight"). They come
 * either from the model folder's diffusion_pytorch_model.safetensors (owned
 * by the unet, uploaded to its backend) or from an external weight set (the
 * live soup) through unet_bind_weights; binding only records pointers, so the
 * soup may rewrite the tensors' contents in place between forwards.
 *
 * Invariants: after unet_load/unet_bind_weights succeed every parameter
 * slot points to a tensor of the expected shape and a float dtype (F32, F16
 * or BF16); a failed bind leaves the previous binding intact. Intermediate
 * activations of a forward are freed as soon as they are dead.
 */
#pragma once

#include <jansson.h>
#include <stdint.h>

#include "kernels/backend.h"

struct unet;

/* Looks a weight up by diffusers name; NULL if absent. */
typedef const struct tensor *(*unet_lookup_fn)(void *ctx, const char *name);

/* Loads <dir>/config.json and <dir>/diffusion_pytorch_model.safetensors (dir
 * is the model folder's unet/ folder). Returns 0, or a negative status with
 * *err (malloc'd, caller frees). */
int unet_load(const char *dir, struct backend *be, struct unet **out, char **err);
/* The same with the weights at `weights` (a safetensors file or a sharded
 * index, see st_open_weights); NULL means dir/diffusion_pytorch_model.safetensors. */
int unet_load_file(const char *dir, const char *weights, struct backend *be, struct unet **out,
                   char **err);

/* Builds a unet from a parsed config, without weights (bind or load them
 * before a forward). The config is not kept. */
int unet_new(const json_t *config, struct backend *be, struct unet **out, char **err);

/* Uploads every parameter from a safetensors file with diffusers names (the
 * unet then owns them; previously owned weights are freed). Extra tensors in
 * the file are an error. */
int unet_load_weights(struct unet *u, const char *path, char **err);

/* The same from an original LDM single-file checkpoint (keys
 * "model.diffusion_model.*", renamed by formats/keymap_ldm for this layout);
 * the file's other tensors (VAE, text encoder, EMA copies) are ignored. */
int unet_load_weights_ldm(struct unet *u, const char *path, char **err);

/* Points every parameter at lookup(ctx, name). Checks presence, dtype and
 * shape of all of them before changing anything. The tensors must outlive
 * the binding (they are not copied); owned weights, if any, are freed. */
int unet_bind_weights(struct unet *u, unet_lookup_fn lookup, void *ctx, char **err);

/* out [B, out_ch, h, w] = UNet(sample [B, in_ch, h, w], timesteps (B host
 * values, may be fractional), context [B, L, cross_attention_dim]).
 * out is allocated by the caller (F32). Any h, w >= 1 is accepted: each
 * upsampler resizes to its skip's size, as diffusers does when h or w is not
 * a multiple of 2^(number of upsamplers). */
int unet_forward(struct unet *u, struct tensor *out, const struct tensor *sample,
                 const float *timesteps, const struct tensor *context, char **err);

/* Parameters in a fixed order (the order of the config's modules). */
int unet_param_count(const struct unet *u);
/* Name and expected shape of parameter i; returns the name or NULL. */
const char *unet_param_info(const struct unet *u, int i, int *ndim, int64_t shape[4]);

int unet_in_channels(const struct unet *u);
int unet_out_channels(const struct unet *u);
int unet_cross_attention_dim(const struct unet *u);
/* config sample_size (latent side the model was trained at). */
int unet_sample_size(const struct unet *u);

void unet_free(struct unet *u);
