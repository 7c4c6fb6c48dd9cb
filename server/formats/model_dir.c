/* model_dir.c: reads a diffusers model folder (see model_dir.h).
 *
 * model_index.json and unet/config.json must be JSON objects; the UNet
 * weights file must exist as a regular file (validated later by st_open):
 * unet/diffusion_pytorch_model.safetensors, else its ".fp16" variant.
 * Optional component folders are recorded when they are directories. A
 * component with pickled .bin weights and no safetensors is refused.
 * Errors name the file relative to the model root, never the server path.
 */
#include "model_dir.h"
#include "formats/json_file.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MODEL_DIR_UNET_WEIGHTS "unet/diffusion_pytorch_model.safetensors"

__attribute__((format(printf, 2, 3))) static int model_dir_fail(char **err, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(err, fmt, ap) < 0) *err = NULL;
    va_end(ap);
  }
  return -1;
}

char *model_dir_path(const struct model_dir *md, const char *rel) {
  char *p = NULL;
  size_t n = strlen(md->root);
  int slash = n > 0 && md->root[n - 1] == '/';
  if (asprintf(&p, "%s%s%s", md->root, slash ? "" : "/", rel) < 0) return NULL;
  return p;
}

int model_dir_read_json(const struct model_dir *md, const char *rel, json_t **out, char **err) {
  *out = NULL;
  if (err) *err = NULL;
  char *path = model_dir_path(md, rel);
  if (!path) return model_dir_fail(err, "out of memory");
  struct stat st;
  if (stat(path, &st) != 0) {
    int e = errno;
    free(path);
    return model_dir_fail(err, "model folder: %s: %s", rel, e == ENOENT ? "missing" : strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    free(path);
    return model_dir_fail(err, "model folder: %s is not a regular file", rel);
  }
  json_error_t jerr;
  json_t *j = json_file_load(path, JSON_REJECT_DUPLICATES, &jerr);
  free(path);
  if (!j)
    return model_dir_fail(err, "model folder: %s is not valid JSON: %s (line %d)", rel, jerr.text,
                          jerr.line);
  if (!json_is_object(j)) {
    json_decref(j);
    return model_dir_fail(err, "model folder: %s is not a JSON object", rel);
  }
  *out = j;
  return 0;
}

/* Sets *dst to <root>/<rel> if it is a directory, else NULL. */
static int model_dir_optional(struct model_dir *md, const char *rel, char **dst) {
  char *p = model_dir_path(md, rel);
  if (!p) return -1;
  struct stat st;
  if (stat(p, &st) == 0 && S_ISDIR(st.st_mode))
    *dst = p;
  else
    free(p);
  return 0;
}

/* 1 if <root>/<rel> is a regular file. */
static int model_dir_has_file(const struct model_dir *md, const char *rel) {
  char *p = model_dir_path(md, rel);
  struct stat st;
  int ok = p && stat(p, &st) == 0 && S_ISREG(st.st_mode);
  free(p);
  return ok;
}

/* A component folder that holds only pickled PyTorch weights (.bin) is
 * refused, never unpickled (loading a pickle can run arbitrary code); the
 * message says how to convert the folder once. Returns 0 or -1 with *err. */
static int model_dir_refuse_pickles(const struct model_dir *md, char **err) {
  static const struct {
    const char *dir, *safe_stem, *bin_stem;
  } parts[] = {{"unet", "diffusion_pytorch_model", "diffusion_pytorch_model"},
               {"vae", "diffusion_pytorch_model", "diffusion_pytorch_model"},
               {"text_encoder", "model", "pytorch_model"},
               {"text_encoder", "model", "model"}};
  static const char *const safe[] = {".safetensors", ".fp16.safetensors", ".safetensors.index.json",
                                     ".safetensors.index.fp16.json"};
  static const char *const pickled[] = {".bin", ".fp16.bin", ".bin.index.json"};
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
    char rel[256];
    int any_safe = 0;
    for (size_t k = 0; k < 4 && !any_safe; k++) {
      snprintf(rel, sizeof rel, "%s/%s%s", parts[i].dir, parts[i].safe_stem, safe[k]);
      any_safe = model_dir_has_file(md, rel);
    }
    for (size_t k = 0; k < 3 && !any_safe; k++) {
      snprintf(rel, sizeof rel, "%s/%s%s", parts[i].dir, parts[i].bin_stem, pickled[k]);
      if (model_dir_has_file(md, rel))
        return model_dir_fail(
            err,
            "model folder: %s holds pickled PyTorch weights, which soupd never loads (unpickling "
            "can run arbitrary code), and there is no .safetensors file beside it; convert the "
            "folder once with: python3 -c \"from diffusers import DiffusionPipeline as P; "
            "P.from_pretrained('FOLDER').save_pretrained('FOLDER-safetensors', "
            "safe_serialization=True)\" and serve FOLDER-safetensors",
            rel);
    }
  }
  return 0;
}

/* The weights of component dir with file stem. Without a variant:
 * stem.safetensors, its .fp16 variant, then a sharded index
 * (stem.safetensors.index[.fp16].json); with variant v only stem.v.safetensors
 * or stem.safetensors.index.v.json, as diffusers' variant= reads them.
 * Returns <root>/<dir>/<file>, or NULL when none is a regular file (*oom on
 * allocation failure). */
static char *model_dir_weights(const struct model_dir *md, const char *dir, const char *stem,
                               int *oom) {
  char tails[4][80];
  int nt = 0;
  if (md->variant) {
    snprintf(tails[nt++], sizeof tails[0], ".%s.safetensors", md->variant);
    snprintf(tails[nt++], sizeof tails[0], ".safetensors.index.%s.json", md->variant);
  } else {
    snprintf(tails[nt++], sizeof tails[0], ".safetensors");
    snprintf(tails[nt++], sizeof tails[0], ".fp16.safetensors");
    snprintf(tails[nt++], sizeof tails[0], ".safetensors.index.json");
    snprintf(tails[nt++], sizeof tails[0], ".safetensors.index.fp16.json");
  }
  for (int k = 0; k < nt; k++) {
    char rel[256];
    snprintf(rel, sizeof rel, "%s/%s%s", dir, stem, tails[k]);
    if (!model_dir_has_file(md, rel)) continue;
    char *p = model_dir_path(md, rel);
    if (!p) *oom = 1;
    return p;
  }
  return NULL;
}

/* A variant is a short file-name word: letters, digits, '_' and '-'. */
static int variant_ok(const char *v) {
  size_t n = strlen(v);
  if (n < 1 || n > 32) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((v[i] >= 'a' && v[i] <= 'z') || (v[i] >= 'A' && v[i] <= 'Z') ||
          (v[i] >= '0' && v[i] <= '9') || v[i] == '_' || v[i] == '-'))
      return 0;
  return 1;
}

/* With a variant, a present component without its variant weights is an
 * error naming the file diffusers would read. */
static int model_dir_need_variant(const struct model_dir *md, const char *dir, const char *stem,
                                  const char *found, char **err) {
  if (!md->variant || found) return 0;
  return model_dir_fail(err, "model folder: %s/%s.%s.safetensors: missing (--variant %s)", dir,
                        stem, md->variant, md->variant);
}

int model_dir_open(const char *root, struct model_dir **out, char **err) {
  return model_dir_open_variant(root, NULL, out, err);
}

int model_dir_open_variant(const char *root, const char *variant, struct model_dir **out,
                           char **err) {
  int rc = 0;
  *out = NULL;
  if (err) *err = NULL;
  struct model_dir *md = calloc(1, sizeof *md);
  if (!md || !(md->root = strdup(root))) {
    rc = model_dir_fail(err, "out of memory");
    goto fail;
  }
  if (variant && variant[0]) {
    if (!variant_ok(variant)) {
      rc = model_dir_fail(err, "variant: \"%.40s\" is not a file-name word (letters, digits, _ -)",
                          variant);
      goto fail;
    }
    if (!(md->variant = strdup(variant))) {
      rc = model_dir_fail(err, "out of memory");
      goto fail;
    }
  }
  struct stat st;
  size_t rl = strlen(root);
  int single =
      rl > 12 && (!strcmp(root + rl - 12, ".safetensors") || !strcmp(root + rl - 5, ".ckpt"));
  if (single && stat(root, &st) == 0 && S_ISREG(st.st_mode)) {
    rc = model_dir_fail(
        err, "model: single-file checkpoints are not served yet; convert it once to a folder with "
             "diffusers: python3 -c \"from diffusers import StableDiffusionPipeline as P; "
             "P.from_single_file('FILE').save_pretrained('FOLDER')\" and pass --model FOLDER");
    goto fail;
  }
  if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
    rc = model_dir_fail(err, "model folder: not found or not a directory");
    goto fail;
  }
  if ((rc = model_dir_read_json(md, "model_index.json", &md->model_index, err)) < 0) goto fail;
  if ((rc = model_dir_read_json(md, "unet/config.json", &md->unet_config, err)) < 0) goto fail;
  if ((rc = model_dir_refuse_pickles(md, err)) < 0) goto fail;
  int oom = 0;
  md->unet_weights = model_dir_weights(md, "unet", "diffusion_pytorch_model", &oom);
  if (md->unet_weights && strstr(md->unet_weights, ".index.")) {
    rc = model_dir_fail(err,
                        "model folder: %s: sharded UNet weights are not supported yet (the soup "
                        "reads the base UNet as one file); save the UNet unsharded (diffusers: "
                        "save_pretrained(..., max_shard_size=\"100GB\"))",
                        md->unet_weights + strlen(md->root) +
                            (md->root[strlen(md->root) - 1] != '/'));
    goto fail;
  }
  if ((rc = model_dir_need_variant(md, "unet", "diffusion_pytorch_model", md->unet_weights, err)) <
      0)
    goto fail;
  if (!md->unet_weights) {
    rc = model_dir_fail(err,
                        oom ? "out of memory" : "model folder: %s: missing or not a regular file",
                        MODEL_DIR_UNET_WEIGHTS);
    goto fail;
  }
  if (model_dir_optional(md, "text_encoder", &md->text_encoder_dir) < 0 ||
      model_dir_optional(md, "vae", &md->vae_dir) < 0 ||
      model_dir_optional(md, "tokenizer", &md->tokenizer_dir) < 0 ||
      model_dir_optional(md, "scheduler", &md->scheduler_dir) < 0) {
    rc = model_dir_fail(err, "out of memory");
    goto fail;
  }
  if (md->vae_dir) md->vae_weights = model_dir_weights(md, "vae", "diffusion_pytorch_model", &oom);
  if (md->text_encoder_dir)
    md->text_encoder_weights = model_dir_weights(md, "text_encoder", "model", &oom);
  if (oom) {
    rc = model_dir_fail(err, "out of memory");
    goto fail;
  }
  if (md->vae_dir &&
      (rc = model_dir_need_variant(md, "vae", "diffusion_pytorch_model", md->vae_weights, err)) < 0)
    goto fail;
  if (md->text_encoder_dir &&
      (rc = model_dir_need_variant(md, "text_encoder", "model", md->text_encoder_weights, err)) < 0)
    goto fail;
  *out = md;
  return 0;
fail:
  model_dir_close(md);
  return rc;
}

void model_dir_close(struct model_dir *md) {
  if (!md) return;
  free(md->root);
  free(md->variant);
  json_decref(md->model_index);
  json_decref(md->unet_config);
  free(md->unet_weights);
  free(md->vae_weights);
  free(md->text_encoder_weights);
  free(md->text_encoder_dir);
  free(md->vae_dir);
  free(md->tokenizer_dir);
  free(md->scheduler_dir);
  free(md);
}
