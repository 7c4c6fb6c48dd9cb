/* open.c: opening and closing the registry database, the start-up
 * self-check, the recursive mutex and transactions.
 *
 * Invariants: after registry_open succeeds the connection is in WAL mode with
 * synchronous=FULL, foreign_keys=ON and a busy timeout of
 * REGISTRY_BUSY_TIMEOUT_MS, each read back and verified (reliability item
 * 18); the schema is at the binary's version; quick_check said "ok". A
 * transaction (registry_begin) holds the mutex until commit or rollback. */
#include "registry_impl.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* Runs a one-row pragma; returns its first column as text (malloc'd). */
static int pragma_text(struct registry *r, const char *sql, char **out, char **err) {
  sqlite3_stmt *st = NULL;
  int rc = REG_PREPARE(r, sql, &st, err);
  if (rc) return rc;
  int s = sqlite3_step(st);
  if (s != SQLITE_ROW) {
    rc = REG_SQL_FAIL(r, s, sql, err);
  } else {
    *out = reg_col_strdup(st, 0);
    if (!*out) rc = reg_err(err, REGISTRY_EFAIL, "%s: no value", sql);
  }
  sqlite3_finalize(st);
  return rc;
}

/* Sets nothing; reads `sql` back and compares with `want`. */
static int pragma_expect(struct registry *r, const char *sql, const char *want, char **err) {
  char *v = NULL;
  int rc = pragma_text(r, sql, &v, err);
  if (rc) return rc;
  if (strcmp(v, want) != 0)
    rc = reg_err(err, REGISTRY_EFAIL, "self-check: %s is '%s', required '%s': refusing to open",
                 sql, v, want);
  free(v);
  return rc;
}

static int configure(struct registry *r, char **err) {
  int rc;
  sqlite3_extended_result_codes(r->db, 1);
  sqlite3_db_config(r->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
  sqlite3_db_config(r->db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 1, NULL);
  int s = sqlite3_busy_timeout(r->db, REGISTRY_BUSY_TIMEOUT_MS);
  if (s != SQLITE_OK) return REG_SQL_FAIL(r, s, "sqlite3_busy_timeout", err);
  char *mode = NULL;
  rc = pragma_text(r, "PRAGMA journal_mode = WAL", &mode, err);
  free(mode);
  if (rc) return rc;
  if ((rc = REG_EXEC(r, "PRAGMA synchronous = FULL", err))) return rc;
  if ((rc = REG_EXEC(r, "PRAGMA foreign_keys = ON", err))) return rc;
  /* The self-check: read every setting back. */
  if ((rc = pragma_expect(r, "PRAGMA journal_mode", "wal", err))) return rc;
  if ((rc = pragma_expect(r, "PRAGMA synchronous", "2", err))) return rc; /* FULL */
  if ((rc = pragma_expect(r, "PRAGMA foreign_keys", "1", err))) return rc;
  char want[32];
  snprintf(want, sizeof want, "%d", REGISTRY_BUSY_TIMEOUT_MS);
  if ((rc = pragma_expect(r, "PRAGMA busy_timeout", want, err))) return rc;
  return 0;
}

int registry_open(const char *path, struct registry **out, char **err) {
  *out = NULL;
  if (!path || !*path) return reg_err(err, REGISTRY_EINVAL, "registry_open: empty path");
  if (!sqlite3_threadsafe())
    return reg_err(err, REGISTRY_EFAIL, "registry_open: SQLite built without thread safety");
  struct registry *r = calloc(1, sizeof *r);
  if (!r) return reg_err(err, REGISTRY_EFAIL, "registry_open: out of memory");
  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
  pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
  pthread_mutex_init(&r->mu, &ma);
  pthread_mutexattr_destroy(&ma);
  int rc = 0;

  /* Create the file 0600 ourselves (it holds token hashes); SQLite gives the
   * -wal and -shm files the same mode. ":memory:" is left to the self-check,
   * which refuses it (no WAL). */
  if (strcmp(path, ":memory:") != 0) {
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
      rc = reg_err(err, REGISTRY_EFAIL, "registry_open: cannot create the database file");
      goto fail;
    }
    close(fd);
  }
  int s = sqlite3_open_v2(path, &r->db,
                          SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
  if (s != SQLITE_OK) {
    rc = REG_SQL_FAIL(r, s, "sqlite3_open_v2", err);
    goto fail;
  }
  if ((rc = configure(r, err))) goto fail;
  if ((rc = pragma_expect(r, "PRAGMA quick_check", "ok", err))) goto fail;
  if ((rc = reg_migrate(r, err))) goto fail;
  *out = r;
  return 0;
fail:
  registry_close(r);
  return rc;
}

void registry_close(struct registry *r) {
  if (!r) return;
  if (r->db) {
    if (!sqlite3_get_autocommit(r->db)) sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
    int s = sqlite3_close_v2(r->db);
    if (s != SQLITE_OK) log_warn("registry: close: %s", sqlite3_errstr(s));
  }
  pthread_mutex_destroy(&r->mu);
  free(r);
}

int registry_healthy(struct registry *r) {
  registry_lock(r);
  int ok = !r->poisoned;
  registry_unlock(r);
  return ok;
}

int registry_integrity_check(struct registry *r, char **err) {
  registry_lock(r);
  int rc = pragma_expect(r, "PRAGMA integrity_check", "ok", err);
  registry_unlock(r);
  return rc;
}

int registry_schema_version(struct registry *r, int *db_version, int *binary_version) {
  registry_lock(r);
  int rc = 0;
  if (db_version) rc = reg_user_version(r, db_version, NULL);
  registry_unlock(r);
  if (binary_version) *binary_version = reg_migrations_count(NULL);
  return rc;
}

void registry_lock(struct registry *r) {
  pthread_mutex_lock(&r->mu);
}
void registry_unlock(struct registry *r) {
  pthread_mutex_unlock(&r->mu);
}

int registry_in_transaction(struct registry *r) {
  registry_lock(r);
  int v = r->in_tx && pthread_equal(r->tx_owner, pthread_self());
  registry_unlock(r);
  return v;
}

int registry_begin(struct registry *r, char **err) {
  registry_lock(r);
  if (r->in_tx) { /* we hold the mutex, so the transaction is ours */
    registry_unlock(r);
    return reg_err(err, REGISTRY_EINVAL, "registry_begin: transaction already open");
  }
  int rc = REG_EXEC(r, "BEGIN IMMEDIATE", err);
  if (rc) {
    registry_unlock(r);
    return rc;
  }
  r->in_tx = 1;
  r->tx_owner = pthread_self();
  return 0; /* the mutex stays held until commit/rollback */
}

/* Ends the transaction state and drops both holds: ours and begin's. */
static void tx_end(struct registry *r) {
  r->in_tx = 0;
  registry_unlock(r);
  registry_unlock(r);
}

int registry_commit(struct registry *r, char **err) {
  registry_lock(r);
  if (!r->in_tx) {
    registry_unlock(r);
    return reg_err(err, REGISTRY_EINVAL, "registry_commit: no transaction open");
  }
  int rc = REG_EXEC(r, "COMMIT", err);
  if (rc && !sqlite3_get_autocommit(r->db)) sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
  tx_end(r);
  return rc;
}

int registry_rollback(struct registry *r) {
  registry_lock(r);
  if (!r->in_tx) {
    registry_unlock(r);
    return 0;
  }
  int rc = 0;
  if (!sqlite3_get_autocommit(r->db)) {
    int s = sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL); /* even when poisoned */
    if (s != SQLITE_OK) rc = REG_SQL_FAIL(r, s, "ROLLBACK", NULL);
  }
  tx_end(r);
  return rc;
}
