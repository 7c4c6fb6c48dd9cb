/* receipts.c: the signed receipts of registrations and withdrawals (issue 16,
 * DESIGN.md 10) and the read side of the proofs (GET /keys,
 * GET /shards/{id}/receipts). A receipt is built, signed and stored inside
 * the change's own transaction, so a committed change always has its
 * receipt and a rolled-back one never does. It holds integers and strings
 * only, so its RFC 8785 encoding needs no number formatting. */
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "proofs/keys.h"
#include "proofs/receipt.h"
#include "registry/registry.h"
#include "version.h"

#define RECEIPT_TYPE "soupd.receipt/1"

static json_t *str_or_null(const char *s) {
  return s ? json_string(s) : json_null();
}

int app_receipt_commit(struct app *a, const struct app_receipt_in *in, json_t **out, char **err) {
  *out = NULL;
  char at[32];
  proofs_now_rfc3339(at);
  json_t *r =
      json_pack("{s:s,s:s,s:I,s:s,s:o,s:o,s:o,s:s,s:I,s:s,s:s}", "type", RECEIPT_TYPE, "action",
                in->action, "shard_id", (json_int_t)in->shard_id, "sha256", in->sha256, "name",
                str_or_null(in->name), "provider", str_or_null(in->provider), "reason",
                str_or_null(in->reason), "at", at, "event_id", (json_int_t)in->event_id,
                "soupd_version", SOUPD_VERSION, "base_sha256", a->base_sha256);
  if (!r) {
    *err = strdup("receipt: out of memory");
    return -1;
  }
  json_object_set_new(r, "soup",
                      json_pack("{s:I,s:s,s:I,s:s}", "version_before", (json_int_t)in->v_before,
                                "hash_before", in->hash_before, "version_after",
                                (json_int_t)in->v_after, "hash_after", in->hash_after));
  if (in->verify) {
    char rebuilt[65] = "";
    struct op_error e = {0};
    int ok = app_soup_rebuilt_hash(a, rebuilt, &e) == 0;
    json_decref(e.errors);
    json_object_set_new(r, "verify",
                        json_pack("{s:s,s:o,s:b}", "live_hash", in->hash_after, "rebuilt_hash",
                                  ok ? json_string(rebuilt) : json_null(), "match",
                                  ok && strcmp(rebuilt, in->hash_after) == 0));
  } else {
    json_object_set_new(r, "verify", json_null());
  }
  int rc = proofs_object_sign(a->keys, r, err);
  if (rc == 0) rc = registry_receipt_insert(a->reg, in->shard_id, in->event_id, r, err);
  if (rc != 0) {
    json_decref(r);
    return rc;
  }
  *out = r;
  return 0;
}

json_t *app_keys_json(struct app *a) {
  return proofs_keys_json(a->keys);
}

int app_shard_receipts(struct app *a, int64_t id, json_t **out, struct op_error *e) {
  char *err = NULL;
  struct registry_shard s;
  int rc = registry_shard_get(a->reg, id, &s, &err);
  if (rc != 0) {
    free(err);
    return op_fail(e, rc == REGISTRY_ENOTFOUND ? ERR_NOT_FOUND : ERR_INTERNAL,
                   "no shard with id %lld", (long long)id);
  }
  registry_shard_clear(&s);
  json_t *list = NULL;
  if (registry_receipt_list(a->reg, id, &list, &err) != 0) {
    op_fail(e, ERR_INTERNAL, "registry: %s", err ? err : "?");
    free(err);
    return -1;
  }
  *out = json_pack("{s:o}", "receipts", list);
  return 0;
}
