/* event.c: the append-only audit log (reliability.md, "Unlearning and
 * audit"; API.md GET /events). Each row records who (principal, token id),
 * what (type, shard id and SHA-256, outcome, detail), and the soup before and
 * after (version, hash, ordered member set, base hash, algorithm version).
 * Invariant: rows are only ever inserted; the schema's triggers abort any
 * UPDATE or DELETE. The caller appends the event inside the same transaction
 * as the change it records (registry_begin ... registry_commit). */
#include "registry_impl.h"

#include "proofs/chain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int registry_event_append(struct registry *r, const struct registry_event *ev, int64_t *id_out,
                          char **err) {
  if (!ev || !ev->type || !*ev->type)
    return reg_err(err, REGISTRY_EINVAL, "event: type is required");
  if (!ev->outcome || (strcmp(ev->outcome, REGISTRY_OUTCOME_OK) != 0 &&
                       strcmp(ev->outcome, REGISTRY_OUTCOME_DENIED) != 0 &&
                       strcmp(ev->outcome, REGISTRY_OUTCOME_FAILED) != 0))
    return reg_err(err, REGISTRY_EINVAL, "event: outcome must be ok, denied or failed");
  if (ev->members && !json_is_array(ev->members))
    return reg_err(err, REGISTRY_EINVAL, "event: members must be a JSON array");
  if (ev->detail && !json_is_object(ev->detail))
    return reg_err(err, REGISTRY_EINVAL, "event: detail must be a JSON object");

  /* the chain: this event's time and the previous hash, then its own hash
   * over the exact texts stored (proofs/chain.h) */
  static const char *head_sql = "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), "
                                "(SELECT hash FROM events ORDER BY id DESC LIMIT 1)";
  static const char *sql =
      "INSERT INTO events (at, type, principal, token_id, shard_id, sha256, soup_version_before, "
      "soup_version_after, soup_hash_before, soup_hash_after, members, base_sha256, algorithm, "
      "outcome, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, "
      "?12, ?13, ?14, ?15, ?16, ?17)";
  char *members = ev->members ? json_dumps(ev->members, JSON_COMPACT) : NULL;
  char *detail = ev->detail ? json_dumps(ev->detail, JSON_COMPACT) : strdup("{}");
  char ints[4][24], at[40] = "", prev[65] = PROOFS_CHAIN_GENESIS, hash[65];
  snprintf(ints[0], sizeof ints[0], "%lld", (long long)ev->token_id);
  snprintf(ints[1], sizeof ints[1], "%lld", (long long)ev->shard_id);
  snprintf(ints[2], sizeof ints[2], "%lld", (long long)ev->soup_version_before);
  snprintf(ints[3], sizeof ints[3], "%lld", (long long)ev->soup_version_after);
  sqlite3_stmt *st = NULL;
  registry_lock(r);
  int rc = 0;
  if ((ev->members && !members) || !detail) {
    rc = reg_err(err, REGISTRY_EFAIL, "event: out of memory");
    goto done;
  }
  if ((rc = REG_PREPARE(r, head_sql, &st, err))) goto done;
  int s = sqlite3_step(st);
  if (s != SQLITE_ROW) {
    rc = REG_SQL_FAIL(r, s, head_sql, err);
    goto done;
  }
  snprintf(at, sizeof at, "%s", (const char *)sqlite3_column_text(st, 0));
  if (sqlite3_column_type(st, 1) == SQLITE_TEXT)
    snprintf(prev, sizeof prev, "%s", (const char *)sqlite3_column_text(st, 1));
  sqlite3_finalize(st);
  st = NULL;
  const char *f[REGISTRY_EVENT_CHAIN_FIELDS] = {at,
                                                ev->type,
                                                ev->principal,
                                                ev->token_id ? ints[0] : NULL,
                                                ev->shard_id ? ints[1] : NULL,
                                                ev->sha256,
                                                ev->soup_version_before != -1 ? ints[2] : NULL,
                                                ev->soup_version_after != -1 ? ints[3] : NULL,
                                                ev->soup_hash_before,
                                                ev->soup_hash_after,
                                                members,
                                                ev->base_sha256,
                                                ev->algorithm,
                                                ev->outcome,
                                                detail};
  proofs_chain_hash(prev, f, REGISTRY_EVENT_CHAIN_FIELDS, hash);
  if ((rc = REG_PREPARE(r, sql, &st, err))) goto done;
  int brc = SQLITE_OK;
  for (int i = 0; i < REGISTRY_EVENT_CHAIN_FIELDS; i++)
    REG_BIND(brc, reg_bind_text(st, i + 1, f[i]));
  REG_BIND(brc, reg_bind_text(st, 16, prev));
  REG_BIND(brc, reg_bind_text(st, 17, hash));
  if (brc != SQLITE_OK) {
    rc = REG_SQL_FAIL(r, brc, sql, err);
    goto done;
  }
  s = sqlite3_step(st);
  if (s != SQLITE_DONE) {
    rc = REG_SQL_FAIL(r, s, sql, err);
    goto done;
  }
  if (id_out) *id_out = sqlite3_last_insert_rowid(r->db);
done:
  sqlite3_finalize(st);
  registry_unlock(r);
  free(members);
  free(detail);
  return rc;
}

/* One event row as the API.md event object (plus the audit extras). */
static json_t *event_row_json(sqlite3_stmt *st) {
  json_t *o = json_object();
  if (!o) return NULL;
  int bad = 0;
  bad |= reg_json_set_col_int(o, "id", st, 0);
  bad |= reg_json_set_col_text(o, "at", st, 1);
  bad |= reg_json_set_col_text(o, "type", st, 2);
  bad |= reg_json_set_col_text(o, "principal", st, 3);
  bad |= reg_json_set_col_int(o, "token_id", st, 4);
  bad |= reg_json_set_col_int(o, "shard_id", st, 5);
  bad |= reg_json_set_col_text(o, "sha256", st, 6);
  bad |= reg_json_set_col_int(o, "soup_version_before", st, 7);
  bad |= reg_json_set_col_int(o, "soup_version_after", st, 8);
  bad |= reg_json_set_col_text(o, "soup_hash_before", st, 9);
  bad |= reg_json_set_col_text(o, "soup_hash_after", st, 10);
  json_t *members = reg_col_json(st, 11);
  bad |= json_object_set_new(o, "members", members ? members : json_null());
  bad |= reg_json_set_col_text(o, "base_sha256", st, 12);
  bad |= reg_json_set_col_text(o, "algorithm", st, 13);
  bad |= reg_json_set_col_text(o, "outcome", st, 14);
  json_t *detail = reg_col_json(st, 15);
  bad |= json_object_set_new(o, "detail", detail ? detail : json_object());
  if (bad) {
    json_decref(o);
    return NULL;
  }
  return o;
}

int registry_event_list(struct registry *r, int64_t since_id, int64_t limit, json_t **out,
                        char **err) {
  static const char *sql =
      "SELECT id, at, type, principal, token_id, shard_id, sha256, soup_version_before, "
      "soup_version_after, soup_hash_before, soup_hash_after, members, base_sha256, algorithm, "
      "outcome, detail FROM events WHERE id > ?1 ORDER BY id LIMIT ?2";
  return reg_list_json(r, sql, since_id, limit, "events", event_row_json, out, err);
}

int registry_event_chain_verify(struct registry *r, json_t **out, char **err) {
  *out = NULL;
  static const char *sql =
      "SELECT id, at, type, principal, token_id, shard_id, sha256, soup_version_before, "
      "soup_version_after, soup_hash_before, soup_hash_after, members, base_sha256, algorithm, "
      "outcome, detail, prev_hash, hash, (SELECT legacy_max_id FROM audit_chain WHERE id = 1) "
      "FROM events ORDER BY id";
  sqlite3_stmt *st = NULL;
  registry_lock(r);
  int rc = REG_PREPARE(r, sql, &st, err);
  if (rc) goto done;
  char expect[65] = PROOFS_CHAIN_GENESIS, reason[300] = "";
  int64_t n = 0, chained = 0, broken_id = 0, last_id = 0;
  int s;
  while ((s = sqlite3_step(st)) == SQLITE_ROW) {
    int64_t id = sqlite3_column_int64(st, 0);
    int64_t legacy = sqlite3_column_type(st, 18) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 18);
    n++;
    last_id = id;
    const char *prev = (const char *)sqlite3_column_text(st, 16);
    const char *hash = (const char *)sqlite3_column_text(st, 17);
    if (!hash && !prev && id <= legacy) continue; /* written before the chain existed */
    if (!hash || !prev) {
      broken_id = id;
      snprintf(reason, sizeof reason, "event %lld has no chain hash (its hash was removed)",
               (long long)id);
      break;
    }
    if (strcmp(prev, expect) != 0) {
      broken_id = id;
      snprintf(reason, sizeof reason,
               "event %lld does not follow the event before it: its prev_hash %.16s... is not "
               "the previous hash %.16s... (an event was deleted, inserted or reordered)",
               (long long)id, prev, expect);
      break;
    }
    const char *f[REGISTRY_EVENT_CHAIN_FIELDS];
    for (int i = 0; i < REGISTRY_EVENT_CHAIN_FIELDS; i++)
      f[i] = (const char *)sqlite3_column_text(st, i + 1);
    char got[65];
    proofs_chain_hash(prev, f, REGISTRY_EVENT_CHAIN_FIELDS, got);
    if (strcmp(got, hash) != 0) {
      broken_id = id;
      snprintf(reason, sizeof reason,
               "event %lld was changed: its content does not hash to its stored hash",
               (long long)id);
      break;
    }
    snprintf(expect, sizeof expect, "%s", hash);
    chained++;
  }
  if (!broken_id && s != SQLITE_DONE) {
    rc = REG_SQL_FAIL(r, s, sql, err);
    goto done;
  }
  json_t *o =
      json_pack("{s:b,s:I,s:I,s:I,s:s}", "ok", !broken_id, "events", (json_int_t)n, "chained",
                (json_int_t)chained, "last_event_id", (json_int_t)last_id, "head_hash", expect);
  json_object_set_new(
      o, "first_broken",
      broken_id ? json_pack("{s:I,s:s}", "event_id", (json_int_t)broken_id, "reason", reason)
                : json_null());
  *out = o;
done:
  sqlite3_finalize(st);
  registry_unlock(r);
  return rc;
}

int registry_event_hash(struct registry *r, int64_t id, char out[65], char **err) {
  static const char *sql = "SELECT hash FROM events WHERE id = ?1";
  sqlite3_stmt *st = NULL;
  out[0] = 0;
  registry_lock(r);
  int rc = REG_PREPARE(r, sql, &st, err);
  if (rc) goto done;
  int brc = sqlite3_bind_int64(st, 1, id);
  if (brc != SQLITE_OK) {
    rc = REG_SQL_FAIL(r, brc, sql, err);
    goto done;
  }
  int s = sqlite3_step(st);
  if (s == SQLITE_ROW) {
    const unsigned char *h = sqlite3_column_text(st, 0);
    snprintf(out, 65, "%s", h ? (const char *)h : "");
  } else if (s == SQLITE_DONE) {
    rc = reg_err(err, REGISTRY_ENOTFOUND, "no event %lld", (long long)id);
  } else {
    rc = REG_SQL_FAIL(r, s, sql, err);
  }
done:
  sqlite3_finalize(st);
  registry_unlock(r);
  return rc;
}

int registry_checkpoint_insert(struct registry *r, int64_t event_id, const char *head_hash,
                               const json_t *body, char **err) {
  static const char *sql =
      "INSERT INTO audit_checkpoints (event_id, head_hash, body) VALUES (?1, ?2, ?3)";
  sqlite3_stmt *st = NULL;
  registry_lock(r);
  int rc = REG_PREPARE(r, sql, &st, err);
  if (rc) goto done;
  int brc = SQLITE_OK;
  REG_BIND(brc, sqlite3_bind_int64(st, 1, event_id));
  REG_BIND(brc, reg_bind_text(st, 2, head_hash));
  REG_BIND(brc, reg_bind_json(st, 3, body, NULL));
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

int registry_checkpoint_list(struct registry *r, json_t **out, char **err) {
  *out = NULL;
  static const char *sql = "SELECT body FROM audit_checkpoints ORDER BY id";
  sqlite3_stmt *st = NULL;
  registry_lock(r);
  int rc = REG_PREPARE(r, sql, &st, err);
  if (rc) goto done;
  json_t *arr = json_array();
  int s;
  while ((s = sqlite3_step(st)) == SQLITE_ROW) {
    json_t *b = reg_col_json(st, 0);
    json_array_append_new(arr, b ? b : json_null());
  }
  if (s != SQLITE_DONE) {
    json_decref(arr);
    rc = REG_SQL_FAIL(r, s, sql, err);
    goto done;
  }
  *out = arr;
done:
  sqlite3_finalize(st);
  registry_unlock(r);
  return rc;
}
