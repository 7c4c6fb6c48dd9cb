/* test_formats_model_dir.c: the diffusers model folder reader.
 *
 * Builds a minimal diffusers layout in a temporary folder (model_index.json,
 * unet/config.json, unet/diffusion_pytorch_model.safetensors and optional
 * component folders), then breaks it one file at a time: each break must give
 * a clear error that names the file relative to the root and never the
 * server path.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/formats/model_dir.h"
#include "server/formats/safetensors.h"

static char g_root[64];

static void put(const char *rel, const char *text) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", g_root, rel);
  FILE *f = fopen(p, "wb");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static void del(const char *rel) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", g_root, rel);
  remove(p);
}

static void dir(const char *rel) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", g_root, rel);
  mkdir(p, 0755);
}

static const char *k_index = "{\"_class_name\":\"StableDiffusionPipeline\",\"unet\":[\"diffusers\","
                             "\"UNet2DConditionModel\"],\"vae\":[\"diffusers\",\"AutoencoderKL\"]}";
static const char *k_unet = "{\"_class_name\":\"UNet2DConditionModel\",\"in_channels\":4,"
                            "\"cross_attention_dim\":768,\"sample_size\":64}";

static int setup(void **state) {
  (void)state;
  snprintf(g_root, sizeof g_root, "/tmp/soupd_md_XXXXXX");
  assert_non_null(mkdtemp(g_root));
  dir("unet");
  put("model_index.json", k_index);
  put("unet/config.json", k_unet);
  put("unet/diffusion_pytorch_model.safetensors", "weights are not parsed here");
  return 0;
}

static int teardown(void **state) {
  (void)state;
  static const char *files[] = {"model_index.json",
                                "unet/config.json",
                                "unet/diffusion_pytorch_model.safetensors",
                                "unet/diffusion_pytorch_model.fp16.safetensors",
                                "vae/config.json",
                                "vae",
                                "text_encoder",
                                "tokenizer",
                                "scheduler",
                                "unet"};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) del(files[i]);
  rmdir(g_root);
  return 0;
}

static void test_minimal(void **state) {
  (void)state;
  struct model_dir *md = NULL;
  char *err = NULL;
  int rc = model_dir_open(g_root, &md, &err);
  if (rc) fail_msg("model_dir_open: %s", err);
  assert_string_equal(md->root, g_root);
  assert_string_equal(json_string_value(json_object_get(md->unet_config, "_class_name")),
                      "UNet2DConditionModel");
  assert_int_equal(json_integer_value(json_object_get(md->unet_config, "cross_attention_dim")),
                   768);
  assert_string_equal(json_string_value(json_object_get(md->model_index, "_class_name")),
                      "StableDiffusionPipeline");
  char want[512];
  snprintf(want, sizeof want, "%s/unet/diffusion_pytorch_model.safetensors", g_root);
  assert_string_equal(md->unet_weights, want);
  assert_null(md->vae_dir);
  assert_null(md->text_encoder_dir);
  assert_null(md->tokenizer_dir);
  assert_null(md->scheduler_dir);
  char *p = model_dir_path(md, "vae/config.json");
  snprintf(want, sizeof want, "%s/vae/config.json", g_root);
  assert_string_equal(p, want);
  free(p);
  model_dir_close(md);

  /* a trailing slash on the root does not double it */
  char root2[80];
  snprintf(root2, sizeof root2, "%s/", g_root);
  assert_int_equal(model_dir_open(root2, &md, &err), 0);
  p = model_dir_path(md, "unet");
  snprintf(want, sizeof want, "%s/unet", g_root);
  assert_string_equal(p, want);
  free(p);
  model_dir_close(md);
  model_dir_close(NULL);
}

static void test_components(void **state) {
  (void)state;
  dir("vae");
  dir("text_encoder");
  dir("tokenizer");
  dir("scheduler");
  put("vae/config.json", "{\"latent_channels\":4,\"scaling_factor\":0.18215}");
  struct model_dir *md = NULL;
  char *err = NULL;
  assert_int_equal(model_dir_open(g_root, &md, &err), 0);
  char want[512];
  snprintf(want, sizeof want, "%s/vae", g_root);
  assert_string_equal(md->vae_dir, want);
  snprintf(want, sizeof want, "%s/text_encoder", g_root);
  assert_string_equal(md->text_encoder_dir, want);
  assert_non_null(md->tokenizer_dir);
  assert_non_null(md->scheduler_dir);
  json_t *vae = NULL;
  assert_int_equal(model_dir_read_json(md, "vae/config.json", &vae, &err), 0);
  assert_int_equal(json_integer_value(json_object_get(vae, "latent_channels")), 4);
  json_decref(vae);
  /* a missing optional config is a clean error */
  assert_true(model_dir_read_json(md, "scheduler/scheduler_config.json", &vae, &err) < 0);
  assert_null(vae);
  assert_non_null(strstr(err, "scheduler/scheduler_config.json"));
  assert_null(strstr(err, g_root));
  free(err);
  model_dir_close(md);
}

/* Each break: the message names the file and never the server path. */
static void expect_error(const char *mention) {
  struct model_dir *md = (struct model_dir *)0x1;
  char *err = NULL;
  int rc = model_dir_open(g_root, &md, &err);
  if (rc >= 0 || !err || !strstr(err, mention) || strstr(err, g_root))
    fail_msg("want an error mentioning '%s', got rc %d '%s'", mention, rc, err ? err : "(null)");
  assert_null(md);
  free(err);
}

static void test_errors(void **state) {
  (void)state;
  del("model_index.json");
  expect_error("model_index.json");
  put("model_index.json", "{\"unet\": [");
  expect_error("model_index.json");
  put("model_index.json", "[1, 2]");
  expect_error("model_index.json");
  put("model_index.json", "{\"a\":1,\"a\":2}"); /* duplicate key */
  expect_error("model_index.json");
  put("model_index.json", k_index);

  del("unet/config.json");
  expect_error("unet/config.json");
  put("unet/config.json", "");
  expect_error("unet/config.json");
  put("unet/config.json", "\"UNet2DConditionModel\"");
  expect_error("unet/config.json");
  put("unet/config.json", k_unet);

  del("unet/diffusion_pytorch_model.safetensors");
  expect_error("unet/diffusion_pytorch_model.safetensors");
  dir("unet/diffusion_pytorch_model.safetensors"); /* a folder, not a file */
  expect_error("unet/diffusion_pytorch_model.safetensors");
  del("unet/diffusion_pytorch_model.safetensors");
  put("unet/diffusion_pytorch_model.safetensors", "x");

  /* the fp16 variant is taken only when the plain file is absent */
  put("unet/diffusion_pytorch_model.fp16.safetensors", "y");
  struct model_dir *m2 = NULL;
  char *e2 = NULL;
  char want[512];
  assert_int_equal(model_dir_open(g_root, &m2, &e2), 0);
  snprintf(want, sizeof want, "%s/unet/diffusion_pytorch_model.safetensors", g_root);
  assert_string_equal(m2->unet_weights, want);
  model_dir_close(m2);
  del("unet/diffusion_pytorch_model.safetensors");
  assert_int_equal(model_dir_open(g_root, &m2, &e2), 0);
  snprintf(want, sizeof want, "%s/unet/diffusion_pytorch_model.fp16.safetensors", g_root);
  assert_string_equal(m2->unet_weights, want);
  model_dir_close(m2);
  del("unet/diffusion_pytorch_model.fp16.safetensors");
  put("unet/diffusion_pytorch_model.safetensors", "x");

  /* the root itself */
  struct model_dir *md = NULL;
  char *err = NULL;
  assert_true(model_dir_open("/nonexistent/soupd/model", &md, &err) < 0);
  assert_null(md);
  assert_null(strstr(err, "/nonexistent"));
  free(err);
  char file_root[512];
  snprintf(file_root, sizeof file_root, "%s/model_index.json", g_root);
  assert_true(model_dir_open(file_root, &md, &err) < 0);
  free(err);

  /* restored: opens again */
  assert_int_equal(model_dir_open(g_root, &md, &err), 0);
  model_dir_close(md);
}

static int64_t cfg_int(json_t *cfg, const char *key) {
  json_t *v = json_object_get(cfg, key);
  if (!json_is_integer(v)) fail_msg("config key %s missing", key);
  return json_integer_value(v);
}

static void expect_shape(const struct st_file *f, const char *name, int ndim, const int64_t *want) {
  const struct st_tensor *t = st_find(f, name);
  if (!t) fail_msg("tensor %s missing", name);
  assert_int_equal(t->ndim, ndim);
  for (int i = 0; i < ndim; i++)
    if (t->shape[i] != want[i])
      fail_msg("%s: dim %d is %lld, config says %lld", name, i, (long long)t->shape[i],
               (long long)want[i]);
}

/* The tiny SD 1.x folder written by diffusers (tests/fixtures/tiny-sd1): the
 * UNet's tensor shapes follow its config.json by diffusers' rules. */
static void test_diffusers_fixture(void **state) {
  (void)state;
  char root[4096];
  snprintf(root, sizeof root, "%s/tests/fixtures/tiny-sd1", SOUPD_SOURCE_DIR);
  struct stat st;
  if (stat(root, &st) != 0) skip();
  struct model_dir *md = NULL;
  char *err = NULL;
  if (model_dir_open(root, &md, &err)) fail_msg("model_dir_open: %s", err);
  assert_non_null(md->text_encoder_dir);
  assert_non_null(md->vae_dir);
  assert_non_null(md->tokenizer_dir);
  assert_non_null(md->scheduler_dir);
  json_t *unet_entry = json_object_get(md->model_index, "unet");
  assert_string_equal(json_string_value(json_array_get(unet_entry, 1)), "UNet2DConditionModel");

  struct st_file *unet = NULL;
  if (st_open(md->unet_weights, &unet, &err)) fail_msg("unet weights: %s", err);
  json_t *c = md->unet_config;
  int64_t c0 = json_integer_value(json_array_get(json_object_get(c, "block_out_channels"), 0));
  int64_t k_in = cfg_int(c, "conv_in_kernel"), k_out = cfg_int(c, "conv_out_kernel");
  expect_shape(unet, "conv_in.weight", 4, (int64_t[]){c0, cfg_int(c, "in_channels"), k_in, k_in});
  expect_shape(unet, "conv_in.bias", 1, (int64_t[]){c0});
  expect_shape(unet, "conv_out.weight", 4,
               (int64_t[]){cfg_int(c, "out_channels"), c0, k_out, k_out});
  expect_shape(unet, "time_embedding.linear_1.weight", 2, (int64_t[]){4 * c0, c0});
  for (size_t i = 0; i < unet->n_tensors; i++) {
    enum st_dtype dt = unet->tensors[i].dtype;
    assert_true(dt == ST_F32 || dt == ST_F16 || dt == ST_BF16);
  }
  assert_int_equal(st_check_compatible(unet, unet, NULL, 0), 0);
  st_close(unet);

  /* the other components' weights pass the strict reader too */
  static const char *const others[] = {"text_encoder/model.safetensors",
                                       "vae/diffusion_pytorch_model.safetensors"};
  for (size_t i = 0; i < 2; i++) {
    char *p = model_dir_path(md, others[i]);
    struct st_file *f = NULL;
    if (st_open(p, &f, &err)) fail_msg("%s: %s", others[i], err);
    assert_true(f->n_tensors > 0);
    st_close(f);
    free(p);
  }
  json_t *vae = NULL;
  assert_int_equal(model_dir_read_json(md, "vae/config.json", &vae, &err), 0);
  json_decref(vae);
  model_dir_close(md);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_minimal, setup, teardown),
      cmocka_unit_test_setup_teardown(test_components, setup, teardown),
      cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
      cmocka_unit_test(test_diffusers_fixture),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
