/* shard.c: typed queries on the shards table (registry.h, "shards").
 *
 * Invariants (also enforced by the schema): at most one active shard per
 * name and per sha256; weight_q > 0; a row is never deleted; only an active
 * row changes, and only its weight or its active -> withdrawn transition.
 * Each function holds the registry mutex for its duration and is atomic on
 * its own; inside registry_begin/commit it joins the caller's transaction. */
#include "registry_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHARD_COLS                                                                                 \
  "id, name, provider, status, weight_q, sha256, size_bytes, dtype, tensors, params, "             \
  "description, metadata, created_at, withdrawn_at, withdraw_reason"

void registry_shard_clear(struct registry_shard *s) {
  if (!s) return;
  free(s->name);
  free(s->provider);
  free(s->dtype);
  free(s->description);
  json_decref(s->metadata);
  free(s->created_at);
  free(s->withdrawn_at);
  free(s->withdraw_reason);
  memset(s, 0, sizeof *s);
}

/* Fills *s from a row of SHARD_COLS. 0 ok, -1 OOM or a malformed row. */
static int shard_read_row(sqlite3_stmt *st, struct registry_shard *s) {
  memset(s, 0, sizeof *s);
  s->id = sqlite3_column_int64(st, 0);
  s->name = reg_col_strdup(st, 1);
  s->provider = reg_col_strdup(st, 2);
  const unsigned char *status = sqlite3_column_text(st, 3);
  s->status = (status && strcmp((const char *)status, "withdrawn") == 0) ? REGISTRY_SHARD_WITHDRAWN
                                                                         : REGISTRY_SHARD_ACTIVE;
  s->weight_q = sqlite3_column_int64(st, 4);
  const unsigned char *sha = sqlite3_column_text(st, 5);
  if (sha) snprintf(s->sha256, sizeof s->sha256, "%s", (const char *)sha);
  s->size_bytes = sqlite3_column_int64(st, 6);
  s->dtype = reg_col_strdup(st, 7);
  s->tensors = sqlite3_column_int64(st, 8);
  s->params = sqlite3_column_int64(st, 9);
  s->description = reg_col_strdup(st, 10);
  s->metadata = reg_col_json(st, 11);
  s->created_at = reg_col_strdup(st, 12);
  s->withdrawn_at = reg_col_strdup(st, 13);
  s->withdraw_reason = reg_col_strdup(st, 14);
  if (!s->name || !s->provider || !s->dtype || !s->description || !json_is_object(s->metadata) ||
      !s->created_at) {
    registry_shard_clear(s);
    return -1;
  }
  return 0;
}

json_t *registry_shard_to_json(const struct registry_shard *s, int internal) {
  json_t *o = json_object();
  if (!o) return NULL;
  int bad = 0;
  bad |= json_object_set_new(o, "id", json_integer(s->id));
  bad |= json_object_set_new(o, "name", json_string(s->name));
  bad |= json_object_set_new(o, "provider", json_string(s->provider));
  bad |= json_object_set_new(
      o, "status", json_string(s->status == REGISTRY_SHARD_ACTIVE ? "active" : "withdrawn"));
  bad |= json_object_set_new(o, "weight", json_real((double)s->weight_q / REGISTRY_WEIGHT_ONE));
  bad |= json_object_set_new(o, "sha256", json_string(s->sha256));
  bad |= json_object_set_new(o, "size_bytes", json_integer(s->size_bytes));
  bad |= json_object_set_new(o, "dtype", json_string(s->dtype));
  bad |= json_object_set_new(o, "tensors", json_integer(s->tensors));
  bad |= json_object_set_new(o, "params", json_integer(s->params));
  bad |= json_object_set_new(o, "description", json_string(s->description ? s->description : ""));
  bad |=
      json_object_set_new(o, "metadata", s->metadata ? json_deep_copy(s->metadata) : json_object());
  bad |= json_object_set_new(o, "created_at", json_string(s->created_at));
  bad |= json_object_set_new(o, "withdrawn_at",
                             s->withdrawn_at ? json_string(s->withdrawn_at) : json_null());
  if (internal) {
    bad |= json_object_set_new(o, "weight_q", json_integer(s->weight_q));
    bad |= json_object_set_new(o, "withdraw_reason",
                               s->withdraw_reason ? json_string(s->withdraw_reason) : json_null());
  }
  if (bad) {
    json_decref(o);
    return NULL;
  }
  return o;
}

static int name_ok(const char *s) {
  if (!s || !*s || strlen(s) > REGISTRY_NAME_MAX) return 0;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if (*p < 0x20 || *p == 0x7f) return 0;
  return 1;
}

int registry_shard_insert(struct registry *r, const struct registry_shard_new *in, int64_t *id_out,
                          char **err) {
  if (!in || !name_ok(in->name))
    return reg_err(err, REGISTRY_EINVAL, "shard: name must be 1..%d bytes, no control characters",
                   REGISTRY_NAME_MAX);
  if (!name_ok(in->provider))
    return reg_err(err, REGISTRY_EINVAL,
                   "shard: provider must be 1..%d bytes, no control characters", REGISTRY_NAME_MAX);
  if (in->weight_q <= 0) return reg_err(err, REGISTRY_EINVAL, "shard: weight must be positive");
  if (!reg_is_hex64(in->sha256))
    return reg_err(err, REGISTRY_EINVAL, "shard: sha256 must be 64 lowercase hex characters");
  if (!in->dtype || !*in->dtype) return reg_err(err, REGISTRY_EINVAL, "shard: dtype is required");
  if (in->size_bytes < 0 || in->tensors < 0 || in->params < 0)
    return reg_err(err, REGISTRY_EINVAL, "shard: sizes must not be negative");
  if (in->metadata && !json_is_object(in->metadata))
    return reg_err(err, REGISTRY_EINVAL, "shard: metadata must be a JSON object");

  static const char *sql =
      "INSERT INTO shards (name, provider, weight_q, sha256, size_bytes, dtype, tensors, params, "
      "description, metadata) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
  sqlite3_stmt *st = NULL;
  registry_lock(r);
  int rc = REG_PREPARE(r, sql, &st, err);
  if (rc) goto done;
  int brc = SQLITE_OK;
  REG_BIND(brc, reg_bind_text(st, 1, in->name));
  REG_BIND(brc, reg_bind_text(st, 2, in->provider));
  REG_BIND(brc, sqlite3_bind_int64(st, 3, in->weight_q));
  REG_BIND(brc, reg_bind_text(st, 4, in->sha256));
  REG_BIND(brc, sqlite3_bind_int64(st, 5, in->size_bytes));
  REG_BIND(brc, reg_bind_text(st, 6, in->dtype));
  REG_BIND(brc, sqlite3_bind_int64(st, 7, in->tensors));
  REG_BIND(brc, sqlite3_bind_int64(st, 8, in->params));
  REG_BIND(brc, reg_bind_text(st, 9, in->description ? in->description : ""));
  REG_BIND(brc, reg_bind_json(st, 10, in->metadata, "{}"));
  if (brc != SQLITE_OK) {
    rc = REG_SQL_FAIL(r, brc, sql, err);
    goto done;
  }
  int s = sqlite3_step(st);
  if (s != SQLITE_DONE) {
    rc = REG_SQL_FAIL(r, s, sql, err);
    if (s == SQLITE_CONSTRAINT_UNIQUE) {
      int by_name = strstr(sqlite3_errmsg(r->db), "shards.name") != NULL;
      rc = reg_err(err, REGISTRY_ECONFLICT,
                   by_name ? "an active shard named '%s' already exists"
                           : "an active shard with this sha256 already exists (%s)",
                   by_name ? in->name : in->sha256);
    }
    goto done;
  }
  if (id_out) *id_out = sqlite3_last_insert_rowid(r->db);
done:
  sqlite3_finalize(st);
  registry_unlock(r);
  return rc;
}

/* Runs a SELECT of SHARD_COLS with one bound parameter (int64 id or text). */
static int shard_get_one(struct registry *r, const char *sql, int64_t id, const char *text,
                         struct registry_shard *out, char **err) {
  sqlite3_stmt *st = NULL;
  memset(out, 0, sizeof *out);
  registry_lock(r);
  int rc = REG_PREPARE(r, sql, &st, err);
  if (rc) goto done;
  int brc = text ? reg_bind_text(st, 1, text) : sqlite3_bind_int64(st, 1, id);
  if (brc != SQLITE_OK) {
    rc = REG_SQL_FAIL(r, brc, sql, err);
    goto done;
  }
  int s = sqlite3_step(st);
  if (s == SQLITE_DONE) {
    rc = text ? reg_err(err, REGISTRY_ENOTFOUND, "no active shard named '%s'", text)
              : reg_err(err, REGISTRY_ENOTFOUND, "no shard %lld", (long long)id);
  } else if (s != SQLITE_ROW) {
    rc = REG_SQL_FAIL(r, s, sql, err);
  } else if (shard_read_row(st, out) != 0) {
    rc = reg_err(err, REGISTRY_EFAIL, "shard row unreadable (out of memory?)");
  }
done:
  sqlite3_finalize(st);
  registry_unlock(r);
  return rc;
}

int registry_shard_get(struct registry *r, int64_t id, struct registry_shard *out, char **err) {
  return shard_get_one(r, "SELECT " SHARD_COLS " FROM shards WHERE id = ?1", id, NULL, out, err);
}

int registry_shard_get_active_by_name(struct registry *r, const char *name,
                                      struct registry_shard *out, char **err) {
  if (!name) return reg_err(err, REGISTRY_EINVAL, "shard: name is required");
  return shard_get_one(r, "SELECT " SHARD_COLS " FROM shards WHERE name = ?1 AND status = 'active'",
                       0, name, out, err);
}

void registry_shard_rows_free(struct registry_shard *rows, size_t n) {
  if (!rows) return;
  for (size_t i = 0; i < n; i++) registry_shard_clear(&rows[i]);
  free(rows);
}

int registry_shard_list(struct registry *r, const char *status, const char *provider,
                        struct registry_shard **rows, size_t *n, char **err) {
  *rows = NULL;
  *n = 0;
  if (status && strcmp(status, "active") != 0 && strcmp(status, "withdrawn") != 0)
    return reg_err(err, REGISTRY_EINVAL, "status must be 'active' or 'withdrawn'");
  static const char *sql = "SELECT " SHARD_COLS " FROM shards WHERE (?1 IS NULL OR status = ?1) "
                           "AND (?2 IS NULL OR provider = ?2) ORDER BY id";
  sqlite3_stmt *st = NULL;
  struct registry_shard *v = NULL;
  size_t cnt = 0, cap = 0;
  registry_lock(r);
  int rc = REG_PREPARE(r, sql, &st, err);
  if (rc) goto done;
  int brc = SQLITE_OK;
  REG_BIND(brc, reg_bind_text(st, 1, status));
  REG_BIND(brc, reg_bind_text(st, 2, provider));
  if (brc != SQLITE_OK) {
    rc = REG_SQL_FAIL(r, brc, sql, err);
    goto done;
  }
  int s;
  while ((s = sqlite3_step(st)) == SQLITE_ROW) {
    if (cnt == cap) {
      size_t ncap = cap ? cap * 2 : 16;
      struct registry_shard *nv = realloc(v, ncap * sizeof *nv);
      if (!nv) {
        rc = reg_err(err, REGISTRY_EFAIL, "shard list: out of memory");
        goto done;
      }
      v = nv;
      cap = ncap;
    }
    if (shard_read_row(st, &v[cnt]) != 0) {
      rc = reg_err(err, REGISTRY_EFAIL, "shard row unreadable (out of memory?)");
      goto done;
    }
    cnt++;
  }
  if (s != SQLITE_DONE) rc = REG_SQL_FAIL(r, s, sql, err);
done:
  sqlite3_finalize(st);
  registry_unlock(r);
  if (rc) {
    registry_shard_rows_free(v, cnt);
    return rc;
  }
  *rows = v;
  *n = cnt;
  return 0;
}

int registry_shard_list_json(struct registry *r, const char *status, const char *provider,
                             json_t **out, char **err) {
  *out = NULL;
  struct registry_shard *rows = NULL;
  size_t n = 0;
  int rc = registry_shard_list(r, status, provider, &rows, &n, err);
  if (rc) return rc;
  json_t *arr = json_array();
  json_t *body = json_object();
  if (!arr || !body || json_object_set(body, "shards", arr) != 0) goto oom;
  for (size_t i = 0; i < n; i++)
    if (json_array_append_new(arr, registry_shard_to_json(&rows[i], 0)) != 0) goto oom;
  json_decref(arr);
  registry_shard_rows_free(rows, n);
  *out = body;
  return 0;
oom:
  json_decref(arr);
  json_decref(body);
  registry_shard_rows_free(rows, n);
  return reg_err(err, REGISTRY_EFAIL, "shard list: out of memory");
}

/* After an UPDATE ... WHERE id = ? AND status = 'active' changed nothing:
 * ENOTFOUND if the id is unknown, ECONFLICT if the shard is withdrawn. */
static int shard_explain_miss(struct registry *r, int64_t id, char **err) {
  struct registry_shard s;
  int rc = registry_shard_get(r, id, &s, err);
  if (rc) return rc;
  registry_shard_clear(&s);
  return reg_err(err, REGISTRY_ECONFLICT, "shard %lld is already withdrawn", (long long)id);
}

/* Runs an UPDATE on one active shard: ?1 = id, ?2 = text or int64 value. */
static int shard_update(struct registry *r, const char *sql, int64_t id, const char *text,
                        int64_t value, char **err) {
  sqlite3_stmt *st = NULL;
  registry_lock(r);
  int rc = REG_PREPARE(r, sql, &st, err);
  if (rc) goto done;
  int brc = SQLITE_OK;
  REG_BIND(brc, sqlite3_bind_int64(st, 1, id));
  REG_BIND(brc, text ? reg_bind_text(st, 2, text) : sqlite3_bind_int64(st, 2, value));
  if (brc != SQLITE_OK) {
    rc = REG_SQL_FAIL(r, brc, sql, err);
    goto done;
  }
  int s = sqlite3_step(st);
  if (s != SQLITE_DONE) {
    rc = REG_SQL_FAIL(r, s, sql, err);
    goto done;
  }
  if (sqlite3_changes(r->db) == 0) rc = shard_explain_miss(r, id, err);
done:
  sqlite3_finalize(st);
  registry_unlock(r);
  return rc;
}

int registry_shard_withdraw(struct registry *r, int64_t id, const char *reason, char **err) {
  return shard_update(r,
                      "UPDATE shards SET status = 'withdrawn', "
                      "withdrawn_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), withdraw_reason = ?2 "
                      "WHERE id = ?1 AND status = 'active'",
                      id, reason ? reason : "", 0, err);
}

int registry_shard_set_weight(struct registry *r, int64_t id, int64_t weight_q, char **err) {
  if (weight_q <= 0) return reg_err(err, REGISTRY_EINVAL, "shard: weight must be positive");
  return shard_update(r, "UPDATE shards SET weight_q = ?2 WHERE id = ?1 AND status = 'active'", id,
                      NULL, weight_q, err);
}

int registry_shard_counts(struct registry *r, int64_t *active, int64_t *withdrawn, char **err) {
  static const char *sql = "SELECT coalesce(sum(status = 'active'), 0), "
                           "coalesce(sum(status = 'withdrawn'), 0) FROM shards";
  sqlite3_stmt *st = NULL;
  registry_lock(r);
  int rc = REG_PREPARE(r, sql, &st, err);
  if (rc) goto done;
  int s = sqlite3_step(st);
  if (s != SQLITE_ROW) {
    rc = REG_SQL_FAIL(r, s, sql, err);
    goto done;
  }
  if (active) *active = sqlite3_column_int64(st, 0);
  if (withdrawn) *withdrawn = sqlite3_column_int64(st, 1);
done:
  sqlite3_finalize(st);
  registry_unlock(r);
  return rc;
}
