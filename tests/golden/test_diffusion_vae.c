/* test_diffusion_vae.c: AutoencoderKL decode / encode on the CPU backend
 * against diffusers (tests/fixtures/vae/, made by tests/golden/gen_vae.py):
 * the tiny VAE with current attention names in F32 and the same model with
 * legacy names in F16 (config without scaling_factor). Each output within
 * worst |err| / max|ref| <= 1e-4, printing the worst element. Also the
 * 8-bit RGB conversion (exact, on the reference image and on rounding-tie
 * probes), and load errors: config/shape mismatch, missing folder. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "diffusion/vae.h"
#include "formats/safetensors.h"

#define TOL 1e-4

static struct backend *g_be;
static struct st_file *g_io, *g_rgb;
static char g_dir[1024];

static const struct st_tensor *io(const struct st_file *f, const char *name) {
  const struct st_tensor *t = st_find(f, name);
  if (!t) fail_msg("fixture tensor %s missing", name);
  return t;
}

static int close_enough(const char *what, const float *a, const float *ref, int64_t n, double tol) {
  double maxref = 0, worst = -1;
  int64_t wi = 0;
  for (int64_t i = 0; i < n; i++) maxref = fmax(maxref, fabs(ref[i]));
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - (double)ref[i]);
    if (!(d <= worst)) {
      worst = d;
      wi = i;
    }
  }
  double rel = worst / (maxref > 0 ? maxref : 1.0);
  printf("%s: worst rel err %.3g (element %lld: %.7g vs %.7g)\n", what, rel, (long long)wi, a[wi],
         ref[wi]);
  return rel <= tol;
}

static void to_device(const struct st_tensor *s, struct tensor *t) {
  int64_t shape[4];
  for (int i = 0; i < s->ndim; i++) shape[i] = s->shape[i];
  assert_int_equal(be_tensor_alloc(g_be, t, DT_F32, s->ndim, shape), 0);
  assert_int_equal(be_upload(g_be, t, s->data, DT_F32), 0);
}

static void check_against(const char *what, struct tensor *t, const struct st_tensor *ref) {
  assert_int_equal(tensor_numel(t), (int64_t)ref->numel);
  float *host = malloc(ref->numel * sizeof *host);
  assert_int_equal(be_download_f32(g_be, t, host), 0);
  assert_true(close_enough(what, host, ref->data, (int64_t)ref->numel, TOL));
  free(host);
}

static void run_variant(const char *sub, const char *tag) {
  char path[1100], key[64];
  char *err = NULL;
  struct vae *v = NULL;
  snprintf(path, sizeof path, "%s/%s", g_dir, sub);
  if (vae_load(path, g_be, &v, &err) < 0) fail_msg("vae_load %s: %s", sub, err);
  assert_true(fabsf(vae_scaling_factor(v) - 0.18215f) < 1e-7f);
  assert_int_equal(vae_downscale(v), 8);
  assert_int_equal(vae_latent_channels(v), 4);
  assert_true(vae_has_encoder(v));

  struct tensor lat, img, out, mean, logvar;
  to_device(io(g_io, "latents"), &lat);
  int64_t os[4] = {1, 3, 64, 96};
  assert_int_equal(be_tensor_alloc(g_be, &out, DT_F32, 4, os), 0);
  if (vae_decode(v, &out, &lat, &err) < 0) fail_msg("decode: %s", err);
  snprintf(key, sizeof key, "decode.%s", tag);
  check_against(key, &out, io(g_io, key));

  to_device(io(g_io, "image"), &img);
  int64_t ms[4] = {1, 4, 8, 12};
  assert_int_equal(be_tensor_alloc(g_be, &mean, DT_F32, 4, ms), 0);
  assert_int_equal(be_tensor_alloc(g_be, &logvar, DT_F32, 4, ms), 0);
  if (vae_encode(v, &mean, &logvar, &img, &err) < 0) fail_msg("encode: %s", err);
  snprintf(key, sizeof key, "mean.%s", tag);
  check_against(key, &mean, io(g_io, key));
  snprintf(key, sizeof key, "logvar.%s", tag);
  check_against(key, &logvar, io(g_io, key));
  /* wrong output shape is refused */
  assert_true(vae_decode(v, &mean, &lat, &err) < 0 && err);
  free(err);
  err = NULL;
  be_tensor_free(g_be, &lat);
  be_tensor_free(g_be, &img);
  be_tensor_free(g_be, &out);
  be_tensor_free(g_be, &mean);
  be_tensor_free(g_be, &logvar);
  vae_free(v);
}

static void test_new_names_f32(void **state) {
  (void)state;
  run_variant("vae", "new");
}

static void test_legacy_names_f16(void **state) {
  (void)state;
  run_variant("vae_legacy", "legacy");
}

static void test_encode_odd_sizes(void **state) {
  (void)state;
  char path[1100];
  char *err = NULL;
  struct vae *v = NULL;
  snprintf(path, sizeof path, "%s/vae", g_dir);
  assert_int_equal(vae_load(path, g_be, &v, &err), 0);
  struct tensor img, mean;
  to_device(io(g_io, "image2"), &img);
  int64_t ms[4] = {1, 4, 5, 5};
  assert_int_equal(be_tensor_alloc(g_be, &mean, DT_F32, 4, ms), 0);
  if (vae_encode(v, &mean, NULL, &img, &err) < 0) fail_msg("encode: %s", err);
  check_against("mean2.new", &mean, io(g_io, "mean2.new"));
  be_tensor_free(g_be, &img);
  be_tensor_free(g_be, &mean);
  vae_free(v);
}

static void test_rgb8(void **state) {
  (void)state;
  const struct st_tensor *img = io(g_io, "decode.new"), *ref = io(g_rgb, "rgb8.new");
  uint8_t *rgb = malloc(ref->numel);
  vae_image_to_rgb8(img->data, 1, 64, 96, rgb);
  size_t bad = 0;
  for (size_t i = 0; i < ref->numel; i++) bad += rgb[i] != ((const uint8_t *)ref->data)[i];
  assert_int_equal(bad, 0);
  const struct st_tensor *pin = io(g_io, "probe.in"), *pref = io(g_rgb, "probe.rgb8");
  vae_image_to_rgb8(pin->data, 1, 4, 8, rgb);
  for (size_t i = 0; i < pref->numel; i++) {
    if (rgb[i] != ((const uint8_t *)pref->data)[i])
      fprintf(stderr, "probe %zu: %u vs %u\n", i, rgb[i], ((const uint8_t *)pref->data)[i]);
    assert_int_equal(rgb[i], ((const uint8_t *)pref->data)[i]);
  }
  free(rgb);
}

static void test_load_errors(void **state) {
  (void)state;
  char *err = NULL;
  struct vae *v = NULL;
  char tmp[] = "/tmp/soupd_vae_XXXXXX", path[1200];
  assert_true(vae_load("/nonexistent/vae", g_be, &v, &err) < 0 && err && !v);
  free(err);
  err = NULL;
  assert_non_null(mkdtemp(tmp));
  snprintf(path, sizeof path, "%s/vae/diffusion_pytorch_model.safetensors", g_dir);
  char link[1200];
  snprintf(link, sizeof link, "%s/diffusion_pytorch_model.safetensors", tmp);
  assert_int_equal(symlink(path, link), 0);
  snprintf(path, sizeof path, "%s/config.json", tmp);
  FILE *f = fopen(path, "w");
  fputs("{\"block_out_channels\": [8, 16, 16, 32], \"layers_per_block\": 1, "
        "\"norm_num_groups\": 4, \"latent_channels\": 4}",
        f);
  fclose(f);
  assert_true(vae_load(tmp, g_be, &v, &err) < 0 && err);
  printf("expected error: %s\n", err);
  assert_non_null(strstr(err, "shape"));
  free(err);
  unlink(path);
  unlink(link);
  rmdir(tmp);
}

/* The tiny full models of the pipeline fixtures load and decode to finite values. */
static void test_tiny_model_folders(void **state) {
  (void)state;
  const char *subs[2] = {"tiny-sd1", "tiny-sd2"};
  for (int i = 0; i < 2; i++) {
    char path[1200], *err = NULL;
    struct vae *v = NULL;
    snprintf(path, sizeof path, "%s/../%s/vae", g_dir, subs[i]);
    if (access(path, R_OK) != 0) {
      printf("%s: absent, skipped\n", subs[i]);
      continue;
    }
    if (vae_load(path, g_be, &v, &err) < 0) fail_msg("%s: %s", subs[i], err);
    int s = vae_downscale(v), lc = vae_latent_channels(v);
    int64_t ls[4] = {1, lc, 4, 6}, os[4] = {1, 3, 4 * s, 6 * s};
    struct tensor lat, out;
    assert_int_equal(be_tensor_alloc(g_be, &lat, DT_F32, 4, ls), 0);
    assert_int_equal(be_tensor_alloc(g_be, &out, DT_F32, 4, os), 0);
    float *host = malloc((size_t)(24 * s * s * 3) * sizeof *host);
    for (int k = 0; k < 24 * lc; k++) host[k] = (float)sin(0.37 * k);
    assert_int_equal(be_upload(g_be, &lat, host, DT_F32), 0);
    if (vae_decode(v, &out, &lat, &err) < 0) fail_msg("%s decode: %s", subs[i], err);
    assert_int_equal(be_download_f32(g_be, &out, host), 0);
    for (int k = 0; k < 24 * s * s * 3; k++) assert_true(isfinite(host[k]));
    free(host);
    be_tensor_free(g_be, &lat);
    be_tensor_free(g_be, &out);
    vae_free(v);
  }
}

static int setup(void **state) {
  (void)state;
  const char *root = getenv("SOUPD_SOURCE_DIR");
  if (!root) root = SOUPD_SOURCE_DIR;
  snprintf(g_dir, sizeof g_dir, "%s/tests/fixtures/vae", root);
  char path[1100], *err = NULL;
  snprintf(path, sizeof path, "%s/io.safetensors", g_dir);
  if (st_open(path, &g_io, &err) < 0) return -1;
  snprintf(path, sizeof path, "%s/rgb8.safetensors", g_dir);
  if (st_open(path, &g_rgb, &err) < 0) return -1;
  g_be = backend_cpu_new(2);
  return g_be ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  st_close(g_io);
  st_close(g_rgb);
  if (g_be) be_destroy(g_be);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_new_names_f32),    cmocka_unit_test(test_legacy_names_f16),
      cmocka_unit_test(test_encode_odd_sizes), cmocka_unit_test(test_rgb8),
      cmocka_unit_test(test_load_errors),      cmocka_unit_test(test_tiny_model_folders),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
