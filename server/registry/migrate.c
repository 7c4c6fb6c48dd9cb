/* migrate.c: applies the embedded schema migrations (schema/NNNN_what.sql,
 * compiled in as embedded_schema[]) in order.
 *
 * Invariants: migration i (0-based) is named "%04d_*.sql" with number i + 1;
 * PRAGMA user_version is the number of applied migrations; each migration and
 * its user_version bump commit in ONE transaction (BEGIN IMMEDIATE, with the
 * version re-read inside it, so two processes opening at once cannot apply a
 * migration twice). A database whose user_version exceeds the binary's count
 * is refused (fix forward, never downgrade). */
#include "registry_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embedded.h"
#include "log.h"

/* Number of embedded migrations, after checking their names. */
int reg_migrations_count(char **err) {
  int n = 0;
  for (const struct embedded_file *f = embedded_schema; f->name; f++, n++) {
    const char *s = f->name;
    size_t len = strlen(s);
    int num = 0;
    for (int k = 0; k < 4; k++) {
      if (s[k] < '0' || s[k] > '9')
        return reg_err(err, REGISTRY_EFAIL, "migration %s: name must be NNNN_what.sql", s);
      num = num * 10 + (s[k] - '0');
    }
    if (s[4] != '_' || len < 9 || strcmp(s + len - 4, ".sql") != 0)
      return reg_err(err, REGISTRY_EFAIL, "migration %s: name must be NNNN_what.sql", s);
    if (num != n + 1)
      return reg_err(err, REGISTRY_EFAIL, "migration %s: expected number %04d (no gaps)", s, n + 1);
  }
  return n;
}

int reg_user_version(struct registry *r, int *out, char **err) {
  static const char *sql = "PRAGMA user_version";
  sqlite3_stmt *st = NULL;
  int rc = REG_PREPARE(r, sql, &st, err);
  if (rc) return rc;
  int s = sqlite3_step(st);
  if (s != SQLITE_ROW) {
    rc = REG_SQL_FAIL(r, s, sql, err);
  } else {
    *out = sqlite3_column_int(st, 0);
  }
  sqlite3_finalize(st);
  return rc;
}

static int migrate_one(struct registry *r, const struct embedded_file *f, int number, int *applied,
                       char **err) {
  *applied = 0;
  int rc = REG_EXEC(r, "BEGIN IMMEDIATE", err);
  if (rc) return rc;
  int cur = 0;
  rc = reg_user_version(r, &cur, err);
  if (rc) goto fail;
  if (cur >= number) goto done; /* another process applied it meanwhile */
  if (cur != number - 1) {
    rc = reg_err(err, REGISTRY_EFAIL, "migration %s: database is at version %d", f->name, cur);
    goto fail;
  }
  char *emsg = NULL;
  int s = sqlite3_exec(r->db, (const char *)f->data, NULL, NULL, &emsg);
  if (s != SQLITE_OK) {
    rc = reg_err(err, REGISTRY_EFAIL, "migration %s failed: %s (code %d)", f->name,
                 emsg ? emsg : sqlite3_errstr(s), s);
    sqlite3_free(emsg);
    goto fail;
  }
  char sql[64];
  snprintf(sql, sizeof sql, "PRAGMA user_version = %d", number);
  rc = REG_EXEC(r, sql, err);
  if (rc) goto fail;
  *applied = 1;
done:
  rc = REG_EXEC(r, "COMMIT", err);
  if (rc) goto fail;
  return 0;
fail:
  if (!sqlite3_get_autocommit(r->db)) sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
  *applied = 0;
  return rc;
}

int reg_migrate(struct registry *r, char **err) {
  int count = reg_migrations_count(err);
  if (count < 0) return count;
  int cur = 0;
  int rc = reg_user_version(r, &cur, err);
  if (rc) return rc;
  if (cur > count)
    return reg_err(err, REGISTRY_EFAIL,
                   "database schema version %d is newer than this binary (%d): refusing to open",
                   cur, count);
  if (cur < 0) return reg_err(err, REGISTRY_EFAIL, "database schema version %d is invalid", cur);
  for (int i = cur; i < count; i++) {
    int applied = 0;
    rc = migrate_one(r, &embedded_schema[i], i + 1, &applied, err);
    if (rc) return rc;
    if (applied) log_info("registry: applied migration %s", embedded_schema[i].name);
  }
  return 0;
}
