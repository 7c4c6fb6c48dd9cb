/* test_diffusion_schedulers.c: schedulers and classifier-free guidance
 * against diffusers (tests/fixtures/sched/, made by tests/golden/gen_sched.py).
 *
 * Per chain case: timestep list and sigmas, init_noise_sigma, then the
 * pipeline loop: the UNet input of every step (Euler family) and the sample
 * after every step, each within worst |err| / max|ref| <= 1e-5 (fp32). The
 * model output fed at step k is the reference one, so every step is checked
 * against its own reference and errors cannot hide in a drift. Also: the
 * timestep/sigma lists for 19 step counts x 3 spacings x 5 schedulers (and
 * PNDM with its Runge-Kutta warm-up),
 * alphas_cumprod of both beta schedules, and cfg_combine with and without
 * guidance_rescale. Failures print the worst element. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diffusion/schedulers.h"
#include "formats/safetensors.h"

#define TOL_STEP 1e-5
#define TOL_TABLE 1e-6

static struct st_file *g_st;
static json_t *g_manifest;

static const float *fx(const char *case_name, const char *what, int64_t *numel) {
  char key[256];
  snprintf(key, sizeof key, "%s.%s", case_name, what);
  const struct st_tensor *t = st_find(g_st, key);
  if (!t) return NULL;
  if (t->dtype != ST_F32) fail_msg("%s: not F32", key);
  if (numel) *numel = (int64_t)t->numel;
  return (const float *)t->data;
}

/* worst |a - ref| / max|ref|; prints the worst element when above tol. */
static int close_enough(const char *what, const float *a, const float *ref, int64_t n, double tol) {
  double maxref = 0, worst = 0;
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
  if (!(rel <= tol)) {
    fprintf(stderr, "%s: worst element %lld: got %.9g ref %.9g (|err| %.3g, rel %.3g > %.1g)\n",
            what, (long long)wi, a[wi], ref[wi], worst, rel, tol);
    return 0;
  }
  return 1;
}

static struct sched_overrides ov_from(const json_t *o) {
  struct sched_overrides ov = {0};
  ov.eta = -1;
  if (!o) return ov;
  ov.name = json_string_value(json_object_get(o, "name"));
  ov.spacing = json_string_value(json_object_get(o, "spacing"));
  ov.prediction_type = json_string_value(json_object_get(o, "prediction_type"));
  const json_t *eta = json_object_get(o, "eta");
  if (eta) ov.eta = (float)json_number_value(eta);
  return ov;
}

static int check_lists(const char *name, struct sched *s, int exact) {
  int ok = 1;
  int64_t nt = 0, ns = 0;
  const float *ts = fx(name, "timesteps", &nt);
  const float *sg = fx(name, "sigmas", &ns);
  if (!ts || nt != sched_num_timesteps(s)) {
    fprintf(stderr, "%s: %d timesteps, reference %lld\n", name, sched_num_timesteps(s),
            (long long)nt);
    return 0;
  }
  char what[300];
  snprintf(what, sizeof what, "%s timesteps", name);
  ok &= close_enough(what, sched_timesteps(s), ts, nt, exact ? 0.0 : TOL_TABLE);
  if (sg) {
    snprintf(what, sizeof what, "%s sigmas", name);
    if (!sched_sigmas(s) || ns != nt + 1) {
      fprintf(stderr, "%s: sigma count\n", name);
      return 0;
    }
    ok &= close_enough(what, sched_sigmas(s), sg, ns, TOL_TABLE);
  }
  return ok;
}

static void test_chains(void **state) {
  (void)state;
  const json_t *cases = json_object_get(g_manifest, "cases");
  size_t idx;
  const json_t *c;
  int failures = 0, n_cases = 0;
  json_array_foreach(cases, idx, c) {
    const char *name = json_string_value(json_object_get(c, "name"));
    int steps = (int)json_integer_value(json_object_get(c, "steps"));
    struct sched_overrides ov = ov_from(json_object_get(c, "overrides"));
    struct sched *s = NULL;
    char *err = NULL;
    n_cases++;
    if (sched_new(json_object_get(c, "config"), &ov, steps, &s, &err) < 0) {
      fprintf(stderr, "%s: sched_new: %s\n", name, err);
      free(err);
      failures++;
      continue;
    }
    int ok = check_lists(name, s, 0);
    int64_t one;
    const float *init = fx(name, "init_sigma", &one);
    float got_init = sched_init_noise_sigma(s);
    char what[300];
    snprintf(what, sizeof what, "%s init_noise_sigma", name);
    ok &= close_enough(what, &got_init, init, 1, TOL_TABLE);

    int64_t n_all = 0;
    const float *samples = fx(name, "sample", &n_all);
    const float *mout = fx(name, "model_out", NULL);
    const float *min = fx(name, "model_in", NULL);
    const float *noise = fx(name, "noise", NULL);
    int nts = sched_num_timesteps(s);
    size_t n = (size_t)(n_all / (nts + 1));
    float *x = malloc(n * sizeof *x), *u = malloc(n * sizeof *u);
    memcpy(x, samples, n * sizeof *x);
    for (int k = 0; ok && k < nts; k++) {
      sched_scale_model_input(s, k, x, u, n);
      if (min) {
        snprintf(what, sizeof what, "%s step %d model input", name, k);
        ok &= close_enough(what, u, min + (size_t)k * n, (int64_t)n, TOL_STEP);
      }
      if (sched_step(s, k, mout + (size_t)k * n, x, x, n, noise ? noise + (size_t)k * n : NULL,
                     &err) < 0) {
        fprintf(stderr, "%s: step %d: %s\n", name, k, err);
        free(err);
        ok = 0;
        break;
      }
      snprintf(what, sizeof what, "%s step %d sample", name, k);
      ok &= close_enough(what, x, samples + (size_t)(k + 1) * n, (int64_t)n, TOL_STEP);
    }
    /* one step too many is refused */
    if (ok && sched_step(s, nts, mout, x, x, n, noise, &err) == 0) ok = 0;
    free(err);
    err = NULL;
    if (!ok) failures++;
    free(x);
    free(u);
    sched_free(s);
  }
  printf("%d chains, %d failed\n", n_cases, failures);
  assert_int_equal(failures, 0);
}

static void test_timestep_lists(void **state) {
  (void)state;
  const json_t *cfg = json_object_get(g_manifest, "ts_config");
  const json_t *list = json_object_get(g_manifest, "timesteps");
  size_t idx;
  const json_t *c;
  int failures = 0, count = 0;
  json_array_foreach(list, idx, c) {
    const char *name = json_string_value(json_object_get(c, "name"));
    struct sched_overrides ov = {0};
    ov.eta = -1;
    ov.name = json_string_value(json_object_get(c, "kind"));
    ov.spacing = json_string_value(json_object_get(c, "spacing"));
    struct sched *s = NULL;
    char *err = NULL;
    count++;
    const json_t *own = json_object_get(c, "config"); /* a case may bring its own config */
    if (sched_new(own ? own : cfg, &ov, (int)json_integer_value(json_object_get(c, "steps")), &s,
                  &err) < 0) {
      fprintf(stderr, "%s: %s\n", name, err);
      free(err);
      failures++;
      continue;
    }
    /* integer timesteps must match exactly; Euler's fractional ones to fp32 rounding */
    if (!check_lists(name, s, 1)) failures++;
    sched_free(s);
  }
  printf("%d timestep lists, %d failed\n", count, failures);
  assert_int_equal(failures, 0);
}

static void test_alphas_cumprod(void **state) {
  (void)state;
  const json_t *cfg = json_object_get(g_manifest, "ts_config");
  struct sched_overrides ov = {.name = "ddim", .eta = -1};
  struct sched *s = NULL;
  char *err = NULL;
  int n = 0;
  int64_t nref = 0;
  assert_int_equal(sched_new(cfg, &ov, 10, &s, &err), 0);
  const float *ref = fx("alphas_cumprod", "scaled_linear", &nref);
  const float *got = sched_alphas_cumprod(s, &n);
  assert_int_equal(n, nref);
  assert_true(close_enough("alphas_cumprod scaled_linear", got, ref, nref, 0.0));
  sched_free(s);
  assert_int_equal(sched_new(NULL, &ov, 10, &s, &err), 0); /* class defaults: linear */
  ref = fx("alphas_cumprod", "linear", &nref);
  got = sched_alphas_cumprod(s, &n);
  assert_true(close_enough("alphas_cumprod linear", got, ref, nref, 0.0));
  sched_free(s);
}

static void test_cfg(void **state) {
  (void)state;
  const json_t *list = json_object_get(g_manifest, "cfg");
  size_t idx;
  const json_t *c;
  json_array_foreach(list, idx, c) {
    const char *name = json_string_value(json_object_get(c, "name"));
    int64_t n = 0;
    const float *u = fx(name, "uncond", &n), *co = fx(name, "cond", NULL),
                *ref = fx(name, "out", NULL);
    int batch = (int)json_integer_value(json_array_get(json_object_get(c, "shape"), 0));
    float *out = malloc((size_t)n * sizeof *out);
    memcpy(out, u, (size_t)n * sizeof *out); /* in place on the uncond half */
    cfg_combine(out, co, (float)json_number_value(json_object_get(c, "scale")),
                (float)json_number_value(json_object_get(c, "rescale")), out, (size_t)(n / batch),
                batch);
    assert_true(close_enough(name, out, ref, n, TOL_STEP));
    free(out);
  }
}

static void test_errors(void **state) {
  (void)state;
  struct sched *s = NULL;
  char *err = NULL;
  struct sched_overrides ov = {.name = "heun", .eta = -1};
  assert_true(sched_new(NULL, &ov, 10, &s, &err) < 0 && err);
  free(err);
  err = NULL;
  ov.name = "ddim";
  ov.spacing = "karras";
  assert_true(sched_new(NULL, &ov, 10, &s, &err) < 0 && err);
  free(err);
  err = NULL;
  ov.spacing = NULL;
  assert_true(sched_new(NULL, &ov, 0, &s, &err) < 0 && err);
  free(err);
  err = NULL;
  /* PNDM's Runge-Kutta warm-up needs 4 steps (diffusers fails below) */
  json_t *prk = json_pack("{s:s, s:b}", "_class_name", "PNDMScheduler", "skip_prk_steps", 0);
  ov.name = NULL;
  assert_true(sched_new(prk, &ov, 3, &s, &err) < 0 && err);
  free(err);
  err = NULL;
  assert_int_equal(sched_new(prk, &ov, 4, &s, &err), 0);
  assert_int_equal(sched_num_timesteps(s), 13);
  sched_free(s);
  json_decref(prk);
  /* out-of-order steps are refused */
  ov.name = "dpmpp_2m";
  assert_int_equal(sched_new(NULL, &ov, 5, &s, &err), 0);
  float x[4] = {0}, e[4] = {0};
  assert_true(sched_step(s, 1, e, x, x, 4, NULL, &err) < 0 && err);
  free(err);
  err = NULL;
  assert_true(sched_needs_noise(s) == 0);
  sched_free(s);
  ov.name = "euler_a";
  assert_int_equal(sched_new(NULL, &ov, 5, &s, &err), 0);
  assert_true(sched_needs_noise(s));
  assert_true(sched_step(s, 0, e, x, x, 4, NULL, &err) < 0 && err);
  free(err);
  sched_free(s);
}

/* sd_pipeline_fixups behaves like StableDiffusionPipeline.__init__: the
 * class-default DDIM (steps_offset 0, clip_sample true) then runs exactly as
 * a config with steps_offset 1 and clip_sample false. */
static void test_pipeline_fixups(void **state) {
  (void)state;
  json_t *fixed = json_pack("{s:s, s:i, s:b}", "_class_name", "DDIMScheduler", "steps_offset", 1,
                            "clip_sample", 0);
  struct sched_overrides ov = {.name = "ddim", .eta = -1, .sd_pipeline_fixups = 1};
  struct sched_overrides plain = {.name = "ddim", .eta = -1};
  struct sched *a = NULL, *b = NULL, *c = NULL;
  char *err = NULL;
  assert_int_equal(sched_new(NULL, &ov, 10, &a, &err), 0);
  assert_int_equal(sched_new(fixed, &plain, 10, &b, &err), 0);
  assert_int_equal(sched_new(NULL, &plain, 10, &c, &err), 0);
  assert_true(sched_timesteps(a)[9] == 1.0f && sched_timesteps(c)[9] == 0.0f);
  float xa[8], xb[8], xc[8], e[8];
  for (int i = 0; i < 8; i++) xa[i] = xb[i] = xc[i] = 3.0f * (float)(i - 4), e[i] = -2.0f;
  for (int k = 0; k < 10; k++) {
    assert_int_equal(sched_step(a, k, e, xa, xa, 8, NULL, &err), 0);
    assert_int_equal(sched_step(b, k, e, xb, xb, 8, NULL, &err), 0);
    assert_int_equal(sched_step(c, k, e, xc, xc, 8, NULL, &err), 0);
  }
  for (int i = 0; i < 8; i++) assert_true(xa[i] == xb[i]);
  int differs = 0; /* the clipped, offset-0 class default goes elsewhere */
  for (int i = 0; i < 8; i++) differs += xa[i] != xc[i];
  assert_true(differs > 0);
  sched_free(a);
  sched_free(b);
  sched_free(c);
  json_decref(fixed);
}

/* Every scheduler builds from the tiny model folders' scheduler configs. */
static void test_tiny_model_configs(void **state) {
  (void)state;
  const char *root = getenv("SOUPD_SOURCE_DIR");
  if (!root) root = SOUPD_SOURCE_DIR;
  const char *subs[2] = {"tiny-sd1", "tiny-sd2"};
  for (int i = 0; i < 2; i++) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fixtures/%s/scheduler/scheduler_config.json", root,
             subs[i]);
    json_t *cfg = json_load_file(path, 0, NULL);
    if (!cfg) {
      printf("%s: absent, skipped\n", subs[i]);
      continue;
    }
    for (int k = -1; k < 5; k++) {
      struct sched_overrides ov = {.name = k < 0 ? NULL : sched_kind_name((enum sched_kind)k),
                                   .eta = -1};
      struct sched *s = NULL;
      char *err = NULL;
      if (sched_new(cfg, &ov, 20, &s, &err) < 0) fail_msg("%s %s: %s", subs[i], ov.name, err);
      assert_true(sched_num_timesteps(s) >= 20);
      sched_free(s);
    }
    json_decref(cfg);
  }
}

static int setup(void **state) {
  (void)state;
  const char *root = getenv("SOUPD_SOURCE_DIR");
  if (!root) root = SOUPD_SOURCE_DIR;
  char path[1024];
  char *err = NULL;
  snprintf(path, sizeof path, "%s/tests/fixtures/sched/sched.safetensors", root);
  if (st_open(path, &g_st, &err) < 0) {
    fprintf(stderr, "%s: %s\n", path, err);
    free(err);
    return -1;
  }
  snprintf(path, sizeof path, "%s/tests/fixtures/sched/cases.json", root);
  json_error_t je;
  g_manifest = json_load_file(path, 0, &je);
  if (!g_manifest) {
    fprintf(stderr, "%s: %s\n", path, je.text);
    return -1;
  }
  return 0;
}

static int teardown(void **state) {
  (void)state;
  st_close(g_st);
  json_decref(g_manifest);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_alphas_cumprod),  cmocka_unit_test(test_timestep_lists),
      cmocka_unit_test(test_chains),          cmocka_unit_test(test_cfg),
      cmocka_unit_test(test_errors),          cmocka_unit_test(test_tiny_model_configs),
      cmocka_unit_test(test_pipeline_fixups),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
