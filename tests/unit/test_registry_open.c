/* test_registry_open.c: opening the registry on real SQLite files in a
 * temporary directory: migrations from empty, idempotent re-open, the
 * pragma self-check (reliability item 18), refusal of a database newer than
 * the binary, refusal of a database that cannot do WAL, file mode 0600. */
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

#include "embedded.h"
#include "registry/registry.h"
#include "registry/registry_impl.h"
#include "test_registry_util.h"

static int setup(void **state) {
  if (fx_make(state, "regtest") != 0) return -1;
  return 0;
}

static int teardown(void **state) {
  return fx_remove(state);
}

/* Opens the file with plain SQLite (a second, independent connection). */
static sqlite3 *raw_open(const char *path) {
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
  return db;
}

static void raw_text(sqlite3 *db, const char *sql, char *out, size_t n) {
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  snprintf(out, n, "%s", (const char *)sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
}

static void test_migrate_from_empty(void **state) {
  struct fx *f = *state;
  struct registry *r = NULL;
  char *err = NULL;
  assert_int_equal(registry_open(f->path, &r, &err), 0);
  assert_null(err);
  int dbv = -1, binv = -1;
  assert_int_equal(registry_schema_version(r, &dbv, &binv), 0);
  assert_true(binv >= 1);
  assert_int_equal((size_t)binv, embedded_schema_count);
  assert_int_equal(dbv, binv);
  registry_close(r);

  /* Every table and trigger of the schema exists, seen from outside. */
  sqlite3 *db = raw_open(f->path);
  assert_int_equal(raw_int(db, "PRAGMA user_version"), binv);
  assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name "
                               "IN ('shards', 'tokens', 'events', 'soup_versions')"),
                   4);
  assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND "
                               "name = 'shards_active_name'"),
                   1);
  assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND "
                               "name IN ('events_no_update', 'events_no_delete')"),
                   2);
  char mode[16];
  raw_text(db, "PRAGMA journal_mode", mode, sizeof mode); /* WAL is persistent */
  assert_string_equal(mode, "wal");
  sqlite3_close(db);

  struct stat sb;
  assert_int_equal(stat(f->path, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0600);
}

static void test_reopen_idempotent(void **state) {
  struct fx *f = *state;
  struct registry *r = NULL;
  char *err = NULL;
  assert_int_equal(registry_open(f->path, &r, &err), 0);
  int64_t tid = 0;
  char *tok = NULL;
  assert_int_equal(registry_token_create(r, "client", NULL, &tok, &tid, &err), 0);
  registry_close(r);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(registry_open(f->path, &r, &err), 0);
    assert_null(err);
    struct registry_token t;
    assert_int_equal(registry_token_lookup(r, tok, &t, NULL), 0); /* data survives */
    assert_int_equal(t.id, tid);
    int64_t n = 0;
    assert_int_equal(registry_token_count(r, NULL, &n, NULL), 0);
    assert_int_equal(n, 1);
    registry_close(r);
  }
  sqlite3 *db = raw_open(f->path);
  assert_int_equal(raw_int(db, "PRAGMA user_version"), (int64_t)embedded_schema_count);
  sqlite3_close(db);
  free(tok);
}

/* The pragmas are in force on the registry's own connection. */
static void test_pragmas_in_force(void **state) {
  struct fx *f = *state;
  struct registry *r = NULL;
  assert_int_equal(registry_open(f->path, &r, NULL), 0);
  char mode[16];
  raw_text(r->db, "PRAGMA journal_mode", mode, sizeof mode);
  assert_string_equal(mode, "wal");
  assert_int_equal(raw_int(r->db, "PRAGMA synchronous"), 2); /* FULL */
  assert_int_equal(raw_int(r->db, "PRAGMA foreign_keys"), 1);
  assert_int_equal(raw_int(r->db, "PRAGMA busy_timeout"), REGISTRY_BUSY_TIMEOUT_MS);
  assert_int_equal(registry_integrity_check(r, NULL), 0);
  registry_close(r);
}

/* An in-memory database cannot be in WAL mode: the self-check refuses it. */
static void test_refuse_without_wal(void **state) {
  (void)state;
  struct registry *r = (struct registry *)1;
  char *err = NULL;
  assert_int_equal(registry_open(":memory:", &r, &err), REGISTRY_EFAIL);
  assert_null(r);
  assert_non_null(err);
  assert_non_null(strstr(err, "journal_mode"));
  free(err);
}

static void test_refuse_newer_db(void **state) {
  struct fx *f = *state;
  struct registry *r = NULL;
  assert_int_equal(registry_open(f->path, &r, NULL), 0);
  registry_close(r);
  sqlite3 *db = raw_open(f->path);
  char sql[64];
  snprintf(sql, sizeof sql, "PRAGMA user_version = %zu", embedded_schema_count + 1);
  assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
  char *err = NULL;
  assert_int_equal(registry_open(f->path, &r, &err), REGISTRY_EFAIL);
  assert_null(r);
  assert_non_null(strstr(err, "newer than this binary"));
  free(err);
  /* Nothing was changed by the refused open. */
  db = raw_open(f->path);
  assert_int_equal(raw_int(db, "PRAGMA user_version"), (int64_t)embedded_schema_count + 1);
  sqlite3_close(db);
}

/* A file that is not a sound SQLite database is refused at open. */
static void test_refuse_garbage_file(void **state) {
  struct fx *f = *state;
  FILE *fp = fopen(f->path, "wb");
  assert_non_null(fp);
  char junk[4096];
  memset(junk, 'x', sizeof junk);
  memcpy(junk, "SQLite format 3", 16); /* a valid magic, then garbage */
  assert_int_equal(fwrite(junk, 1, sizeof junk, fp), sizeof junk);
  fclose(fp);
  struct registry *r = NULL;
  char *err = NULL;
  assert_true(registry_open(f->path, &r, &err) < 0);
  assert_null(r);
  assert_non_null(err);
  free(err);
}

/* A database corrupted on disk (one data page overwritten after a clean
 * close) is refused at open by quick_check, not served. */
static void test_refuse_corrupt_page(void **state) {
  struct fx *f = *state;
  struct registry *r = NULL;
  assert_int_equal(registry_open(f->path, &r, NULL), 0);
  json_t *detail = json_pack("{s:s}", "pad", "0123456789012345678901234567890123456789");
  for (int i = 0; i < 300; i++) {
    struct registry_event ev = {.type = "filler",
                                .soup_version_before = -1,
                                .soup_version_after = -1,
                                .outcome = REGISTRY_OUTCOME_OK,
                                .detail = detail};
    assert_int_equal(registry_event_append(r, &ev, NULL, NULL), 0);
  }
  json_decref(detail);
  registry_close(r); /* checkpoints: everything is in the main file */
  FILE *fp = fopen(f->path, "r+b");
  assert_non_null(fp);
  assert_int_equal(fseek(fp, 0, SEEK_END), 0);
  long size = ftell(fp);
  assert_true(size > 8 * 4096);
  /* Overwrite the middle of the next-to-last page (a b-tree page). */
  unsigned char junk[512];
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)(i * 131 + 7);
  assert_int_equal(fseek(fp, size - 4096 - 2048, SEEK_SET), 0);
  assert_int_equal(fwrite(junk, 1, sizeof junk, fp), sizeof junk);
  fclose(fp);
  char *err = NULL;
  assert_true(registry_open(f->path, &r, &err) < 0);
  assert_null(r);
  assert_non_null(err);
  free(err);
}

/* A version-0 database with content of its own is migrated forward, its
 * content kept. */
static void test_migrate_existing_v0(void **state) {
  struct fx *f = *state;
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
  assert_int_equal(
      sqlite3_exec(db, "CREATE TABLE keep (x); INSERT INTO keep VALUES (42);", NULL, NULL, NULL),
      SQLITE_OK);
  sqlite3_close(db);
  struct registry *r = NULL;
  assert_int_equal(registry_open(f->path, &r, NULL), 0);
  assert_int_equal(raw_int(r->db, "SELECT x FROM keep"), 42);
  assert_int_equal(raw_int(r->db, "PRAGMA user_version"), (int64_t)embedded_schema_count);
  registry_close(r);
}

static void test_empty_path(void **state) {
  (void)state;
  struct registry *r = NULL;
  char *err = NULL;
  assert_int_equal(registry_open("", &r, &err), REGISTRY_EINVAL);
  free(err);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_migrate_from_empty, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reopen_idempotent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pragmas_in_force, setup, teardown),
      cmocka_unit_test_setup_teardown(test_refuse_without_wal, setup, teardown),
      cmocka_unit_test_setup_teardown(test_refuse_newer_db, setup, teardown),
      cmocka_unit_test_setup_teardown(test_refuse_garbage_file, setup, teardown),
      cmocka_unit_test_setup_teardown(test_refuse_corrupt_page, setup, teardown),
      cmocka_unit_test_setup_teardown(test_migrate_existing_v0, setup, teardown),
      cmocka_unit_test_setup_teardown(test_empty_path, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
