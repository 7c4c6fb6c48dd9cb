/* checkpoints.c: signed checkpoints of the audit log's hash chain (issue 16,
 * DESIGN.md 10). At each soup change the daemon signs the head of the chain
 * (the change's own event and its hash), inside the change's transaction.
 * The chain alone catches an edited, deleted or reordered event; a signed
 * checkpoint also catches a rewritten or truncated tail, since nobody without
 * the key can sign a new head. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "proofs/keys.h"
#include "proofs/receipt.h"
#include "registry/registry.h"

#define CHECKPOINT_TYPE "soupd.audit_checkpoint/1"

int app_checkpoint_commit(struct app *a, int64_t event_id, int64_t version, const char *soup_hash,
                          char **err) {
  char head[65], at[32];
  int rc = registry_event_hash(a->reg, event_id, head, err);
  if (rc != 0) return rc;
  proofs_now_rfc3339(at);
  json_t *cp = json_pack("{s:s,s:I,s:s,s:I,s:s,s:s}", "type", CHECKPOINT_TYPE, "event_id",
                         (json_int_t)event_id, "head_hash", head, "soup_version",
                         (json_int_t)version, "soup_hash", soup_hash, "at", at);
  rc = proofs_object_sign(a->keys, cp, err);
  if (rc == 0) rc = registry_checkpoint_insert(a->reg, event_id, head, cp, err);
  json_decref(cp);
  return rc;
}

/* The first problem with the checkpoints, into why; 0 when none. */
static int checkpoints_check(struct registry *reg, const json_t *keys, int64_t last_event_id,
                             size_t *n, char *why, size_t len, char **err) {
  json_t *cps = NULL;
  int rc = registry_checkpoint_list(reg, &cps, err);
  if (rc != 0) return rc;
  *n = json_array_size(cps);
  size_t i;
  json_t *cp;
  int bad = 0;
  json_array_foreach(cps, i, cp) {
    char sig_why[400];
    int64_t ev = json_integer_value(json_object_get(cp, "event_id"));
    const char *head = json_string_value(json_object_get(cp, "head_hash"));
    if (proofs_object_verify(cp, keys, NULL, sig_why, sizeof sig_why) != 0) {
      snprintf(why, len, "checkpoint %zu (event %lld): %s", i + 1, (long long)ev, sig_why);
      bad = 1;
      break;
    }
    char stored[65];
    char *e2 = NULL;
    if (registry_event_hash(reg, ev, stored, &e2) != 0 || ev > last_event_id) {
      free(e2);
      snprintf(why, len,
               "checkpoint %zu signed event %lld as the head, but that event is gone (the log "
               "was truncated)",
               i + 1, (long long)ev);
      bad = 1;
      break;
    }
    if (!head || strcmp(stored, head) != 0) {
      snprintf(why, len,
               "checkpoint %zu signed event %lld with hash %.16s..., the log now holds %.16s... "
               "(the log was rewritten)",
               i + 1, (long long)ev, head ? head : "", stored);
      bad = 1;
      break;
    }
  }
  json_decref(cps);
  return bad ? 1 : 0;
}

int app_audit_verify(struct registry *reg, const json_t *keys, json_t **out, char **err) {
  int rc = registry_event_chain_verify(reg, out, err);
  if (rc != 0) return rc;
  char why[600] = "";
  size_t n = 0;
  int64_t last = json_integer_value(json_object_get(*out, "last_event_id"));
  rc = checkpoints_check(reg, keys, last, &n, why, sizeof why, err);
  if (rc < 0) {
    json_decref(*out);
    *out = NULL;
    return rc;
  }
  json_object_set_new(*out, "checkpoints", json_integer((json_int_t)n));
  json_object_set_new(*out, "checkpoint_problem", rc ? json_string(why) : json_null());
  if (rc) json_object_set_new(*out, "ok", json_false());
  return 0;
}
