/* test_formats_keymap.c: LDM <-> diffusers UNet key conversion.
 *
 * Fixture: tests/fixtures/unet/<model>_ldm.safetensors holds the UNet of
 * tests/fixtures/<model>/unet under LDM names (made by gen_unet.py and
 * checked there by diffusers' own convert_ldm_unet_checkpoint), in F16, plus
 * a few VAE / text encoder / EMA keys. Every UNet key must map to a diffusers
 * tensor of the same shape and the same value (rounded to F16), each
 * diffusers tensor exactly once; the other keys must be reported as not
 * UNet; the reverse map must give the LDM key back. Spot checks on the
 * SD1.5 layout use the names of the digest's table.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/keymap_ldm.h"
#include "formats/safetensors.h"

static char *fixture(const char *rel) {
  const char *root = getenv("SOUPD_SOURCE_DIR");
  if (!root) root = SOUPD_SOURCE_DIR;
  char *p = NULL;
  assert_true(asprintf(&p, "%s/tests/fixtures/%s", root, rel) > 0);
  return p;
}

static void check_model(const char *model) {
  char rel[128];
  snprintf(rel, sizeof rel, "%s/unet/config.json", model);
  char *cfgp = fixture(rel);
  snprintf(rel, sizeof rel, "%s/unet/diffusion_pytorch_model.safetensors", model);
  char *dp = fixture(rel);
  snprintf(rel, sizeof rel, "unet/%s_ldm.safetensors", model);
  char *lp = fixture(rel);
  json_error_t je;
  json_t *cfg = json_load_file(cfgp, 0, &je);
  assert_non_null(cfg);
  struct keymap_ldm_unet km;
  char *err = NULL;
  assert_int_equal(keymap_ldm_unet_init(&km, cfg, &err), 0);
  struct st_file *d = NULL, *l = NULL;
  assert_int_equal(st_open(dp, &d, &err), 0);
  assert_int_equal(st_open(lp, &l, &err), 0);
  int *hits = calloc(d->n_tensors, sizeof *hits);
  size_t n_other = 0;
  for (size_t k = 0; k < l->n_tensors; k++) {
    const struct st_tensor *lt = &l->tensors[k];
    char name[256], back[256];
    int rc = keymap_ldm_unet_to_diffusers(&km, lt->name, name, sizeof name);
    if (rc == 0) {
      n_other++;
      continue;
    }
    if (rc != 1) fprintf(stderr, "%s: no diffusers name for %s\n", model, lt->name);
    assert_int_equal(rc, 1);
    const struct st_tensor *dt = st_find(d, name);
    if (!dt) fprintf(stderr, "%s: %s -> %s not in the diffusers file\n", model, lt->name, name);
    assert_non_null(dt);
    hits[dt - d->tensors]++;
    assert_int_equal(lt->ndim, dt->ndim);
    for (int i = 0; i < lt->ndim; i++) assert_int_equal(lt->shape[i], dt->shape[i]);
    assert_int_equal(lt->dtype, ST_F16);
    assert_int_equal(dt->dtype, ST_F32);
    const uint16_t *lv = lt->data;
    const float *dv = dt->data;
    for (uint64_t i = 0; i < lt->numel; i++)
      if (lv[i] != f32_to_f16(dv[i]))
        fail_msg("%s: value %llu differs", name, (unsigned long long)i);
    assert_int_equal(keymap_ldm_unet_from_diffusers(&km, name, back, sizeof back), 1);
    assert_string_equal(back, lt->name);
  }
  assert_int_equal(n_other, 4); /* first_stage_model, cond_stage_model, 2 x model_ema */
  for (size_t k = 0; k < d->n_tensors; k++) {
    if (hits[k] != 1) fprintf(stderr, "%s: %s hit %d times\n", model, d->tensors[k].name, hits[k]);
    assert_int_equal(hits[k], 1);
  }
  printf("  %s: %zu UNet keys mapped, %zu others ignored\n", model, l->n_tensors - n_other,
         n_other);
  free(hits);
  st_close(d);
  st_close(l);
  json_decref(cfg);
  free(cfgp);
  free(dp);
  free(lp);
}

static void test_fixtures(void **state) {
  (void)state;
  check_model("tiny-sd2");
  check_model("tiny-sd1");
}

/* SD1.5 layout: 4 blocks, 2 layers, up block 0 without attention. */
static void test_sd15_layout(void **state) {
  (void)state;
  json_t *cfg =
      json_pack("{s:[i,i,i,i], s:i, s:[s,s,s,s], s:[s,s,s,s]}", "block_out_channels", 320, 640,
                1280, 1280, "layers_per_block", 2, "down_block_types", "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D", "up_block_types",
                "UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D");
  assert_non_null(cfg);
  struct keymap_ldm_unet km;
  char *err = NULL;
  assert_int_equal(keymap_ldm_unet_init(&km, cfg, &err), 0);
  static const char *const pairs[][2] = {
      {"time_embed.0.weight", "time_embedding.linear_1.weight"},
      {"time_embed.2.bias", "time_embedding.linear_2.bias"},
      {"input_blocks.0.0.weight", "conv_in.weight"},
      {"out.0.weight", "conv_norm_out.weight"},
      {"out.2.bias", "conv_out.bias"},
      {"input_blocks.1.0.in_layers.0.weight", "down_blocks.0.resnets.0.norm1.weight"},
      {"input_blocks.1.0.in_layers.2.weight", "down_blocks.0.resnets.0.conv1.weight"},
      {"input_blocks.1.0.emb_layers.1.weight", "down_blocks.0.resnets.0.time_emb_proj.weight"},
      {"input_blocks.1.0.out_layers.0.bias", "down_blocks.0.resnets.0.norm2.bias"},
      {"input_blocks.1.0.out_layers.3.weight", "down_blocks.0.resnets.0.conv2.weight"},
      {"input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
       "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"},
      {"input_blocks.2.1.proj_in.weight", "down_blocks.0.attentions.1.proj_in.weight"},
      {"input_blocks.3.0.op.weight", "down_blocks.0.downsamplers.0.conv.weight"},
      {"input_blocks.4.0.skip_connection.weight", "down_blocks.1.resnets.0.conv_shortcut.weight"},
      {"input_blocks.9.0.op.bias", "down_blocks.2.downsamplers.0.conv.bias"},
      {"input_blocks.11.0.in_layers.0.weight", "down_blocks.3.resnets.1.norm1.weight"},
      {"middle_block.0.in_layers.0.weight", "mid_block.resnets.0.norm1.weight"},
      {"middle_block.1.norm.weight", "mid_block.attentions.0.norm.weight"},
      {"middle_block.2.out_layers.3.bias", "mid_block.resnets.1.conv2.bias"},
      {"output_blocks.0.0.skip_connection.weight", "up_blocks.0.resnets.0.conv_shortcut.weight"},
      {"output_blocks.2.1.conv.weight", "up_blocks.0.upsamplers.0.conv.weight"},
      {"output_blocks.3.1.transformer_blocks.0.ff.net.0.proj.weight",
       "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"},
      {"output_blocks.5.2.conv.weight", "up_blocks.1.upsamplers.0.conv.weight"},
      {"output_blocks.8.2.conv.bias", "up_blocks.2.upsamplers.0.conv.bias"},
      {"output_blocks.11.1.proj_out.weight", "up_blocks.3.attentions.2.proj_out.weight"},
  };
  for (size_t k = 0; k < sizeof pairs / sizeof *pairs; k++) {
    char ldm[256], got[256];
    snprintf(ldm, sizeof ldm, "%s%s", KEYMAP_LDM_UNET_PREFIX, pairs[k][0]);
    assert_int_equal(keymap_ldm_unet_to_diffusers(&km, ldm, got, sizeof got), 1);
    assert_string_equal(got, pairs[k][1]);
    assert_int_equal(keymap_ldm_unet_from_diffusers(&km, pairs[k][1], got, sizeof got), 1);
    assert_string_equal(got, ldm);
  }
  static const char *const bad[] = {
      "model.diffusion_model.input_blocks.99.0.in_layers.0.weight",
      "model.diffusion_model.input_blocks.12.0.op.weight",   /* the last block has no downsampler */
      "model.diffusion_model.input_blocks.10.1.norm.weight", /* DownBlock2D has no attention */
      "model.diffusion_model.output_blocks.0.1.conv.weight", /* upsampler only after the last layer
                                                              */
      "model.diffusion_model.output_blocks.2.2.conv.weight", /* UpBlock2D: upsampler is .1 */
      "model.diffusion_model.output_blocks.11.2.conv.weight", /* the last up block: none */
      "model.diffusion_model.input_blocks.1.0.in_layers.1.weight",
      "model.diffusion_model.middle_block.3.norm.weight",
      "model.diffusion_model.input_blocks.01.0.in_layers.0.weight",
      "model.diffusion_model.time_embed.0.",
      "model.diffusion_model.label_emb.0.0.weight",
  };
  for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
    char got[256];
    if (keymap_ldm_unet_to_diffusers(&km, bad[k], got, sizeof got) != -1)
      fail_msg("%s mapped to %s", bad[k], got);
  }
  char small[8];
  assert_int_equal(
      keymap_ldm_unet_to_diffusers(&km, "model.diffusion_model.out.2.weight", small, sizeof small),
      -1);
  assert_int_equal(
      keymap_ldm_unet_to_diffusers(&km, "first_stage_model.encoder.conv_in.weight", small, 8), 0);
  assert_int_equal(keymap_ldm_unet_from_diffusers(&km, "up_blocks.3.upsamplers.0.conv.weight",
                                                  small, sizeof small),
                   -1);
  json_decref(cfg);
}

/* Real SD1.5 / SD2.1 tables (tests/fixtures/unet/full_configs.json, from
 * diffusers): every name has an LDM name, distinct, mapping back to itself. */
static void test_full_tables(void **state) {
  (void)state;
  char *p = fixture("unet/full_configs.json");
  json_error_t je;
  json_t *all = json_load_file(p, 0, &je);
  assert_non_null(all);
  const char *name;
  json_t *m;
  json_object_foreach(all, name, m) {
    struct keymap_ldm_unet km;
    char *err = NULL;
    assert_int_equal(keymap_ldm_unet_init(&km, json_object_get(m, "config"), &err), 0);
    json_t *params = json_object_get(m, "params"), *seen = json_object();
    size_t i;
    json_t *e;
    json_array_foreach(params, i, e) {
      const char *key = json_string_value(json_array_get(e, 0));
      char ldm[256], back[256];
      if (keymap_ldm_unet_from_diffusers(&km, key, ldm, sizeof ldm) != 1)
        fail_msg("%s: no LDM name for %s", name, key);
      assert_int_equal(keymap_ldm_unet_to_diffusers(&km, ldm, back, sizeof back), 1);
      assert_string_equal(back, key);
      assert_null(json_object_get(seen, ldm));
      json_object_set_new(seen, ldm, json_true());
    }
    /* the SD1.5 names the digest quotes */
    if (strcmp(name, "sd15") == 0) {
      assert_non_null(json_object_get(seen, "model.diffusion_model.output_blocks.2.1.conv.weight"));
      assert_non_null(json_object_get(seen, "model.diffusion_model.output_blocks.5.2.conv.weight"));
      assert_non_null(json_object_get(
          seen, "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"));
    }
    printf("  %s: %zu names round-trip\n", name, json_array_size(params));
    json_decref(seen);
  }
  json_decref(all);
  free(p);
}

static void test_bad_config(void **state) {
  (void)state;
  struct keymap_ldm_unet km;
  char *err = NULL;
  json_t *cfg =
      json_pack("{s:[i,i], s:i, s:[s], s:[s,s]}", "block_out_channels", 32, 64, "layers_per_block",
                2, "down_block_types", "DownBlock2D", "up_block_types", "UpBlock2D", "UpBlock2D");
  assert_int_equal(keymap_ldm_unet_init(&km, cfg, &err), -1);
  assert_non_null(err);
  free(err);
  json_decref(cfg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fixtures),
      cmocka_unit_test(test_sd15_layout),
      cmocka_unit_test(test_full_tables),
      cmocka_unit_test(test_bad_config),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
