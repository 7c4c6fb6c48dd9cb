/* unet_config.c: reads a diffusers UNet2DConditionModel config.json into
 * struct unet_config, and lays out the parameter table (every weight's
 * diffusers name and expected shape) from it.
 *
 * Only the SD1.x/SD2.x family is accepted: CrossAttn/plain down and up
 * blocks, the cross-attention mid block, positional time embedding, no
 * class/addition embeddings. Any other value of a field that changes the
 * graph is rejected with a message naming the field, so a model we cannot
 * run exactly is refused at load time, never run approximately.
 * The channel bookkeeping of the up path (resnet input = h + popped skip)
 * is derived by simulating the skip stack, as diffusers' forward does.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unet_impl.h"

char *unet_strf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0) s = NULL;
  va_end(ap);
  return s;
}

static int fail(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(char **err, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    char *m = NULL;
    if (vasprintf(&m, fmt, ap) < 0) m = NULL;
    va_end(ap);
    *err = unet_strf("unet config: %s", m ? m : "out of memory");
    free(m);
  }
  return -1;
}

/* Integer field with a default; -1 on a wrong type. */
static int get_int(const json_t *j, const char *key, int def, int *out) {
  json_t *v = json_object_get(j, key);
  if (!v || json_is_null(v)) {
    *out = def;
    return 0;
  }
  if (json_is_integer(v)) {
    *out = (int)json_integer_value(v);
    return 0;
  }
  if (json_is_real(v) && json_real_value(v) == (double)(int)json_real_value(v)) {
    *out = (int)json_real_value(v);
    return 0;
  }
  return -1;
}

static int get_num(const json_t *j, const char *key, double def, double *out) {
  json_t *v = json_object_get(j, key);
  if (!v || json_is_null(v)) {
    *out = def;
    return 0;
  }
  if (!json_is_number(v)) return -1;
  *out = json_number_value(v);
  return 0;
}

static int get_bool(const json_t *j, const char *key, int def, int *out) {
  json_t *v = json_object_get(j, key);
  if (!v || json_is_null(v)) {
    *out = def;
    return 0;
  }
  if (!json_is_boolean(v)) return -1;
  *out = json_is_true(v);
  return 0;
}

/* The field must be absent/null, or equal to the string `ok`. */
static int str_is(const json_t *j, const char *key, const char *ok) {
  json_t *v = json_object_get(j, key);
  if (!v || json_is_null(v)) return 1;
  return ok && json_is_string(v) && strcmp(json_string_value(v), ok) == 0;
}

/* An int, or a list of n ints, into out[n]. */
static int get_int_or_list(const json_t *v, int n, int *out) {
  if (json_is_integer(v)) {
    for (int i = 0; i < n; i++) out[i] = (int)json_integer_value(v);
    return 0;
  }
  if (!json_is_array(v) || (int)json_array_size(v) != n) return -1;
  for (int i = 0; i < n; i++) {
    json_t *e = json_array_get(v, (size_t)i);
    if (!json_is_integer(e)) return -1;
    out[i] = (int)json_integer_value(e);
  }
  return 0;
}

int unet_config_parse(const json_t *j, struct unet_config *c, char **err) {
  memset(c, 0, sizeof *c);
  if (!json_is_object(j)) return fail(err, "not a JSON object");
  json_t *boc = json_object_get(j, "block_out_channels");
  json_t *downs = json_object_get(j, "down_block_types");
  json_t *ups = json_object_get(j, "up_block_types");
  if (!json_is_array(boc) || json_array_size(boc) < 1 || json_array_size(boc) > UNET_MAX_BLOCKS)
    return fail(err, "block_out_channels must be a list of 1..%d ints", UNET_MAX_BLOCKS);
  int n = (int)json_array_size(boc);
  c->n_blocks = n;
  if (get_int_or_list(boc, n, c->block_out)) return fail(err, "block_out_channels: not ints");
  if (!json_is_array(downs) || (int)json_array_size(downs) != n)
    return fail(err, "down_block_types must list %d blocks", n);
  if (!json_is_array(ups) || (int)json_array_size(ups) != n)
    return fail(err, "up_block_types must list %d blocks", n);
  for (int i = 0; i < n; i++) {
    const char *d = json_string_value(json_array_get(downs, (size_t)i));
    const char *u = json_string_value(json_array_get(ups, (size_t)i));
    if (!d || (strcmp(d, "CrossAttnDownBlock2D") && strcmp(d, "DownBlock2D")))
      return fail(err, "down_block_types[%d] \"%s\" is not supported", i, d ? d : "?");
    if (!u || (strcmp(u, "CrossAttnUpBlock2D") && strcmp(u, "UpBlock2D")))
      return fail(err, "up_block_types[%d] \"%s\" is not supported", i, u ? u : "?");
    c->down_attn[i] = d[0] == 'C';
    c->up_attn[i] = u[0] == 'C';
  }
  double eps, shift;
  if (get_int(j, "in_channels", 4, &c->in_channels) ||
      get_int(j, "out_channels", 4, &c->out_channels) ||
      get_int(j, "sample_size", 64, &c->sample_size) ||
      get_int(j, "layers_per_block", 2, &c->layers_per_block) ||
      get_int(j, "transformer_layers_per_block", 1, &c->transformer_layers) ||
      get_int(j, "cross_attention_dim", 1280, &c->cross_dim) ||
      get_int(j, "norm_num_groups", 32, &c->groups) ||
      get_bool(j, "use_linear_projection", 0, &c->linear_proj) ||
      get_bool(j, "flip_sin_to_cos", 1, &c->flip_sin_to_cos) ||
      get_num(j, "norm_eps", 1e-5, &eps) || get_num(j, "freq_shift", 0, &shift))
    return fail(err, "a field has the wrong type (layers_per_block, transformer_layers_per_block "
                     "and cross_attention_dim must be single integers)");
  c->norm_eps = (float)eps;
  c->freq_shift = (float)shift;
  if (c->layers_per_block < 1 || c->layers_per_block > UNET_MAX_LAYERS)
    return fail(err, "layers_per_block %d out of 1..%d", c->layers_per_block, UNET_MAX_LAYERS);
  if (c->transformer_layers < 1 || c->transformer_layers > UNET_MAX_TLAYERS)
    return fail(err, "transformer_layers_per_block %d out of 1..%d", c->transformer_layers,
                UNET_MAX_TLAYERS);
  if (c->in_channels < 1 || c->out_channels < 1 || c->cross_dim < 1 || c->groups < 1)
    return fail(err, "in/out channels, cross_attention_dim and norm_num_groups must be >= 1");
  for (int i = 0; i < n; i++)
    if (c->block_out[i] < 1 || c->block_out[i] % c->groups)
      return fail(err, "block_out_channels[%d]=%d is not a multiple of norm_num_groups %d", i,
                  c->block_out[i], c->groups);
  c->time_dim = 4 * c->block_out[0];

  /* heads: num_attention_heads, else attention_head_dim (which diffusers
   * reads as the head count for this model family) */
  json_t *h = json_object_get(j, "num_attention_heads");
  if (!h || json_is_null(h)) h = json_object_get(j, "attention_head_dim");
  if (!h || json_is_null(h)) {
    for (int i = 0; i < n; i++) c->heads[i] = 8;
  } else if (get_int_or_list(h, n, c->heads)) {
    return fail(err, "attention_head_dim must be an int or a list of %d ints", n);
  }
  for (int i = 0; i < n; i++)
    if (c->heads[i] < 1 || c->block_out[i] % c->heads[i])
      return fail(err, "block %d: %d channels do not split into %d heads", i, c->block_out[i],
                  c->heads[i]);

  /* graph-changing options: only the SD1/SD2 values */
  int b, v;
  double x;
  static const char *const must_be_null[] = {
      "class_embed_type",   "addition_embed_type", "encoder_hid_dim",       "encoder_hid_dim_type",
      "time_cond_proj_dim", "timestep_post_act",   "time_embedding_act_fn", "time_embedding_dim",
      "num_class_embeds",   "cross_attention_norm"};
  for (size_t i = 0; i < sizeof must_be_null / sizeof *must_be_null; i++) {
    json_t *f = json_object_get(j, must_be_null[i]);
    if (f && !json_is_null(f)) return fail(err, "%s must be null", must_be_null[i]);
  }
  if (!str_is(j, "time_embedding_type", "positional"))
    return fail(err, "time_embedding_type must be \"positional\"");
  if (!str_is(j, "resnet_time_scale_shift", "default"))
    return fail(err, "resnet_time_scale_shift must be \"default\"");
  if (!str_is(j, "mid_block_type", "UNetMidBlock2DCrossAttn"))
    return fail(err, "mid_block_type must be \"UNetMidBlock2DCrossAttn\"");
  if (!str_is(j, "act_fn", "silu")) return fail(err, "act_fn must be \"silu\"");
  if (!str_is(j, "attention_type", "default")) return fail(err, "attention_type must be default");
  static const char *const must_be_false[] = {
      "center_input_sample",  "only_cross_attention",           "dual_cross_attention",
      "resnet_skip_time_act", "mid_block_only_cross_attention", "class_embeddings_concat"};
  for (size_t i = 0; i < sizeof must_be_false / sizeof *must_be_false; i++) {
    json_t *f = json_object_get(j, must_be_false[i]);
    if (f && !json_is_null(f) && (get_bool(j, must_be_false[i], 0, &b) || b))
      return fail(err, "%s must be false", must_be_false[i]);
  }
  if (get_int(j, "conv_in_kernel", 3, &v) || v != 3) return fail(err, "conv_in_kernel must be 3");
  if (get_int(j, "conv_out_kernel", 3, &v) || v != 3) return fail(err, "conv_out_kernel must be 3");
  if (get_int(j, "downsample_padding", 1, &v) || v != 1)
    return fail(err, "downsample_padding must be 1");
  if (get_num(j, "mid_block_scale_factor", 1, &x) || x != 1)
    return fail(err, "mid_block_scale_factor must be 1");
  if (get_num(j, "resnet_out_scale_factor", 1, &x) || x != 1)
    return fail(err, "resnet_out_scale_factor must be 1");
  json_t *r = json_object_get(j, "reverse_transformer_layers_per_block");
  if (r && !json_is_null(r)) return fail(err, "reverse_transformer_layers_per_block must be null");
  return 0;
}

/* ---- parameter table ---- */

static int add(struct unet *u, wslot *slot, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int add(struct unet *u, wslot *slot, int ndim, const int64_t *shape, const char *fmt, ...) {
  if (u->n_params == u->cap_params) {
    int cap = u->cap_params ? 2 * u->cap_params : 256;
    struct unet_param *p = realloc(u->params, (size_t)cap * sizeof *p);
    if (!p) return -1;
    u->params = p;
    u->cap_params = cap;
  }
  struct unet_param *p = &u->params[u->n_params];
  memset(p, 0, sizeof *p);
  va_list ap;
  va_start(ap, fmt);
  int rc = vasprintf(&p->name, fmt, ap);
  va_end(ap);
  if (rc < 0) return -1;
  p->ndim = ndim;
  for (int i = 0; i < ndim; i++) p->shape[i] = shape[i];
  p->slot = slot;
  u->n_params++;
  return 0;
}

/* weight [o, i] (+ bias [o] when b != NULL) */
static int lin(struct unet *u, wslot *w, wslot *b, const char *pre, int64_t o, int64_t i) {
  int64_t sw[2] = {o, i};
  if (add(u, w, 2, sw, "%s.weight", pre)) return -1;
  return b ? add(u, b, 1, &o, "%s.bias", pre) : 0;
}

/* weight [o, i, k, k] + bias [o] */
static int conv(struct unet *u, wslot *w, wslot *b, const char *pre, int64_t o, int64_t i,
                int64_t k) {
  int64_t sw[4] = {o, i, k, k};
  if (add(u, w, 4, sw, "%s.weight", pre)) return -1;
  return add(u, b, 1, &o, "%s.bias", pre);
}

static int norm(struct unet *u, wslot *w, wslot *b, const char *pre, int64_t c) {
  if (add(u, w, 1, &c, "%s.weight", pre)) return -1;
  return add(u, b, 1, &c, "%s.bias", pre);
}

static int resnet(struct unet *u, struct unet_resnet *r, const char *pre, int cin, int cout) {
  char s[160];
  r->cin = cin;
  r->cout = cout;
  int64_t t = u->cfg.time_dim;
#define P(suffix) (snprintf(s, sizeof s, "%s.%s", pre, suffix), s)
  if (norm(u, &r->norm1_w, &r->norm1_b, P("norm1"), cin) ||
      conv(u, &r->conv1_w, &r->conv1_b, P("conv1"), cout, cin, 3) ||
      lin(u, &r->temb_w, &r->temb_b, P("time_emb_proj"), cout, t) ||
      norm(u, &r->norm2_w, &r->norm2_b, P("norm2"), cout) ||
      conv(u, &r->conv2_w, &r->conv2_b, P("conv2"), cout, cout, 3))
    return -1;
  if (cin != cout && conv(u, &r->short_w, &r->short_b, P("conv_shortcut"), cout, cin, 1)) return -1;
  return 0;
}

static int attn(struct unet *u, struct unet_attn *a, const char *pre, int c, int kv_dim) {
  char s[200];
  if (lin(u, &a->q, NULL, P("to_q"), c, c) || lin(u, &a->k, NULL, P("to_k"), c, kv_dim) ||
      lin(u, &a->v, NULL, P("to_v"), c, kv_dim) ||
      lin(u, &a->out_w, &a->out_b, P("to_out.0"), c, c))
    return -1;
  return 0;
}

static int transformer(struct unet *u, struct unet_transformer *t, const char *pre, int c,
                       int heads) {
  char s[200], b[200];
  t->channels = c;
  t->heads = heads;
  t->n_layers = u->cfg.transformer_layers;
  if (norm(u, &t->norm_w, &t->norm_b, P("norm"), c)) return -1;
  if (u->cfg.linear_proj) {
    if (lin(u, &t->proj_in_w, &t->proj_in_b, P("proj_in"), c, c)) return -1;
  } else if (conv(u, &t->proj_in_w, &t->proj_in_b, P("proj_in"), c, c, 1)) {
    return -1;
  }
  for (int l = 0; l < t->n_layers; l++) {
    struct unet_tblock *k = &t->blocks[l];
    snprintf(b, sizeof b, "%s.transformer_blocks.%d", pre, l);
#undef P
#define P(suffix) (snprintf(s, sizeof s, "%s.%s", b, suffix), s)
    if (norm(u, &k->norm1_w, &k->norm1_b, P("norm1"), c) || attn(u, &k->attn1, P("attn1"), c, c) ||
        norm(u, &k->norm2_w, &k->norm2_b, P("norm2"), c) ||
        attn(u, &k->attn2, P("attn2"), c, u->cfg.cross_dim) ||
        norm(u, &k->norm3_w, &k->norm3_b, P("norm3"), c) ||
        lin(u, &k->ff0_w, &k->ff0_b, P("ff.net.0.proj"), 8 * (int64_t)c, c) ||
        lin(u, &k->ff2_w, &k->ff2_b, P("ff.net.2"), c, 4 * (int64_t)c))
      return -1;
#undef P
#define P(suffix) (snprintf(s, sizeof s, "%s.%s", pre, suffix), s)
  }
  if (u->cfg.linear_proj) return lin(u, &t->proj_out_w, &t->proj_out_b, P("proj_out"), c, c);
  return conv(u, &t->proj_out_w, &t->proj_out_b, P("proj_out"), c, c, 1);
}
#undef P

void unet_params_free(struct unet *u) {
  for (int i = 0; i < u->n_params; i++) free(u->params[i].name);
  free(u->params);
  u->params = NULL;
  u->n_params = u->cap_params = 0;
}

int unet_params_build(struct unet *u, char **err) {
  const struct unet_config *c = &u->cfg;
  int n = c->n_blocks, lpb = c->layers_per_block, c0 = c->block_out[0];
  int skip[UNET_MAX_BLOCKS * (UNET_MAX_LAYERS + 1) + 1], ns = 0;
  char pre[96];
  int rc = -1;
  if (conv(u, &u->conv_in_w, &u->conv_in_b, "conv_in", c0, c->in_channels, 3) ||
      lin(u, &u->time1_w, &u->time1_b, "time_embedding.linear_1", c->time_dim, c0) ||
      lin(u, &u->time2_w, &u->time2_b, "time_embedding.linear_2", c->time_dim, c->time_dim))
    goto done;
  int ch = c0;
  skip[ns++] = ch;
  for (int i = 0; i < n; i++) {
    struct unet_down *d = &u->down[i];
    int out = c->block_out[i];
    d->has_attn = c->down_attn[i];
    d->has_down = i < n - 1;
    for (int j = 0; j < lpb; j++) {
      snprintf(pre, sizeof pre, "down_blocks.%d.resnets.%d", i, j);
      if (resnet(u, &d->res[j], pre, ch, out)) goto done;
      ch = out;
      snprintf(pre, sizeof pre, "down_blocks.%d.attentions.%d", i, j);
      if (d->has_attn && transformer(u, &d->attn[j], pre, out, c->heads[i])) goto done;
      skip[ns++] = ch;
    }
    if (d->has_down) {
      snprintf(pre, sizeof pre, "down_blocks.%d.downsamplers.0.conv", i);
      if (conv(u, &d->down_w, &d->down_b, pre, ch, ch, 3)) goto done;
      skip[ns++] = ch;
    }
  }
  if (resnet(u, &u->mid_res[0], "mid_block.resnets.0", ch, ch) ||
      transformer(u, &u->mid_attn, "mid_block.attentions.0", ch, c->heads[n - 1]) ||
      resnet(u, &u->mid_res[1], "mid_block.resnets.1", ch, ch))
    goto done;
  for (int i = 0; i < n; i++) {
    struct unet_up *p = &u->up[i];
    int out = c->block_out[n - 1 - i];
    p->has_attn = c->up_attn[i];
    p->has_up = i < n - 1;
    for (int j = 0; j <= lpb; j++) {
      int s = skip[--ns];
      snprintf(pre, sizeof pre, "up_blocks.%d.resnets.%d", i, j);
      if (resnet(u, &p->res[j], pre, ch + s, out)) goto done;
      ch = out;
      snprintf(pre, sizeof pre, "up_blocks.%d.attentions.%d", i, j);
      if (p->has_attn && transformer(u, &p->attn[j], pre, out, c->heads[n - 1 - i])) goto done;
    }
    if (p->has_up) {
      snprintf(pre, sizeof pre, "up_blocks.%d.upsamplers.0.conv", i);
      if (conv(u, &p->up_w, &p->up_b, pre, ch, ch, 3)) goto done;
    }
  }
  if (norm(u, &u->norm_out_w, &u->norm_out_b, "conv_norm_out", ch) ||
      conv(u, &u->conv_out_w, &u->conv_out_b, "conv_out", c->out_channels, ch, 3))
    goto done;
  rc = 0;
done:
  if (rc && err) *err = unet_strf("unet: out of memory building the parameter table");
  return rc;
}
