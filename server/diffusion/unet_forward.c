/* unet_forward.c: the UNet2DConditionModel forward pass (diffusers order,
 * see reference/sd-inference-digest.md section 2), backend ops only.
 *
 * Ownership: every helper allocates its output and frees its temporaries
 * before returning (also on failure); the caller frees the helper's input
 * when it is dead. The only long-lived activations are the skip stack
 * (conv_in, each down resnet/transformer output, each downsampler output),
 * popped and freed by the up path. Reshapes ([B,H,W,C] <-> [B,HW,C]) are
 * borrowed views (be == NULL) of the same data and are never freed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unet_impl.h"

#define MAX_SKIPS (UNET_MAX_BLOCKS * (UNET_MAX_LAYERS + 1) + 1)

struct fw {
  struct unet *u;
  struct backend *be;
  const struct tensor *ctx; /* [B, L, D] */
  const struct tensor *emb; /* [B, T] = SiLU(time embedding) */
  char where[96];           /* module being run, for error messages */
};

static int alloc4(struct fw *f, struct tensor *t, int ndim, int64_t a, int64_t b, int64_t c,
                  int64_t d) {
  int64_t s[4] = {a, b, c, d};
  return be_tensor_alloc(f->be, t, DT_F32, ndim, s);
}

static void drop(struct fw *f, struct tensor *t) {
  if (t->data && t->be) be_tensor_free(f->be, t);
  memset(t, 0, sizeof *t);
}

static struct tensor view3(const struct tensor *t, int64_t a, int64_t b, int64_t c) {
  int64_t s[3] = {a, b, c};
  return tensor_view(t->dtype, 3, s, t->data);
}

static struct tensor view4(const struct tensor *t, int64_t a, int64_t b, int64_t c, int64_t d) {
  int64_t s[4] = {a, b, c, d};
  return tensor_view(t->dtype, 4, s, t->data);
}

#define CK(x)                                                                                      \
  do {                                                                                             \
    if ((rc = (x)) != 0) goto done;                                                                \
  } while (0)

/* out [B,Cout,H,W] = ResnetBlock2D(x [B,Cin,H,W], emb) */
static int resnet_fwd(struct fw *f, const struct unet_resnet *r, const struct tensor *x,
                      struct tensor *out) {
  struct backend *be = f->be;
  const struct unet_config *c = &f->u->cfg;
  int64_t B = x->shape[0], H = x->shape[2], W = x->shape[3];
  struct tensor a = {0}, h = {0}, tp = {0}, s = {0};
  int rc;
  memset(out, 0, sizeof *out);
  CK(alloc4(f, &a, 4, B, r->cin, H, W));
  CK(be_group_norm(be, &a, x, r->norm1_w, r->norm1_b, c->groups, c->norm_eps, 1));
  CK(alloc4(f, &h, 4, B, r->cout, H, W));
  CK(be_conv2d(be, &h, &a, r->conv1_w, r->conv1_b, 1, 1)); // [B, Cout, H, W]
  drop(f, &a);
  CK(alloc4(f, &tp, 2, B, r->cout, 0, 0));
  CK(be_linear(be, &tp, f->emb, r->temb_w, r->temb_b)); // [B, Cout]
  CK(be_add_channel(be, &h, &h, &tp));
  drop(f, &tp);
  CK(alloc4(f, &a, 4, B, r->cout, H, W));
  CK(be_group_norm(be, &a, &h, r->norm2_w, r->norm2_b, c->groups, c->norm_eps, 1));
  drop(f, &h);
  CK(alloc4(f, out, 4, B, r->cout, H, W));
  CK(be_conv2d(be, out, &a, r->conv2_w, r->conv2_b, 1, 1)); // [B, Cout, H, W]
  drop(f, &a);
  if (r->short_w) {
    CK(alloc4(f, &s, 4, B, r->cout, H, W));
    CK(be_conv2d(be, &s, x, r->short_w, r->short_b, 1, 0)); // [B, Cout, H, W]
    CK(be_add(be, out, out, &s));
  } else {
    CK(be_add(be, out, out, x));
  }
done:
  drop(f, &a);
  drop(f, &h);
  drop(f, &tp);
  drop(f, &s);
  if (rc) drop(f, out);
  return rc;
}

/* out [B,N,C] = to_out(attention(to_q(x), to_k(kv), to_v(kv))) */
static int attn_fwd(struct fw *f, const struct unet_attn *at, int heads, const struct tensor *x,
                    const struct tensor *kv, struct tensor *out) {
  struct backend *be = f->be;
  int64_t B = x->shape[0], N = x->shape[1], C = x->shape[2], L = kv->shape[1];
  struct tensor q = {0}, k = {0}, v = {0}, o = {0};
  int rc;
  memset(out, 0, sizeof *out);
  CK(alloc4(f, &q, 3, B, N, C, 0));
  CK(be_linear(be, &q, x, at->q, NULL)); // [B, N, C]
  CK(alloc4(f, &k, 3, B, L, C, 0));
  CK(be_linear(be, &k, kv, at->k, NULL)); // [B, L, C]
  CK(alloc4(f, &v, 3, B, L, C, 0));
  CK(be_linear(be, &v, kv, at->v, NULL)); // [B, L, C]
  CK(alloc4(f, &o, 3, B, N, C, 0));
  float scale = (float)(1.0 / sqrt((double)(C / heads)));
  CK(be_attention(be, &o, &q, &k, &v, heads, scale, 0)); // [B, N, C]
  drop(f, &q);
  drop(f, &k);
  drop(f, &v);
  CK(alloc4(f, out, 3, B, N, C, 0));
  CK(be_linear(be, out, &o, at->out_w, at->out_b)); // [B, N, C]
done:
  drop(f, &q);
  drop(f, &k);
  drop(f, &v);
  drop(f, &o);
  if (rc) drop(f, out);
  return rc;
}

/* h [B,N,C] += attn1, attn2 (cross), GEGLU feed-forward (BasicTransformerBlock) */
static int tblock_fwd(struct fw *f, const struct unet_tblock *k, int heads, struct tensor *h) {
  struct backend *be = f->be;
  int64_t B = h->shape[0], N = h->shape[1], C = h->shape[2];
  struct tensor n = {0}, a = {0}, g = {0};
  int rc;
  CK(alloc4(f, &n, 3, B, N, C, 0));
  CK(be_layer_norm(be, &n, h, k->norm1_w, k->norm1_b, 1e-5f));
  CK(attn_fwd(f, &k->attn1, heads, &n, &n, &a)); // self-attention
  CK(be_add(be, h, h, &a));
  drop(f, &a);
  CK(be_layer_norm(be, &n, h, k->norm2_w, k->norm2_b, 1e-5f));
  CK(attn_fwd(f, &k->attn2, heads, &n, f->ctx, &a)); // cross-attention
  CK(be_add(be, h, h, &a));
  drop(f, &a);
  CK(be_layer_norm(be, &n, h, k->norm3_w, k->norm3_b, 1e-5f));
  CK(alloc4(f, &a, 3, B, N, 8 * C, 0));
  CK(be_linear(be, &a, &n, k->ff0_w, k->ff0_b)); // [B, N, 8C]
  drop(f, &n);
  CK(alloc4(f, &g, 3, B, N, 4 * C, 0));
  CK(be_geglu(be, &g, &a)); // [B, N, 4C]
  drop(f, &a);
  CK(alloc4(f, &a, 3, B, N, C, 0));
  CK(be_linear(be, &a, &g, k->ff2_w, k->ff2_b)); // [B, N, C]
  CK(be_add(be, h, h, &a));
done:
  drop(f, &n);
  drop(f, &a);
  drop(f, &g);
  return rc;
}

/* out [B,C,H,W] = Transformer2DModel(x [B,C,H,W], ctx) (includes the residual) */
static int transformer_fwd(struct fw *f, const struct unet_transformer *t, const struct tensor *x,
                           struct tensor *out) {
  static const int to_nhwc[4] = {0, 2, 3, 1}, to_nchw[4] = {0, 3, 1, 2};
  struct backend *be = f->be;
  int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
  struct tensor n = {0}, p = {0}, h = {0};
  struct tensor v;
  int rc;
  memset(out, 0, sizeof *out);
  CK(alloc4(f, &n, 4, B, C, H, W));
  CK(be_group_norm(be, &n, x, t->norm_w, t->norm_b, f->u->cfg.groups, 1e-6f, 0));
  if (f->u->cfg.linear_proj) {
    CK(alloc4(f, &p, 4, B, H, W, C));
    CK(be_permute(be, &p, &n, to_nhwc)); // [B, H, W, C]
    drop(f, &n);
    CK(alloc4(f, &h, 3, B, H * W, C, 0));
    v = view3(&p, B, H * W, C);
    CK(be_linear(be, &h, &v, t->proj_in_w, t->proj_in_b)); // [B, HW, C]
    drop(f, &p);
  } else {
    CK(alloc4(f, &p, 4, B, C, H, W));
    CK(be_conv2d(be, &p, &n, t->proj_in_w, t->proj_in_b, 1, 0)); // [B, C, H, W]
    drop(f, &n);
    CK(alloc4(f, &h, 4, B, H, W, C));
    CK(be_permute(be, &h, &p, to_nhwc)); // [B, H, W, C]
    drop(f, &p);
    h.ndim = 3; // [B, HW, C]: same data
    h.shape[1] = H * W;
    h.shape[2] = C;
    h.shape[3] = 0;
  }
  for (int l = 0; l < t->n_layers; l++) CK(tblock_fwd(f, &t->blocks[l], t->heads, &h));
  if (f->u->cfg.linear_proj) {
    CK(alloc4(f, &p, 3, B, H * W, C, 0));
    CK(be_linear(be, &p, &h, t->proj_out_w, t->proj_out_b)); // [B, HW, C]
    drop(f, &h);
    CK(alloc4(f, out, 4, B, C, H, W));
    v = view4(&p, B, H, W, C);
    CK(be_permute(be, out, &v, to_nchw)); // [B, C, H, W]
  } else {
    CK(alloc4(f, &p, 4, B, C, H, W));
    v = view4(&h, B, H, W, C);
    CK(be_permute(be, &p, &v, to_nchw)); // [B, C, H, W]
    drop(f, &h);
    CK(alloc4(f, out, 4, B, C, H, W));
    CK(be_conv2d(be, out, &p, t->proj_out_w, t->proj_out_b, 1, 0)); // [B, C, H, W]
  }
  CK(be_add(be, out, out, x));
done:
  drop(f, &n);
  drop(f, &p);
  drop(f, &h);
  if (rc) drop(f, out);
  return rc;
}

/* emb [B, T] = SiLU(linear_2(SiLU(linear_1(sinusoid(t))))) */
static int time_fwd(struct fw *f, const float *timesteps, int64_t B, struct tensor *emb) {
  struct backend *be = f->be;
  struct unet *u = f->u;
  struct tensor s = {0}, e = {0};
  int rc;
  memset(emb, 0, sizeof *emb);
  int c0 = u->cfg.block_out[0], T = u->cfg.time_dim;
  CK(alloc4(f, &s, 2, B, c0, 0, 0));
  CK(be_timestep_embedding(be, &s, timesteps, c0, u->cfg.flip_sin_to_cos, u->cfg.freq_shift,
                           10000.0f)); // [B, C0]
  CK(alloc4(f, &e, 2, B, T, 0, 0));
  CK(be_linear(be, &e, &s, u->time1_w, u->time1_b)); // [B, T]
  CK(be_unary(be, &e, &e, UNARY_SILU));
  CK(alloc4(f, emb, 2, B, T, 0, 0));
  CK(be_linear(be, emb, &e, u->time2_w, u->time2_b)); // [B, T]
  CK(be_unary(be, emb, emb, UNARY_SILU));             // every resnet uses SiLU(emb)
done:
  drop(f, &s);
  drop(f, &e);
  if (rc) drop(f, emb);
  return rc;
}

static int check_inputs(struct unet *u, const struct tensor *out, const struct tensor *x,
                        const float *t, const struct tensor *ctx, char **err) {
  const struct unet_config *c = &u->cfg;
  if (!u->conv_in_w) {
    *err = unet_strf("unet: no weights bound");
    return -1;
  }
  if (!x || !out || !ctx || !t || x->ndim != 4 || x->shape[1] != c->in_channels ||
      x->shape[0] < 1 || x->shape[2] < 1 || x->shape[3] < 1 || x->dtype != DT_F32) {
    *err = unet_strf("unet: sample must be F32 [B, %d, h, w]", c->in_channels);
    return -1;
  }
  if (out->ndim != 4 || out->shape[0] != x->shape[0] || out->shape[1] != c->out_channels ||
      out->shape[2] != x->shape[2] || out->shape[3] != x->shape[3] || out->dtype != DT_F32) {
    *err = unet_strf("unet: out must be F32 [B, %d, h, w] like the sample", c->out_channels);
    return -1;
  }
  if (ctx->ndim != 3 || ctx->shape[0] != x->shape[0] || ctx->shape[2] != c->cross_dim ||
      ctx->shape[1] < 1 || ctx->dtype != DT_F32) {
    *err = unet_strf("unet: context must be F32 [B, L, %d]", c->cross_dim);
    return -1;
  }
  return 0;
}

int unet_forward(struct unet *u, struct tensor *out, const struct tensor *sample,
                 const float *timesteps, const struct tensor *context, char **err) {
  if (check_inputs(u, out, sample, timesteps, context, err)) return -1;
  struct fw f = {.u = u, .be = u->be, .ctx = context};
  struct backend *be = u->be;
  const struct unet_config *c = &u->cfg;
  int64_t B = sample->shape[0], H = sample->shape[2], W = sample->shape[3];
  struct tensor skips[MAX_SKIPS], emb = {0}, h = {0}, r = {0}, t = {0};
  int ns = 0, rc;
  memset(skips, 0, sizeof skips);

  snprintf(f.where, sizeof f.where, "time_embedding");
  CK(time_fwd(&f, timesteps, B, &emb));
  f.emb = &emb;
  snprintf(f.where, sizeof f.where, "conv_in");
  CK(alloc4(&f, &skips[0], 4, B, c->block_out[0], H, W));
  CK(be_conv2d(be, &skips[0], sample, u->conv_in_w, u->conv_in_b, 1, 1)); // [B, C0, H, W]
  ns = 1;

  for (int i = 0; i < c->n_blocks; i++) {
    const struct unet_down *d = &u->down[i];
    for (int j = 0; j < c->layers_per_block; j++) {
      snprintf(f.where, sizeof f.where, "down_blocks.%d.resnets.%d", i, j);
      CK(resnet_fwd(&f, &d->res[j], &skips[ns - 1], &r)); // [B, Ci, h, w]
      if (d->has_attn) {
        snprintf(f.where, sizeof f.where, "down_blocks.%d.attentions.%d", i, j);
        CK(transformer_fwd(&f, &d->attn[j], &r, &skips[ns]));
        drop(&f, &r);
      } else {
        skips[ns] = r;
        memset(&r, 0, sizeof r);
      }
      ns++;
    }
    if (d->has_down) {
      snprintf(f.where, sizeof f.where, "down_blocks.%d.downsamplers.0", i);
      const struct tensor *x = &skips[ns - 1];
      int64_t ho = (x->shape[2] - 1) / 2 + 1, wo = (x->shape[3] - 1) / 2 + 1;
      CK(alloc4(&f, &skips[ns], 4, B, x->shape[1], ho, wo));
      CK(be_conv2d(be, &skips[ns], x, d->down_w, d->down_b, 2, 1)); // [B, Ci, ceil(h/2), ..]
      ns++;
    }
  }

  snprintf(f.where, sizeof f.where, "mid_block");
  CK(resnet_fwd(&f, &u->mid_res[0], &skips[ns - 1], &r));
  CK(transformer_fwd(&f, &u->mid_attn, &r, &t));
  drop(&f, &r);
  CK(resnet_fwd(&f, &u->mid_res[1], &t, &h));
  drop(&f, &t);

  for (int i = 0; i < c->n_blocks; i++) {
    const struct unet_up *p = &u->up[i];
    for (int j = 0; j <= c->layers_per_block; j++) {
      snprintf(f.where, sizeof f.where, "up_blocks.%d.resnets.%d", i, j);
      struct tensor *s = &skips[--ns];
      CK(alloc4(&f, &t, 4, B, h.shape[1] + s->shape[1], h.shape[2], h.shape[3]));
      CK(be_concat_channels(be, &t, &h, s)); // [B, Ch + Cs, h, w]
      drop(&f, &h);
      drop(&f, s);
      CK(resnet_fwd(&f, &p->res[j], &t, &r));
      drop(&f, &t);
      if (p->has_attn) {
        snprintf(f.where, sizeof f.where, "up_blocks.%d.attentions.%d", i, j);
        CK(transformer_fwd(&f, &p->attn[j], &r, &h));
        drop(&f, &r);
      } else {
        h = r;
        memset(&r, 0, sizeof r);
      }
    }
    if (p->has_up) {
      /* to the next skip's size: 2x, or less when h/w were odd on the way down */
      snprintf(f.where, sizeof f.where, "up_blocks.%d.upsamplers.0", i);
      const struct tensor *s = &skips[ns - 1];
      CK(alloc4(&f, &t, 4, B, h.shape[1], s->shape[2], s->shape[3]));
      CK(be_upsample_nearest(be, &t, &h)); // [B, C, hs, ws]
      drop(&f, &h);
      CK(alloc4(&f, &h, 4, B, t.shape[1], t.shape[2], t.shape[3]));
      CK(be_conv2d(be, &h, &t, p->up_w, p->up_b, 1, 1));
      drop(&f, &t);
    }
  }

  snprintf(f.where, sizeof f.where, "conv_out");
  CK(alloc4(&f, &t, 4, B, h.shape[1], H, W));
  CK(be_group_norm(be, &t, &h, u->norm_out_w, u->norm_out_b, c->groups, c->norm_eps, 1));
  drop(&f, &h);
  CK(be_conv2d(be, out, &t, u->conv_out_w, u->conv_out_b, 1, 1)); // [B, out_ch, H, W]
done:
  if (rc && err) *err = unet_strf("unet: %s: %s", f.where, be_last_error(be));
  for (int i = 0; i < MAX_SKIPS; i++) drop(&f, &skips[i]);
  drop(&f, &emb);
  drop(&f, &h);
  drop(&f, &r);
  drop(&f, &t);
  return rc ? -1 : 0;
}
