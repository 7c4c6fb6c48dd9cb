/* clip_text.h: the CLIP text encoder of Stable Diffusion (transformers'
 * CLIPTextModel), written once against kernels/backend.h.
 *
 * Invariants: after clip_text_load the weights live on the backend in their
 * file dtype (F32/F16/BF16; the backend widens them), every tensor's shape
 * agrees with text_encoder/config.json, and the model is immutable, so
 * several forwards may share it; a forward must not run concurrently with
 * another op on the same backend (the engine thread owns the backend).
 */
#pragma once

#include <stdint.h>

#include "../../kernels/backend.h"

#define CLIP_TEXT_SEQ 77 /* tokens per prompt (max_position_embeddings) */

struct clip_text_config {
  int hidden;       /* D: 768 SD1, 1024 SD2 */
  int layers;       /* 12 SD1, 23 SD2 */
  int heads;        /* head_dim = D / heads = 64 */
  int intermediate; /* MLP width: 3072 SD1, 4096 SD2 */
  int max_positions;
  int vocab;
  float eps; /* layer_norm_eps */
  enum unary_op act;
};

struct clip_text;

/* Reads <dir>/config.json and <dir>/model.safetensors (keys with or without
 * the "text_model." prefix) and uploads the weights to be. Returns 0 or a
 * negative status with *err (malloc'd). */
int clip_text_load(const char *dir, struct backend *be, struct clip_text **out, char **err);
/* The same with the weights at `weights` (a safetensors file or a sharded
 * index, see st_open_weights); NULL means the default file in dir. */
int clip_text_load_file(const char *dir, const char *weights, struct backend *be,
                        struct clip_text **out, char **err);
void clip_text_free(struct clip_text *m);

const struct clip_text_config *clip_text_config(const struct clip_text *m);
int clip_text_hidden_size(const struct clip_text *m);

/* out [B, 77, D] F32 (allocated by the caller on the model's backend) =
 * text states of the host ids [B * 77]. clip_skip = 0: last_hidden_state;
 * clip_skip = k (1..layers): the output of layer (layers - k), then
 * final_layer_norm, as the diffusers pipeline does with clip_skip=k. */
int clip_text_forward(struct clip_text *m, struct tensor *out, const int32_t *ids, int B,
                      int clip_skip, char **err);
