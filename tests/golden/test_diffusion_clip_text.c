/* test_diffusion_clip_text.c: the C CLIP text encoder (CPU backend) against
 * transformers 5.24's CLIPTextModel in fp32.
 *
 * tests/fixtures/text/text_encoder_sd{1,2}.safetensors (gen_text.py) hold
 * the ids of four prompts [4, 77], last_hidden_state and the clip_skip=1
 * states [4, 77, D], computed from tiny-sd{1,2}/text_encoder (F16 weights
 * widened to fp32). Tolerance: worst |err| / max |ref| <= 1e-4; a failure
 * prints the worst element. Also: "text_model."-prefixed keys load to the
 * same result, and bad arguments / mismatched configs are refused.
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
#include <unistd.h>

#include "diffusion/clip_text.h"
#include "formats/safetensors.h"

#define TOL 1e-4

static const char *src_dir(void) {
  const char *s = getenv("SOUPD_SOURCE_DIR");
  return s ? s : SOUPD_SOURCE_DIR;
}

struct fixture {
  struct st_file *ref;
  const int32_t *ids;
  int B;
};

static void fixture_open(const char *name, struct fixture *fx) {
  char path[4096];
  char *err = NULL;
  snprintf(path, sizeof path, "%s/tests/fixtures/text/text_encoder_%s.safetensors", src_dir(),
           name);
  if (st_open(path, &fx->ref, &err)) fail_msg("%s: %s", path, err);
  const struct st_tensor *ids = st_find(fx->ref, "ids");
  assert_non_null(ids);
  assert_int_equal(ids->dtype, ST_I32);
  assert_int_equal(ids->shape[1], CLIP_TEXT_SEQ);
  fx->ids = ids->data;
  fx->B = (int)ids->shape[0];
}

/* Runs the model and compares with the reference tensor; returns the ratio. */
static double run_compare(struct clip_text *m, struct backend *be, const struct fixture *fx,
                          const char *ref_name, int clip_skip, const char *label) {
  const struct st_tensor *ref = st_find(fx->ref, ref_name);
  assert_non_null(ref);
  int D = clip_text_hidden_size(m);
  assert_int_equal(ref->shape[2], D);
  int64_t shape[3] = {fx->B, CLIP_TEXT_SEQ, D};
  struct tensor out;
  assert_int_equal(be_tensor_alloc(be, &out, DT_F32, 3, shape), 0);
  char *err = NULL;
  int rc = clip_text_forward(m, &out, fx->ids, fx->B, clip_skip, &err);
  if (rc) fail_msg("clip_text_forward: %s", err);
  size_t n = (size_t)fx->B * CLIP_TEXT_SEQ * (size_t)D;
  float *got = malloc(n * sizeof *got);
  assert_non_null(got);
  assert_int_equal(be_download_f32(be, &out, got), 0);
  const float *want = ref->data;
  double max_ref = 0, worst = 0;
  size_t wi = 0;
  for (size_t i = 0; i < n; i++) {
    if (fabs(want[i]) > max_ref) max_ref = fabs(want[i]);
    double e = fabs((double)got[i] - want[i]);
    if (!(e <= worst)) worst = e, wi = i; /* NaN counts as worst */
  }
  double ratio = worst / max_ref;
  print_message("[%s] worst |err| %.3g at [%zu, %zu, %zu] (got %.7g, ref %.7g), max|ref| %.4g, "
                "ratio %.3g\n",
                label, worst, wi / ((size_t)CLIP_TEXT_SEQ * D), wi / D % CLIP_TEXT_SEQ, wi % D,
                got[wi], want[wi], max_ref, ratio);
  free(got);
  be_tensor_free(be, &out);
  return ratio;
}

static void test_model(const char *name) {
  struct backend *be = backend_cpu_new(2);
  assert_non_null(be);
  struct fixture fx;
  fixture_open(name, &fx);
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/tests/fixtures/tiny-%s/text_encoder", src_dir(), name);
  struct clip_text *m = NULL;
  char *err = NULL;
  if (clip_text_load(dir, be, &m, &err)) fail_msg("clip_text_load: %s", err);
  char label[64];
  snprintf(label, sizeof label, "%s last_hidden_state", name);
  double r0 = run_compare(m, be, &fx, "last_hidden_state", 0, label);
  snprintf(label, sizeof label, "%s clip_skip=1", name);
  double r1 = run_compare(m, be, &fx, "clip_skip1", 1, label);
  assert_true(r0 <= TOL);
  assert_true(r1 <= TOL);
  clip_text_free(m);
  st_close(fx.ref);
  be_destroy(be);
}

static void test_sd1(void **state) {
  test_model("sd1");
}
static void test_sd2(void **state) {
  test_model("sd2");
}

/* A copy of tiny-sd1/text_encoder with every key prefixed by "text_model."
 * (the layout of Hub SD checkpoints) gives the same result. */
static void test_prefixed_keys(void **state) {
  char src[4096], tmpl[] = "/tmp/soupd-clip-XXXXXX", path[4200], *err = NULL;
  assert_non_null(mkdtemp(tmpl));
  snprintf(src, sizeof src, "%s/tests/fixtures/tiny-sd1/text_encoder/model.safetensors", src_dir());
  struct st_file *f = NULL;
  if (st_open(src, &f, &err)) fail_msg("%s", err);
  struct st_write_tensor *w = calloc(f->n_tensors, sizeof *w);
  char **names = calloc(f->n_tensors, sizeof *names);
  assert_non_null(w);
  assert_non_null(names);
  for (size_t i = 0; i < f->n_tensors; i++) {
    const struct st_tensor *t = &f->tensors[i];
    assert_true(asprintf(&names[i], "text_model.%s", t->name) > 0);
    w[i] = (struct st_write_tensor){names[i], t->dtype, t->ndim, t->shape, t->data};
  }
  snprintf(path, sizeof path, "%s/model.safetensors", tmpl);
  if (st_write(path, w, f->n_tensors, NULL, &err)) fail_msg("%s", err);
  snprintf(src, sizeof src, "%s/tests/fixtures/tiny-sd1/text_encoder/config.json", src_dir());
  snprintf(path, sizeof path, "%s/config.json", tmpl);
  assert_int_equal(symlink(src, path), 0);

  struct backend *be = backend_cpu_new(2);
  struct fixture fx;
  fixture_open("sd1", &fx);
  struct clip_text *m = NULL;
  if (clip_text_load(tmpl, be, &m, &err)) fail_msg("clip_text_load: %s", err);
  assert_true(run_compare(m, be, &fx, "last_hidden_state", 0, "sd1 prefixed") <= TOL);

  /* Bad arguments. */
  int64_t shape[3] = {1, CLIP_TEXT_SEQ, 7};
  struct tensor out;
  assert_int_equal(be_tensor_alloc(be, &out, DT_F32, 3, shape), 0);
  assert_true(clip_text_forward(m, &out, fx.ids, 1, 0, &err) < 0); /* wrong width */
  free(err);
  be_tensor_free(be, &out);
  shape[2] = clip_text_hidden_size(m);
  assert_int_equal(be_tensor_alloc(be, &out, DT_F32, 3, shape), 0);
  assert_true(clip_text_forward(m, &out, fx.ids, 1, clip_text_config(m)->layers + 1, &err) < 0);
  free(err);
  int32_t bad_ids[CLIP_TEXT_SEQ] = {49408};
  assert_true(clip_text_forward(m, &out, bad_ids, 1, 0, &err) < 0);
  free(err);
  be_tensor_free(be, &out);
  clip_text_free(m);

  /* A config that disagrees with the weights is refused, naming the tensor. */
  unlink(path);
  FILE *cf = fopen(path, "w");
  assert_non_null(cf);
  fputs("{\"hidden_size\": 32, \"intermediate_size\": 48, \"num_attention_heads\": 4, "
        "\"num_hidden_layers\": 2, \"hidden_act\": \"quick_gelu\"}\n",
        cf);
  fclose(cf);
  assert_true(clip_text_load(tmpl, be, &m, &err) < 0);
  print_message("refused as expected: %s\n", err);
  assert_non_null(strstr(err, "fc1"));
  free(err);

  unlink(path);
  snprintf(path, sizeof path, "%s/model.safetensors", tmpl);
  unlink(path);
  rmdir(tmpl);
  for (size_t i = 0; i < f->n_tensors; i++) free(names[i]);
  free(names);
  free(w);
  st_close(f);
  st_close(fx.ref);
  be_destroy(be);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sd1),
      cmocka_unit_test(test_sd2),
      cmocka_unit_test(test_prefixed_keys),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
