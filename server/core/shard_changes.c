/* shard_changes.c: register, withdraw and reweight, each in the durable order of
 * DESIGN.md 5.6:
 *   validate (nothing changed yet) -> lock the update mutex -> build the new
 *   soup aside (accumulator in place, spare inference copy) -> commit the
 *   registry row, the audit event and the soup version in ONE transaction ->
 *   switch the live soup -> reply.
 * A failure before the commit undoes the accumulator exactly (integer
 * arithmetic) and leaves the registry, the store and the live soup as they
 * were. A crash anywhere restarts into the committed state (app.c). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "crash.h"
#include "formats/model_dir.h"
#include "formats/safetensors.h"
#include "log.h"
#include "registry/registry.h"
#include "soup/soup.h"

#define SOUP_ALGORITHM "soupd-exact-int64/1"
#define NAME_MAX_LEN 128
#define DESCRIPTION_MAX 4096
#define METADATA_MAX 64

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static enum err_code registry_code(int rc) {
  return rc == REGISTRY_ENOTFOUND   ? ERR_NOT_FOUND
         : rc == REGISTRY_ECONFLICT ? ERR_CONFLICT
         : rc == REGISTRY_EINVAL    ? ERR_INVALID
         : rc == REGISTRY_EBUSY     ? ERR_UNAVAILABLE
         : rc == REGISTRY_EIO       ? ERR_UNAVAILABLE
                                    : ERR_INTERNAL;
}

/* The transaction shared by every change: the caller's registry statement
 * (run by `change`), then the audit event and the new soup version. */
struct commit_ctx {
  struct app *a;
  const struct actor *who;
  const char *type;
  const int64_t *shard_id; /* read after the change (a new row's id) */
  const char *sha256;
  uint64_t v_before, v_after;
  const char *hash_before, *hash_after;
  json_t *detail;
  /* a signed receipt (registration and withdrawal only): built, stored and
   * returned in receipt_out inside the same transaction */
  const char *receipt_action; /* NULL: none */
  const char *provider, *name, *reason;
  json_t *receipt_out;
};

static int commit_change(struct commit_ctx *c, int (*change)(void *), void *arg,
                         struct op_error *e) {
  char *err = NULL;
  int rc = registry_begin(c->a->reg, &err);
  if (rc != 0) goto fail;
  if ((rc = change(arg)) != 0) goto fail_rb;
  json_t *members = app_soup_members(c->a, &err);
  if (!members) {
    rc = REGISTRY_EFAIL;
    goto fail_rb;
  }
  struct registry_event ev = {.type = c->type,
                              .principal = c->who->name,
                              .token_id = c->who->token_id,
                              .shard_id = *c->shard_id,
                              .sha256 = c->sha256,
                              .soup_version_before = (int64_t)c->v_before,
                              .soup_version_after = (int64_t)c->v_after,
                              .soup_hash_before = c->hash_before,
                              .soup_hash_after = c->hash_after,
                              .members = members,
                              .base_sha256 = c->a->base_sha256,
                              .algorithm = SOUP_ALGORITHM,
                              .outcome = REGISTRY_OUTCOME_OK,
                              .detail = c->detail};
  int64_t event_id = 0;
  rc = registry_event_append(c->a->reg, &ev, &event_id, &err);
  if (rc == 0)
    rc = registry_soup_version_insert(c->a->reg, (int64_t)c->v_after, c->hash_after, event_id,
                                      members, &err);
  json_decref(members);
  if (rc == 0) rc = app_checkpoint_commit(c->a, event_id, (int64_t)c->v_after, c->hash_after, &err);
  if (rc == 0 && c->receipt_action) {
    struct app_receipt_in ri = {.action = c->receipt_action,
                                .shard_id = *c->shard_id,
                                .event_id = event_id,
                                .sha256 = c->sha256,
                                .name = c->name,
                                .provider = c->provider,
                                .reason = c->reason,
                                .v_before = (int64_t)c->v_before,
                                .v_after = (int64_t)c->v_after,
                                .hash_before = c->hash_before,
                                .hash_after = c->hash_after,
                                .verify = strcmp(c->receipt_action, "shard.withdrawn") == 0};
    rc = app_receipt_commit(c->a, &ri, &c->receipt_out, &err);
  }
  if (rc != 0) goto fail_rb;
  rc = registry_commit(c->a->reg, &err);
  if (rc != 0) goto fail;
  return 0;
fail_rb:
  registry_rollback(c->a->reg);
  json_decref(c->receipt_out);
  c->receipt_out = NULL;
fail:
  op_fail(e, registry_code(rc), "the registry refused the change: %s", err ? err : "unknown error");
  if (rc == REGISTRY_EFAIL) log_error("registry: %s", err ? err : "?");
  free(err);
  return -1;
}

/* Switch to the committed version; record the update time. */
static void publish(struct app *a, uint64_t version, double t0) {
  char *err = NULL;
  if (soup_switch(a->soup, version, &err) != 0) {
    /* The registry already holds the new version; serving the old soup would
     * break the withdrawal promise, so stop being ready until restart. */
    log_error("soup switch to version %llu failed after commit: %s; not ready until restart",
              (unsigned long long)version, err ? err : "?");
    atomic_store(&a->ready, 0);
  }
  free(err);
  app_update_times_set(a, now_ms() - t0);
}

static json_t *result_json(struct app *a, int64_t id) {
  struct registry_shard s;
  json_t *shard = NULL;
  if (registry_shard_get(a->reg, id, &s, NULL) == 0) {
    shard = registry_shard_to_json(&s, 0);
    registry_shard_clear(&s);
  }
  json_t *soup = json_pack("{s:I,s:s}", "version", (json_int_t)0, "hash", "");
  const struct soup_version *v = soup_acquire(a->soup);
  json_object_set_new(soup, "version", json_integer((json_int_t)v->version));
  json_object_set_new(soup, "hash", json_string(v->hash_hex));
  soup_release(a->soup, v);
  return json_pack("{s:o,s:o}", "shard", shard ? shard : json_null(), "soup", soup);
}

/* ---- register ---- */

static int name_valid(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > NAME_MAX_LEN) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == 0x7f || c == '/' || c == '\\') return 0;
  }
  return 1;
}

struct reg_arg {
  struct app *a;
  struct registry_shard_new in;
  int64_t id;
  char *err;
};

static int reg_change(void *p) {
  struct reg_arg *r = p;
  return registry_shard_insert(r->a->reg, &r->in, &r->id, &r->err);
}

int app_shard_register(struct app *a, const struct actor *who, const struct shard_input *in,
                       json_t **result, struct op_error *e) {
  double t0 = now_ms();
  if (!name_valid(in->name))
    return op_field_error(e, ERR_INVALID, "name", "1 to 128 printable characters, no slashes");
  int64_t kq = 0;
  char *err = NULL;
  if (soup_weight_quantize(in->weight, &kq, &err) != 0) {
    op_field_error(e, ERR_INVALID, "weight", err ? err : "out of range");
    free(err);
    return -1;
  }
  if (in->description && strlen(in->description) > DESCRIPTION_MAX)
    return op_field_error(e, ERR_INVALID, "description", "at most 4096 bytes");
  if (in->metadata &&
      (!json_is_object(in->metadata) || json_object_size(in->metadata) > METADATA_MAX))
    return op_field_error(e, ERR_INVALID, "metadata", "an object of at most 64 string values");
  if (in->metadata) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)in->metadata, k, v) {
      if (!json_is_string(v) || strlen(k) > 128 || json_string_length(v) > 1024)
        return op_field_error(e, ERR_INVALID, "metadata",
                              "keys up to 128 bytes, string values up to 1024");
    }
  }
  struct registry_shard dup;
  if (registry_shard_get_active_by_name(a->reg, in->name, &dup, NULL) == 0) {
    op_fail(e, ERR_CONFLICT, "an active shard is already named '%s' (id %lld)", in->name,
            (long long)dup.id);
    registry_shard_clear(&dup);
    return -1;
  }

  /* Validate the file completely before anything changes. */
  struct st_file *f = NULL;
  if (app_shard_open(a, in->tmp_path, &f, &err) != 0) {
    op_field_error(e, ERR_INVALID, "file", err ? err : "not a valid safetensors file");
    free(err);
    return -1;
  }
  e->errors = json_array();
  if (st_check_compatible(a->base, f, e->errors, 10) != 0) {
    st_close(f);
    return op_fail(e, ERR_INVALID,
                   "the checkpoint does not match the base UNet (%zu problem(s) listed)",
                   json_array_size(e->errors));
  }
  if (soup_check_shard_st(a->soup, f, e->errors, 10) != 0) {
    st_close(f);
    return op_fail(e, ERR_INVALID, "the checkpoint holds values the soup cannot accept (listed)");
  }
  json_decref(e->errors);
  e->errors = NULL;
  const char *dtype = f->n_tensors ? st_dtype_name(f->tensors[0].dtype) : "F32";
  int64_t params = 0;
  for (size_t i = 0; i < f->n_tensors; i++) params += (int64_t)f->tensors[i].numel;

  pthread_mutex_lock(&a->update_mu);
  char store[1200];
  app_shard_path(a, in->sha256, store, sizeof store);
  struct stat sb;
  int existed = stat(store, &sb) == 0;
  if (!existed && rename(in->tmp_path, store) != 0) {
    pthread_mutex_unlock(&a->update_mu);
    st_close(f);
    return op_fail(e, ERR_INTERNAL, "cannot move the upload into the store: %s", strerror(errno));
  }
  int dfd = open(a->shards_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) fsync(dfd), close(dfd);
  crash_point("register.stored");

  const struct soup_version *before = soup_acquire(a->soup);
  uint64_t v_before = before->version;
  char h_before[65];
  memcpy(h_before, before->hash_hex, 65);
  soup_release(a->soup, before);

  if (soup_apply_st(a->soup, f, kq, &err) != 0) {
    op_fail(e, ERR_UNAVAILABLE, "the soup could not be updated: %s", err ? err : "?");
    free(err);
    goto undo_file;
  }
  char h_after[65];
  soup_hash_hex(a->soup, h_after);
  crash_point("register.applied");
  json_t *detail =
      json_pack("{s:f,s:I}", "weight", soup_weight_value(kq), "weight_q", (json_int_t)kq);
  struct reg_arg ra = {.a = a,
                       .in = {.name = in->name,
                              .provider = in->provider,
                              .weight_q = kq,
                              .sha256 = in->sha256,
                              .size_bytes = in->size_bytes,
                              .dtype = dtype,
                              .tensors = (int64_t)f->n_tensors,
                              .params = params,
                              .description = in->description,
                              .metadata = in->metadata}};
  struct commit_ctx c = {a,
                         who,
                         "shard.registered",
                         &ra.id,
                         in->sha256,
                         v_before,
                         v_before + 1,
                         h_before,
                         h_after,
                         detail,
                         NULL,
                         NULL,
                         NULL,
                         NULL,
                         NULL};
  c.receipt_action = "shard.registered";
  c.provider = in->provider;
  c.name = in->name;
  int rc = commit_change(&c, reg_change, &ra, e);
  free(ra.err);
  json_decref(detail);
  if (rc != 0) {
    soup_rollback_st(a->soup, f, kq, NULL);
    goto undo_file;
  }
  crash_point("register.committed");
  publish(a, v_before + 1, t0);
  pthread_mutex_unlock(&a->update_mu);
  st_close(f);
  log_info("registered shard %lld '%s' (%.12s, weight %g) by %s: soup v%llu %.12s in %.0f ms",
           (long long)ra.id, in->name, in->sha256, soup_weight_value(kq), who->name,
           (unsigned long long)(v_before + 1), h_after, now_ms() - t0);
  *result = result_json(a, ra.id);
  json_object_set_new(*result, "receipt", c.receipt_out);
  return 0;

undo_file:
  if (!existed) unlink(store);
  pthread_mutex_unlock(&a->update_mu);
  st_close(f);
  return -1;
}

/* ---- withdraw and reweight ---- */

struct wd_arg {
  struct app *a;
  int64_t id;
  const char *reason;
  int64_t weight_q; /* reweight only */
  char *err;
};

static int wd_change(void *p) {
  struct wd_arg *w = p;
  return registry_shard_withdraw(w->a->reg, w->id, w->reason, &w->err);
}

static int rw_change(void *p) {
  struct wd_arg *w = p;
  return registry_shard_set_weight(w->a->reg, w->id, w->weight_q, &w->err);
}

/* Common body of withdraw (new_kq == 0) and reweight. */
static int shard_change(struct app *a, const struct actor *who, int64_t id, int64_t new_kq,
                        const char *reason, int purge, json_t **result, struct op_error *e) {
  double t0 = now_ms();
  char *err = NULL;
  pthread_mutex_lock(&a->update_mu);
  struct registry_shard s;
  int rc = registry_shard_get(a->reg, id, &s, &err);
  if (rc != 0) {
    pthread_mutex_unlock(&a->update_mu);
    op_fail(e, registry_code(rc), "no shard with id %lld", (long long)id);
    free(err);
    return -1;
  }
  if (!who->admin && (!who->provider || !s.provider || strcmp(who->provider, s.provider) != 0)) {
    op_fail(e, ERR_FORBIDDEN, "shard %lld belongs to another provider", (long long)id);
    app_audit_denied(a, who, id, e->detail);
    goto out;
  }
  if (s.status != REGISTRY_SHARD_ACTIVE) {
    op_fail(e, ERR_CONFLICT, "shard %lld is already withdrawn", (long long)id);
    goto out;
  }
  int64_t delta = new_kq - s.weight_q;
  if (delta == 0) { /* a reweight to the same weight changes nothing */
    pthread_mutex_unlock(&a->update_mu);
    registry_shard_clear(&s);
    *result = result_json(a, id);
    return 0;
  }
  char path[1200];
  app_shard_path(a, s.sha256, path, sizeof path);
  struct st_file *f = NULL;
  if (app_shard_open(a, path, &f, &err) != 0) {
    log_error("shard %lld: stored file unreadable: %s", (long long)id, err ? err : "?");
    free(err);
    op_fail(e, ERR_INTERNAL, "the stored file of shard %lld cannot be read", (long long)id);
    goto out;
  }
  const struct soup_version *before = soup_acquire(a->soup);
  uint64_t v_before = before->version;
  char h_before[65], h_after[65];
  memcpy(h_before, before->hash_hex, 65);
  soup_release(a->soup, before);
  if (soup_apply_st(a->soup, f, delta, &err) != 0) {
    op_fail(e, ERR_UNAVAILABLE, "the soup could not be updated: %s", err ? err : "?");
    free(err);
    st_close(f);
    goto out;
  }
  soup_hash_hex(a->soup, h_after);
  if (new_kq == 0) crash_point("withdraw.applied");
  json_t *detail = new_kq == 0
                       ? json_pack("{s:s,s:b}", "reason", reason ? reason : "", "purge", purge)
                       : json_pack("{s:f,s:f}", "weight_before", soup_weight_value(s.weight_q),
                                   "weight_after", soup_weight_value(new_kq));
  struct wd_arg w = {a, id, reason, new_kq, NULL};
  struct commit_ctx c = {a,
                         who,
                         new_kq == 0 ? "shard.withdrawn" : "shard.reweighted",
                         &id,
                         s.sha256,
                         v_before,
                         v_before + 1,
                         h_before,
                         h_after,
                         detail,
                         NULL,
                         NULL,
                         NULL,
                         NULL,
                         NULL};
  if (new_kq == 0) {
    c.receipt_action = "shard.withdrawn";
    c.provider = s.provider;
    c.name = s.name;
    c.reason = reason;
  }
  rc = commit_change(&c, new_kq == 0 ? wd_change : rw_change, &w, e);
  free(w.err);
  json_decref(detail);
  if (rc != 0) {
    soup_rollback_st(a->soup, f, delta, NULL);
    st_close(f);
    goto out;
  }
  if (new_kq == 0) crash_point("withdraw.committed");
  publish(a, v_before + 1, t0);
  st_close(f);
  if (new_kq == 0 && purge) {
    if (unlink(path) != 0 && errno != ENOENT)
      log_error("shard %lld: cannot purge its stored file: %s", (long long)id, strerror(errno));
  }
  log_info("%s shard %lld '%s' by %s: soup v%llu %.12s in %.0f ms",
           new_kq == 0 ? (purge ? "withdrew and purged" : "withdrew") : "reweighted", (long long)id,
           s.name, who->name, (unsigned long long)(v_before + 1), h_after, now_ms() - t0);
  pthread_mutex_unlock(&a->update_mu);
  registry_shard_clear(&s);
  *result = result_json(a, id);
  if (c.receipt_out) json_object_set_new(*result, "receipt", c.receipt_out);
  return 0;
out:
  pthread_mutex_unlock(&a->update_mu);
  registry_shard_clear(&s);
  return -1;
}

int app_shard_withdraw(struct app *a, const struct actor *who, int64_t id, const char *reason,
                       int purge, json_t **result, struct op_error *e) {
  return shard_change(a, who, id, 0, reason, purge, result, e);
}

int app_shard_reweight(struct app *a, const struct actor *who, int64_t id, double weight,
                       json_t **result, struct op_error *e) {
  int64_t kq = 0;
  char *err = NULL;
  if (soup_weight_quantize(weight, &kq, &err) != 0) {
    op_field_error(e, ERR_INVALID, "weight", err ? err : "out of range");
    free(err);
    return -1;
  }
  return shard_change(a, who, id, kq, NULL, 0, result, e);
}

/* ---- verify ---- */

int app_soup_rebuilt_hash(struct app *a, char rebuilt[65], struct op_error *e) {
  char *err = NULL;
  struct registry_shard *rows = NULL;
  size_t n = 0;
  rebuilt[0] = 0;
  if (registry_shard_list(a->reg, "active", NULL, &rows, &n, &err) != 0) {
    op_fail(e, ERR_INTERNAL, "registry: %s", err ? err : "?");
    free(err);
    return -1;
  }
  struct st_file **files = calloc(n + 1, sizeof *files);
  struct soup_source *src = calloc(n + 1, sizeof *src);
  struct soup_view **views = calloc(n + 1, sizeof *views);
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    char path[1200];
    app_shard_path(a, rows[i].sha256, path, sizeof path);
    if (app_shard_open(a, path, &files[i], &err) != 0 ||
        soup_views_from_st(files[i], &views[i], &src[i].n, &err) != 0) {
      rc = op_fail(e, ERR_INTERNAL, "the stored file of shard %lld cannot be read",
                   (long long)rows[i].id);
      break;
    }
    src[i].v = views[i];
    src[i].kq = rows[i].weight_q;
  }
  if (rc == 0 && soup_rebuild_hash(a->soup, src, n, rebuilt, &err) != 0)
    rc = op_fail(e, ERR_INTERNAL, "rebuild failed: %s", err ? err : "?");
  free(err);
  for (size_t i = 0; i < n; i++) {
    free(views[i]);
    st_close(files[i]);
  }
  free(views), free(src), free(files);
  registry_shard_rows_free(rows, n);
  return rc;
}

int app_soup_verify(struct app *a, const struct actor *who, json_t **result, struct op_error *e) {
  double t0 = now_ms();
  char *err = NULL;
  pthread_mutex_lock(&a->update_mu);
  char rebuilt[65] = "", live[65];
  soup_hash_hex(a->soup, live);
  if (app_soup_rebuilt_hash(a, rebuilt, e) != 0) {
    pthread_mutex_unlock(&a->update_mu);
    return -1;
  }
  const struct soup_version *v = soup_acquire(a->soup);
  uint64_t ver = v->version;
  soup_release(a->soup, v);
  int match = strcmp(live, rebuilt) == 0;
  double ms = now_ms() - t0;
  json_t *detail = json_pack("{s:s,s:b,s:f}", "rebuilt_hash", rebuilt, "match", match, "ms", ms);
  struct registry_event ev = {.type = "soup.verified",
                              .principal = who->name,
                              .token_id = who->token_id,
                              .soup_version_before = (int64_t)ver,
                              .soup_version_after = (int64_t)ver,
                              .soup_hash_before = live,
                              .soup_hash_after = live,
                              .base_sha256 = a->base_sha256,
                              .algorithm = SOUP_ALGORITHM,
                              .outcome = match ? REGISTRY_OUTCOME_OK : REGISTRY_OUTCOME_FAILED,
                              .detail = detail};
  if (registry_event_append(a->reg, &ev, NULL, &err) != 0) log_error("audit: %s", err);
  free(err);
  json_decref(detail);
  pthread_mutex_unlock(&a->update_mu);
  if (!match) log_error("soup verify: live %.16s != rebuilt %.16s", live, rebuilt);
  *result = json_pack("{s:I,s:s,s:s,s:b,s:f}", "version", (json_int_t)ver, "live_hash", live,
                      "rebuilt_hash", rebuilt, "match", match, "ms", ms);
  return 0;
}
