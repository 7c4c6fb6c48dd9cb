/* test_soup_versions.c: double buffering, reader references and export.
 *  - a reader keeps its version (bits and hash) across a switch;
 *  - the next update waits for that reader, or fails with -EBUSY and changes
 *    nothing when it does not release in time;
 *  - concurrent readers only ever see complete versions (each version's bits
 *    match the bits recorded for its hash) while a writer keeps switching;
 *  - soup_export writes a safetensors file with the live bits and metadata;
 *  - soup_stats reports the sizes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "log.h"
#include "test_soup_util.h"

static struct ts_model base_m, shard_m[2];
static struct st_file *base_f;
static char base_path[64];

static int setup(void **state) {
  (void)state;
  log_set_level(LOG_WARN);
  ts_make_base(&base_m, 31);
  ts_make_shard(&shard_m[0], &base_m, ST_F16, 300);
  ts_make_shard(&shard_m[1], &base_m, ST_F32, 301);
  base_f = ts_write_open(&base_m, base_path);
  return base_f ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  st_close(base_f);
  unlink(base_path);
  ts_free(&base_m);
  ts_free(&shard_m[0]);
  ts_free(&shard_m[1]);
  return 0;
}

static struct soup *mk(enum dtype infer) {
  struct soup *s = NULL;
  char *err = NULL;
  if (soup_new(base_f, soup_backend_cpu(), infer, &s, &err)) fail_msg("soup_new: %s", err);
  return s;
}

static int apply(struct soup *s, int j, int64_t kq, char **err) {
  struct soup_view v[TS_N];
  ts_views(&shard_m[j], v);
  return soup_apply(s, v, TS_N, kq, err);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static uint64_t sum_bits(const struct soup_version *v) { /* FNV-1a over all bytes */
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < v->n_tensors; i++) {
    const unsigned char *p = v->tensors[i].data;
    for (size_t k = 0; k < (size_t)v->tensors[i].numel * dtype_size(v->dtype); k++)
      h = (h ^ p[k]) * 1099511628211ull;
  }
  return h;
}

static void test_reader_keeps_version(void **state) {
  (void)state;
  struct soup *s = mk(DT_F32);
  char *err = NULL;
  const struct soup_version *v0 = soup_acquire(s);
  uint64_t b0 = sum_bits(v0);
  char h0[65];
  memcpy(h0, v0->hash_hex, 65);
  assert_int_equal(v0->version, 0);
  assert_int_equal(apply(s, 0, 65536, &err), 0);
  assert_int_equal(soup_switch(s, 7, &err), 0);
  const struct soup_version *v1 = soup_acquire(s);
  assert_int_equal(v1->version, 7);
  assert_string_not_equal(v1->hash_hex, h0);
  /* v0 still intact for its reader */
  assert_int_equal(v0->version, 0);
  assert_string_equal(v0->hash_hex, h0);
  assert_true(sum_bits(v0) == b0);
  /* the next update needs v0's buffer: it fails clearly and changes nothing */
  soup_set_wait_ms(s, 50);
  char hb[65], ha[65];
  soup_hash_hex(s, hb);
  assert_int_equal(apply(s, 1, 65536, &err), -EBUSY);
  assert_non_null(strstr(err, "still used"));
  free(err);
  err = NULL;
  soup_hash_hex(s, ha);
  assert_string_equal(ha, hb);
  assert_true(sum_bits(v0) == b0);
  assert_int_equal(soup_materialize_spare(s, &err), -EBUSY);
  free(err);
  err = NULL;
  soup_release(s, v0);
  assert_int_equal(apply(s, 1, 65536, &err), 0);
  assert_int_equal(soup_switch(s, 8, &err), 0);
  assert_int_equal(v1->version, 7); /* v1's reader still sees version 7 */
  soup_release(s, v1);
  soup_free(s);
}

struct releaser {
  struct soup *s;
  const struct soup_version *v;
};
static void *release_later(void *arg) {
  struct releaser *r = arg;
  usleep(100000);
  soup_release(r->s, r->v);
  return NULL;
}

static void test_update_waits_for_reader(void **state) {
  (void)state;
  struct soup *s = mk(DT_F16);
  char *err = NULL;
  struct releaser r = {s, soup_acquire(s)};
  assert_int_equal(apply(s, 0, 65536, &err), 0);
  assert_int_equal(soup_switch(s, 1, &err), 0);
  pthread_t th;
  pthread_create(&th, NULL, release_later, &r);
  soup_set_wait_ms(s, 10000);
  double t0 = now_ms();
  assert_int_equal(apply(s, 1, 65536, &err), 0); /* waits ~100 ms for the reader */
  assert_true(now_ms() - t0 >= 90);
  pthread_join(th, NULL);
  soup_free(s);
}

/* Writer alternates register/withdraw of shard 1; readers check that every
 * version they hold has the bits recorded for its hash, for as long as they
 * hold it. */
struct race {
  struct soup *s;
  atomic_int stop;
  char hash[2][65];
  uint64_t bits[2];
  atomic_int bad, reads;
};
static void *reader(void *arg) {
  struct race *r = arg;
  while (!atomic_load(&r->stop)) {
    const struct soup_version *v = soup_acquire(r->s);
    int k = strcmp(v->hash_hex, r->hash[0]) == 0   ? 0
            : strcmp(v->hash_hex, r->hash[1]) == 0 ? 1
                                                   : -1;
    if (k < 0 || sum_bits(v) != r->bits[k]) atomic_fetch_add(&r->bad, 1);
    atomic_fetch_add(&r->reads, 1);
    soup_release(r->s, v);
  }
  return NULL;
}

static void test_concurrent_readers(void **state) {
  (void)state;
  struct soup *s = mk(DT_F32);
  char *err = NULL;
  struct race r = {.s = s};
  assert_int_equal(apply(s, 0, 65536, &err), 0);
  assert_int_equal(soup_switch(s, 1, &err), 0);
  const struct soup_version *v = soup_acquire(s);
  memcpy(r.hash[0], v->hash_hex, 65);
  r.bits[0] = sum_bits(v);
  soup_release(s, v);
  assert_int_equal(apply(s, 1, 65536, &err), 0);
  assert_int_equal(soup_switch(s, 2, &err), 0);
  v = soup_acquire(s);
  memcpy(r.hash[1], v->hash_hex, 65);
  r.bits[1] = sum_bits(v);
  soup_release(s, v);
  pthread_t th[2];
  for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, reader, &r);
  for (int it = 0; it < 200; it++) {
    assert_int_equal(apply(s, 1, it % 2 ? 65536 : -65536, &err), 0);
    assert_int_equal(soup_switch(s, 3 + (uint64_t)it, &err), 0);
  }
  atomic_store(&r.stop, 1);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  assert_int_equal(atomic_load(&r.bad), 0);
  assert_true(atomic_load(&r.reads) > 0);
  soup_free(s);
}

static void test_export_and_stats(void **state) {
  (void)state;
  for (int d = 0; d < 2; d++) {
    enum dtype dt = d ? DT_BF16 : DT_F32;
    struct soup *s = mk(dt);
    char *err = NULL;
    assert_int_equal(apply(s, 0, 65536, &err), 0);
    assert_int_equal(apply(s, 1, 3 * 65536, &err), 0);
    assert_int_equal(soup_switch(s, 42, &err), 0);
    const struct soup_version *v = soup_acquire(s);
    char path[] = "/tmp/test_soup_export_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    json_t *meta = json_pack("{s:s}", "format", "pt");
    if (soup_export(v, path, meta, &err)) fail_msg("export: %s", err);
    json_decref(meta);
    struct st_file *f = NULL;
    if (st_open(path, &f, &err)) fail_msg("st_open: %s", err);
    assert_int_equal(f->n_tensors, v->n_tensors);
    for (size_t i = 0; i < v->n_tensors; i++) {
      const struct st_tensor *t = st_find(f, v->tensors[i].name);
      assert_non_null(t);
      assert_int_equal(t->dtype, dt == DT_F32 ? ST_F32 : ST_BF16);
      assert_int_equal(t->ndim, v->tensors[i].ndim);
      assert_memory_equal(t->data, v->tensors[i].data,
                          (size_t)v->tensors[i].numel * dtype_size(dt));
    }
    assert_string_equal(json_string_value(json_object_get(f->metadata, "soup_hash")), v->hash_hex);
    assert_string_equal(json_string_value(json_object_get(f->metadata, "soup_version")), "42");
    assert_string_equal(json_string_value(json_object_get(f->metadata, "format")), "pt");
    st_close(f);
    unlink(path);
    struct soup_stats st;
    soup_stats_get(s, &st);
    int64_t params = 0;
    for (int i = 0; i < TS_N; i++) params += ts_numel(i);
    assert_int_equal(st.params, params);
    assert_int_equal(st.n_tensors, TS_N);
    assert_int_equal(st.bytes, (size_t)params * (8 + 2 * dtype_size(dt)));
    assert_int_equal(st.K, 4 * 65536);
    assert_int_equal(st.live_version, 42);
    assert_true(st.last_update_ms >= 0);
    soup_release(s, v);
    soup_free(s);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reader_keeps_version),
      cmocka_unit_test(test_update_waits_for_reader),
      cmocka_unit_test(test_concurrent_readers),
      cmocka_unit_test(test_export_and_stats),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
