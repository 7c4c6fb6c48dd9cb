/* test_diffusion_unet.c: the UNet against diffusers (golden).
 *
 * For tiny-sd2 (linear proj_in, per-block heads, 3 levels, 2 layers) and
 * tiny-sd1 (conv proj_in, one head count, 4 levels, 1 layer): loads the model
 * folder's unet/ on the CPU backend, runs the fixtures of
 * tests/fixtures/unet/<model>_<h>x<w>.safetensors (written by gen_unet.py from
 * diffusers' UNet2DConditionModel in fp32) and requires
 * worst |out - ref| / max |ref| <= 1e-4, printing the worst element.
 * Sizes include h, w not divisible by 2^(upsamplers), and fractional t.
 * Also: binding the same weights from an external set gives bit-identical
 * output; weights read from the LDM single-file fixture through the key map
 * give the same bits as the diffusers weights rounded to F16; a config that
 * disagrees with the weights is refused by name; the parameter tables of the
 * real SD1.5 and SD2.1 configs equal diffusers' state dicts.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diffusion/unet.h"
#include "formats/safetensors.h"

static const char *const MODELS[] = {"tiny-sd2", "tiny-sd1"};
static const char *const CASES[] = {"8x8", "12x10", "9x11"};
#define TOL 1e-4

static struct backend *g_be;

static char *path_of(const char *fmt, ...) {
  const char *root = getenv("SOUPD_SOURCE_DIR");
  if (!root) root = SOUPD_SOURCE_DIR;
  char rel[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(rel, sizeof rel, fmt, ap);
  va_end(ap);
  char *p = NULL;
  assert_true(asprintf(&p, "%s/tests/fixtures/%s", root, rel) > 0);
  return p;
}

/* Uploads an F32 fixture tensor. */
static void upload(const struct st_file *f, const char *name, struct tensor *t) {
  const struct st_tensor *s = st_find(f, name);
  assert_non_null(s);
  assert_int_equal(s->dtype, ST_F32);
  assert_int_equal(be_tensor_alloc(g_be, t, DT_F32, s->ndim, s->shape), 0);
  assert_int_equal(be_upload(g_be, t, s->data, DT_F32), 0);
}

/* Runs one fixture case; returns the normalised worst error, *out_copy gets
 * the output (malloc'd) when non-NULL. */
static double run_case(struct unet *u, const char *model, const char *cas, float **out_copy) {
  char *p = path_of("unet/%s_%s.safetensors", model, cas);
  struct st_file *f = NULL;
  char *err = NULL;
  assert_int_equal(st_open(p, &f, &err), 0);
  struct tensor x, ctx, out;
  upload(f, "sample", &x);
  upload(f, "encoder_hidden_states", &ctx);
  const struct st_tensor *ts = st_find(f, "timesteps");
  const struct st_tensor *ref = st_find(f, "out");
  assert_non_null(ts);
  assert_non_null(ref);
  assert_int_equal(be_tensor_alloc(g_be, &out, DT_F32, 4, x.shape), 0);
  int rc = unet_forward(u, &out, &x, (const float *)ts->data, &ctx, &err);
  if (rc) fprintf(stderr, "%s %s: %s\n", model, cas, err);
  assert_int_equal(rc, 0);
  int64_t n = tensor_numel(&out);
  float *got = malloc((size_t)n * sizeof *got);
  assert_non_null(got);
  assert_int_equal(be_download_f32(g_be, &out, got), 0);
  const float *want = ref->data;
  double maxref = 0, worst = 0;
  int64_t wi = 0;
  for (int64_t i = 0; i < n; i++) {
    maxref = fmax(maxref, fabs(want[i]));
    double e = fabs((double)got[i] - want[i]);
    if (!(e <= worst)) { /* catches NaN */
      worst = isnan(e) ? INFINITY : e;
      wi = i;
    }
  }
  double rel = worst / maxref;
  printf("  %-8s %-5s worst |err| %.3g / max|ref| %.3g = %.3g (element %lld: %.7g vs %.7g)\n",
         model, cas, worst, maxref, rel, (long long)wi, got[wi], want[wi]);
  if (out_copy)
    *out_copy = got;
  else
    free(got);
  be_tensor_free(g_be, &x);
  be_tensor_free(g_be, &ctx);
  be_tensor_free(g_be, &out);
  st_close(f);
  free(p);
  return rel;
}

static void test_golden(void **state) {
  (void)state;
  for (size_t m = 0; m < sizeof MODELS / sizeof *MODELS; m++) {
    char *dir = path_of("%s/unet", MODELS[m]);
    struct unet *u = NULL;
    char *err = NULL;
    int rc = unet_load(dir, g_be, &u, &err);
    if (rc) fprintf(stderr, "unet_load: %s\n", err);
    assert_int_equal(rc, 0);
    for (size_t c = 0; c < sizeof CASES / sizeof *CASES; c++)
      assert_true(run_case(u, MODELS[m], CASES[c], NULL) <= TOL);
    unet_free(u);
    free(dir);
  }
}

/* ---- an external weight set: every tensor of a file, uploaded ---- */
struct wset {
  struct st_file *f;
  struct tensor *t;
};

static const struct tensor *wset_lookup(void *ctx, const char *name) {
  struct wset *w = ctx;
  const struct st_tensor *s = st_find(w->f, name);
  return s ? &w->t[s - w->f->tensors] : NULL;
}

static void test_bind_external(void **state) {
  (void)state;
  char *dir = path_of("tiny-sd1/unet");
  char *wp = path_of("tiny-sd1/unet/diffusion_pytorch_model.safetensors");
  struct unet *u = NULL;
  char *err = NULL;
  assert_int_equal(unet_load(dir, g_be, &u, &err), 0);
  float *a = NULL, *b = NULL;
  run_case(u, "tiny-sd1", "9x11", &a);

  struct wset w = {0};
  assert_int_equal(st_open(wp, &w.f, &err), 0);
  w.t = calloc(w.f->n_tensors, sizeof *w.t);
  for (size_t i = 0; i < w.f->n_tensors; i++) {
    const struct st_tensor *s = &w.f->tensors[i];
    int dt = st_dtype_to_dtype(s->dtype);
    assert_int_equal(be_tensor_alloc(g_be, &w.t[i], (enum dtype)dt, s->ndim, s->shape), 0);
    assert_int_equal(be_upload(g_be, &w.t[i], s->data, (enum dtype)dt), 0);
  }
  assert_int_equal(unet_bind_weights(u, wset_lookup, &w, &err), 0);
  run_case(u, "tiny-sd1", "9x11", &b);
  assert_memory_equal(a, b, 2 * 4 * 9 * 11 * sizeof(float));

  /* a set lacking one tensor is refused and the old binding stays usable */
  struct wset empty = {w.f, w.t};
  struct st_file partial = *w.f;
  partial.n_tensors = w.f->n_tensors - 1; /* st_find on a prefix: the last name disappears */
  empty.f = &partial;
  assert_int_not_equal(unet_bind_weights(u, wset_lookup, &empty, &err), 0);
  printf("  refused: %s\n", err);
  assert_non_null(strstr(err, "missing"));
  free(err);
  err = NULL;
  float *c = NULL;
  run_case(u, "tiny-sd1", "9x11", &c);
  assert_memory_equal(a, c, 2 * 4 * 9 * 11 * sizeof(float));

  unet_free(u);
  for (size_t i = 0; i < w.f->n_tensors; i++) be_tensor_free(g_be, &w.t[i]);
  free(w.t);
  st_close(w.f);
  free(a);
  free(b);
  free(c);
  free(dir);
  free(wp);
}

/* Weights from the LDM single-file fixture (F16, renamed by the key map) give
 * the same bits as the diffusers file's weights rounded to F16. */
static void test_load_ldm(void **state) {
  (void)state;
  for (size_t m = 0; m < sizeof MODELS / sizeof *MODELS; m++) {
    char *cfgp = path_of("%s/unet/config.json", MODELS[m]);
    char *wp = path_of("%s/unet/diffusion_pytorch_model.safetensors", MODELS[m]);
    char *lp = path_of("unet/%s_ldm.safetensors", MODELS[m]);
    json_error_t je;
    json_t *j = json_load_file(cfgp, 0, &je);
    assert_non_null(j);
    struct unet *u = NULL;
    char *err = NULL;
    assert_int_equal(unet_new(j, g_be, &u, &err), 0);
    int rc = unet_load_weights_ldm(u, lp, &err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    float *a = NULL, *b = NULL;
    double rel = run_case(u, MODELS[m], "12x10", &a);
    assert_true(rel < 1e-2); /* F16 weights: only a sanity bound */

    struct wset w = {0};
    assert_int_equal(st_open(wp, &w.f, &err), 0);
    w.t = calloc(w.f->n_tensors, sizeof *w.t);
    for (size_t i = 0; i < w.f->n_tensors; i++) {
      const struct st_tensor *s = &w.f->tensors[i];
      assert_int_equal(be_tensor_alloc(g_be, &w.t[i], DT_F16, s->ndim, s->shape), 0);
      assert_int_equal(be_upload(g_be, &w.t[i], s->data, DT_F32), 0);
    }
    assert_int_equal(unet_bind_weights(u, wset_lookup, &w, &err), 0);
    run_case(u, MODELS[m], "12x10", &b);
    assert_memory_equal(a, b, 2 * 4 * 12 * 10 * sizeof(float));

    /* the diffusers file is not an LDM file */
    rc = unet_load_weights_ldm(u, wp, &err);
    assert_int_not_equal(rc, 0);
    printf("  refused: %s\n", err);
    free(err);
    unet_free(u);
    for (size_t i = 0; i < w.f->n_tensors; i++) be_tensor_free(g_be, &w.t[i]);
    free(w.t);
    st_close(w.f);
    free(a);
    free(b);
    json_decref(j);
    free(cfgp);
    free(wp);
    free(lp);
  }
}

static void test_config_mismatch(void **state) {
  (void)state;
  char *cfgp = path_of("tiny-sd2/unet/config.json");
  char *wp = path_of("tiny-sd2/unet/diffusion_pytorch_model.safetensors");
  json_error_t je;
  json_t *j = json_load_file(cfgp, 0, &je);
  assert_non_null(j);
  struct unet *u = NULL;
  char *err = NULL;

  /* wrong cross_attention_dim: the attn2.to_k shape disagrees */
  json_object_set_new(j, "cross_attention_dim", json_integer(64));
  assert_int_equal(unet_new(j, g_be, &u, &err), 0);
  assert_int_not_equal(unet_load_weights(u, wp, &err), 0);
  printf("  refused: %s\n", err);
  assert_non_null(strstr(err, "attn2.to_k.weight"));
  free(err);
  err = NULL;
  unet_free(u);

  /* conv proj_in declared but the weights are linear */
  json_object_set_new(j, "cross_attention_dim", json_integer(32));
  json_object_set_new(j, "use_linear_projection", json_false());
  assert_int_equal(unet_new(j, g_be, &u, &err), 0);
  assert_int_not_equal(unet_load_weights(u, wp, &err), 0);
  assert_non_null(strstr(err, "proj_in.weight"));
  free(err);
  err = NULL;
  unet_free(u);

  /* unsupported graph options are refused at config time */
  json_object_set_new(j, "use_linear_projection", json_true());
  json_object_set_new(j, "class_embed_type", json_string("timestep"));
  assert_int_not_equal(unet_new(j, g_be, &u, &err), 0);
  assert_non_null(strstr(err, "class_embed_type"));
  free(err);
  err = NULL;
  json_object_set_new(j, "class_embed_type", json_null());
  json_object_set_new(j, "attention_head_dim", json_integer(3)); /* 16 % 3 != 0 */
  assert_int_not_equal(unet_new(j, g_be, &u, &err), 0);
  free(err);

  /* forward without weights fails cleanly */
  json_object_set_new(j, "attention_head_dim", json_integer(2));
  err = NULL;
  assert_int_equal(unet_new(j, g_be, &u, &err), 0);
  struct tensor x, o, ctx;
  int64_t sx[4] = {1, 4, 8, 8}, sc[3] = {1, 77, 32};
  float t = 1;
  assert_int_equal(be_tensor_alloc(g_be, &x, DT_F32, 4, sx), 0);
  assert_int_equal(be_tensor_alloc(g_be, &o, DT_F32, 4, sx), 0);
  assert_int_equal(be_tensor_alloc(g_be, &ctx, DT_F32, 3, sc), 0);
  assert_int_not_equal(unet_forward(u, &o, &x, &t, &ctx, &err), 0);
  free(err);
  be_tensor_free(g_be, &x);
  be_tensor_free(g_be, &o);
  be_tensor_free(g_be, &ctx);
  unet_free(u);
  json_decref(j);
  free(cfgp);
  free(wp);
}

/* The parameter tables of the real SD1.5 and SD2.1 configs equal diffusers'
 * state dicts (names and shapes, from gen_unet.py on the meta device). */
static void test_full_tables(void **state) {
  (void)state;
  char *p = path_of("unet/full_configs.json");
  json_error_t je;
  json_t *all = json_load_file(p, 0, &je);
  assert_non_null(all);
  const char *name;
  json_t *m;
  json_object_foreach(all, name, m) {
    struct unet *u = NULL;
    char *err = NULL;
    int rc = unet_new(json_object_get(m, "config"), g_be, &u, &err);
    if (rc) fprintf(stderr, "%s: %s\n", name, err);
    assert_int_equal(rc, 0);
    json_t *params = json_object_get(m, "params");
    assert_int_equal(unet_param_count(u), (int)json_array_size(params));
    size_t i;
    json_t *e;
    json_array_foreach(params, i, e) {
      const char *want = json_string_value(json_array_get(e, 0));
      json_t *shape = json_array_get(e, 1);
      int found = 0;
      for (int k = 0; k < unet_param_count(u) && !found; k++) {
        int nd;
        int64_t sh[4];
        const char *got = unet_param_info(u, k, &nd, sh);
        if (strcmp(got, want)) continue;
        found = 1;
        assert_int_equal(nd, (int)json_array_size(shape));
        for (int d = 0; d < nd; d++)
          assert_int_equal(sh[d], json_integer_value(json_array_get(shape, (size_t)d)));
      }
      if (!found) fail_msg("%s: %s not in the parameter table", name, want);
    }
    printf("  %s: %d parameters match diffusers\n", name, unet_param_count(u));
    unet_free(u);
  }
  json_decref(all);
  free(p);
}

static int setup(void **state) {
  (void)state;
  g_be = backend_cpu_new(2);
  return g_be ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  be_destroy(g_be);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_golden),          cmocka_unit_test(test_bind_external),
      cmocka_unit_test(test_load_ldm),        cmocka_unit_test(test_full_tables),
      cmocka_unit_test(test_config_mismatch),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
