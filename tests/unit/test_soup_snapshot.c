/* test_soup_snapshot.c: accumulator snapshots for fast restarts.
 *  - write, load into a fresh soup, materialize, switch: same hash and bits
 *    as the original, and further updates agree;
 *  - a snapshot with one flipped accumulator byte, or taken over another
 *    base, is refused and the soup is unchanged;
 *  - on a backend whose memory is not host memory, snapshots and export go
 *    through its download/upload ops.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "log.h"
#include "test_soup_util.h"

static struct ts_model base_m, base2_m, shard_m[2];
static struct st_file *base_f, *base2_f;
static char base_path[64], base2_path[64];

static int setup(void **state) {
  (void)state;
  log_set_level(LOG_WARN);
  ts_make_base(&base_m, 41);
  ts_make_base(&base2_m, 42);
  for (int64_t k = 0; k < ts_numel(2); k++) /* another base: other F for one tensor */
    ts_store(&base2_m, 2, k, base2_m.val[2][k] * 100);
  ts_make_shard(&shard_m[0], &base_m, ST_BF16, 400);
  ts_make_shard(&shard_m[1], &base_m, ST_F32, 401);
  base_f = ts_write_open(&base_m, base_path);
  base2_f = ts_write_open(&base2_m, base2_path);
  return base_f && base2_f ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  st_close(base_f);
  st_close(base2_f);
  unlink(base_path);
  unlink(base2_path);
  ts_free(&base_m);
  ts_free(&base2_m);
  ts_free(&shard_m[0]);
  ts_free(&shard_m[1]);
  return 0;
}

static struct soup *mk(struct st_file *b) {
  struct soup *s = NULL;
  char *err = NULL;
  if (soup_new(b, soup_backend_cpu(), DT_F32, &s, &err)) fail_msg("soup_new: %s", err);
  return s;
}

static void app(struct soup *s, int j, int64_t kq, uint64_t ver) {
  struct soup_view v[TS_N];
  char *err = NULL;
  ts_views(&shard_m[j], v);
  if (soup_apply(s, v, TS_N, kq, &err) || soup_switch(s, ver, &err)) fail_msg("%s", err);
}

static void assert_same(struct soup *a, struct soup *b) {
  const struct soup_version *va = soup_acquire(a), *vb = soup_acquire(b);
  assert_string_equal(va->hash_hex, vb->hash_hex);
  assert_true(ts_versions_equal(va, vb));
  soup_release(a, va);
  soup_release(b, vb);
}

static void test_round_trip(void **state) {
  (void)state;
  char path[] = "/tmp/test_soup_snap_XXXXXX";
  int fd = mkstemp(path);
  close(fd);
  char *err = NULL, hex[65], live[65];
  struct soup *a = mk(base_f);
  app(a, 0, 65536, 1);
  app(a, 1, 3 * 65536, 2);
  assert_int_equal(soup_snapshot_write(a, path, 2, &err), 0);
  struct soup *b = mk(base_f);
  uint64_t ver = 0;
  assert_int_equal(soup_snapshot_load(b, path, &ver, hex, &err), 0);
  assert_int_equal(ver, 2);
  soup_hash_hex(a, live);
  assert_string_equal(hex, live);
  assert_int_equal(soup_materialize_spare(b, &err), 0);
  assert_int_equal(soup_switch(b, ver, &err), 0);
  assert_same(a, b);
  app(a, 0, -65536, 3);
  app(b, 0, -65536, 3);
  assert_same(a, b);
  soup_free(a);
  soup_free(b);
  unlink(path);
}

static void test_refuses_corrupt_or_foreign(void **state) {
  (void)state;
  char path[] = "/tmp/test_soup_snap_XXXXXX";
  int fd = mkstemp(path);
  close(fd);
  char *err = NULL, h0[65], h1[65];
  struct soup *a = mk(base_f);
  app(a, 0, 65536, 1);
  assert_int_equal(soup_snapshot_write(a, path, 1, &err), 0);
  /* another base: F differs for one tensor, so the recorded hash cannot match */
  struct soup *c = mk(base2_f);
  soup_hash_hex(c, h0);
  assert_true(soup_snapshot_load(c, path, NULL, NULL, &err) < 0);
  assert_non_null(strstr(err, "hash"));
  free(err);
  err = NULL;
  soup_hash_hex(c, h1);
  assert_string_equal(h0, h1);
  /* flip one byte of the last tensor's data (the end of the file) */
  FILE *fp = fopen(path, "r+b");
  assert_non_null(fp);
  fseek(fp, -3, SEEK_END);
  int ch = fgetc(fp);
  fseek(fp, -3, SEEK_END);
  fputc(ch ^ 0x10, fp);
  fclose(fp);
  struct soup *b = mk(base_f);
  soup_hash_hex(b, h0);
  assert_true(soup_snapshot_load(b, path, NULL, NULL, &err) < 0);
  free(err);
  soup_hash_hex(b, h1);
  assert_string_equal(h0, h1);
  soup_free(a);
  soup_free(b);
  soup_free(c);
  unlink(path);
}

/* A backend that claims device memory (the CPU ops, but bytes must move
 * through download/upload): export and snapshots must use them. */
static int n_down, n_up;
static int fake_down(void *h, const void *m, size_t b) {
  n_down++;
  memcpy(h, m, b);
  return 0;
}
static int fake_up(void *m, const void *h, size_t b) {
  n_up++;
  memcpy(m, h, b);
  return 0;
}

static void test_device_memory_backend(void **state) {
  (void)state;
  static struct soup_backend fake;
  fake = *soup_backend_cpu();
  fake.name = "fake-device";
  fake.host_memory = 0;
  fake.download = fake_down;
  fake.upload = fake_up;
  char snap[] = "/tmp/test_soup_snap_XXXXXX", exp[] = "/tmp/test_soup_exp_XXXXXX";
  close(mkstemp(snap));
  close(mkstemp(exp));
  char *err = NULL;
  struct soup *a = NULL, *b = NULL, *ref = mk(base_f);
  assert_int_equal(soup_new(base_f, &fake, DT_F32, &a, &err), 0);
  assert_int_equal(soup_new(base_f, &fake, DT_F32, &b, &err), 0);
  app(a, 0, 65536, 1);
  app(ref, 0, 65536, 1);
  assert_same(a, ref);
  assert_int_equal(soup_snapshot_write(a, snap, 1, &err), 0);
  assert_true(n_down > 0);
  assert_int_equal(soup_snapshot_load(b, snap, NULL, NULL, &err), 0);
  assert_true(n_up > 0);
  assert_int_equal(soup_materialize_spare(b, &err), 0);
  assert_int_equal(soup_switch(b, 1, &err), 0);
  assert_same(b, ref);
  int before = n_down;
  const struct soup_version *v = soup_acquire(b);
  assert_int_equal(soup_export(v, exp, NULL, &err), 0);
  assert_true(n_down > before);
  struct st_file *f = NULL;
  assert_int_equal(st_open(exp, &f, &err), 0);
  for (size_t i = 0; i < v->n_tensors; i++)
    assert_memory_equal(st_find(f, v->tensors[i].name)->data, v->tensors[i].data,
                        (size_t)v->tensors[i].numel * 4);
  st_close(f);
  soup_release(b, v);
  soup_free(a);
  soup_free(b);
  soup_free(ref);
  unlink(snap);
  unlink(exp);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_refuses_corrupt_or_foreign),
      cmocka_unit_test(test_device_memory_backend),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
