/* keymap_ldm.c: every LDM <-> diffusers UNet tensor renaming (the table of
 * reference/sd-inference-digest.md section 8, generalised to any
 * layers_per_block L):
 *
 *   time_embed.0 / .2                 time_embedding.linear_1 / _2
 *   input_blocks.0.0                  conv_in
 *   input_blocks.{1+i(L+1)+j}.0 / .1  down_blocks.i.resnets.j / attentions.j   (j < L)
 *   input_blocks.{(i+1)(L+1)}.0.op    down_blocks.i.downsamplers.0.conv
 *   middle_block.0 / .1 / .2          mid_block.resnets.0 / attentions.0 / resnets.1
 *   output_blocks.{i(L+1)+j}.0 / .1   up_blocks.i.resnets.j / attentions.j     (j <= L)
 *   output_blocks.{i(L+1)+L}.{1|2}.conv  up_blocks.i.upsamplers.0.conv (.2 after attention)
 *   out.0 / out.2                     conv_norm_out / conv_out
 * and inside resnets in_layers.0/.2, emb_layers.1, out_layers.0/.3,
 * skip_connection <-> norm1, conv1, time_emb_proj, norm2, conv2,
 * conv_shortcut. Names inside attention blocks are the same on both sides.
 */
#include "keymap_ldm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const RESNET[][2] = {
    {"in_layers.0.", "norm1."},          {"in_layers.2.", "conv1."},
    {"emb_layers.1.", "time_emb_proj."}, {"out_layers.0.", "norm2."},
    {"out_layers.3.", "conv2."},         {"skip_connection.", "conv_shortcut."},
};
#define N_RESNET (sizeof RESNET / sizeof *RESNET)

static int set_err(char **err, const char *msg) {
  if (err) {
    *err = malloc(strlen(msg) + 16);
    if (*err) sprintf(*err, "keymap: %s", msg);
  }
  return -1;
}

int keymap_ldm_unet_init(struct keymap_ldm_unet *km, const json_t *cfg, char **err) {
  memset(km, 0, sizeof *km);
  json_t *boc = json_object_get(cfg, "block_out_channels");
  json_t *downs = json_object_get(cfg, "down_block_types");
  json_t *ups = json_object_get(cfg, "up_block_types");
  json_t *lpb = json_object_get(cfg, "layers_per_block");
  if (!json_is_array(boc) || json_array_size(boc) < 1 ||
      json_array_size(boc) > KEYMAP_LDM_MAX_BLOCKS)
    return set_err(err, "block_out_channels must be a list of 1..8 ints");
  km->n_blocks = (int)json_array_size(boc);
  if (!lpb) {
    km->layers_per_block = 2;
  } else if (json_is_integer(lpb) && json_integer_value(lpb) >= 1 &&
             json_integer_value(lpb) <= 16) {
    km->layers_per_block = (int)json_integer_value(lpb);
  } else {
    return set_err(err, "layers_per_block must be an integer in 1..16");
  }
  if (!json_is_array(ups) || (int)json_array_size(ups) != km->n_blocks || !json_is_array(downs) ||
      (int)json_array_size(downs) != km->n_blocks)
    return set_err(err, "down_block_types/up_block_types must list one type per block");
  for (int i = 0; i < km->n_blocks; i++) {
    const char *u = json_string_value(json_array_get(ups, (size_t)i));
    const char *d = json_string_value(json_array_get(downs, (size_t)i));
    if (!u || !d) return set_err(err, "block types must be strings");
    km->up_attn[i] = strncmp(u, "CrossAttn", 9) == 0;
    km->down_attn[i] = strncmp(d, "CrossAttn", 9) == 0;
  }
  return 0;
}

/* Advances *p past lit if it starts with it. */
static int take(const char **p, const char *lit) {
  size_t n = strlen(lit);
  if (strncmp(*p, lit, n)) return 0;
  *p += n;
  return 1;
}

/* Advances *p past "<decimal>." (no sign, no leading zeros except "0"). */
static int take_int(const char **p, int *v) {
  const char *s = *p;
  if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] != '.')) return 0;
  long x = 0;
  while (*s >= '0' && *s <= '9') {
    x = x * 10 + (*s++ - '0');
    if (x > 100000) return 0;
  }
  if (*s != '.') return 0;
  *v = (int)x;
  *p = s + 1;
  return 1;
}

/* Renames the resnet-internal prefix of *rest (direction 0: LDM -> diffusers). */
static const char *resnet_inner(const char **rest, int to_diffusers) {
  for (size_t k = 0; k < N_RESNET; k++)
    if (take(rest, RESNET[k][to_diffusers ? 0 : 1])) return RESNET[k][to_diffusers ? 1 : 0];
  return NULL;
}

static int emit(char *out, size_t n, const char *a, const char *b, const char *c) {
  if (!*c) return -1; /* a module prefix alone is not a tensor name */
  int w = snprintf(out, n, "%s%s%s", a, b, c);
  return w > 0 && (size_t)w < n ? 1 : -1;
}

int keymap_ldm_unet_to_diffusers(const struct keymap_ldm_unet *km, const char *key, char *out,
                                 size_t n) {
  const char *p = key;
  if (!take(&p, KEYMAP_LDM_UNET_PREFIX)) return 0;
  int L = km->layers_per_block, nb = km->n_blocks, K, S, resnet = 0;
  char head[96];
  if (take(&p, "time_embed.0.")) {
    snprintf(head, sizeof head, "time_embedding.linear_1.");
  } else if (take(&p, "time_embed.2.")) {
    snprintf(head, sizeof head, "time_embedding.linear_2.");
  } else if (take(&p, "out.0.")) {
    snprintf(head, sizeof head, "conv_norm_out.");
  } else if (take(&p, "out.2.")) {
    snprintf(head, sizeof head, "conv_out.");
  } else if (take(&p, "input_blocks.")) {
    if (!take_int(&p, &K) || !take_int(&p, &S)) return -1;
    if (K == 0) {
      if (S != 0) return -1;
      snprintf(head, sizeof head, "conv_in.");
    } else {
      int i = (K - 1) / (L + 1), j = (K - 1) % (L + 1);
      if (i >= nb) return -1;
      if (j < L && S == 0) {
        snprintf(head, sizeof head, "down_blocks.%d.resnets.%d.", i, j);
        resnet = 1;
      } else if (j < L && S == 1 && km->down_attn[i]) {
        snprintf(head, sizeof head, "down_blocks.%d.attentions.%d.", i, j);
      } else if (j == L && S == 0 && i < nb - 1 && take(&p, "op.")) {
        snprintf(head, sizeof head, "down_blocks.%d.downsamplers.0.conv.", i);
      } else {
        return -1;
      }
    }
  } else if (take(&p, "middle_block.")) {
    if (!take_int(&p, &S) || S > 2) return -1;
    if (S == 1) {
      snprintf(head, sizeof head, "mid_block.attentions.0.");
    } else {
      snprintf(head, sizeof head, "mid_block.resnets.%d.", S / 2);
      resnet = 1;
    }
  } else if (take(&p, "output_blocks.")) {
    if (!take_int(&p, &K) || !take_int(&p, &S)) return -1;
    int i = K / (L + 1), j = K % (L + 1);
    if (i >= nb) return -1;
    int a = km->up_attn[i];
    if (S == 0) {
      snprintf(head, sizeof head, "up_blocks.%d.resnets.%d.", i, j);
      resnet = 1;
    } else if (S == 1 && a) {
      snprintf(head, sizeof head, "up_blocks.%d.attentions.%d.", i, j);
    } else if (S == 1 + a && j == L && i < nb - 1 && take(&p, "conv.")) {
      snprintf(head, sizeof head, "up_blocks.%d.upsamplers.0.conv.", i);
    } else {
      return -1;
    }
  } else {
    return -1;
  }
  const char *inner = "";
  if (resnet && !(inner = resnet_inner(&p, 1))) return -1;
  return emit(out, n, head, inner, p);
}

int keymap_ldm_unet_from_diffusers(const struct keymap_ldm_unet *km, const char *key, char *out,
                                   size_t n) {
  const char *p = key;
  int L = km->layers_per_block, nb = km->n_blocks, i, j, resnet = 0;
  char head[128];
#define HEAD(...) snprintf(head, sizeof head, KEYMAP_LDM_UNET_PREFIX __VA_ARGS__)
  if (take(&p, "time_embedding.linear_1.")) {
    HEAD("time_embed.0.");
  } else if (take(&p, "time_embedding.linear_2.")) {
    HEAD("time_embed.2.");
  } else if (take(&p, "conv_in.")) {
    HEAD("input_blocks.0.0.");
  } else if (take(&p, "conv_norm_out.")) {
    HEAD("out.0.");
  } else if (take(&p, "conv_out.")) {
    HEAD("out.2.");
  } else if (take(&p, "down_blocks.")) {
    if (!take_int(&p, &i) || i >= nb) return -1;
    if (take(&p, "resnets.") && take_int(&p, &j) && j < L) {
      HEAD("input_blocks.%d.0.", 1 + i * (L + 1) + j);
      resnet = 1;
    } else if (take(&p, "attentions.") && take_int(&p, &j) && j < L && km->down_attn[i]) {
      HEAD("input_blocks.%d.1.", 1 + i * (L + 1) + j);
    } else if (take(&p, "downsamplers.0.conv.") && i < nb - 1) {
      HEAD("input_blocks.%d.0.op.", (i + 1) * (L + 1));
    } else {
      return -1;
    }
  } else if (take(&p, "mid_block.")) {
    if (take(&p, "resnets.0.")) {
      HEAD("middle_block.0.");
      resnet = 1;
    } else if (take(&p, "attentions.0.")) {
      HEAD("middle_block.1.");
    } else if (take(&p, "resnets.1.")) {
      HEAD("middle_block.2.");
      resnet = 1;
    } else {
      return -1;
    }
  } else if (take(&p, "up_blocks.")) {
    if (!take_int(&p, &i) || i >= nb) return -1;
    if (take(&p, "resnets.") && take_int(&p, &j) && j <= L) {
      HEAD("output_blocks.%d.0.", i * (L + 1) + j);
      resnet = 1;
    } else if (take(&p, "attentions.") && take_int(&p, &j) && j <= L && km->up_attn[i]) {
      HEAD("output_blocks.%d.1.", i * (L + 1) + j);
    } else if (take(&p, "upsamplers.0.conv.") && i < nb - 1) {
      HEAD("output_blocks.%d.%d.conv.", i * (L + 1) + L, 1 + km->up_attn[i]);
    } else {
      return -1;
    }
  } else {
    return -1;
  }
#undef HEAD
  const char *inner = "";
  if (resnet && !(inner = resnet_inner(&p, 0))) return -1;
  return emit(out, n, head, inner, p);
}
