/* registry_impl.h: internals shared by the server/registry/ sources, not part
 * of the public API (registry.h).
 *
 * Invariants: `db` is only touched with `mu` held (every public function locks
 * it; registry_begin keeps it until commit/rollback). `in_tx` and `tx_owner`
 * change only with `mu` held. Every SQLite failure goes through
 * REG_SQL_FAIL, which records the statement text (never bound values, which
 * may be token hashes), the source file and line, and maps the result code to
 * a REGISTRY_E* code.
 */
#pragma once

#include <pthread.h>
#include <sqlite3.h>

#include "registry.h"

struct registry {
  sqlite3 *db;
  pthread_mutex_t mu; /* recursive */
  int in_tx;
  pthread_t tx_owner;
  int poisoned; /* set by reg_sql_fail on SQLITE_IOERR / SQLITE_CORRUPT */
};

/* Sets *err (if err) to a malloc'd printf-formatted message; returns code. */
int reg_err(char **err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Formats "sqlite: <msg> (code N) in `<sql>` at <file>:<line>" into *err and
 * returns the mapped code: BUSY/LOCKED -> EBUSY, UNIQUE/PRIMARYKEY/TRIGGER
 * constraints -> ECONFLICT, CHECK/NOTNULL/FOREIGNKEY -> EINVAL, IOERR/CORRUPT
 * -> EIO (and the registry is poisoned), else EFAIL. */
int reg_sql_fail(struct registry *r, int rc, const char *sql, const char *file, int line,
                 char **err);
#define REG_SQL_FAIL(r, rc, sql, err) reg_sql_fail((r), (rc), (sql), __FILE__, __LINE__, (err))

/* sqlite3_prepare_v2 with the error recorded (statement, file, line).
 * Refuses (EIO) once poisoned, and (EFAIL) inside a transaction that SQLite
 * already rolled back. */
int reg_prepare(struct registry *r, const char *sql, sqlite3_stmt **st, const char *file, int line,
                char **err);
#define REG_PREPARE(r, sql, st, err) reg_prepare((r), (sql), (st), __FILE__, __LINE__, (err))

/* sqlite3_exec of statements without results, error recorded; refuses
 * (EIO) once poisoned. */
int reg_exec(struct registry *r, const char *sql, const char *file, int line, char **err);
#define REG_EXEC(r, sql, err) reg_exec((r), (sql), __FILE__, __LINE__, (err))

/* Accumulates bind results: use `int brc = SQLITE_OK; REG_BIND(brc, ...);`
 * and check brc once. */
#define REG_BIND(brc, expr)                                                                        \
  do {                                                                                             \
    if ((brc) == SQLITE_OK) (brc) = (expr);                                                        \
  } while (0)

/* Binds s, or NULL when s is NULL. */
int reg_bind_text(sqlite3_stmt *st, int i, const char *s);
/* Binds v, or NULL when v == null_value. */
int reg_bind_int64(sqlite3_stmt *st, int i, int64_t v, int64_t null_value);
/* Binds the compact JSON text of j (or of `dflt` when j is NULL; NULL dflt
 * binds SQL NULL). SQLITE_NOMEM if serialization fails. */
int reg_bind_json(sqlite3_stmt *st, int i, const json_t *j, const char *dflt);

/* Column helpers. reg_col_strdup: NULL for SQL NULL (and on OOM). */
char *reg_col_strdup(sqlite3_stmt *st, int i);
/* Parsed JSON of a text column; NULL for SQL NULL or invalid JSON. */
json_t *reg_col_json(sqlite3_stmt *st, int i);
/* Sets key to the text column, or JSON null. 0 ok, -1 OOM. */
int reg_json_set_col_text(json_t *obj, const char *key, sqlite3_stmt *st, int i);
/* Sets key to the integer column, or JSON null. 0 ok, -1 OOM. */
int reg_json_set_col_int(json_t *obj, const char *key, sqlite3_stmt *st, int i);

/* migrate.c: number of embedded migrations (negative if misnamed), the
 * database's PRAGMA user_version, and applying the pending migrations. */
int reg_migrations_count(char **err);
int reg_user_version(struct registry *r, int *out, char **err);
int reg_migrate(struct registry *r, char **err);

/* 1 if s is exactly 64 lowercase hex characters. */
int reg_is_hex64(const char *s);
/* Clamps an API limit: <= 0 -> 100, > 1000 -> 1000. */
int64_t reg_limit(int64_t limit);

/* A page of rows as {"<key>": [row(st) ...]}: runs sql with ?1 = after (the
 * last id or version seen) and ?2 = reg_limit(limit), under the lock. row
 * returns a new object, or NULL on allocation failure. */
int reg_list_json(struct registry *r, const char *sql, int64_t after, int64_t limit,
                  const char *key, json_t *(*row)(sqlite3_stmt *st), json_t **out, char **err);
