/* util.c: error formatting and small SQLite/jansson helpers for the registry
 * (declared in registry_impl.h). Error strings never contain bound values,
 * only statement text, so a token hash can never reach a log line. */
#include "registry_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int reg_err(char **err, int code, const char *fmt, ...) {
  if (!err) return code;
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0) s = NULL;
  va_end(ap);
  free(*err);
  *err = s;
  return code;
}

/* Source paths are absolute under CMake; keep from "server/" on. */
static const char *short_file(const char *file) {
  const char *p = strstr(file, "server/");
  return p ? p : file;
}

int reg_sql_fail(struct registry *r, int rc, const char *sql, const char *file, int line,
                 char **err) {
  int code = REGISTRY_EFAIL;
  switch (rc) {
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
  case SQLITE_BUSY_SNAPSHOT:
  case SQLITE_BUSY_RECOVERY:
  case SQLITE_LOCKED_SHAREDCACHE:
    code = REGISTRY_EBUSY;
    break;
  case SQLITE_CONSTRAINT_UNIQUE:
  case SQLITE_CONSTRAINT_PRIMARYKEY:
  case SQLITE_CONSTRAINT_TRIGGER:
    code = REGISTRY_ECONFLICT;
    break;
  case SQLITE_CONSTRAINT_CHECK:
  case SQLITE_CONSTRAINT_NOTNULL:
  case SQLITE_CONSTRAINT_FOREIGNKEY:
  case SQLITE_CONSTRAINT_DATATYPE:
    code = REGISTRY_EINVAL;
    break;
  default:
    if ((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_CORRUPT ||
        (rc & 0xff) == SQLITE_NOTADB) {
      code = REGISTRY_EIO;
      if (r) r->poisoned = 1;
    }
    break;
  }
  /* sqlite3_errmsg describes the most recent failure on the connection; use
   * the generic text when the failure did not come from the connection. */
  const char *msg = (r && r->db && sqlite3_extended_errcode(r->db) == rc) ? sqlite3_errmsg(r->db)
                                                                          : sqlite3_errstr(rc);
  return reg_err(err, code, "sqlite: %s (code %d) in `%s` at %s:%d", msg, rc, sql ? sql : "?",
                 short_file(file), line);
}

static int poisoned_err(const char *file, int line, char **err) {
  return reg_err(err, REGISTRY_EIO,
                 "registry unusable after an I/O error (the last commit's outcome is unknown); "
                 "restart to recover (at %s:%d)",
                 short_file(file), line);
}

int reg_prepare(struct registry *r, const char *sql, sqlite3_stmt **st, const char *file, int line,
                char **err) {
  *st = NULL;
  if (r->poisoned) return poisoned_err(file, line, err);
  /* After an I/O error or similar SQLite may have rolled the transaction
   * back on its own; refuse to run the caller's next statements in
   * autocommit mode as if they were still part of it. */
  if (r->in_tx && sqlite3_get_autocommit(r->db))
    return reg_err(err, REGISTRY_EFAIL,
                   "the transaction was rolled back after an error; call registry_rollback "
                   "(at %s:%d)",
                   short_file(file), line);
  int rc = sqlite3_prepare_v2(r->db, sql, -1, st, NULL);
  if (rc != SQLITE_OK) return reg_sql_fail(r, rc, sql, file, line, err);
  return 0;
}

int reg_exec(struct registry *r, const char *sql, const char *file, int line, char **err) {
  if (r->poisoned) return poisoned_err(file, line, err);
  int rc = sqlite3_exec(r->db, sql, NULL, NULL, NULL);
  if (rc != SQLITE_OK) return reg_sql_fail(r, rc, sql, file, line, err);
  return 0;
}

int reg_bind_text(sqlite3_stmt *st, int i, const char *s) {
  return s ? sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, i);
}

int reg_bind_int64(sqlite3_stmt *st, int i, int64_t v, int64_t null_value) {
  return v == null_value ? sqlite3_bind_null(st, i) : sqlite3_bind_int64(st, i, v);
}

int reg_bind_json(sqlite3_stmt *st, int i, const json_t *j, const char *dflt) {
  if (!j) return reg_bind_text(st, i, dflt);
  char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
  if (!s) return SQLITE_NOMEM;
  return sqlite3_bind_text(st, i, s, -1, free);
}

char *reg_col_strdup(sqlite3_stmt *st, int i) {
  const unsigned char *t = sqlite3_column_text(st, i);
  return t ? strdup((const char *)t) : NULL;
}

json_t *reg_col_json(sqlite3_stmt *st, int i) {
  const unsigned char *t = sqlite3_column_text(st, i);
  if (!t) return NULL;
  return json_loads((const char *)t, JSON_DECODE_ANY, NULL);
}

int reg_json_set_col_text(json_t *obj, const char *key, sqlite3_stmt *st, int i) {
  const unsigned char *t = sqlite3_column_text(st, i);
  return json_object_set_new(obj, key, t ? json_string((const char *)t) : json_null());
}

int reg_json_set_col_int(json_t *obj, const char *key, sqlite3_stmt *st, int i) {
  if (sqlite3_column_type(st, i) == SQLITE_NULL) return json_object_set_new(obj, key, json_null());
  return json_object_set_new(obj, key, json_integer(sqlite3_column_int64(st, i)));
}

int reg_is_hex64(const char *s) {
  if (!s) return 0;
  for (int k = 0; k < 64; k++)
    if (!((s[k] >= '0' && s[k] <= '9') || (s[k] >= 'a' && s[k] <= 'f'))) return 0;
  return s[64] == 0;
}

int64_t reg_limit(int64_t limit) {
  if (limit <= 0) return 100;
  return limit > 1000 ? 1000 : limit;
}

int reg_list_json(struct registry *r, const char *sql, int64_t after, int64_t limit,
                  const char *key, json_t *(*row)(sqlite3_stmt *st), json_t **out, char **err) {
  *out = NULL;
  json_t *arr = json_array();
  json_t *body = json_object();
  sqlite3_stmt *st = NULL;
  registry_lock(r);
  int rc = 0;
  if (!arr || !body || json_object_set(body, key, arr) != 0) {
    rc = reg_err(err, REGISTRY_EFAIL, "%s list: out of memory", key);
    goto done;
  }
  if ((rc = REG_PREPARE(r, sql, &st, err))) goto done;
  int brc = SQLITE_OK;
  REG_BIND(brc, sqlite3_bind_int64(st, 1, after));
  REG_BIND(brc, sqlite3_bind_int64(st, 2, reg_limit(limit)));
  if (brc != SQLITE_OK) {
    rc = REG_SQL_FAIL(r, brc, sql, err);
    goto done;
  }
  int s;
  while ((s = sqlite3_step(st)) == SQLITE_ROW) {
    json_t *o = row(st);
    if (!o || json_array_append_new(arr, o) != 0) {
      rc = reg_err(err, REGISTRY_EFAIL, "%s list: out of memory", key);
      goto done;
    }
  }
  if (s != SQLITE_DONE) rc = REG_SQL_FAIL(r, s, sql, err);
done:
  sqlite3_finalize(st);
  registry_unlock(r);
  json_decref(arr);
  if (rc) {
    json_decref(body);
    return rc;
  }
  *out = body;
  return 0;
}
