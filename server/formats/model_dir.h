/* model_dir.h: reads a diffusers model folder (the base Stable Diffusion
 * checkpoint): model_index.json, unet/config.json and
 * unet/diffusion_pytorch_model.safetensors are required; the paths of
 * text_encoder/, vae/, tokenizer/ and scheduler/ are noted when present.
 * Each component's weights are its plain .safetensors file, else the .fp16
 * variant, else a sharded index (*.safetensors.index[.fp16].json, opened
 * with st_open_weights); a sharded UNet is refused (the soup reads the base
 * UNet as one file), and so is a component with only pickled .bin weights.
 *
 * Invariants after model_dir_open succeeds: model_index and unet_config are
 * JSON objects (owned by the struct); unet_weights names an existing regular
 * file (its contents are not parsed here: use st_open). The optional *_dir
 * fields are NULL when the folder is absent. Error strings never contain the
 * server path, only the path relative to the model root.
 */
#pragma once

#include <jansson.h>

struct model_dir {
  char *root;                 /* the folder given to model_dir_open (copied) */
  char *variant;              /* the weights variant ("fp16"), or NULL */
  json_t *model_index;        /* model_index.json, an object */
  json_t *unet_config;        /* unet/config.json, an object */
  char *unet_weights;         /* <root>/unet/diffusion_pytorch_model[.fp16].safetensors */
  char *vae_weights;          /* vae/'s weights (file or index), or NULL: none found */
  char *text_encoder_weights; /* text_encoder/'s weights (file or index), or NULL */
  char *text_encoder_dir;     /* <root>/text_encoder or NULL */
  char *vae_dir;              /* <root>/vae or NULL */
  char *tokenizer_dir;        /* <root>/tokenizer or NULL */
  char *scheduler_dir;        /* <root>/scheduler or NULL */
};

/* Opens and validates the folder. Returns 0, or a negative status with *err
 * (malloc'd, caller frees) saying which file is missing or invalid. */
int model_dir_open(const char *root, struct model_dir **out, char **err);
/* The same reading only the weights of a variant (diffusers' variant=, e.g.
 * "fp16": stem.fp16.safetensors or stem.safetensors.index.fp16.json) for
 * unet/, vae/ and text_encoder/; a component without them is an error.
 * variant NULL or "" is model_dir_open. */
int model_dir_open_variant(const char *root, const char *variant, struct model_dir **out,
                           char **err);
void model_dir_close(struct model_dir *md);

/* "<root>/<rel>", malloc'd (caller frees); NULL on allocation failure. */
char *model_dir_path(const struct model_dir *md, const char *rel);

/* Reads "<root>/<rel>" as a JSON object (e.g. "vae/config.json"). Returns 0,
 * or a negative status with *err. The caller owns *out (json_decref). */
int model_dir_read_json(const struct model_dir *md, const char *rel, json_t **out, char **err);
