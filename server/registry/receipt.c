/* receipt.c: the signed receipts of shard changes (schema 0002). Rows are
 * only inserted, inside the change's transaction; the schema's triggers abort
 * UPDATE and DELETE. The registry stores the body as given and never looks
 * inside it (proofs/ signs and checks it). */
#include "registry_impl.h"

#include <stdlib.h>

int registry_receipt_insert(struct registry *r, int64_t shard_id, int64_t event_id,
                            const json_t *body, char **err) {
  if (!json_is_object(body))
    return reg_err(err, REGISTRY_EINVAL, "receipt: body must be an object");
  static const char *sql = "INSERT INTO receipts (shard_id, event_id, body) VALUES (?1, ?2, ?3)";
  sqlite3_stmt *st = NULL;
  registry_lock(r);
  int rc = REG_PREPARE(r, sql, &st, err);
  if (rc) goto done;
  int brc = SQLITE_OK;
  REG_BIND(brc, sqlite3_bind_int64(st, 1, shard_id));
  REG_BIND(brc, sqlite3_bind_int64(st, 2, event_id));
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

int registry_receipt_list(struct registry *r, int64_t shard_id, json_t **out, char **err) {
  *out = NULL;
  static const char *sql = "SELECT body FROM receipts WHERE shard_id = ?1 ORDER BY id";
  sqlite3_stmt *st = NULL;
  registry_lock(r);
  int rc = REG_PREPARE(r, sql, &st, err);
  if (rc) goto done;
  int brc = sqlite3_bind_int64(st, 1, shard_id);
  if (brc != SQLITE_OK) {
    rc = REG_SQL_FAIL(r, brc, sql, err);
    goto done;
  }
  json_t *arr = json_array();
  int s;
  while ((s = sqlite3_step(st)) == SQLITE_ROW) {
    json_t *b = reg_col_json(st, 0);
    if (b) json_array_append_new(arr, b);
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
