/* clip_text.c: CLIPTextModel forward (transformers modeling_clip.py) on any
 * backend.
 *
 *   x = token_embedding[ids] + position_embedding[0..76]          // [B, 77, D]
 *   per layer (pre-LN, causal; no padding mask, as the SD pipeline):
 *     x = x + out_proj(attn(q_proj(ln1(x)), k_proj(.), v_proj(.)))  scale head_dim^-0.5
 *     x = x + fc2(act(fc1(ln2(x))))                                  act per config
 *   last_hidden_state = final_layer_norm(x)
 * With clip_skip = k the walk stops after layer (layers - k), i.e. at
 * hidden_states[-(k+1)], and final_layer_norm is applied to that.
 * Weights are uploaded in their file dtype; keys are accepted with or
 * without the "text_model." prefix (Hub SD checkpoints have it, files saved
 * by transformers 5 do not). Config keys missing from config.json take the
 * CLIPTextConfig defaults; every tensor shape is checked against the config.
 */
#include "clip_text.h"
#include "formats/json_file.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/safetensors.h"

struct clip_layer {
  struct tensor ln1_w, ln1_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b;
  struct tensor ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
};

struct clip_text {
  struct backend *be;
  struct clip_text_config cfg;
  struct tensor tok_emb; /* [V, D] */
  struct tensor pos_emb; /* [P, D] */
  struct clip_layer *layer;
  struct tensor fln_w, fln_b; /* [D] */
  int32_t pos_ids[CLIP_TEXT_SEQ];
};

static char *fmt_err(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0) s = NULL;
  va_end(ap);
  return s;
}

/* ---- config ---- */

static int cfg_int(json_t *cfg, const char *key, int def, int *out, char **err) {
  json_t *v = json_object_get(cfg, key);
  if (!v) {
    *out = def;
    return 0;
  }
  if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > 1 << 24) {
    *err = fmt_err("text_encoder/config.json: %s must be a positive integer", key);
    return -EINVAL;
  }
  *out = (int)json_integer_value(v);
  return 0;
}

static int parse_config(json_t *cfg, struct clip_text_config *c, char **err) {
  int rc;
  /* Defaults of transformers' CLIPTextConfig. */
  if ((rc = cfg_int(cfg, "hidden_size", 512, &c->hidden, err)) ||
      (rc = cfg_int(cfg, "num_hidden_layers", 12, &c->layers, err)) ||
      (rc = cfg_int(cfg, "num_attention_heads", 8, &c->heads, err)) ||
      (rc = cfg_int(cfg, "intermediate_size", 2048, &c->intermediate, err)) ||
      (rc = cfg_int(cfg, "max_position_embeddings", 77, &c->max_positions, err)) ||
      (rc = cfg_int(cfg, "vocab_size", 49408, &c->vocab, err)))
    return rc;
  json_t *eps = json_object_get(cfg, "layer_norm_eps");
  c->eps = 1e-5f;
  if (eps) {
    if (!json_is_number(eps) || json_number_value(eps) <= 0) {
      *err = fmt_err("text_encoder/config.json: layer_norm_eps must be a positive number");
      return -EINVAL;
    }
    c->eps = (float)json_number_value(eps);
  }
  json_t *act = json_object_get(cfg, "hidden_act");
  const char *a = act ? json_string_value(act) : "quick_gelu";
  if (!a) a = "";
  if (strcmp(a, "quick_gelu") == 0)
    c->act = UNARY_QUICK_GELU;
  else if (strcmp(a, "gelu") == 0)
    c->act = UNARY_GELU;
  else if (strcmp(a, "gelu_new") == 0 || strcmp(a, "gelu_pytorch_tanh") == 0)
    c->act = UNARY_GELU_TANH;
  else {
    *err = fmt_err("text_encoder/config.json: unsupported hidden_act \"%s\"", a);
    return -EINVAL;
  }
  if (c->hidden % c->heads) {
    *err = fmt_err("text_encoder/config.json: hidden_size %d is not a multiple of %d heads",
                   c->hidden, c->heads);
    return -EINVAL;
  }
  if (c->max_positions < CLIP_TEXT_SEQ) {
    *err = fmt_err("text_encoder/config.json: max_position_embeddings %d < %d", c->max_positions,
                   CLIP_TEXT_SEQ);
    return -EINVAL;
  }
  return 0;
}

/* ---- weights ---- */

/* Finds name (with or without "text_model."), checks dtype and shape, and
 * uploads it in its own dtype. */
static int load_tensor(struct clip_text *m, const struct st_file *f, const char *name, int ndim,
                       int64_t d0, int64_t d1, struct tensor *t, char **err) {
  char key[256];
  snprintf(key, sizeof key, "text_model.%s", name);
  const struct st_tensor *st = st_find(f, key);
  if (!st) st = st_find(f, name);
  if (!st) {
    *err = fmt_err("text_encoder/model.safetensors: missing tensor %s", name);
    return -EINVAL;
  }
  int dt = st_dtype_to_dtype(st->dtype);
  if (dt != DT_F32 && dt != DT_F16 && dt != DT_BF16) {
    *err = fmt_err("text_encoder/model.safetensors: %s has dtype %s (want F32, F16 or BF16)", name,
                   st_dtype_name(st->dtype));
    return -EINVAL;
  }
  int64_t want[2] = {d0, d1};
  int ok = st->ndim == ndim;
  for (int i = 0; ok && i < ndim; i++) ok = st->shape[i] == want[i];
  if (!ok) {
    *err = fmt_err("text_encoder/model.safetensors: %s has shape [%lld%s%lld] but config.json "
                   "implies [%lld%s%lld]",
                   name, (long long)st->shape[0], st->ndim > 1 ? ", " : "",
                   st->ndim > 1 ? (long long)st->shape[1] : 0LL, (long long)d0,
                   ndim > 1 ? ", " : "", ndim > 1 ? (long long)d1 : 0LL);
    return -EINVAL;
  }
  int rc = be_tensor_alloc(m->be, t, (enum dtype)dt, ndim, want);
  if (rc == 0) rc = be_upload(m->be, t, st->data, (enum dtype)dt);
  if (rc) {
    *err = fmt_err("text encoder: uploading %s: %s", name, be_last_error(m->be));
    return rc;
  }
  return 0;
}

static void free_tensor(struct backend *be, struct tensor *t) {
  if (t->data && t->be) be_tensor_free(be, t);
  memset(t, 0, sizeof *t);
}

static int load_layer(struct clip_text *m, const struct st_file *f, int i, char **err) {
  const int64_t D = m->cfg.hidden, I = m->cfg.intermediate;
  struct clip_layer *L = &m->layer[i];
  struct {
    const char *name;
    int ndim;
    int64_t d0, d1;
    struct tensor *t;
  } spec[] = {
      {"layer_norm1.weight", 1, D, 0, &L->ln1_w},
      {"layer_norm1.bias", 1, D, 0, &L->ln1_b},
      {"self_attn.q_proj.weight", 2, D, D, &L->q_w},
      {"self_attn.q_proj.bias", 1, D, 0, &L->q_b},
      {"self_attn.k_proj.weight", 2, D, D, &L->k_w},
      {"self_attn.k_proj.bias", 1, D, 0, &L->k_b},
      {"self_attn.v_proj.weight", 2, D, D, &L->v_w},
      {"self_attn.v_proj.bias", 1, D, 0, &L->v_b},
      {"self_attn.out_proj.weight", 2, D, D, &L->o_w},
      {"self_attn.out_proj.bias", 1, D, 0, &L->o_b},
      {"layer_norm2.weight", 1, D, 0, &L->ln2_w},
      {"layer_norm2.bias", 1, D, 0, &L->ln2_b},
      {"mlp.fc1.weight", 2, I, D, &L->fc1_w},
      {"mlp.fc1.bias", 1, I, 0, &L->fc1_b},
      {"mlp.fc2.weight", 2, D, I, &L->fc2_w},
      {"mlp.fc2.bias", 1, D, 0, &L->fc2_b},
  };
  for (size_t k = 0; k < sizeof spec / sizeof *spec; k++) {
    char name[160];
    snprintf(name, sizeof name, "encoder.layers.%d.%s", i, spec[k].name);
    int rc = load_tensor(m, f, name, spec[k].ndim, spec[k].d0, spec[k].d1, spec[k].t, err);
    if (rc) return rc;
  }
  return 0;
}

static int read_config(const char *dir, struct clip_text_config *c, char **err) {
  char *path = fmt_err("%s/config.json", dir);
  if (!path) return -ENOMEM;
  json_error_t je;
  json_t *cfg = json_file_load(path, 0, &je);
  free(path);
  if (!cfg || !json_is_object(cfg)) {
    *err = fmt_err("text_encoder/config.json: %s", cfg ? "not a JSON object" : je.text);
    json_decref(cfg);
    return -EINVAL;
  }
  int rc = parse_config(cfg, c, err);
  json_decref(cfg);
  return rc;
}

int clip_text_load(const char *dir, struct backend *be, struct clip_text **out, char **err) {
  return clip_text_load_file(dir, NULL, be, out, err);
}

int clip_text_load_file(const char *dir, const char *weights, struct backend *be,
                        struct clip_text **out, char **err) {
  *out = NULL;
  *err = NULL;
  struct st_file *f = NULL;
  char *path = NULL;
  int rc = -ENOMEM;
  struct clip_text *m = calloc(1, sizeof *m);
  if (!m) goto fail;
  m->be = be;
  if ((rc = read_config(dir, &m->cfg, err))) goto fail;
  const struct clip_text_config *c = &m->cfg;
  rc = -ENOMEM;
  if (!(m->layer = calloc((size_t)c->layers, sizeof *m->layer))) goto fail;
  if (!(path = weights ? fmt_err("%s", weights) : fmt_err("%s/model.safetensors", dir))) goto fail;
  if ((rc = st_open_weights(path, &f, err))) goto fail;
  /* More layers in the file than in the config would be silently ignored:
   * refuse instead (config and weights must agree). */
  char probe[96];
  snprintf(probe, sizeof probe, "encoder.layers.%d.layer_norm1.weight", c->layers);
  char probe2[128];
  snprintf(probe2, sizeof probe2, "text_model.%s", probe);
  if (st_find(f, probe) || st_find(f, probe2)) {
    *err = fmt_err("text_encoder/model.safetensors has more than num_hidden_layers=%d layers",
                   c->layers);
    rc = -EINVAL;
    goto fail;
  }
  if ((rc = load_tensor(m, f, "embeddings.token_embedding.weight", 2, c->vocab, c->hidden,
                        &m->tok_emb, err)) ||
      (rc = load_tensor(m, f, "embeddings.position_embedding.weight", 2, c->max_positions,
                        c->hidden, &m->pos_emb, err)) ||
      (rc = load_tensor(m, f, "final_layer_norm.weight", 1, c->hidden, 0, &m->fln_w, err)) ||
      (rc = load_tensor(m, f, "final_layer_norm.bias", 1, c->hidden, 0, &m->fln_b, err)))
    goto fail;
  for (int i = 0; i < c->layers; i++)
    if ((rc = load_layer(m, f, i, err))) goto fail;
  for (int i = 0; i < CLIP_TEXT_SEQ; i++) m->pos_ids[i] = i;
  st_close(f);
  free(path);
  *out = m;
  return 0;
fail:
  if (!*err) *err = fmt_err("text encoder: out of memory");
  st_close(f);
  free(path);
  clip_text_free(m);
  return rc;
}

void clip_text_free(struct clip_text *m) {
  if (!m) return;
  struct backend *be = m->be;
  free_tensor(be, &m->tok_emb);
  free_tensor(be, &m->pos_emb);
  free_tensor(be, &m->fln_w);
  free_tensor(be, &m->fln_b);
  if (m->layer)
    for (int i = 0; i < m->cfg.layers; i++) {
      /* struct clip_layer is only struct tensor members: walk it as an array. */
      struct tensor *t = (struct tensor *)&m->layer[i];
      for (size_t k = 0; k < sizeof m->layer[i] / sizeof *t; k++) free_tensor(be, &t[k]);
    }
  free(m->layer);
  free(m);
}

const struct clip_text_config *clip_text_config(const struct clip_text *m) {
  return &m->cfg;
}
int clip_text_hidden_size(const struct clip_text *m) {
  return m->cfg.hidden;
}

/* ---- forward ---- */

int clip_text_forward(struct clip_text *m, struct tensor *out, const int32_t *ids, int B,
                      int clip_skip, char **err) {
  struct backend *be = m->be;
  const struct clip_text_config *c = &m->cfg;
  const int64_t L = CLIP_TEXT_SEQ, D = c->hidden;
  *err = NULL;
  if (B <= 0 || !ids || clip_skip < 0 || clip_skip > c->layers) {
    *err = fmt_err("clip_text_forward: bad arguments (B=%d, clip_skip=%d of %d layers)", B,
                   clip_skip, c->layers);
    return -EINVAL;
  }
  if (!out || out->dtype != DT_F32 || out->ndim != 3 || out->shape[0] != B || out->shape[1] != L ||
      out->shape[2] != D) {
    *err = fmt_err("clip_text_forward: out must be F32 [%d, %lld, %lld]", B, (long long)L,
                   (long long)D);
    return -EINVAL;
  }
  for (int64_t i = 0; i < B * L; i++)
    if (ids[i] < 0 || ids[i] >= c->vocab) {
      *err = fmt_err("clip_text_forward: token id %d out of range", ids[i]);
      return -EINVAL;
    }
  const int64_t sd[3] = {B, L, D}, si[3] = {B, L, c->intermediate};
  struct tensor x = {0}, h = {0}, q = {0}, k = {0}, v = {0}, a = {0}, f = {0};
  struct tensor *acts[] = {&x, &h, &q, &k, &v, &a};
  int32_t *pos = malloc((size_t)(B * L) * sizeof *pos);
  int rc = -ENOMEM;
  if (!pos) goto cleanup;
  for (int64_t i = 0; i < B * L; i++) pos[i] = m->pos_ids[i % L];
  for (size_t i = 0; i < sizeof acts / sizeof *acts; i++)
    if ((rc = be_tensor_alloc(be, acts[i], DT_F32, 3, sd))) goto cleanup;
  if ((rc = be_tensor_alloc(be, &f, DT_F32, 3, si))) goto cleanup;

  /* Embeddings. */
  if ((rc = be_embedding(be, &x, ids, &m->tok_emb)) || // x [B, L, D]
      (rc = be_embedding(be, &h, pos, &m->pos_emb)) || // h [B, L, D]
      (rc = be_add(be, &x, &x, &h)))
    goto cleanup;

  const float scale = 1.0f / sqrtf((float)(D / c->heads));
  for (int i = 0; i < c->layers - clip_skip; i++) {
    const struct clip_layer *l = &m->layer[i];
    /* Self-attention block. */
    if ((rc = be_layer_norm(be, &h, &x, &l->ln1_w, &l->ln1_b, c->eps)) || // h [B, L, D]
        (rc = be_linear(be, &q, &h, &l->q_w, &l->q_b)) ||                 // q [B, L, D]
        (rc = be_linear(be, &k, &h, &l->k_w, &l->k_b)) ||                 // k [B, L, D]
        (rc = be_linear(be, &v, &h, &l->v_w, &l->v_b)) ||                 // v [B, L, D]
        (rc = be_attention(be, &a, &q, &k, &v, c->heads, scale, 1)) ||    // a [B, L, D]
        (rc = be_linear(be, &h, &a, &l->o_w, &l->o_b)) ||                 // h [B, L, D]
        (rc = be_add(be, &x, &x, &h)))
      goto cleanup;
    /* MLP block. */
    if ((rc = be_layer_norm(be, &h, &x, &l->ln2_w, &l->ln2_b, c->eps)) || // h [B, L, D]
        (rc = be_linear(be, &f, &h, &l->fc1_w, &l->fc1_b)) ||             // f [B, L, I]
        (rc = be_unary(be, &f, &f, c->act)) ||                            // f [B, L, I]
        (rc = be_linear(be, &h, &f, &l->fc2_w, &l->fc2_b)) ||             // h [B, L, D]
        (rc = be_add(be, &x, &x, &h)))
      goto cleanup;
  }
  rc = be_layer_norm(be, out, &x, &m->fln_w, &m->fln_b, c->eps); // out [B, L, D]

cleanup:
  if (rc && !*err)
    *err = rc == -ENOMEM && !pos ? fmt_err("text encoder: out of memory")
                                 : fmt_err("text encoder: %s", be_last_error(be));
  free(pos);
  free_tensor(be, &f);
  for (size_t i = 0; i < sizeof acts / sizeof *acts; i++) free_tensor(be, acts[i]);
  return rc;
}
