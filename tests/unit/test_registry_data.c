/* test_registry_data.c: the typed queries on a real SQLite file: shards
 * (partial unique indexes, withdraw, reweight, JSON shape), tokens (only the
 * hash is stored, checked in the raw table against an independent SHA-256),
 * the append-only audit log and soup history (UPDATE/DELETE raise errors,
 * also from a second connection), and transactions (a rolled-back
 * "shard + event + version" leaves nothing; a committed one leaves all). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "registry/registry.h"
#include "registry/registry_impl.h"
#include "test_registry_util.h"

static int setup(void **state) {
  if (fx_make(state, "regtest") != 0) return -1;
  struct fx *f = *state;
  char *err = NULL;
  if (registry_open(f->path, &f->r, &err) != 0) {
    fprintf(stderr, "open: %s\n", err);
    return -1;
  }
  return 0;
}

static int teardown(void **state) {
  return fx_remove(state);
}

/* A sha256-shaped hex string derived from a seed byte. */
static void fake_sha(char out[65], int seed) {
  for (int i = 0; i < 64; i++) out[i] = "0123456789abcdef"[(seed * 7 + i) & 15];
  out[64] = 0;
}

static int64_t add_shard(struct registry *r, const char *name, const char *provider, int seed,
                         int expect) {
  char sha[65];
  fake_sha(sha, seed);
  json_t *meta = json_pack("{s:s}", "k", "v");
  struct registry_shard_new in = {.name = name,
                                  .provider = provider,
                                  .weight_q = REGISTRY_WEIGHT_ONE,
                                  .sha256 = sha,
                                  .size_bytes = 1733568512,
                                  .dtype = "F16",
                                  .tensors = 686,
                                  .params = 865910724,
                                  .description = "a shard",
                                  .metadata = meta};
  int64_t id = 0;
  char *err = NULL;
  int rc = registry_shard_insert(r, &in, &id, &err);
  json_decref(meta);
  if (rc != expect) fprintf(stderr, "insert %s: rc %d: %s\n", name, rc, err ? err : "");
  assert_int_equal(rc, expect);
  free(err);
  return id;
}

static void test_shard_roundtrip_json(void **state) {
  struct fx *f = *state;
  int64_t id = add_shard(f->r, "animals", "acme", 1, 0);
  assert_true(id > 0);
  struct registry_shard s;
  assert_int_equal(registry_shard_get(f->r, id, &s, NULL), 0);
  assert_string_equal(s.name, "animals");
  assert_int_equal(s.status, REGISTRY_SHARD_ACTIVE);
  assert_int_equal(s.weight_q, REGISTRY_WEIGHT_ONE);
  assert_null(s.withdrawn_at);
  /* RFC 3339 UTC with milliseconds: 2026-11-25T19:01:02.123Z */
  assert_int_equal(strlen(s.created_at), 24);
  assert_int_equal(s.created_at[10], 'T');
  assert_int_equal(s.created_at[19], '.');
  assert_int_equal(s.created_at[23], 'Z');

  json_t *j = registry_shard_to_json(&s, 0);
  const char *keys[] = {"id",          "name",       "provider",   "status",      "weight",
                        "sha256",      "size_bytes", "dtype",      "tensors",     "params",
                        "description", "metadata",   "created_at", "withdrawn_at"};
  assert_int_equal(json_object_size(j), sizeof keys / sizeof keys[0]);
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    assert_non_null(json_object_get(j, keys[i]));
  assert_true(json_is_real(json_object_get(j, "weight")));
  assert_true(json_real_value(json_object_get(j, "weight")) == 1.0);
  assert_string_equal(json_string_value(json_object_get(j, "status")), "active");
  assert_string_equal(json_string_value(json_object_get(json_object_get(j, "metadata"), "k")), "v");
  assert_true(json_is_null(json_object_get(j, "withdrawn_at")));
  assert_int_equal(json_integer_value(json_object_get(j, "size_bytes")), 1733568512);
  assert_null(json_object_get(j, "weight_q"));
  json_decref(j);
  j = registry_shard_to_json(&s, 1);
  assert_int_equal(json_integer_value(json_object_get(j, "weight_q")), REGISTRY_WEIGHT_ONE);
  json_decref(j);
  registry_shard_clear(&s);

  assert_int_equal(registry_shard_get(f->r, id + 100, &s, NULL), REGISTRY_ENOTFOUND);
}

static void test_active_name_unique(void **state) {
  struct fx *f = *state;
  int64_t a = add_shard(f->r, "animals", "acme", 1, 0);
  add_shard(f->r, "animals", "other", 2, REGISTRY_ECONFLICT); /* name taken */
  add_shard(f->r, "plants", "acme", 1, REGISTRY_ECONFLICT);   /* same file active */
  assert_int_equal(registry_shard_withdraw(f->r, a, "consent withdrawn", NULL), 0);
  int64_t b = add_shard(f->r, "animals", "other", 2, 0); /* allowed after withdraw */
  assert_true(b > a);
  int64_t c = add_shard(f->r, "plants", "acme", 1, 0); /* the file is free again */
  assert_true(c > b);
  add_shard(f->r, "plants", "acme", 3, REGISTRY_ECONFLICT);

  struct registry_shard s;
  assert_int_equal(registry_shard_get_active_by_name(f->r, "animals", &s, NULL), 0);
  assert_int_equal(s.id, b);
  registry_shard_clear(&s);
  assert_int_equal(registry_shard_get_active_by_name(f->r, "nope", &s, NULL), REGISTRY_ENOTFOUND);

  /* Same check straight at the schema, bypassing the C validation. */
  char *err = NULL;
  int rc = REG_EXEC(f->r,
                    "INSERT INTO shards (name, provider, weight_q, sha256, size_bytes, dtype, "
                    "tensors, params) VALUES ('animals', 'x', 1, "
                    "'ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff', 1, 'F16', "
                    "1, 1)",
                    &err);
  assert_int_equal(rc, REGISTRY_ECONFLICT);
  assert_non_null(strstr(err, "UNIQUE"));
  assert_non_null(strstr(err, "INSERT INTO shards")); /* the statement is recorded */
  assert_non_null(strstr(err, "test_registry_data.c:"));
  free(err);
}

static void test_withdraw_and_weight(void **state) {
  struct fx *f = *state;
  int64_t a = add_shard(f->r, "a", "acme", 1, 0);
  int64_t b = add_shard(f->r, "b", "zeta", 2, 0);
  assert_int_equal(registry_shard_set_weight(f->r, a, 3 * REGISTRY_WEIGHT_ONE / 2, NULL), 0);
  assert_int_equal(registry_shard_set_weight(f->r, a, 0, NULL), REGISTRY_EINVAL);
  assert_int_equal(registry_shard_withdraw(f->r, b, "gdpr", NULL), 0);
  assert_int_equal(registry_shard_withdraw(f->r, b, "again", NULL), REGISTRY_ECONFLICT);
  assert_int_equal(registry_shard_withdraw(f->r, 999, "x", NULL), REGISTRY_ENOTFOUND);
  assert_int_equal(registry_shard_set_weight(f->r, b, 5, NULL), REGISTRY_ECONFLICT);
  assert_int_equal(registry_shard_set_weight(f->r, 999, 5, NULL), REGISTRY_ENOTFOUND);

  struct registry_shard s;
  assert_int_equal(registry_shard_get(f->r, b, &s, NULL), 0);
  assert_int_equal(s.status, REGISTRY_SHARD_WITHDRAWN);
  assert_non_null(s.withdrawn_at);
  assert_string_equal(s.withdraw_reason, "gdpr");
  registry_shard_clear(&s);

  /* A withdrawn row is final and no row is ever deleted (schema triggers). */
  char *err = NULL;
  char sql[128];
  snprintf(sql, sizeof sql,
           "UPDATE shards SET status = 'active', withdrawn_at = NULL WHERE id = %lld",
           (long long)b);
  assert_int_equal(REG_EXEC(f->r, sql, &err), REGISTRY_ECONFLICT);
  free(err);
  err = NULL;
  assert_int_equal(REG_EXEC(f->r, "DELETE FROM shards", &err), REGISTRY_ECONFLICT);
  free(err);
  err = NULL;
  snprintf(sql, sizeof sql, "UPDATE shards SET sha256 = upper(sha256) WHERE id = %lld",
           (long long)a);
  assert_true(REG_EXEC(f->r, sql, &err) < 0);
  free(err);

  struct registry_shard *rows = NULL;
  size_t n = 0;
  assert_int_equal(registry_shard_list(f->r, NULL, NULL, &rows, &n, NULL), 0);
  assert_int_equal(n, 2);
  assert_int_equal(rows[0].id, a);
  assert_int_equal(rows[0].weight_q, 98304);
  registry_shard_rows_free(rows, n);
  assert_int_equal(registry_shard_list(f->r, "withdrawn", NULL, &rows, &n, NULL), 0);
  assert_int_equal(n, 1);
  assert_int_equal(rows[0].id, b);
  registry_shard_rows_free(rows, n);
  assert_int_equal(registry_shard_list(f->r, "active", "zeta", &rows, &n, NULL), 0);
  assert_int_equal(n, 0);
  assert_null(rows);
  assert_int_equal(registry_shard_list(f->r, "bogus", NULL, &rows, &n, NULL), REGISTRY_EINVAL);

  int64_t na = -1, nw = -1;
  assert_int_equal(registry_shard_counts(f->r, &na, &nw, NULL), 0);
  assert_int_equal(na, 1);
  assert_int_equal(nw, 1);

  json_t *body = NULL;
  assert_int_equal(registry_shard_list_json(f->r, NULL, "acme", &body, NULL), 0);
  json_t *arr = json_object_get(body, "shards");
  assert_int_equal(json_array_size(arr), 1);
  assert_true(json_real_value(json_object_get(json_array_get(arr, 0), "weight")) == 1.5);
  json_decref(body);
}

static void test_shard_invalid_input(void **state) {
  struct fx *f = *state;
  struct registry_shard_new in = {
      .name = "x", .provider = "p", .weight_q = 1, .sha256 = "abc", .dtype = "F16"};
  assert_int_equal(registry_shard_insert(f->r, &in, NULL, NULL), REGISTRY_EINVAL);
  char sha[65];
  fake_sha(sha, 4);
  in.sha256 = sha;
  in.weight_q = -1;
  assert_int_equal(registry_shard_insert(f->r, &in, NULL, NULL), REGISTRY_EINVAL);
  in.weight_q = 1;
  in.name = "";
  assert_int_equal(registry_shard_insert(f->r, &in, NULL, NULL), REGISTRY_EINVAL);
  in.name = "x";
  json_t *arr = json_array();
  in.metadata = arr;
  assert_int_equal(registry_shard_insert(f->r, &in, NULL, NULL), REGISTRY_EINVAL);
  json_decref(arr);
  in.metadata = NULL;
  int64_t id = 0;
  assert_int_equal(registry_shard_insert(f->r, &in, &id, NULL), 0);
  assert_int_equal(raw_int(f->r->db, "SELECT count(*) FROM shards"), 1);
}

/* SHA-256 hex computed here, independently of token.c. */
static void sha256_hex(const char *s, char out[65]) {
  unsigned char md[32];
  unsigned int len = 0;
  assert_int_equal(EVP_Digest(s, strlen(s), md, &len, EVP_sha256(), NULL), 1);
  for (int i = 0; i < 32; i++) sprintf(out + 2 * i, "%02x", md[i]);
}

static void test_tokens(void **state) {
  struct fx *f = *state;
  char *tok = NULL, *err = NULL;
  int64_t id = 0;
  assert_int_equal(registry_token_create(f->r, "provider", "acme", &tok, &id, &err), 0);
  assert_int_equal(strlen(tok), 68);
  assert_memory_equal(tok, "sdp_", 4);

  /* Only the hash is stored: the raw table has SHA-256(token), and no
   * column of any row contains the token or its secret part. */
  char want[65];
  sha256_hex(tok, want);
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(f->r->db, "SELECT * FROM tokens", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  int hash_found = 0;
  for (int c = 0; c < sqlite3_column_count(st); c++) {
    const char *v = (const char *)sqlite3_column_text(st, c);
    if (!v) continue;
    assert_null(strstr(v, tok + 4));
    if (strcmp(sqlite3_column_name(st, c), "token_hash") == 0) {
      assert_string_equal(v, want);
      hash_found = 1;
    }
  }
  assert_true(hash_found);
  assert_int_equal(sqlite3_step(st), SQLITE_DONE);
  sqlite3_finalize(st);

  struct registry_token t;
  assert_int_equal(registry_token_lookup(f->r, tok, &t, NULL), 0);
  assert_int_equal(t.id, id);
  assert_string_equal(t.role, "provider");
  assert_string_equal(t.provider, "acme");

  char *tok2 = NULL;
  assert_int_equal(registry_token_create(f->r, "admin", NULL, &tok2, NULL, NULL), 0);
  assert_string_not_equal(tok, tok2);
  assert_int_equal(registry_token_lookup(f->r, tok2, &t, NULL), 0);
  assert_string_equal(t.role, "admin");
  assert_string_equal(t.provider, "");

  /* Wrong, malformed and revoked tokens are not found. */
  char bad[69];
  memcpy(bad, tok, 69);
  bad[10] = bad[10] == 'a' ? 'b' : 'a';
  assert_int_equal(registry_token_lookup(f->r, bad, &t, NULL), REGISTRY_ENOTFOUND);
  assert_int_equal(registry_token_lookup(f->r, tok + 4, &t, NULL), REGISTRY_ENOTFOUND);
  assert_int_equal(registry_token_lookup(f->r, "", &t, NULL), REGISTRY_ENOTFOUND);
  assert_int_equal(registry_token_lookup(f->r, want, &t, NULL), REGISTRY_ENOTFOUND);
  int64_t n = 0;
  assert_int_equal(registry_token_count(f->r, "admin", &n, NULL), 0);
  assert_int_equal(n, 1);
  assert_int_equal(registry_token_revoke(f->r, id, NULL), 0);
  assert_int_equal(registry_token_revoke(f->r, id, NULL), REGISTRY_ECONFLICT);
  assert_int_equal(registry_token_revoke(f->r, 999, NULL), REGISTRY_ENOTFOUND);
  assert_int_equal(registry_token_lookup(f->r, tok, &t, NULL), REGISTRY_ENOTFOUND);
  assert_int_equal(registry_token_count(f->r, NULL, &n, NULL), 0);
  assert_int_equal(n, 1);

  /* Role validation. */
  char *x = NULL;
  assert_int_equal(registry_token_create(f->r, "root", NULL, &x, NULL, NULL), REGISTRY_EINVAL);
  assert_int_equal(registry_token_create(f->r, "provider", NULL, &x, NULL, NULL), REGISTRY_EINVAL);
  assert_int_equal(registry_token_create(f->r, "provider", "a b", &x, NULL, NULL), REGISTRY_EINVAL);
  assert_int_equal(registry_token_create(f->r, "client", "acme", &x, NULL, NULL), REGISTRY_EINVAL);
  assert_null(x);
  assert_int_equal(raw_int(f->r->db, "SELECT count(*) FROM tokens"), 2);
  free(tok);
  free(tok2);
  free(err);
}

static int64_t add_event(struct registry *r, const char *type, int64_t shard_id) {
  json_t *members = json_pack("[{s:I}]", "id", (json_int_t)shard_id);
  json_t *detail = json_pack("{s:s}", "reason", "test");
  char h0[65], h1[65];
  fake_sha(h0, 5);
  fake_sha(h1, 6);
  struct registry_event ev = {.type = type,
                              .principal = "provider:acme",
                              .token_id = 7,
                              .shard_id = shard_id,
                              .sha256 = h0,
                              .soup_version_before = 0,
                              .soup_version_after = 1,
                              .soup_hash_before = h0,
                              .soup_hash_after = h1,
                              .members = members,
                              .base_sha256 = h1,
                              .algorithm = "soupd-int64-v1",
                              .outcome = REGISTRY_OUTCOME_OK,
                              .detail = detail};
  int64_t id = 0;
  char *err = NULL;
  int rc = registry_event_append(r, &ev, &id, &err);
  if (rc) fprintf(stderr, "event: %s\n", err);
  assert_int_equal(rc, 0);
  json_decref(members);
  json_decref(detail);
  return id;
}

static void test_events_append_only(void **state) {
  struct fx *f = *state;
  int64_t e1 = add_event(f->r, "shard.registered", 1);
  int64_t e2 = add_event(f->r, "shard.withdrawn", 1);
  struct registry_event denied = {.type = "auth.denied",
                                  .shard_id = 99,
                                  .soup_version_before = -1,
                                  .soup_version_after = -1,
                                  .outcome = REGISTRY_OUTCOME_DENIED};
  int64_t e3 = 0;
  assert_int_equal(registry_event_append(f->r, &denied, &e3, NULL), 0);
  assert_true(e1 < e2 && e2 < e3);
  denied.outcome = "maybe";
  assert_int_equal(registry_event_append(f->r, &denied, NULL, NULL), REGISTRY_EINVAL);

  json_t *body = NULL;
  assert_int_equal(registry_event_list(f->r, 0, 0, &body, NULL), 0);
  json_t *arr = json_object_get(body, "events");
  assert_int_equal(json_array_size(arr), 3);
  json_t *ev = json_array_get(arr, 0);
  const char *keys[] = {"id",
                        "at",
                        "type",
                        "principal",
                        "shard_id",
                        "sha256",
                        "soup_version_before",
                        "soup_version_after",
                        "soup_hash_before",
                        "soup_hash_after",
                        "detail"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    assert_non_null(json_object_get(ev, keys[i]));
  assert_string_equal(json_string_value(json_object_get(ev, "type")), "shard.registered");
  assert_int_equal(json_integer_value(json_object_get(ev, "soup_version_before")), 0);
  assert_string_equal(json_string_value(json_object_get(ev, "algorithm")), "soupd-int64-v1");
  assert_true(json_is_array(json_object_get(ev, "members")));
  assert_string_equal(json_string_value(json_object_get(json_object_get(ev, "detail"), "reason")),
                      "test");
  json_t *ev3 = json_array_get(arr, 2);
  assert_true(json_is_null(json_object_get(ev3, "soup_version_before")));
  assert_true(json_is_null(json_object_get(ev3, "principal")));
  assert_true(json_is_object(json_object_get(ev3, "detail")));
  json_decref(body);
  assert_int_equal(registry_event_list(f->r, e1, 1, &body, NULL), 0);
  arr = json_object_get(body, "events");
  assert_int_equal(json_array_size(arr), 1);
  assert_int_equal(json_integer_value(json_object_get(json_array_get(arr, 0), "id")), e2);
  json_decref(body);

  /* UPDATE and DELETE raise, through the registry's connection ... */
  char *err = NULL;
  assert_int_equal(REG_EXEC(f->r, "UPDATE events SET outcome = 'denied'", &err),
                   REGISTRY_ECONFLICT);
  assert_non_null(strstr(err, "append-only"));
  free(err);
  err = NULL;
  assert_int_equal(REG_EXEC(f->r, "DELETE FROM events", &err), REGISTRY_ECONFLICT);
  free(err);
  /* ... and through an independent connection. */
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  sqlite3_extended_result_codes(db, 1);
  assert_int_equal(sqlite3_exec(db, "DELETE FROM events WHERE id = 1", NULL, NULL, NULL),
                   SQLITE_CONSTRAINT_TRIGGER);
  assert_int_equal(sqlite3_exec(db, "UPDATE events SET type = 'x'", NULL, NULL, NULL),
                   SQLITE_CONSTRAINT_TRIGGER);
  sqlite3_close(db);
  assert_int_equal(raw_int(f->r->db, "SELECT count(*) FROM events"), 3);
}

static void test_soup_versions(void **state) {
  struct fx *f = *state;
  struct registry_soup_version v;
  assert_int_equal(registry_soup_version_latest(f->r, &v, NULL), REGISTRY_ENOTFOUND);
  char h[65];
  fake_sha(h, 9);
  assert_int_equal(registry_soup_version_insert(f->r, 0, h, 0, NULL, NULL), 0);
  int64_t e = add_event(f->r, "shard.registered", 1);
  json_t *m = json_pack("[{s:I,s:s}]", "id", (json_int_t)1, "sha256", h);
  assert_int_equal(registry_soup_version_insert(f->r, 1, h, e, m, NULL), 0);
  assert_int_equal(registry_soup_version_insert(f->r, 1, h, e, m, NULL), REGISTRY_ECONFLICT);
  assert_int_equal(registry_soup_version_insert(f->r, 3, h, 12345, m, NULL), REGISTRY_EINVAL);
  assert_int_equal(registry_soup_version_insert(f->r, 2, "zz", e, m, NULL), REGISTRY_EINVAL);
  assert_int_equal(registry_soup_version_latest(f->r, &v, NULL), 0);
  assert_int_equal(v.version, 1);
  assert_int_equal(v.event_id, e);
  assert_string_equal(v.hash, h);
  assert_true(json_equal(v.members, m));
  registry_soup_version_clear(&v);
  json_decref(m);

  json_t *body = NULL;
  assert_int_equal(registry_soup_version_list(f->r, -1, 0, &body, NULL), 0);
  json_t *arr = json_object_get(body, "versions");
  assert_int_equal(json_array_size(arr), 2);
  json_t *v1 = json_array_get(arr, 1);
  assert_int_equal(json_integer_value(json_object_get(v1, "version")), 1);
  assert_string_equal(json_string_value(json_object_get(v1, "event_type")), "shard.registered");
  assert_true(json_is_null(json_object_get(json_array_get(arr, 0), "event_id")));
  json_decref(body);

  char *err = NULL;
  assert_int_equal(REG_EXEC(f->r, "DELETE FROM soup_versions", &err), REGISTRY_ECONFLICT);
  free(err);
  err = NULL;
  assert_int_equal(REG_EXEC(f->r, "UPDATE soup_versions SET hash = hash", &err),
                   REGISTRY_ECONFLICT);
  free(err);
}

/* DESIGN 5.6: shard row + audit event + soup version in ONE transaction. */
static void tx_register(struct registry *r, const char *name, int seed, int commit) {
  char *err = NULL;
  assert_int_equal(registry_begin(r, &err), 0);
  assert_true(registry_in_transaction(r));
  assert_int_equal(registry_begin(r, NULL), REGISTRY_EINVAL); /* no nesting */
  int64_t id = add_shard(r, name, "acme", seed, 0);
  int64_t e = add_event(r, "shard.registered", id);
  char h[65];
  fake_sha(h, seed);
  struct registry_soup_version v;
  int64_t next = registry_soup_version_latest(r, &v, NULL) == 0 ? v.version + 1 : 1;
  registry_soup_version_clear(&v);
  assert_int_equal(registry_soup_version_insert(r, next, h, e, NULL, &err), 0);
  if (commit)
    assert_int_equal(registry_commit(r, &err), 0);
  else
    assert_int_equal(registry_rollback(r), 0);
  assert_false(registry_in_transaction(r));
  free(err);
}

static void test_transaction_rollback_leaves_nothing(void **state) {
  struct fx *f = *state;
  tx_register(f->r, "kept", 1, 1);
  tx_register(f->r, "dropped", 2, 0);
  sqlite3 *db = f->r->db;
  assert_int_equal(raw_int(db, "SELECT count(*) FROM shards"), 1);
  assert_int_equal(raw_int(db, "SELECT count(*) FROM events"), 1);
  assert_int_equal(raw_int(db, "SELECT count(*) FROM soup_versions"), 1);
  assert_int_equal(raw_int(db, "SELECT count(*) FROM shards WHERE name = 'dropped'"), 0);
  /* A failing statement inside a transaction, then rollback: all gone. */
  assert_int_equal(registry_begin(f->r, NULL), 0);
  add_shard(f->r, "x", "acme", 3, 0);
  add_shard(f->r, "kept", "acme", 4, REGISTRY_ECONFLICT);
  assert_int_equal(registry_rollback(f->r), 0);
  assert_int_equal(raw_int(db, "SELECT count(*) FROM shards"), 1);
  /* SQLite rolled the transaction back on its own (as after an I/O error;
   * simulated here by a raw ROLLBACK): later statements are refused rather
   * than run in autocommit mode, and commit fails. */
  assert_int_equal(registry_begin(f->r, NULL), 0);
  add_shard(f->r, "y", "acme", 5, 0);
  assert_int_equal(REG_EXEC(f->r, "ROLLBACK", NULL), 0);
  add_shard(f->r, "z", "acme", 6, REGISTRY_EFAIL);
  assert_true(registry_commit(f->r, NULL) < 0);
  assert_false(registry_in_transaction(f->r));
  assert_int_equal(raw_int(db, "SELECT count(*) FROM shards"), 1);
  /* commit/rollback without a transaction */
  assert_int_equal(registry_commit(f->r, NULL), REGISTRY_EINVAL);
  assert_int_equal(registry_rollback(f->r), 0);
  /* The committed one survives a re-open. */
  registry_close(f->r);
  assert_int_equal(registry_open(f->path, &f->r, NULL), 0);
  assert_int_equal(raw_int(f->r->db, "SELECT count(*) FROM shards WHERE name = 'kept'"), 1);
  assert_int_equal(registry_integrity_check(f->r, NULL), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_shard_roundtrip_json, setup, teardown),
      cmocka_unit_test_setup_teardown(test_active_name_unique, setup, teardown),
      cmocka_unit_test_setup_teardown(test_withdraw_and_weight, setup, teardown),
      cmocka_unit_test_setup_teardown(test_shard_invalid_input, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tokens, setup, teardown),
      cmocka_unit_test_setup_teardown(test_events_append_only, setup, teardown),
      cmocka_unit_test_setup_teardown(test_soup_versions, setup, teardown),
      cmocka_unit_test_setup_teardown(test_transaction_rollback_leaves_nothing, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
