/* vae.h: the AutoencoderKL of Stable Diffusion (diffusers layout), written
 * only against kernels/backend.h.
 *
 * decode: latents / scaling_factor -> post_quant_conv -> decoder (conv_in,
 * mid block resnet / single-head attention / resnet, up blocks of
 * layers_per_block + 1 resnets with nearest-2x + conv upsamplers,
 * GroupNorm + SiLU, conv_out) -> image in about [-1, 1] (not clamped).
 * encode: encoder (conv_in, down blocks with the asymmetric (0,1,0,1) pad
 * + stride-2 conv downsamplers, mid, GroupNorm + SiLU, conv_out) ->
 * quant_conv -> the mean and the clamped log-variance of the latent
 * distribution (not multiplied by scaling_factor, as diffusers' latent_dist).
 *
 * Weights come from <dir>/diffusion_pytorch_model.safetensors, kept in
 * their stored dtype (F32/F16/BF16); hyper-parameters from <dir>/config.json
 * are checked against every tensor shape at load. Attention keys may use the
 * new (to_q, to_k, to_v, to_out.0) or the legacy (query, key, value,
 * proj_attn) names, linear [C, C] or 1x1-conv [C, C, 1, 1] shaped.
 * GroupNorm eps is 1e-6 everywhere.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "../../kernels/backend.h"

struct vae;

/* Loads config.json and the weights of a diffusers vae/ folder onto be.
 * A folder without encoder weights loads (decode only; vae_encode fails). */
int vae_load(const char *dir, struct backend *be, struct vae **out, char **err);
/* The same with the weights at `weights` (a safetensors file or a sharded
 * index, see st_open_weights); NULL means the default file in dir. */
int vae_load_file(const char *dir, const char *weights, struct backend *be, struct vae **out,
                  char **err);
void vae_free(struct vae *v);

float vae_scaling_factor(const struct vae *v);
int vae_latent_channels(const struct vae *v);
/* Image pixels per latent pixel: 2^(len(block_out_channels) - 1), 8 for SD. */
int vae_downscale(const struct vae *v);
int vae_has_encoder(const struct vae *v);

/* latents [B, Lc, h, w] F32 (as the scheduler leaves them) -> out
 * [B, out_channels, h*s, w*s] F32, allocated by the caller, s = vae_downscale. */
int vae_decode(struct vae *v, struct tensor *out, const struct tensor *latents, char **err);

/* image [B, in_channels, H, W] F32 in [-1, 1], H and W multiples of s ->
 * mean [B, Lc, H/s, W/s] and logvar (same shape, clamped to [-30, 20]; may be
 * NULL), allocated by the caller. */
int vae_encode(struct vae *v, struct tensor *mean, struct tensor *logvar,
               const struct tensor *image, char **err);

/* The reference pipeline's conversion of a decoded image to 8-bit RGB:
 * (x * 0.5 + 0.5).clamp(0, 1), CHW -> HWC, then numpy's
 * (x * 255).round().astype(uint8) (round half to even).
 * img [B, 3, H, W] host floats -> rgb [B, H, W, 3]. */
void vae_image_to_rgb8(const float *img, int batch, int height, int width, uint8_t *rgb);
