/* test_soup_exact.c: exact reversibility and order independence of the soup
 * (DESIGN.md 5.1, reliability.md test 8), on real safetensors files.
 *  - register A, B, C then withdraw B == fresh {A, C} (hash and every bit);
 *  - all 6 orders of A, B, C give the same hash and bits;
 *  - reweight back and forth returns the original hash and bits;
 *  - apply(+k) then apply(-k), and apply then rollback, restore the hash;
 *  - the hash does not depend on the inference dtype (F32, F16, BF16);
 *  - soup_rebuild_hash over the active set equals the live hash;
 *  - the bulk path (soup_accumulate + one soup_materialize_spare) equals
 *    the full applies;
 *  - soup_build (a recipe from scratch) equals the live soup of the same
 *    members in hash, K and every bit, in any source order; no sources is
 *    the base; a bad recipe is refused.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "test_soup_util.h"

static struct ts_model base_m, shard_m[3];
static struct st_file *base_f, *shard_f[3];
static char paths[4][64];

static int setup(void **state) {
  (void)state;
  ts_make_base(&base_m, 11);
  const enum st_dtype dts[3] = {ST_F16, ST_BF16, ST_F32};
  for (int j = 0; j < 3; j++) ts_make_shard(&shard_m[j], &base_m, dts[j], 100 + (uint64_t)j);
  base_f = ts_write_open(&base_m, paths[0]);
  for (int j = 0; j < 3; j++) shard_f[j] = ts_write_open(&shard_m[j], paths[j + 1]);
  return base_f && shard_f[0] && shard_f[1] && shard_f[2] ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  st_close(base_f);
  ts_free(&base_m);
  for (int j = 0; j < 3; j++) {
    st_close(shard_f[j]);
    ts_free(&shard_m[j]);
  }
  for (int j = 0; j < 4; j++) unlink(paths[j]);
  return 0;
}

static struct soup *mk(enum dtype infer) {
  struct soup *s = NULL;
  char *err = NULL;
  if (soup_new(base_f, soup_backend_cpu(), infer, &s, &err)) fail_msg("soup_new: %s", err);
  return s;
}

static uint64_t next_version = 1;
static void app(struct soup *s, int j, int64_t kq) {
  char *err = NULL;
  if (soup_apply_st(s, shard_f[j], kq, &err)) fail_msg("apply: %s", err);
  if (soup_switch(s, next_version++, &err)) fail_msg("switch: %s", err);
}

static void assert_same(struct soup *a, struct soup *b) {
  const struct soup_version *va = soup_acquire(a), *vb = soup_acquire(b);
  assert_string_equal(va->hash_hex, vb->hash_hex);
  assert_int_equal(va->K, vb->K);
  assert_true(ts_versions_equal(va, vb));
  soup_release(a, va);
  soup_release(b, vb);
}

static const int64_t KQ[3] = {65536, 98304, 40000}; /* 1.0, 1.5, 0.6103... */

static void test_withdraw_equals_fresh(void **state) {
  (void)state;
  for (int d = 0; d < 3; d++) {
    enum dtype infer = d == 0 ? DT_F32 : d == 1 ? DT_F16 : DT_BF16;
    struct soup *s = mk(infer), *fresh = mk(infer);
    for (int j = 0; j < 3; j++) app(s, j, KQ[j]);
    app(s, 1, -KQ[1]);
    app(fresh, 0, KQ[0]);
    app(fresh, 2, KQ[2]);
    assert_same(s, fresh);
    /* the rebuild (POST /soup/verify) agrees */
    struct soup_view va[TS_N], vc[TS_N];
    ts_views(&shard_m[0], va);
    ts_views(&shard_m[2], vc);
    struct soup_source src[2] = {{va, TS_N, KQ[0]}, {vc, TS_N, KQ[2]}};
    char hex[65], live[65];
    char *err = NULL;
    assert_int_equal(soup_rebuild_hash(s, src, 2, hex, &err), 0);
    soup_hash_hex(s, live);
    assert_string_equal(hex, live);
    /* and differs from the soup that still holds B */
    struct soup_view vb[TS_N];
    ts_views(&shard_m[1], vb);
    struct soup_source src3[3] = {src[0], {vb, TS_N, KQ[1]}, src[1]};
    assert_int_equal(soup_rebuild_hash(s, src3, 3, hex, &err), 0);
    assert_string_not_equal(hex, live);
    /* no sources: the rebuild is the empty soup (the base) */
    struct soup *empty = mk(infer);
    char hempty[65];
    soup_hash_hex(empty, hempty);
    assert_int_equal(soup_rebuild_hash(s, NULL, 0, hex, &err), 0);
    assert_string_equal(hex, hempty);
    soup_free(empty);
    soup_free(s);
    soup_free(fresh);
  }
}

static void test_order_independence(void **state) {
  (void)state;
  static const int perm[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
  struct soup *ref = mk(DT_F32);
  for (int j = 0; j < 3; j++) app(ref, perm[0][j], KQ[perm[0][j]]);
  for (int p = 1; p < 6; p++) {
    struct soup *s = mk(DT_F32);
    for (int j = 0; j < 3; j++) app(s, perm[p][j], KQ[perm[p][j]]);
    assert_same(s, ref);
    soup_free(s);
  }
  soup_free(ref);
}

static void test_reweight_round_trip(void **state) {
  (void)state;
  struct soup *s = mk(DT_F32);
  app(s, 0, KQ[0]);
  app(s, 2, KQ[2]);
  char h0[65], h1[65], h2[65];
  soup_hash_hex(s, h0);
  const struct soup_version *v0 = soup_acquire(s);
  size_t bytes0 = 0;
  for (size_t i = 0; i < v0->n_tensors; i++) bytes0 += (size_t)v0->tensors[i].numel * 4;
  unsigned char *copy = malloc(bytes0), *p = copy;
  for (size_t i = 0; i < v0->n_tensors; i++) {
    memcpy(p, v0->tensors[i].data, (size_t)v0->tensors[i].numel * 4);
    p += v0->tensors[i].numel * 4;
  }
  soup_release(s, v0);
  app(s, 0, 3 * 65536 - KQ[0]); /* A: 1.0 -> 3.0 */
  soup_hash_hex(s, h1);
  assert_string_not_equal(h0, h1);
  app(s, 0, KQ[0] - 3 * 65536); /* back to 1.0 */
  soup_hash_hex(s, h2);
  assert_string_equal(h0, h2);
  const struct soup_version *v = soup_acquire(s);
  p = copy;
  for (size_t i = 0; i < v->n_tensors; i++) {
    assert_memory_equal(p, v->tensors[i].data, (size_t)v->tensors[i].numel * 4);
    p += v->tensors[i].numel * 4;
  }
  soup_release(s, v);
  free(copy);
  soup_free(s);
}

static void test_apply_unapply_and_rollback(void **state) {
  (void)state;
  struct soup *s = mk(DT_F16);
  char h0[65], h[65], *err = NULL;
  app(s, 1, KQ[1]);
  soup_hash_hex(s, h0);
  for (int j = 0; j < 3; j++) {
    app(s, j, 777 + j);
    app(s, j, -(777 + j));
    soup_hash_hex(s, h);
    assert_string_equal(h0, h);
  }
  /* rollback after a failed registry commit: live untouched, hash restored */
  const struct soup_version *live = soup_acquire(s);
  uint64_t ver = live->version;
  soup_release(s, live);
  assert_int_equal(soup_apply_st(s, shard_f[2], KQ[2], &err), 0);
  soup_hash_hex(s, h);
  assert_string_not_equal(h0, h);
  assert_int_equal(soup_rollback_st(s, shard_f[2], KQ[2], &err), 0);
  soup_hash_hex(s, h);
  assert_string_equal(h0, h);
  live = soup_acquire(s);
  assert_int_equal(live->version, ver);
  assert_string_equal(live->hash_hex, h0);
  soup_release(s, live);
  /* the stale spare cannot be published */
  assert_int_not_equal(soup_switch(s, 99, &err), 0);
  free(err);
  err = NULL;
  /* a second rollback has nothing to undo */
  assert_int_not_equal(soup_rollback_st(s, shard_f[2], KQ[2], &err), 0);
  free(err);
  soup_free(s);
}

static void test_hash_independent_of_dtype(void **state) {
  (void)state;
  char h[3][65];
  for (int d = 0; d < 3; d++) {
    struct soup *s = mk(d == 0 ? DT_F32 : d == 1 ? DT_F16 : DT_BF16);
    if (d == 0) soup_hash_hex(s, h[0]);
    for (int j = 0; j < 3; j++) app(s, j, KQ[j]);
    soup_hash_hex(s, h[d]);
    soup_free(s);
  }
  assert_string_equal(h[0], h[1]);
  assert_string_equal(h[0], h[2]);
}

/* The start-up path (accumulate only, then one materialize + hash) gives the
 * same soup as three full applies. */
static void test_bulk_accumulate_path(void **state) {
  (void)state;
  struct soup *a = mk(DT_BF16), *b = mk(DT_BF16);
  char *err = NULL, hex[65];
  for (int j = 0; j < 3; j++) {
    app(a, j, KQ[j]);
    assert_int_equal(soup_accumulate_st(b, shard_f[j], KQ[j], &err), 0);
  }
  soup_hash_hex(b, hex);
  assert_string_equal(hex, ""); /* stale until materialized */
  assert_int_not_equal(soup_switch(b, 5, &err), 0);
  free(err);
  err = NULL;
  assert_int_not_equal(soup_apply_st(b, shard_f[0], 1, &err), 0);
  free(err);
  err = NULL;
  assert_int_equal(soup_materialize_spare(b, &err), 0);
  assert_int_equal(soup_switch(b, 5, &err), 0);
  assert_same(a, b);
  /* and a full apply works again afterwards */
  app(a, 0, -KQ[0]);
  app(b, 0, -KQ[0]);
  assert_same(a, b);
  soup_free(a);
  soup_free(b);
}

static void test_build_equals_live(void **state) {
  (void)state;
  for (int d = 0; d < 3; d++) {
    enum dtype infer = d == 0 ? DT_F32 : d == 1 ? DT_F16 : DT_BF16;
    struct soup *s = mk(infer), *empty = mk(infer);
    app(s, 2, KQ[2]);
    app(s, 0, KQ[0]);
    struct soup_view va[TS_N], vc[TS_N];
    ts_views(&shard_m[0], va);
    ts_views(&shard_m[2], vc);
    struct soup_source src[2] = {{vc, TS_N, KQ[2]}, {va, TS_N, KQ[0]}};
    struct soup_source rev[2] = {src[1], src[0]};
    struct soup_version *b = NULL, *b2 = NULL, *b0 = NULL;
    char *err = NULL;
    assert_int_equal(soup_build(empty, src, 2, &b, &err), 0);
    assert_int_equal(soup_build(s, rev, 2, &b2, &err), 0);
    assert_int_equal(soup_build(s, NULL, 0, &b0, &err), 0);
    const struct soup_version *live = soup_acquire(s), *base = soup_acquire(empty);
    assert_string_equal(b->hash_hex, live->hash_hex);
    assert_string_equal(b2->hash_hex, live->hash_hex);
    assert_int_equal(b->K, live->K);
    assert_true(ts_versions_equal(b, live));
    assert_true(ts_versions_equal(b2, live));
    assert_string_equal(b0->hash_hex, base->hash_hex);
    assert_int_equal(b0->K, 0);
    assert_true(ts_versions_equal(b0, base));
    soup_release(s, live);
    soup_release(empty, base);
    /* refused: a weight out of range, names that do not match */
    struct soup_source bad[1] = {{va, TS_N, 0}};
    struct soup_version *none = NULL;
    assert_int_not_equal(soup_build(s, bad, 1, &none, &err), 0);
    assert_non_null(err);
    assert_null(none);
    free(err);
    err = NULL;
    struct soup_source short_src[1] = {{va, TS_N - 1, KQ[0]}};
    assert_int_not_equal(soup_build(s, short_src, 1, &none, &err), 0);
    assert_null(none);
    free(err);
    soup_built_free(b);
    soup_built_free(b2);
    soup_built_free(b0);
    soup_free(s);
    soup_free(empty);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_withdraw_equals_fresh),
      cmocka_unit_test(test_order_independence),
      cmocka_unit_test(test_reweight_round_trip),
      cmocka_unit_test(test_apply_unapply_and_rollback),
      cmocka_unit_test(test_hash_independent_of_dtype),
      cmocka_unit_test(test_bulk_accumulate_path),
      cmocka_unit_test(test_build_equals_live),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
