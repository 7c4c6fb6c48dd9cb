/* test_soup_accuracy.c: the materialized soup against an independent fp64
 * reference, the empty soup against the base, and shard rejection.
 *
 * Bound (soup.h), per parameter, with w* = sum kq_j w_j / K exactly:
 *   |out - w*| <= 2^-(F+1)          quantization of each w * 2^F (|q - w 2^F| <= 1/2,
 *                                   averaged with weights kq_j / K)
 *               + 2^-51 |w*|        (double)S and the division, 2^-53 relative each
 *               + half an ulp of the output dtype at out (final rounding).
 * The reference is accumulated in long double (64-bit significand; its own
 * error, below 2^-60 |w*|, is covered by the 2^-51 term).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>

#include "log.h"
#include "test_soup_util.h"

static struct ts_model base_m, shard_m[3];
static struct st_file *base_f;
static char base_path[64];
static const int64_t KQ[3] = {65536, 98304, 40000};

static int setup(void **state) {
  (void)state;
  log_set_level(LOG_WARN);
  ts_make_base(&base_m, 21);
  const enum st_dtype dts[3] = {ST_F16, ST_BF16, ST_F32};
  for (int j = 0; j < 3; j++) ts_make_shard(&shard_m[j], &base_m, dts[j], 200 + (uint64_t)j);
  base_f = ts_write_open(&base_m, base_path);
  return base_f ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  st_close(base_f);
  unlink(base_path);
  ts_free(&base_m);
  for (int j = 0; j < 3; j++) ts_free(&shard_m[j]);
  return 0;
}

static struct soup *mk(enum dtype infer) {
  struct soup *s = NULL;
  char *err = NULL;
  if (soup_new(base_f, soup_backend_cpu(), infer, &s, &err)) fail_msg("soup_new: %s", err);
  return s;
}

static void app_views(struct soup *s, const struct ts_model *m, int64_t kq, uint64_t ver) {
  struct soup_view v[TS_N];
  char *err = NULL;
  ts_views(m, v);
  if (soup_apply(s, v, TS_N, kq, &err)) fail_msg("apply: %s", err);
  if (soup_switch(s, ver, &err)) fail_msg("switch: %s", err);
}

static double out_value(enum dtype dt, const void *data, int64_t k) {
  if (dt == DT_F32) return ((const float *)data)[k];
  uint16_t b = ((const uint16_t *)data)[k];
  return dt == DT_F16 ? f16_to_f32(b) : bf16_to_f32(b);
}

/* Largest gap between |y| and its neighbours in dtype dt (y finite). */
static double ulp_at(enum dtype dt, const void *data, int64_t k) {
  double y = fabs(out_value(dt, data, k));
  if (dt == DT_F32) {
    float f = (float)y;
    return fmax(nextafterf(f, INFINITY) - f, f - nextafterf(f, 0));
  }
  uint16_t b = ((const uint16_t *)data)[k] & 0x7fff;
  double up = dt == DT_F16 ? f16_to_f32((uint16_t)(b + 1)) : bf16_to_f32((uint16_t)(b + 1));
  double dn =
      b ? (dt == DT_F16 ? f16_to_f32((uint16_t)(b - 1)) : bf16_to_f32((uint16_t)(b - 1))) : 0;
  return fmax(up - y, y - dn);
}

static void test_bound_vs_fp64(void **state) {
  (void)state;
  for (int d = 0; d < 3; d++) {
    enum dtype dt = d == 0 ? DT_F32 : d == 1 ? DT_F16 : DT_BF16;
    struct soup *s = mk(dt);
    int64_t K = 0;
    for (int j = 0; j < 3; j++) {
      app_views(s, &shard_m[j], KQ[j], (uint64_t)j + 1);
      K += KQ[j];
    }
    const struct soup_version *v = soup_acquire(s);
    assert_int_equal(v->K, K);
    double worst = 0; /* error / bound */
    for (size_t i = 0; i < v->n_tensors; i++) {
      const struct soup_tensor *t = &v->tensors[i];
      int ti = ts_name_index(t->name);
      assert_true(ti >= 0);
      for (int64_t k = 0; k < t->numel; k++) {
        long double acc = 0;
        for (int j = 0; j < 3; j++) acc += (long double)KQ[j] * shard_m[j].val[ti][k];
        double ref = (double)(acc / K);
        double got = out_value(dt, t->data, k);
        double bound = ldexp(1, -(t->F + 1)) + ldexp(fabs(ref), -51) + ulp_at(dt, t->data, k) / 2;
        double err = fabs(got - ref);
        if (err > bound)
          fail_msg("%s %s[%lld]: got %.17g ref %.17g err %g bound %g (F %d)", dtype_name(dt),
                   t->name, (long long)k, got, ref, err, bound, t->F);
        if (err / bound > worst) worst = err / bound;
      }
    }
    print_message("%s: worst error / bound = %.3f\n", dtype_name(dt), worst);
    soup_release(s, v);
    soup_free(s);
  }
}

/* One F16 shard at any weight, F16 inference: every F16 value w has w * 2^F
 * integral (F >= 24 here), so the soup reproduces the shard bit for bit. */
static void test_single_f16_shard_exact(void **state) {
  (void)state;
  struct soup *s = mk(DT_F16);
  app_views(s, &shard_m[0], 12345, 1);
  const struct soup_version *v = soup_acquire(s);
  for (size_t i = 0; i < v->n_tensors; i++) {
    int ti = ts_name_index(v->tensors[i].name);
    assert_true(v->tensors[i].F >= 24);
    assert_memory_equal(v->tensors[i].data, shard_m[0].data[ti], (size_t)v->tensors[i].numel * 2);
  }
  soup_release(s, v);
  soup_free(s);
}

static void test_empty_soup_is_base(void **state) {
  (void)state;
  for (int d = 0; d < 3; d++) {
    enum dtype dt = d == 0 ? DT_F32 : d == 1 ? DT_F16 : DT_BF16;
    struct soup *s = mk(dt);
    char h0[65], h1[65];
    soup_hash_hex(s, h0);
    for (int round = 0; round < 2; round++) {
      const struct soup_version *v = soup_acquire(s);
      assert_int_equal(v->K, 0);
      for (size_t i = 0; i < v->n_tensors; i++) {
        const struct soup_tensor *t = &v->tensors[i];
        int ti = ts_name_index(t->name);
        for (int64_t k = 0; k < t->numel; k++) {
          float w = (float)base_m.val[ti][k]; /* exact: every base dtype fits in F32 */
          if (dt == DT_F32)
            assert_true(((const float *)t->data)[k] == w);
          else if (dt == DT_F16)
            assert_int_equal(((const uint16_t *)t->data)[k], f32_to_f16(w));
          else
            assert_int_equal(((const uint16_t *)t->data)[k], f32_to_bf16(w));
        }
      }
      soup_release(s, v);
      /* register and withdraw a shard: back to the base, same hash */
      app_views(s, &shard_m[0], KQ[0], 10);
      app_views(s, &shard_m[0], -KQ[0], 11);
      soup_hash_hex(s, h1);
      assert_string_equal(h0, h1);
    }
    soup_free(s);
  }
}

/* Checks that the soup is unchanged: hash, K and every live bit. */
struct snap {
  char hash[65];
  int64_t K;
  unsigned char *bytes;
  size_t n;
};
static void snap_take(struct soup *s, struct snap *p) {
  soup_hash_hex(s, p->hash);
  const struct soup_version *v = soup_acquire(s);
  p->K = v->K;
  p->n = 0;
  size_t es = dtype_size(v->dtype);
  for (size_t i = 0; i < v->n_tensors; i++) p->n += (size_t)v->tensors[i].numel * es;
  p->bytes = malloc(p->n);
  size_t o = 0;
  for (size_t i = 0; i < v->n_tensors; i++) {
    memcpy(p->bytes + o, v->tensors[i].data, (size_t)v->tensors[i].numel * es);
    o += (size_t)v->tensors[i].numel * es;
  }
  soup_release(s, v);
}
static void snap_check(struct soup *s, struct snap *p) {
  struct snap q;
  snap_take(s, &q);
  assert_string_equal(p->hash, q.hash);
  assert_int_equal(p->K, q.K);
  assert_memory_equal(p->bytes, q.bytes, p->n);
  free(q.bytes);
  free(p->bytes);
}

static int has_error(json_t *errors, const char *field, const char *needle) {
  size_t i;
  json_t *e;
  json_array_foreach(errors, i, e) {
    const char *f = json_string_value(json_object_get(e, "field"));
    const char *m = json_string_value(json_object_get(e, "message"));
    if (f && m && strcmp(f, field) == 0 && (!needle || strstr(m, needle))) return 1;
  }
  return 0;
}

/* A copy of shard j with one value replaced (in its own dtype). */
static void bad_copy(struct ts_model *out, int j, int ti, int64_t k, double x) {
  ts_make_shard(out, &base_m, shard_m[j].dt[0], 200 + (uint64_t)j);
  ts_store(out, ti, k, x);
}

static void expect_rejected(struct soup *s, struct ts_model *m, const char *field,
                            const char *needle) {
  struct soup_view v[TS_N];
  ts_views(m, v);
  json_t *errors = json_array();
  assert_int_equal(soup_check_shard(s, v, TS_N, errors, 10), -1);
  if (!has_error(errors, field, needle)) {
    char *dump = json_dumps(errors, 0);
    fail_msg("expected an error on %s containing '%s', got %s", field, needle, dump);
  }
  json_decref(errors);
  struct snap p;
  snap_take(s, &p);
  char *err = NULL;
  assert_true(soup_apply(s, v, TS_N, 65536, &err) < 0);
  assert_non_null(err);
  assert_non_null(strstr(err, field));
  free(err);
  snap_check(s, &p);
}

static void test_rejects_change_nothing(void **state) {
  (void)state;
  struct soup *s = mk(DT_F32);
  app_views(s, &shard_m[0], KQ[0], 1);
  struct ts_model m;
  /* NaN in the last tensor by name order: nothing before it may change */
  bad_copy(&m, 0, 4 /* up.0.zero.bias */, 3, NAN);
  expect_rejected(s, &m, "up.0.zero.bias", "index 3");
  ts_free(&m);
  bad_copy(&m, 1, 2, 7, INFINITY); /* BF16 shard, F32-base tensor */
  expect_rejected(s, &m, "mid.attn.to_q.weight", "index 7");
  ts_free(&m);
  bad_copy(&m, 2, 0, 0, -INFINITY);
  expect_rejected(s, &m, "down.0.conv.weight", "not finite");
  ts_free(&m);
  /* out of range: the limit is 2^(e+6) with max|base| < 2^e */
  int ti = 2;
  double mx = 0;
  for (int64_t k = 0; k < ts_numel(ti); k++) mx = fmax(mx, fabs(base_m.val[ti][k]));
  int e;
  frexp(mx, &e);
  double lim = ldexp(1, e + 6);
  bad_copy(&m, 2, ti, 11, nextafterf((float)lim, INFINITY));
  expect_rejected(s, &m, "mid.attn.to_q.weight", "outside the supported range");
  ts_free(&m);
  bad_copy(&m, 2, ti, 11, -lim); /* exactly at the limit: accepted */
  struct soup_view v[TS_N];
  ts_views(&m, v);
  json_t *errors = json_array();
  assert_int_equal(soup_check_shard(s, v, TS_N, errors, 10), 0);
  assert_int_equal(json_array_size(errors), 0);
  json_decref(errors);
  ts_free(&m);
  /* structure: missing, extra, wrong shape, wrong dtype */
  ts_views(&shard_m[1], v);
  struct soup_view v2[TS_N + 1];
  memcpy(v2, v, sizeof v);
  v2[1].shape[0] = 36;
  v2[3].dtype = ST_I32;
  v2[4].name = "up.1.extra";
  errors = json_array();
  assert_int_equal(soup_check_shard(s, v2, TS_N, errors, 10), -1);
  assert_true(has_error(errors, ts_names[1], "shape [36]"));
  assert_true(has_error(errors, ts_names[3], "I32"));
  assert_true(has_error(errors, ts_names[4], "missing"));
  assert_true(has_error(errors, "up.1.extra", "not a tensor"));
  json_decref(errors);
  struct snap p;
  snap_take(s, &p);
  char *err = NULL;
  assert_true(soup_apply(s, v2, TS_N, 65536, &err) < 0);
  free(err);
  err = NULL;
  /* weight limits */
  assert_true(soup_apply(s, v, TS_N, SOUP_KQ_MAX + 1, &err) < 0);
  free(err);
  err = NULL;
  assert_true(soup_apply(s, v, TS_N, -KQ[0] - 1, &err) < 0); /* K would be negative */
  free(err);
  err = NULL;
  snap_check(s, &p);
  soup_free(s);
}

static void test_total_weight_cap(void **state) {
  (void)state;
  struct soup *s = mk(DT_F16);
  struct soup_view v[TS_N];
  ts_views(&shard_m[2], v);
  char *err = NULL;
  for (int i = 0; i < (int)(SOUP_K_MAX / SOUP_KQ_MAX); i++)
    assert_int_equal(soup_apply(s, v, TS_N, SOUP_KQ_MAX, &err), 0);
  assert_int_equal(soup_switch(s, 1, &err), 0);
  /* K == cap: the soup equals the shard (up to rounding) and one more unit fails */
  struct snap p;
  snap_take(s, &p);
  assert_true(soup_apply(s, v, TS_N, 1, &err) < 0);
  assert_non_null(strstr(err, "total weight"));
  free(err);
  snap_check(s, &p);
  soup_free(s);
}

static void test_base_with_nan_refused(void **state) {
  (void)state;
  for (int ti = 0; ti < TS_N; ti += 2) { /* F16, F32 and F16 base tensors */
    struct ts_model b;
    ts_make_base(&b, 21);
    ts_store(&b, ti, 2, ti == 2 ? INFINITY : NAN);
    struct soup_view v[TS_N];
    ts_views(&b, v);
    struct soup *s = NULL;
    char *err = NULL;
    assert_true(soup_new_views(v, TS_N, soup_backend_cpu(), DT_F32, &s, &err) < 0);
    assert_null(s);
    assert_non_null(strstr(err, ts_names[ti]));
    assert_non_null(strstr(err, "index 2"));
    free(err);
    ts_free(&b);
  }
}

static void test_weight_quantize(void **state) {
  (void)state;
  int64_t kq = 0;
  char *err = NULL;
  assert_int_equal(soup_weight_quantize(1.0, &kq, &err), 0);
  assert_int_equal(kq, 65536);
  assert_int_equal(soup_weight_quantize(0.1, &kq, &err), 0);
  assert_int_equal(kq, 6554); /* 6553.6 */
  assert_int_equal(soup_weight_quantize(16.0, &kq, &err), 0);
  assert_int_equal(kq, SOUP_KQ_MAX);
  assert_true(soup_weight_quantize(0.5 / 65536 - 1e-12, &kq, &err) < 0);
  free(err);
  err = NULL;
  assert_true(soup_weight_quantize(16.001, &kq, &err) < 0);
  free(err);
  err = NULL;
  assert_true(soup_weight_quantize(NAN, &kq, &err) < 0);
  free(err);
  err = NULL;
  assert_true(soup_weight_quantize(-1, &kq, &err) < 0);
  free(err);
  assert_true(soup_weight_value(98304) == 1.5);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bound_vs_fp64),         cmocka_unit_test(test_single_f16_shard_exact),
      cmocka_unit_test(test_empty_soup_is_base),    cmocka_unit_test(test_rejects_change_nothing),
      cmocka_unit_test(test_total_weight_cap),      cmocka_unit_test(test_weight_quantize),
      cmocka_unit_test(test_base_with_nan_refused),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
