/* reads.c: read use cases over the registry for the API (reads.h). */
#include "reads.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

int core_shard_get(struct app *a, int64_t id, json_t **out, char *owner, size_t owner_len,
                   struct op_error *e) {
  struct registry_shard s;
  char *err = NULL;
  int rc = registry_shard_get(a->reg, id, &s, &err);
  if (rc == REGISTRY_ENOTFOUND) {
    free(err);
    return op_fail(e, ERR_NOT_FOUND, "no shard with id %lld", (long long)id);
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
    return op_fail(e, ERR_NOT_FOUND, "the token is unknown or revoked");
  }
  if (rc) return read_fail(rc, err, e, "the token table");
  t->id = rt.id;
  snprintf(t->role, sizeof t->role, "%s", rt.role);
  snprintf(t->provider, sizeof t->provider, "%s", rt.provider);
  return 0;
}

static long long rss_bytes(void) {
  long long pages = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    if (fscanf(f, "%lld %lld", &pages, &resident) != 2) resident = 0;
    fclose(f);
  }
  return resident * sysconf(_SC_PAGESIZE);
}

void core_stats_get(struct app *a, struct core_stats *s) {
  memset(s, 0, sizeof *s);
  core_shard_counts(a, &s->active, &s->withdrawn);
  soup_stats_get(a->soup, &s->soup);
  soup_hash_hex(a->soup, s->hash);
  if (a->engine) engine_stats_get(a->engine, &s->eng);
  gen_stats_get(&a->gen_stats, &s->gen);
  app_update_times(a, &s->times);
  s->rss = rss_bytes();
}

int core_soup_export(struct app *a, FILE *fp, uint64_t *version, char hash[65],
                     struct op_error *e) {
  const struct soup_version *v = soup_acquire(a->soup);
  char *err = NULL;
  json_t *meta = json_pack("{s:s,s:s}", "format", "pt", "base_unet_sha256", a->base_sha256);
  int rc = soup_export_fp(v, fp, meta, &err);
  if (rc == 0 && fflush(fp) != 0) rc = -1;
  json_decref(meta);
  *version = v->version;
  memcpy(hash, v->hash_hex, 65);
  soup_release(a->soup, v);
  if (rc != 0) {
    e->code = ERR_INTERNAL;
    snprintf(e->detail, sizeof e->detail, "export failed: %s", err ? err : "write error");
    log_error("soup export: %s", err ? err : "write error");
  }
  free(err);
  return rc != 0 ? -1 : 0;
}
