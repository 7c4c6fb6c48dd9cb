/* unet.c: UNet construction and weights: config -> parameter table, weights
 * from a safetensors file (owned, uploaded to the backend) or from an
 * external weight set (borrowed, e.g. the live soup), and the accessors.
 *
 * Invariant: a bind is all-or-nothing. Every parameter is resolved and its
 * dtype and shape checked into a scratch array first; only then are the
 * slots written and previously owned weights released.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/keymap_ldm.h"
#include "formats/json_file.h"
#include "formats/safetensors.h"
#include "log.h"
#include "unet_impl.h"

static const char *shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
  size_t o = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < ndim && o < n; i++)
    o += (size_t)snprintf(buf + o, n - o, i ? ", %lld" : "%lld", (long long)shape[i]);
  if (o < n) snprintf(buf + o, n - o, "]");
  return buf;
}

/* Checks t against parameter p. */
static int check_param(const struct unet_param *p, const struct tensor *t, char **err) {
  char a[80], b[80];
  if (!t) {
    *err = unet_strf("unet: weight %s is missing", p->name);
    return -1;
  }
  if (t->dtype != DT_F32 && t->dtype != DT_F16 && t->dtype != DT_BF16) {
    *err = unet_strf("unet: weight %s has dtype %s (F32, F16 or BF16 expected)", p->name,
                     dtype_name(t->dtype));
    return -1;
  }
  int same = t->ndim == p->ndim;
  for (int i = 0; same && i < p->ndim; i++) same = t->shape[i] == p->shape[i];
  if (!same) {
    *err = unet_strf("unet: weight %s has shape %s, the config implies %s", p->name,
                     shape_str(t->ndim, t->shape, a, sizeof a),
                     shape_str(p->ndim, p->shape, b, sizeof b));
    return -1;
  }
  return 0;
}

static void owned_free(struct unet *u, struct tensor *owned) {
  if (!owned) return;
  for (int i = 0; i < u->n_params; i++)
    if (owned[i].data) be_tensor_free(u->be, &owned[i]);
  free(owned);
}

/* Points the slots at arr[] (already checked) and adopts new_owned. */
static void commit(struct unet *u, const struct tensor **arr, struct tensor *new_owned) {
  for (int i = 0; i < u->n_params; i++) *u->params[i].slot = arr[i];
  owned_free(u, u->owned);
  u->owned = new_owned;
}

int unet_bind_weights(struct unet *u, unet_lookup_fn lookup, void *ctx, char **err) {
  const struct tensor **arr = calloc((size_t)u->n_params, sizeof *arr);
  if (!arr) {
    *err = unet_strf("unet: out of memory");
    return -1;
  }
  int rc = 0;
  for (int i = 0; i < u->n_params && !rc; i++) {
    arr[i] = lookup(ctx, u->params[i].name);
    rc = check_param(&u->params[i], arr[i], err);
  }
  if (!rc) commit(u, arr, NULL);
  free(arr);
  return rc;
}

/* The file's name for parameter i: the diffusers name itself, or its LDM
 * single-file name. Returns 0, or -1 when the layout has no such name. */
static int file_name(const struct unet *u, const struct keymap_ldm_unet *km, int i, char *buf,
                     size_t n, const char **out) {
  if (!km) {
    *out = u->params[i].name;
    return 0;
  }
  *out = buf;
  return keymap_ldm_unet_from_diffusers(km, u->params[i].name, buf, n) == 1 ? 0 : -1;
}

/* Tensors of f that must be explained by the parameter table: all of them
 * (diffusers file) or those under the LDM UNet prefix (single file). */
static int is_unet_tensor(const struct keymap_ldm_unet *km, const char *name) {
  return !km || strncmp(name, KEYMAP_LDM_UNET_PREFIX, strlen(KEYMAP_LDM_UNET_PREFIX)) == 0;
}

static int load_file(struct unet *u, const char *path, const struct keymap_ldm_unet *km,
                     char **err) {
  struct st_file *f = NULL;
  struct tensor *owned = calloc((size_t)u->n_params, sizeof *owned);
  const struct tensor **arr = calloc((size_t)u->n_params, sizeof *arr);
  char *e = NULL, buf[256];
  const char *fname;
  int rc = -1;
  if (!owned || !arr) {
    *err = unet_strf("unet: out of memory");
    goto done;
  }
  if (st_open_weights(path, &f, &e) < 0) {
    *err = unet_strf("unet: weights: %s", e ? e : "cannot open");
    goto done;
  }
  size_t n_unet = 0;
  for (size_t k = 0; k < f->n_tensors; k++) n_unet += is_unet_tensor(km, f->tensors[k].name);
  if (n_unet != (size_t)u->n_params) {
    /* name one tensor the config does not explain */
    for (size_t k = 0; k < f->n_tensors; k++) {
      if (!is_unet_tensor(km, f->tensors[k].name)) continue;
      int known = 0;
      for (int i = 0; i < u->n_params && !known; i++)
        known = file_name(u, km, i, buf, sizeof buf, &fname) == 0 &&
                strcmp(fname, f->tensors[k].name) == 0;
      if (!known) {
        *err = unet_strf("unet: weights hold %zu UNet tensors, the config implies %d (e.g. "
                         "unexpected %s)",
                         n_unet, u->n_params, f->tensors[k].name);
        goto done;
      }
    }
  }
  for (int i = 0; i < u->n_params; i++) {
    const struct unet_param *p = &u->params[i];
    const struct st_tensor *s = NULL;
    if (file_name(u, km, i, buf, sizeof buf, &fname) == 0) s = st_find(f, fname);
    if (!s) {
      *err = unet_strf("unet: weight %s is missing", km ? buf : p->name);
      goto done;
    }
    int dt = st_dtype_to_dtype(s->dtype);
    struct tensor probe = {.dtype = dt < 0 ? DT_I64 : (enum dtype)dt, .ndim = s->ndim};
    if (s->ndim > TENSOR_MAX_DIMS) probe.ndim = TENSOR_MAX_DIMS + 1;
    for (int d = 0; d < s->ndim && d < TENSOR_MAX_DIMS; d++) probe.shape[d] = s->shape[d];
    probe.data = (void *)s->data;
    if (check_param(p, &probe, err)) goto done;
    if (be_tensor_alloc(u->be, &owned[i], probe.dtype, p->ndim, p->shape) ||
        be_upload(u->be, &owned[i], s->data, probe.dtype)) {
      *err = unet_strf("unet: uploading %s: %s", p->name, be_last_error(u->be));
      goto done;
    }
    arr[i] = &owned[i];
  }
  commit(u, arr, owned);
  owned = NULL;
  rc = 0;
done:
  if (owned) owned_free(u, owned);
  free(arr);
  free(e);
  st_close(f);
  return rc;
}

int unet_load_weights(struct unet *u, const char *path, char **err) {
  return load_file(u, path, NULL, err);
}

int unet_load_weights_ldm(struct unet *u, const char *path, char **err) {
  struct keymap_ldm_unet km = {.n_blocks = u->cfg.n_blocks,
                               .layers_per_block = u->cfg.layers_per_block};
  for (int i = 0; i < u->cfg.n_blocks; i++) {
    km.up_attn[i] = u->cfg.up_attn[i];
    km.down_attn[i] = u->cfg.down_attn[i];
  }
  return load_file(u, path, &km, err);
}

int unet_new(const json_t *config, struct backend *be, struct unet **out, char **err) {
  *out = NULL;
  struct unet *u = calloc(1, sizeof *u);
  if (!u) {
    *err = unet_strf("unet: out of memory");
    return -1;
  }
  u->be = be;
  if (unet_config_parse(config, &u->cfg, err) || unet_params_build(u, err)) {
    unet_free(u);
    return -1;
  }
  *out = u;
  return 0;
}

int unet_load(const char *dir, struct backend *be, struct unet **out, char **err) {
  return unet_load_file(dir, NULL, be, out, err);
}

int unet_load_file(const char *dir, const char *weights, struct backend *be, struct unet **out,
                   char **err) {
  *out = NULL;
  char *cfg_path = unet_strf("%s/config.json", dir);
  char *w_path =
      weights ? unet_strf("%s", weights) : unet_strf("%s/diffusion_pytorch_model.safetensors", dir);
  struct unet *u = NULL;
  json_t *j = NULL;
  int rc = -1;
  if (!cfg_path || !w_path) {
    *err = unet_strf("unet: out of memory");
    goto done;
  }
  json_error_t je;
  j = json_file_load(cfg_path, 0, &je);
  if (!j) {
    *err = unet_strf("unet: unet/config.json: %s (line %d)", je.text, je.line);
    goto done;
  }
  if (unet_new(j, be, &u, err) || unet_load_weights(u, w_path, err)) goto done;
  log_info("unet: %d blocks, %d weights, cross_attention_dim %d", u->cfg.n_blocks, u->n_params,
           u->cfg.cross_dim);
  *out = u;
  u = NULL;
  rc = 0;
done:
  unet_free(u);
  json_decref(j);
  free(cfg_path);
  free(w_path);
  return rc;
}

int unet_param_count(const struct unet *u) {
  return u->n_params;
}

const char *unet_param_info(const struct unet *u, int i, int *ndim, int64_t shape[4]) {
  if (i < 0 || i >= u->n_params) return NULL;
  const struct unet_param *p = &u->params[i];
  if (ndim) *ndim = p->ndim;
  if (shape)
    for (int d = 0; d < p->ndim; d++) shape[d] = p->shape[d];
  return p->name;
}

int unet_in_channels(const struct unet *u) {
  return u->cfg.in_channels;
}
int unet_out_channels(const struct unet *u) {
  return u->cfg.out_channels;
}
int unet_cross_attention_dim(const struct unet *u) {
  return u->cfg.cross_dim;
}
int unet_sample_size(const struct unet *u) {
  return u->cfg.sample_size;
}

void unet_free(struct unet *u) {
  if (!u) return;
  owned_free(u, u->owned);
  unet_params_free(u);
  free(u);
}
