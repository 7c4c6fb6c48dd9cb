/* reads.c: read use cases over the registry for the API (reads.h). */
#include "reads.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "registry/registry.h"

/* Maps a registry failure into *e; logs what the client is not told. */
static int read_fail(int rc, char *err, struct op_error *e, const char *what) {
  e->code = rc == REGISTRY_ENOTFOUND ? ERR_NOT_FOUND
            : rc == REGISTRY_EBUSY   ? ERR_UNAVAILABLE
                                     : ERR_INTERNAL;
  if (rc != REGISTRY_ENOTFOUND) log_error("registry: %s: %s", what, err ? err : "?");
  snprintf(e->detail, sizeof e->detail, "cannot read %s", what);
  free(err);
  return -1;
}

int core_shards_list(struct app *a, const char *status, const char *provider, json_t **out,
                     struct op_error *e) {
  char *err = NULL;
  int rc = registry_shard_list_json(a->reg, status, provider, out, &err);
  return rc ? read_fail(rc, err, e, "the registry") : 0;
}

__attribute__((format(printf, 2, 3))) static int not_found(struct op_error *e, const char *fmt,
                                                           ...) {
  va_list ap;
  va_start(ap, fmt);
  e->code = ERR_NOT_FOUND;
  vsnprintf(e->detail, sizeof e->detail, fmt, ap);
  va_end(ap);
  return -1;
}

int core_shard_get(struct app *a, int64_t id, json_t **out, char *owner, size_t owner_len,
                   struct op_error *e) {
  struct registry_shard s;
  char *err = NULL;
  int rc = registry_shard_get(a->reg, id, &s, &err);
  if (rc == REGISTRY_ENOTFOUND) {
    free(err);
    return not_found(e, "no shard with id %lld", (long long)id);
  }
  if (rc) return read_fail(rc, err, e, "the registry");
  if (out) *out = registry_shard_to_json(&s, 0);
  if (owner) snprintf(owner, owner_len, "%s", s.provider ? s.provider : "");
  registry_shard_clear(&s);
  return 0;
}

int core_events_list(struct app *a, int64_t since, int64_t limit, json_t **out,
                     struct op_error *e) {
  char *err = NULL;
  int rc = registry_event_list(a->reg, since, limit, out, &err);
  return rc ? read_fail(rc, err, e, "the audit log") : 0;
}

int core_soup_history(struct app *a, int64_t since, int64_t limit, json_t **out,
                      struct op_error *e) {
  char *err = NULL;
  int rc = registry_soup_version_list(a->reg, since, limit, out, &err);
  return rc ? read_fail(rc, err, e, "the registry") : 0;
}

void core_shard_counts(struct app *a, int64_t *active, int64_t *withdrawn) {
  char *err = NULL;
  *active = *withdrawn = 0;
  if (registry_shard_counts(a->reg, active, withdrawn, &err) != 0) free(err);
}

int core_registry_healthy(struct app *a) {
  return registry_healthy(a->reg);
}

int core_token_lookup(struct app *a, const char *token, struct core_token *t, struct op_error *e) {
  struct registry_token rt;
  char *err = NULL;
  int rc = registry_token_lookup(a->reg, token, &rt, &err);
  if (rc == REGISTRY_ENOTFOUND) {
    free(err);
    return not_found(e, "the token is unknown or revoked");
  }
  if (rc) return read_fail(rc, err, e, "the token table");
  t->id = rt.id;
  snprintf(t->role, sizeof t->role, "%s", rt.role);
  snprintf(t->provider, sizeof t->provider, "%s", rt.provider);
  return 0;
}
