/* audit.c: audit events that are not soup changes (those are committed with
 * the change itself, in shard_changes.c): a refused action, auth.denied; and
 * the check of the audit log's hash chain (GET /events/verify). */
#include <stdlib.h>

#include "app.h"
#include "log.h"
#include "reads.h"
#include "registry/registry.h"

void app_audit_denied(struct app *a, const struct actor *who, int64_t shard_id, const char *what) {
  json_t *detail = json_pack("{s:s}", "reason", what);
  struct registry_event ev = {.type = "auth.denied",
                              .principal = who->name,
                              .token_id = who->token_id,
                              .shard_id = shard_id,
                              .soup_version_before = -1,
                              .soup_version_after = -1,
                              .outcome = REGISTRY_OUTCOME_DENIED,
                              .detail = detail};
  char *err = NULL;
  if (registry_event_append(a->reg, &ev, NULL, &err) != 0)
    log_error("cannot record auth.denied: %s", err ? err : "?");
  free(err);
  json_decref(detail);
  log_warn("denied %s: %s", who->name, what);
}

int core_events_verify(struct app *a, json_t **out, struct op_error *e) {
  char *err = NULL;
  json_t *keys = app_keys_json(a);
  int rc = app_audit_verify(a->reg, json_object_get(keys, "keys"), out, &err);
  json_decref(keys);
  if (rc != 0) {
    op_fail(e, ERR_INTERNAL, "registry: %s", err ? err : "?");
    free(err);
    return -1;
  }
  return 0;
}
