/* vae.c: AutoencoderKL decode / encode over the backend ops (see vae.h).
 * Weights are held in one array sorted by canonical (new-style) name;
 * every tensor the configured architecture needs is checked for presence
 * and shape in vae_load, so the forward passes only look names up.
 * The encoder's downsampler pads right and bottom by one (diffusers
 * Downsample2D with padding=0): the backend conv2d pads symmetrically, so
 * the pad is built with permute + concat_channels against a zero tensor. */
#include "vae_impl.h"
#include "formats/json_file.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "formats/safetensors.h"

int vae_errf(char **err, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(err, fmt, ap) < 0) *err = NULL;
    va_end(ap);
  }
  return -1;
}

/* ---- weights ---- */

static int name_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

const struct tensor *vae_w(const struct vae *v, const char *fmt, ...) {
  char name[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  const char *key = name;
  char **hit = bsearch(&key, v->names, v->n_w, sizeof *v->names, name_cmp);
  return hit ? &v->w[hit - v->names] : NULL;
}

/* Legacy attention names -> diffusers' current ones (malloc'd). */
static char *canonical_name(const char *n) {
  static const char *const legacy[][2] = {{".query.", ".to_q."},
                                          {".key.", ".to_k."},
                                          {".value.", ".to_v."},
                                          {".proj_attn.", ".to_out.0."}};
  if (strstr(n, "mid_block.attentions.")) {
    for (size_t i = 0; i < 4; i++) {
      const char *p = strstr(n, legacy[i][0]);
      if (!p) continue;
      size_t pre = (size_t)(p - n), ol = strlen(legacy[i][0]), nl = strlen(legacy[i][1]);
      char *s = malloc(strlen(n) - ol + nl + 1);
      if (!s) return NULL;
      memcpy(s, n, pre);
      memcpy(s + pre, legacy[i][1], nl);
      strcpy(s + pre + nl, p + ol);
      return s;
    }
  }
  return strdup(n);
}

static int is_attn_matrix(const char *n) {
  return strstr(n, "mid_block.attentions.") &&
         (strstr(n, ".to_q.weight") || strstr(n, ".to_k.weight") || strstr(n, ".to_v.weight") ||
          strstr(n, ".to_out.0.weight"));
}

static int upload_weights(struct vae *v, const struct st_file *f, char **err) {
  v->names = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *v->names);
  v->w = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *v->w);
  if (!v->names || !v->w) return vae_errf(err, "vae: out of memory");
  /* names first (sorted), then tensors in that order */
  struct pair {
    char *name;
    const struct st_tensor *t;
  } *p = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *p);
  if (!p) return vae_errf(err, "vae: out of memory");
  for (size_t i = 0; i < f->n_tensors; i++) {
    p[i].name = canonical_name(f->tensors[i].name);
    p[i].t = &f->tensors[i];
    if (!p[i].name) {
      for (size_t k = 0; k < i; k++) free(p[k].name);
      free(p);
      return vae_errf(err, "vae: out of memory");
    }
  }
  qsort(p, f->n_tensors, sizeof *p, name_cmp);
  int rc = 0;
  for (size_t i = 0; i < f->n_tensors; i++) {
    v->names[i] = p[i].name;
    v->n_w = i + 1;
    const struct st_tensor *t = p[i].t;
    if (i > 0 && strcmp(p[i].name, p[i - 1].name) == 0) {
      rc = vae_errf(err, "vae: tensor %s given twice (legacy and new names)", p[i].name);
      continue;
    }
    if (rc < 0) continue;
    int dt = st_dtype_to_dtype(t->dtype);
    if (dt != DT_F32 && dt != DT_F16 && dt != DT_BF16) {
      rc = vae_errf(err, "vae: tensor %s has dtype %s", t->name, st_dtype_name(t->dtype));
      continue;
    }
    int64_t shape[TENSOR_MAX_DIMS];
    int nd = t->ndim;
    if (nd < 1 || nd > TENSOR_MAX_DIMS) {
      rc = vae_errf(err, "vae: tensor %s has %d dims", t->name, nd);
      continue;
    }
    for (int d = 0; d < nd; d++) shape[d] = t->shape[d];
    if (is_attn_matrix(p[i].name) && nd == 4 && shape[2] == 1 && shape[3] == 1) nd = 2;
    if (be_tensor_alloc(v->be, &v->w[i], (enum dtype)dt, nd, shape) < 0 ||
        be_upload(v->be, &v->w[i], t->data, (enum dtype)dt) < 0)
      rc = vae_errf(err, "vae: upload of %s: %s", t->name, be_last_error(v->be));
  }
  free(p);
  return rc;
}

/* Presence and shape of one tensor (d[k] < 0 ends the shape). */
static int expect(const struct vae *v, char **err, const char *name, int64_t d0, int64_t d1,
                  int64_t d2, int64_t d3) {
  const struct tensor *t = vae_w(v, "%s", name);
  int64_t d[4] = {d0, d1, d2, d3};
  int nd = 0;
  while (nd < 4 && d[nd] >= 0) nd++;
  if (!t) return vae_errf(err, "vae: missing tensor %s", name);
  int ok = t->ndim == nd;
  for (int k = 0; ok && k < nd; k++) ok = t->shape[k] == d[k];
  if (!ok) {
    char got[96] = "", want[96] = "";
    for (int k = 0; k < t->ndim; k++)
      snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", k ? "," : "",
               (long long)t->shape[k]);
    for (int k = 0; k < nd; k++)
      snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", k ? "," : "",
               (long long)d[k]);
    return vae_errf(err, "vae: tensor %s has shape [%s], config implies [%s]", name, got, want);
  }
  return 0;
}

static int expect_conv(const struct vae *v, char **err, const char *p, int co, int ci, int k) {
  char n[256];
  snprintf(n, sizeof n, "%s.weight", p);
  if (expect(v, err, n, co, ci, k, k) < 0) return -1;
  snprintf(n, sizeof n, "%s.bias", p);
  return expect(v, err, n, co, -1, -1, -1);
}

static int expect_norm(const struct vae *v, char **err, const char *p, int c) {
  char n[256];
  if (c % v->groups)
    return vae_errf(err, "vae: %s: %d channels not divisible by %d groups", p, c, v->groups);
  snprintf(n, sizeof n, "%s.weight", p);
  if (expect(v, err, n, c, -1, -1, -1) < 0) return -1;
  snprintf(n, sizeof n, "%s.bias", p);
  return expect(v, err, n, c, -1, -1, -1);
}

static int expect_resnet(const struct vae *v, char **err, const char *p, int ci, int co) {
  char n[256];
  snprintf(n, sizeof n, "%s.norm1", p);
  if (expect_norm(v, err, n, ci) < 0) return -1;
  snprintf(n, sizeof n, "%s.conv1", p);
  if (expect_conv(v, err, n, co, ci, 3) < 0) return -1;
  snprintf(n, sizeof n, "%s.norm2", p);
  if (expect_norm(v, err, n, co) < 0) return -1;
  snprintf(n, sizeof n, "%s.conv2", p);
  if (expect_conv(v, err, n, co, co, 3) < 0) return -1;
  snprintf(n, sizeof n, "%s.conv_shortcut", p);
  if (ci != co) return expect_conv(v, err, n, co, ci, 1);
  if (vae_w(v, "%s.weight", n)) return vae_errf(err, "vae: unexpected tensor %s.weight", n);
  return 0;
}

static int expect_mid(const struct vae *v, char **err, const char *side) {
  int c = v->ch[v->nb - 1];
  char n[256];
  for (int r = 0; r < 2; r++) {
    snprintf(n, sizeof n, "%s.mid_block.resnets.%d", side, r);
    if (expect_resnet(v, err, n, c, c) < 0) return -1;
  }
  if (!v->mid_attn) return 0;
  snprintf(n, sizeof n, "%s.mid_block.attentions.0.group_norm", side);
  if (expect_norm(v, err, n, c) < 0) return -1;
  static const char *const lin[] = {"to_q", "to_k", "to_v", "to_out.0"};
  for (int k = 0; k < 4; k++) {
    snprintf(n, sizeof n, "%s.mid_block.attentions.0.%s.weight", side, lin[k]);
    if (expect(v, err, n, c, c, -1, -1) < 0) return -1;
    snprintf(n, sizeof n, "%s.mid_block.attentions.0.%s.bias", side, lin[k]);
    if (expect(v, err, n, c, -1, -1, -1) < 0) return -1;
  }
  return 0;
}

static int check_decoder(const struct vae *v, char **err) {
  char n[256];
  int top = v->ch[v->nb - 1];
  if (v->use_post_quant && expect_conv(v, err, "post_quant_conv", v->lc, v->lc, 1) < 0) return -1;
  if (expect_conv(v, err, "decoder.conv_in", top, v->lc, 3) < 0) return -1;
  if (expect_mid(v, err, "decoder") < 0) return -1;
  int prev = top;
  for (int i = 0; i < v->nb; i++) {
    int out = v->ch[v->nb - 1 - i];
    for (int j = 0; j <= v->layers; j++) {
      snprintf(n, sizeof n, "decoder.up_blocks.%d.resnets.%d", i, j);
      if (expect_resnet(v, err, n, j == 0 ? prev : out, out) < 0) return -1;
    }
    if (i < v->nb - 1) {
      snprintf(n, sizeof n, "decoder.up_blocks.%d.upsamplers.0.conv", i);
      if (expect_conv(v, err, n, out, out, 3) < 0) return -1;
    }
    prev = out;
  }
  if (expect_norm(v, err, "decoder.conv_norm_out", v->ch[0]) < 0) return -1;
  return expect_conv(v, err, "decoder.conv_out", v->out_ch, v->ch[0], 3);
}

static int check_encoder(const struct vae *v, char **err) {
  char n[256];
  if (expect_conv(v, err, "encoder.conv_in", v->ch[0], v->in_ch, 3) < 0) return -1;
  int prev = v->ch[0];
  for (int i = 0; i < v->nb; i++) {
    int out = v->ch[i];
    for (int j = 0; j < v->layers; j++) {
      snprintf(n, sizeof n, "encoder.down_blocks.%d.resnets.%d", i, j);
      if (expect_resnet(v, err, n, j == 0 ? prev : out, out) < 0) return -1;
    }
    if (i < v->nb - 1) {
      snprintf(n, sizeof n, "encoder.down_blocks.%d.downsamplers.0.conv", i);
      if (expect_conv(v, err, n, out, out, 3) < 0) return -1;
    }
    prev = out;
  }
  if (expect_mid(v, err, "encoder") < 0) return -1;
  if (expect_norm(v, err, "encoder.conv_norm_out", v->ch[v->nb - 1]) < 0) return -1;
  if (expect_conv(v, err, "encoder.conv_out", 2 * v->lc, v->ch[v->nb - 1], 3) < 0) return -1;
  if (v->use_quant && expect_conv(v, err, "quant_conv", 2 * v->lc, 2 * v->lc, 1) < 0) return -1;
  return 0;
}

static int json_int(const json_t *cfg, const char *key, int def) {
  const json_t *x = json_object_get(cfg, key);
  return json_is_integer(x) ? (int)json_integer_value(x) : def;
}
static int json_flag(const json_t *cfg, const char *key, int def) {
  const json_t *x = json_object_get(cfg, key);
  return json_is_boolean(x) ? json_is_true(x) : def;
}

static int parse_config(struct vae *v, const json_t *cfg, char **err) {
  v->in_ch = json_int(cfg, "in_channels", 3);
  v->out_ch = json_int(cfg, "out_channels", 3);
  v->lc = json_int(cfg, "latent_channels", 4);
  v->layers = json_int(cfg, "layers_per_block", 1);
  v->groups = json_int(cfg, "norm_num_groups", 32);
  const json_t *sf = json_object_get(cfg, "scaling_factor");
  v->scaling = json_is_number(sf) ? (float)json_number_value(sf) : 0.18215f;
  v->use_quant = json_flag(cfg, "use_quant_conv", 1);
  v->use_post_quant = json_flag(cfg, "use_post_quant_conv", 1);
  v->mid_attn = json_flag(cfg, "mid_block_add_attention", 1);
  const json_t *boc = json_object_get(cfg, "block_out_channels");
  if (!boc) {
    v->nb = 1;
    v->ch[0] = 64; /* AutoencoderKL default (64,) */
  } else {
    if (!json_is_array(boc) || json_array_size(boc) < 1 || json_array_size(boc) > VAE_MAX_BLOCKS)
      return vae_errf(err, "vae: config block_out_channels must be a list of 1..%d ints",
                      VAE_MAX_BLOCKS);
    v->nb = (int)json_array_size(boc);
    for (int i = 0; i < v->nb; i++) {
      const json_t *x = json_array_get(boc, (size_t)i);
      if (!json_is_integer(x) || json_integer_value(x) < 1 || json_integer_value(x) > 65536)
        return vae_errf(err, "vae: config block_out_channels[%d] invalid", i);
      v->ch[i] = (int)json_integer_value(x);
    }
  }
  if (v->in_ch < 1 || v->out_ch < 1 || v->lc < 1 || v->layers < 1 || v->groups < 1 ||
      !(v->scaling > 0) || v->in_ch > 64 || v->out_ch > 64 || v->lc > 1024 || v->layers > 16)
    return vae_errf(err, "vae: config values out of range");
  const char *act = json_string_value(json_object_get(cfg, "act_fn"));
  if (act && strcmp(act, "silu") != 0) return vae_errf(err, "vae: act_fn %s unsupported", act);
  const char *kinds[2][2] = {{"down_block_types", "DownEncoderBlock2D"},
                             {"up_block_types", "UpDecoderBlock2D"}};
  for (int k = 0; k < 2; k++) {
    const json_t *a = json_object_get(cfg, kinds[k][0]);
    size_t i;
    const json_t *x;
    if (a && json_array_size(a) != (size_t)v->nb)
      return vae_errf(err, "vae: %s has %zu entries, block_out_channels %d", kinds[k][0],
                      json_array_size(a), v->nb);
    json_array_foreach(a, i, x) {
      if (!json_is_string(x) || strcmp(json_string_value(x), kinds[k][1]) != 0)
        return vae_errf(err, "vae: %s[%zu] unsupported (only %s)", kinds[k][0], i, kinds[k][1]);
    }
  }
  return 0;
}

int vae_load(const char *dir, struct backend *be, struct vae **out, char **err) {
  return vae_load_file(dir, NULL, be, out, err);
}

int vae_load_file(const char *dir, const char *weights, struct backend *be, struct vae **out,
                  char **err) {
  *out = NULL;
  char path[4096];
  struct st_file *f = NULL;
  json_t *cfg = NULL;
  int rc = -1;
  struct vae *v = calloc(1, sizeof *v);
  if (!v) return vae_errf(err, "vae: out of memory");
  v->be = be;
  snprintf(path, sizeof path, "%s/config.json", dir);
  json_error_t je;
  cfg = json_file_load(path, 0, &je);
  if (!json_is_object(cfg)) {
    vae_errf(err, "vae: config.json: %s", cfg ? "not an object" : je.text);
    goto cleanup;
  }
  if (parse_config(v, cfg, err) < 0) goto cleanup;
  if (weights)
    snprintf(path, sizeof path, "%s", weights);
  else
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
  char *e2 = NULL;
  if (st_open_weights(path, &f, &e2) < 0) {
    const char *base = strrchr(path, '/');
    vae_errf(err, "vae: %s: %s", base ? base + 1 : path, e2 ? e2 : "unreadable");
    free(e2);
    goto cleanup;
  }
  if (upload_weights(v, f, err) < 0 || check_decoder(v, err) < 0) goto cleanup;
  v->has_encoder = vae_w(v, "encoder.conv_in.weight") != NULL;
  if (v->has_encoder && check_encoder(v, err) < 0) goto cleanup;
  rc = 0;
cleanup:
  st_close(f);
  json_decref(cfg);
  if (rc < 0)
    vae_free(v);
  else
    *out = v;
  return rc;
}

void vae_free(struct vae *v) {
  if (!v) return;
  for (size_t i = 0; i < v->n_w; i++) {
    if (v->w && v->w[i].data) be_tensor_free(v->be, &v->w[i]);
    free(v->names[i]);
  }
  free(v->names);
  free(v->w);
  free(v);
}

float vae_scaling_factor(const struct vae *v) {
  return v->scaling;
}
int vae_latent_channels(const struct vae *v) {
  return v->lc;
}
int vae_downscale(const struct vae *v) {
  return 1 << (v->nb - 1);
}
int vae_has_encoder(const struct vae *v) {
  return v->has_encoder;
}
