/* event.c: the append-only audit log (reliability.md, "Unlearning and
 * audit"; API.md GET /events). Each row records who (principal, token id),
 * what (type, shard id and SHA-256, outcome, detail), and the soup before and
 * after (version, hash, ordered member set, base hash, algorithm version).
 * Invariant: rows are only ever inserted; the schema's triggers abort any
 * UPDATE or DELETE. The caller appends the event inside the same transaction
 * as the change it records (registry_begin ... registry_commit). */
#include "registry_impl.h"

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

  static const char *sql =
      "INSERT INTO events (type, principal, token_id, shard_id, sha256, soup_version_before, "
      "soup_version_after, soup_hash_before, soup_hash_after, members, base_sha256, algorithm, "
      "outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";
  sqlite3_stmt *st = NULL;
  registry_lock(r);
  int rc = REG_PREPARE(r, sql, &st, err);
  if (rc) goto done;
  int brc = SQLITE_OK;
  REG_BIND(brc, reg_bind_text(st, 1, ev->type));
  REG_BIND(brc, reg_bind_text(st, 2, ev->principal));
  REG_BIND(brc, reg_bind_int64(st, 3, ev->token_id, 0));
  REG_BIND(brc, reg_bind_int64(st, 4, ev->shard_id, 0));
  REG_BIND(brc, reg_bind_text(st, 5, ev->sha256));
  REG_BIND(brc, reg_bind_int64(st, 6, ev->soup_version_before, -1));
  REG_BIND(brc, reg_bind_int64(st, 7, ev->soup_version_after, -1));
  REG_BIND(brc, reg_bind_text(st, 8, ev->soup_hash_before));
  REG_BIND(brc, reg_bind_text(st, 9, ev->soup_hash_after));
  REG_BIND(brc, reg_bind_json(st, 10, ev->members, NULL));
  REG_BIND(brc, reg_bind_text(st, 11, ev->base_sha256));
  REG_BIND(brc, reg_bind_text(st, 12, ev->algorithm));
  REG_BIND(brc, reg_bind_text(st, 13, ev->outcome));
  REG_BIND(brc, reg_bind_json(st, 14, ev->detail, "{}"));
  if (brc != SQLITE_OK) {
    rc = REG_SQL_FAIL(r, brc, sql, err);
    goto done;
  }
  int s = sqlite3_step(st);
  if (s != SQLITE_DONE) {
    rc = REG_SQL_FAIL(r, s, sql, err);
    goto done;
  }
  if (id_out) *id_out = sqlite3_last_insert_rowid(r->db);
done:
  sqlite3_finalize(st);
  registry_unlock(r);
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
