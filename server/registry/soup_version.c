/* soup_version.c: the soup version history (API.md GET /soup/history). One
 * row per live soup: its version, hash, time, the audit event that made it
 * and its ordered member set. Invariants (schema triggers): versions strictly
 * increase; rows are never updated or deleted; event_id names an existing
 * event (foreign key). Insert it in the same transaction as the shard change
 * and its event (DESIGN 5.6). */
#include "registry_impl.h"

#include <stdio.h>
#include <string.h>

void registry_soup_version_clear(struct registry_soup_version *v) {
  if (!v) return;
  json_decref(v->members);
  memset(v, 0, sizeof *v);
}

int registry_soup_version_insert(struct registry *r, int64_t version, const char *hash,
                                 int64_t event_id, const json_t *members, char **err) {
  if (version < 0) return reg_err(err, REGISTRY_EINVAL, "soup version must be >= 0");
  if (!reg_is_hex64(hash))
    return reg_err(err, REGISTRY_EINVAL, "soup hash must be 64 lowercase hex characters");
  if (event_id < 0) return reg_err(err, REGISTRY_EINVAL, "soup version: bad event id");
  if (members && !json_is_array(members))
    return reg_err(err, REGISTRY_EINVAL, "soup version: members must be a JSON array");
  static const char *sql =
      "INSERT INTO soup_versions (version, hash, event_id, members) VALUES (?1, ?2, ?3, ?4)";
  sqlite3_stmt *st = NULL;
  registry_lock(r);
  int rc = REG_PREPARE(r, sql, &st, err);
  if (rc) goto done;
  int brc = SQLITE_OK;
  REG_BIND(brc, sqlite3_bind_int64(st, 1, version));
  REG_BIND(brc, reg_bind_text(st, 2, hash));
  REG_BIND(brc, reg_bind_int64(st, 3, event_id, 0));
  REG_BIND(brc, reg_bind_json(st, 4, members, "[]"));
  if (brc != SQLITE_OK) {
    rc = REG_SQL_FAIL(r, brc, sql, err);
    goto done;
  }
  int s = sqlite3_step(st);
  if (s != SQLITE_DONE) rc = REG_SQL_FAIL(r, s, sql, err);
done:
  sqlite3_finalize(st);
  registry_unlock(r);
  return rc;
}

int registry_soup_version_latest(struct registry *r, struct registry_soup_version *out,
                                 char **err) {
  memset(out, 0, sizeof *out);
  static const char *sql = "SELECT version, hash, at, event_id, members FROM soup_versions "
                           "ORDER BY version DESC LIMIT 1";
  sqlite3_stmt *st = NULL;
  registry_lock(r);
  int rc = REG_PREPARE(r, sql, &st, err);
  if (rc) goto done;
  int s = sqlite3_step(st);
  if (s == SQLITE_DONE) {
    rc = reg_err(err, REGISTRY_ENOTFOUND, "no soup version yet");
    goto done;
  }
  if (s != SQLITE_ROW) {
    rc = REG_SQL_FAIL(r, s, sql, err);
    goto done;
  }
  out->version = sqlite3_column_int64(st, 0);
  snprintf(out->hash, sizeof out->hash, "%s", (const char *)sqlite3_column_text(st, 1));
  snprintf(out->at, sizeof out->at, "%s", (const char *)sqlite3_column_text(st, 2));
  out->event_id = sqlite3_column_int64(st, 3); /* NULL reads as 0 */
  out->members = reg_col_json(st, 4);
  if (!json_is_array(out->members)) {
    registry_soup_version_clear(out);
    rc = reg_err(err, REGISTRY_EFAIL, "soup version row unreadable (out of memory?)");
  }
done:
  sqlite3_finalize(st);
  registry_unlock(r);
  return rc;
}

/* One history entry: {version, hash, at, event_id, event_type, members}. */
static json_t *version_row_json(sqlite3_stmt *st) {
  json_t *o = json_object();
  if (!o) return NULL;
  int bad = 0;
  bad |= reg_json_set_col_int(o, "version", st, 0);
  bad |= reg_json_set_col_text(o, "hash", st, 1);
  bad |= reg_json_set_col_text(o, "at", st, 2);
  bad |= reg_json_set_col_int(o, "event_id", st, 3);
  bad |= reg_json_set_col_text(o, "event_type", st, 4);
  json_t *m = reg_col_json(st, 5);
  bad |= json_object_set_new(o, "members", m ? m : json_array());
  if (bad) {
    json_decref(o);
    return NULL;
  }
  return o;
}

int registry_soup_version_list(struct registry *r, int64_t since_version, int64_t limit,
                               json_t **out, char **err) {
  static const char *sql =
      "SELECT v.version, v.hash, v.at, v.event_id, e.type, v.members FROM soup_versions v "
      "LEFT JOIN events e ON e.id = v.event_id WHERE v.version > ?1 ORDER BY v.version LIMIT ?2";
  return reg_list_json(r, sql, since_version, limit, "versions", version_row_json, out, err);
}
