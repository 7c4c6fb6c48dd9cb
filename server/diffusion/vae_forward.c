/* vae_forward.c: AutoencoderKL decode and encode as sequences of backend
 * ops, plus the 8-bit RGB conversion of the reference pipeline.
 * Every helper allocates its output activation (F32, NCHW) and frees it
 * again on failure, so a failed pass leaks nothing. Activations that are
 * reshaped ([N, H*W, C] <-> [N, H, W, C]) are borrowed views of one
 * allocation; only the owner is freed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vae_impl.h"

typedef struct tensor T;

static int act(struct vae *v, T *t, int nd, int64_t a, int64_t b, int64_t c, int64_t d) {
  int64_t s[4] = {a, b, c, d};
  memset(t, 0, sizeof *t);
  if (be_tensor_alloc(v->be, t, DT_F32, nd, s) < 0) {
    memset(t, 0, sizeof *t);
    return -1;
  }
  return 0;
}

static void drop(struct vae *v, T *t) {
  if (t->data) be_tensor_free(v->be, t);
  memset(t, 0, sizeof *t);
}

/* Finishes a helper: on failure frees out. */
static int done(struct vae *v, T *out, int rc) {
  if (rc < 0) drop(v, out);
  return rc < 0 ? -1 : 0;
}

/* out = conv(x) with <p>.weight [Co, Ci, k, k] and <p>.bias. */
static int conv(struct vae *v, T *out, const T *x, const char *p, int stride, int pad) {
  const T *w = vae_w(v, "%s.weight", p), *b = vae_w(v, "%s.bias", p);
  int64_t k = w->shape[2];
  int64_t ho = (x->shape[2] + 2 * pad - k) / stride + 1;
  int64_t wo = (x->shape[3] + 2 * pad - k) / stride + 1;
  if (act(v, out, 4, x->shape[0], w->shape[0], ho, wo) < 0) return -1;
  return done(v, out, be_conv2d(v->be, out, x, w, b, stride, pad));
}

/* out = GroupNorm(groups, eps 1e-6)(x) with <p>.weight/.bias, then SiLU if silu. */
static int gnorm(struct vae *v, T *out, const T *x, const char *p, int silu) {
  const T *g = vae_w(v, "%s.weight", p), *b = vae_w(v, "%s.bias", p);
  if (act(v, out, 4, x->shape[0], x->shape[1], x->shape[2], x->shape[3]) < 0) return -1;
  return done(v, out, be_group_norm(v->be, out, x, g, b, v->groups, VAE_EPS, silu));
}

/* ResnetBlock2D without time embedding [N, Ci, H, W] -> [N, Co, H, W]. */
static int resnet(struct vae *v, T *out, const T *x, const char *p) {
  char n[320];
  T a, b, sc = {0};
  int rc = -1;
  memset(out, 0, sizeof *out);
  snprintf(n, sizeof n, "%s.norm1", p);
  if (gnorm(v, &a, x, n, 1) < 0) return -1;
  snprintf(n, sizeof n, "%s.conv1", p);
  rc = conv(v, &b, &a, n, 1, 1); /* [N, Co, H, W] */
  drop(v, &a);
  if (rc < 0) return -1;
  snprintf(n, sizeof n, "%s.norm2", p);
  rc = gnorm(v, &a, &b, n, 1);
  drop(v, &b);
  if (rc < 0) return -1;
  snprintf(n, sizeof n, "%s.conv2", p);
  rc = conv(v, out, &a, n, 1, 1); /* [N, Co, H, W] */
  drop(v, &a);
  if (rc < 0) return -1;
  snprintf(n, sizeof n, "%s.conv_shortcut", p);
  if (vae_w(v, "%s.weight", n)) {
    if (conv(v, &sc, x, n, 1, 0) < 0) return done(v, out, -1); /* [N, Co, H, W] */
    rc = be_add(v->be, out, out, &sc);
    drop(v, &sc);
  } else {
    rc = be_add(v->be, out, out, x);
  }
  return done(v, out, rc);
}

/* Single-head self-attention with GroupNorm and residual, [N, C, H, W]. */
static int attention(struct vae *v, T *out, const T *x, const char *p) {
  char n[320];
  int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], L = H * W;
  T g, tok, q = {0}, k = {0}, val = {0}, a = {0}, o = {0};
  int rc = -1;
  memset(out, 0, sizeof *out);
  snprintf(n, sizeof n, "%s.group_norm", p);
  if (gnorm(v, &g, x, n, 0) < 0) return -1;
  static const int to_nhwc[4] = {0, 2, 3, 1}, to_nchw[4] = {0, 3, 1, 2};
  if (act(v, &tok, 4, N, H, W, C) < 0) goto fail; /* [N, H, W, C] */
  if (be_permute(v->be, &tok, &g, to_nhwc) < 0) goto fail;
  drop(v, &g);
  T tv = tok; /* view [N, L, C] */
  tv.ndim = 3;
  tv.shape[1] = L;
  tv.shape[2] = C;
  tv.shape[3] = 0;
  tv.be = NULL;
  const char *lin[3] = {"to_q", "to_k", "to_v"};
  T *dst[3] = {&q, &k, &val};
  for (int i = 0; i < 3; i++) {
    if (act(v, dst[i], 3, N, L, C, 0) < 0) goto fail; /* [N, L, C] */
    if (be_linear(v->be, dst[i], &tv, vae_w(v, "%s.%s.weight", p, lin[i]),
                  vae_w(v, "%s.%s.bias", p, lin[i])) < 0)
      goto fail;
  }
  drop(v, &tok);
  if (act(v, &a, 3, N, L, C, 0) < 0) goto fail; /* [N, L, C] */
  if (be_attention(v->be, &a, &q, &k, &val, 1, (float)(1.0 / sqrt((double)C)), 0) < 0) goto fail;
  drop(v, &q);
  drop(v, &k);
  drop(v, &val);
  if (act(v, &o, 3, N, L, C, 0) < 0) goto fail; /* [N, L, C] */
  if (be_linear(v->be, &o, &a, vae_w(v, "%s.to_out.0.weight", p), vae_w(v, "%s.to_out.0.bias", p)) <
      0)
    goto fail;
  drop(v, &a);
  T ov = o; /* view [N, H, W, C] */
  ov.ndim = 4;
  ov.shape[1] = H;
  ov.shape[2] = W;
  ov.shape[3] = C;
  ov.be = NULL;
  if (act(v, out, 4, N, C, H, W) < 0) goto fail;
  if (be_permute(v->be, out, &ov, to_nchw) < 0) goto fail;
  drop(v, &o);
  rc = be_add(v->be, out, out, x); /* residual */
  return done(v, out, rc);
fail:
  drop(v, &g);
  drop(v, &tok);
  drop(v, &q);
  drop(v, &k);
  drop(v, &val);
  drop(v, &a);
  drop(v, &o);
  return done(v, out, -1);
}

/* Upsample2D: nearest 2x then 3x3 conv. */
static int upsample(struct vae *v, T *out, const T *x, const char *p) {
  T up;
  char n[320];
  memset(out, 0, sizeof *out);
  if (act(v, &up, 4, x->shape[0], x->shape[1], 2 * x->shape[2], 2 * x->shape[3]) < 0) return -1;
  int rc = be_upsample_nearest(v->be, &up, x);
  snprintf(n, sizeof n, "%s.conv", p);
  if (rc >= 0) rc = conv(v, out, &up, n, 1, 1);
  drop(v, &up);
  return rc;
}

/* out = cat(x [N, A, B, C], zeros [N, 1, B, C]) on dim 1. */
static int pad_dim1(struct vae *v, T *out, const T *x) {
  int64_t N = x->shape[0], A = x->shape[1], B = x->shape[2], C = x->shape[3];
  T z;
  if (act(v, &z, 4, N, 1, B, C) < 0) return -1;
  float *host = calloc((size_t)(N * B * C), sizeof *host);
  int rc = host ? be_upload(v->be, &z, host, DT_F32) : -1;
  free(host);
  if (rc >= 0) rc = act(v, out, 4, N, A + 1, B, C);
  if (rc >= 0) rc = be_concat_channels(v->be, out, x, &z);
  drop(v, &z);
  return done(v, out, rc);
}

/* Downsample2D(padding=0): F.pad(x, (0, 1, 0, 1)) then 3x3 conv stride 2, pad 0.
 * The pad: [N,C,H,W] -> [N,H,C,W] +row -> [N,W,C,H+1] +col -> [N,C,H+1,W+1]. */
static int downsample(struct vae *v, T *out, const T *x, const char *p) {
  static const int p1[4] = {0, 2, 1, 3}, p2[4] = {0, 3, 2, 1}, p3[4] = {0, 2, 3, 1};
  int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
  T a = {0}, b = {0};
  char n[320];
  int rc = -1;
  memset(out, 0, sizeof *out);
  if (act(v, &a, 4, N, H, C, W) < 0 || be_permute(v->be, &a, x, p1) < 0) goto end;
  if (pad_dim1(v, &b, &a) < 0) goto end; /* [N, H+1, C, W] */
  drop(v, &a);
  if (act(v, &a, 4, N, W, C, H + 1) < 0 || be_permute(v->be, &a, &b, p2) < 0) goto end;
  drop(v, &b);
  if (pad_dim1(v, &b, &a) < 0) goto end; /* [N, W+1, C, H+1] */
  drop(v, &a);
  if (act(v, &a, 4, N, C, H + 1, W + 1) < 0 || be_permute(v->be, &a, &b, p3) < 0) goto end;
  drop(v, &b);
  snprintf(n, sizeof n, "%s.conv", p);
  rc = conv(v, out, &a, n, 2, 0);
end:
  drop(v, &a);
  drop(v, &b);
  return done(v, out, rc);
}

/* Replaces cur by the result of a helper writing into nx_. */
#define STEP(call)                                                                                 \
  do {                                                                                             \
    T nx_;                                                                                         \
    memset(&nx_, 0, sizeof nx_);                                                                   \
    int rc_ = (call);                                                                              \
    drop(v, &cur);                                                                                 \
    cur = nx_;                                                                                     \
    if (rc_ < 0) goto fail;                                                                        \
  } while (0)

static int mid_block(struct vae *v, T *cur_io, const char *side) {
  char n[256];
  T cur = *cur_io;
  snprintf(n, sizeof n, "%s.mid_block.resnets.0", side);
  STEP(resnet(v, &nx_, &cur, n));
  if (v->mid_attn) {
    snprintf(n, sizeof n, "%s.mid_block.attentions.0", side);
    STEP(attention(v, &nx_, &cur, n));
  }
  snprintf(n, sizeof n, "%s.mid_block.resnets.1", side);
  STEP(resnet(v, &nx_, &cur, n));
  *cur_io = cur;
  return 0;
fail:
  *cur_io = cur;
  return -1;
}

static int shape_is(const T *t, int64_t a, int64_t b, int64_t c, int64_t d) {
  return t && t->ndim == 4 && t->dtype == DT_F32 && t->shape[0] == a && t->shape[1] == b &&
         t->shape[2] == c && t->shape[3] == d;
}

int vae_decode(struct vae *v, struct tensor *out, const struct tensor *latents, char **err) {
  char n[256];
  int64_t s = vae_downscale(v);
  if (!latents || latents->ndim != 4 || latents->dtype != DT_F32 || latents->shape[1] != v->lc)
    return vae_errf(err, "vae: decode wants F32 latents [B, %d, h, w]", v->lc);
  int64_t B = latents->shape[0], h = latents->shape[2], w = latents->shape[3];
  if (!shape_is(out, B, v->out_ch, h * s, w * s))
    return vae_errf(err, "vae: decode output must be F32 [%lld, %d, %lld, %lld]", (long long)B,
                    v->out_ch, (long long)(h * s), (long long)(w * s));
  T cur;
  if (act(v, &cur, 4, B, v->lc, h, w) < 0) goto fail; /* [B, Lc, h, w] */
  if (be_axpby(v->be, &cur, 1.0f / v->scaling, latents, 0.0f, NULL) < 0) goto fail;
  if (v->use_post_quant) STEP(conv(v, &nx_, &cur, "post_quant_conv", 1, 0));
  STEP(conv(v, &nx_, &cur, "decoder.conv_in", 1, 1)); /* [B, ch[-1], h, w] */
  if (mid_block(v, &cur, "decoder") < 0) goto fail;
  for (int i = 0; i < v->nb; i++) {
    for (int j = 0; j <= v->layers; j++) {
      snprintf(n, sizeof n, "decoder.up_blocks.%d.resnets.%d", i, j);
      STEP(resnet(v, &nx_, &cur, n));
    }
    if (i < v->nb - 1) {
      snprintf(n, sizeof n, "decoder.up_blocks.%d.upsamplers.0", i);
      STEP(upsample(v, &nx_, &cur, n)); /* [B, C, 2H, 2W] */
    }
  }
  STEP(gnorm(v, &nx_, &cur, "decoder.conv_norm_out", 1));
  if (be_conv2d(v->be, out, &cur, vae_w(v, "decoder.conv_out.weight"),
                vae_w(v, "decoder.conv_out.bias"), 1, 1) < 0)
    goto fail; /* [B, 3, H, W] */
  drop(v, &cur);
  return 0;
fail:
  drop(v, &cur);
  return vae_errf(err, "vae: decode failed: %s", be_last_error(v->be));
}

int vae_encode(struct vae *v, struct tensor *mean, struct tensor *logvar,
               const struct tensor *image, char **err) {
  char n[256];
  if (!v->has_encoder) return vae_errf(err, "vae: this VAE has no encoder weights");
  if (!image || image->ndim != 4 || image->dtype != DT_F32 || image->shape[1] != v->in_ch)
    return vae_errf(err, "vae: encode wants an F32 image [B, %d, H, W]", v->in_ch);
  int64_t B = image->shape[0], h = image->shape[2], w = image->shape[3];
  for (int i = 0; i < v->nb - 1; i++) { /* each downsampler: (x + 1 - 3) / 2 + 1 */
    h = (h - 2) / 2 + 1;
    w = (w - 2) / 2 + 1;
  }
  if (h < 1 || w < 1 || !shape_is(mean, B, v->lc, h, w) ||
      (logvar && !shape_is(logvar, B, v->lc, h, w)))
    return vae_errf(err, "vae: encode outputs must be F32 [%lld, %d, %lld, %lld]", (long long)B,
                    v->lc, (long long)h, (long long)w);
  T cur = {0};
  float *host = NULL;
  STEP(conv(v, &nx_, image, "encoder.conv_in", 1, 1)); /* [B, ch[0], H, W] */
  for (int i = 0; i < v->nb; i++) {
    for (int j = 0; j < v->layers; j++) {
      snprintf(n, sizeof n, "encoder.down_blocks.%d.resnets.%d", i, j);
      STEP(resnet(v, &nx_, &cur, n));
    }
    if (i < v->nb - 1) {
      snprintf(n, sizeof n, "encoder.down_blocks.%d.downsamplers.0", i);
      STEP(downsample(v, &nx_, &cur, n)); /* [B, C, H/2, W/2] */
    }
  }
  if (mid_block(v, &cur, "encoder") < 0) goto fail;
  STEP(gnorm(v, &nx_, &cur, "encoder.conv_norm_out", 1));
  STEP(conv(v, &nx_, &cur, "encoder.conv_out", 1, 1)); /* [B, 2 Lc, h, w] */
  if (v->use_quant) STEP(conv(v, &nx_, &cur, "quant_conv", 1, 0));
  if (be_slice(v->be, mean, &cur, 1, 0) < 0) goto fail; /* [B, Lc, h, w] */
  if (logvar) {
    if (be_slice(v->be, logvar, &cur, 1, v->lc) < 0) goto fail;
    size_t cnt = (size_t)tensor_numel(logvar);
    host = malloc(cnt * sizeof *host);
    if (!host || be_download_f32(v->be, logvar, host) < 0) goto fail;
    for (size_t i = 0; i < cnt; i++) host[i] = fminf(fmaxf(host[i], -30.0f), 20.0f);
    if (be_upload(v->be, logvar, host, DT_F32) < 0) goto fail;
    free(host);
  }
  drop(v, &cur);
  return 0;
fail:
  free(host);
  drop(v, &cur);
  return vae_errf(err, "vae: encode failed: %s", be_last_error(v->be));
}

void vae_image_to_rgb8(const float *img, int batch, int height, int width, uint8_t *rgb) {
  size_t plane = (size_t)height * (size_t)width;
  for (int b = 0; b < batch; b++)
    for (size_t i = 0; i < plane; i++)
      for (int c = 0; c < 3; c++) {
        float x = img[((size_t)b * 3 + (size_t)c) * plane + i] * 0.5f + 0.5f;
        x = x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; /* NaN -> 0 */
        rgb[((size_t)b * plane + i) * 3 + (size_t)c] = (uint8_t)nearbyintf(x * 255.0f);
      }
}
