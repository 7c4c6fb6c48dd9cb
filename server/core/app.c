/* app.c: opening the daemon's state in a safe order, and closing it.
 *
 * Start-up: data directory (0700) with shards/ and tmp/ -> registry (WAL,
 * synchronous=FULL, checked) -> base model -> soup rebuilt from the stored
 * files of the committed active shards -> the live version equals the
 * registry's latest. Leftovers of a crash are cleaned: tmp/ is emptied and a
 * stored file that no shard row references (a registration that died before
 * its commit) is removed, as is the file of a purging withdrawal that died
 * after its commit. */
#include "app.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "diffusion/pipeline.h"
#include "formats/keymap_apply.h"
#include "formats/model_dir.h"
#include "kernels/backend.h"
#include "formats/safetensors.h"
#include "log.h"
#include "proofs/keys.h"
#include "registry/registry.h"
#include "soup/soup.h"

static char *errf(const char *fmt, const char *a, const char *b) {
  char buf[1200];
  snprintf(buf, sizeof buf, fmt, a, b);
  return strdup(buf);
}

void app_shard_path(const struct app *a, const char *sha256, char *out, size_t len) {
  snprintf(out, len, "%s/%s.safetensors", a->shards_dir, sha256);
}

int app_shard_open(const struct app *a, const char *path, struct st_file **f, char **err) {
  /* a real SD UNet header is ~100 KB; jansson needs ~14x the header in memory */
  if (st_open_limit(path, 16u << 20, f, err) != 0) return -1;
  if (st_is_ldm(*f) && st_apply_ldm_names(*f, a->model->unet_config, err) != 0) {
    st_close(*f);
    *f = NULL;
    return -1;
  }
  return 0;
}

static int mkdir_p(const char *dir, char **err) {
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s", dir);
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST) goto fail;
    *p = '/';
  }
  if (mkdir(tmp, 0700) != 0 && errno != EEXIST) goto fail;
  return 0;
fail:
  *err = errf("cannot create directory %s: %s", tmp, strerror(errno));
  return -1;
}

static int file_sha256(const char *path, char hex[65]) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  EVP_DigestInit_ex(c, EVP_sha256(), NULL);
  static _Thread_local unsigned char buf[1 << 20];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) EVP_DigestUpdate(c, buf, (size_t)n);
  close(fd);
  unsigned char d[32];
  EVP_DigestFinal_ex(c, d, NULL);
  EVP_MD_CTX_free(c);
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
  return n < 0 ? -1 : 0;
}

/* Shard ids whose withdrawal asked for a purge (from the audit log, which
 * records the request in the same transaction as the withdrawal). */
static json_t *purged_ids(struct app *a) {
  json_t *ids = json_object();
  int64_t since = 0;
  for (;;) {
    json_t *page = NULL;
    char *err = NULL;
    if (registry_event_list(a->reg, since, 1000, &page, &err) != 0) {
      free(err);
      break;
    }
    json_t *evs = json_object_get(page, "events"), *ev;
    size_t i;
    json_array_foreach(evs, i, ev) {
      since = json_integer_value(json_object_get(ev, "id"));
      const char *type = json_string_value(json_object_get(ev, "type"));
      json_t *purge = json_object_get(json_object_get(ev, "detail"), "purge");
      if (type && strcmp(type, "shard.withdrawn") == 0 && json_is_true(purge)) {
        char key[32];
        snprintf(key, sizeof key, "%lld",
                 (long long)json_integer_value(json_object_get(ev, "shard_id")));
        json_object_set_new(ids, key, json_true());
      }
    }
    size_t n = json_array_size(evs);
    json_decref(page);
    if (n < 1000) break;
  }
  return ids;
}

/* Empties tmp/ and removes every stored file that no shard row keeps: an
 * active row keeps its file, and so does a withdrawn one that was not purged.
 * A file no row names is a registration that died before its commit; a file
 * whose rows were all purged is a purge that died after its commit. */
static void app_gc(struct app *a) {
  DIR *d = opendir(a->tmp_dir);
  struct dirent *e;
  char path[2300];
  while (d && (e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "%s/%s", a->tmp_dir, e->d_name);
    if (unlink(path) == 0) log_info("removed leftover temporary file tmp/%s", e->d_name);
  }
  if (d) closedir(d);
  struct registry_shard *rows = NULL;
  size_t nrows = 0;
  char *err = NULL;
  if (registry_shard_list(a->reg, NULL, NULL, &rows, &nrows, &err) != 0) {
    log_warn("store clean-up skipped: %s", err ? err : "?");
    free(err);
    return;
  }
  json_t *purged = purged_ids(a);
  d = opendir(a->shards_dir);
  while (d && (e = readdir(d))) {
    size_t n = strlen(e->d_name);
    if (n != 64 + 12 || strcmp(e->d_name + 64, ".safetensors") != 0) continue;
    int keep = 0;
    for (size_t i = 0; i < nrows && !keep; i++) {
      if (strncmp(rows[i].sha256, e->d_name, 64) != 0) continue;
      char key[32];
      snprintf(key, sizeof key, "%lld", (long long)rows[i].id);
      keep = rows[i].status == REGISTRY_SHARD_ACTIVE || !json_object_get(purged, key);
    }
    if (!keep) {
      snprintf(path, sizeof path, "%s/%s", a->shards_dir, e->d_name);
      if (unlink(path) == 0) log_info("removed unreferenced stored shard %.12s", e->d_name);
    }
  }
  if (d) closedir(d);
  json_decref(purged);
  registry_shard_rows_free(rows, nrows);
}

static void snapshot_path(const struct app *a, char *out, size_t len) {
  snprintf(out, len, "%s/soup.snapshot", a->cfg.data_dir);
}

/* Restores the accumulator from the snapshot a clean shutdown wrote, if it
 * holds exactly the registry's latest version (number and hash). Returns 1
 * if restored, 0 if there is none or it could not be read (nothing changed),
 * -1 if it was loaded but is stale (the soup must be recreated). */
static int app_snapshot_restore(struct app *a) {
  char path[1200], hash[65];
  snapshot_path(a, path, sizeof path);
  if (access(path, R_OK) != 0) return 0;
  struct registry_soup_version v;
  char *err = NULL;
  if (registry_soup_version_latest(a->reg, &v, &err) != 0) {
    free(err);
    return 0;
  }
  uint64_t ver = 0;
  int rc;
  if (soup_snapshot_load(a->soup, path, &ver, hash, &err) != 0) {
    log_warn("soup snapshot unusable (%s); rebuilding from the shard files", err ? err : "?");
    rc = 0;
  } else if ((int64_t)ver != v.version || strcmp(hash, v.hash) != 0) {
    log_info("soup snapshot holds version %llu, the registry is at %lld; rebuilding",
             (unsigned long long)ver, (long long)v.version);
    rc = -1;
  } else {
    log_info("soup version %llu restored from the snapshot (hash %.16s)", (unsigned long long)ver,
             hash);
    rc = 1;
  }
  free(err);
  registry_soup_version_clear(&v);
  return rc;
}

void app_snapshot_save(struct app *a) {
  if (!a->soup) return;
  char path[1200], *err = NULL;
  snapshot_path(a, path, sizeof path);
  const struct soup_version *v = soup_acquire(a->soup);
  uint64_t ver = v->version;
  soup_release(a->soup, v);
  if (soup_snapshot_write(a->soup, path, ver, &err) != 0)
    log_warn("cannot write the soup snapshot: %s", err ? err : "?");
  else
    log_info("soup version %llu saved to the snapshot for a fast restart", (unsigned long long)ver);
  free(err);
}

/* Re-applies every committed active shard, in id order (unless the snapshot
 * already restored them). */
static int app_soup_rebuild(struct app *a, int restored, char **err) {
  struct registry_shard *rows = NULL;
  size_t n = 0;
  if (registry_shard_list(a->reg, "active", NULL, &rows, &n, err) != 0) return -1;
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0 && !restored; i++) {
    char path[1200];
    app_shard_path(a, rows[i].sha256, path, sizeof path);
    struct st_file *f = NULL;
    char *e2 = NULL;
    if (app_shard_open(a, path, &f, &e2) != 0) {
      *err = errf("active shard %s: its stored file cannot be read (%s); refusing to serve a "
                  "soup that differs from the registry",
                  rows[i].name, e2 ? e2 : "?");
      free(e2);
      rc = -1;
      break;
    }
    if (soup_accumulate_st(a->soup, f, rows[i].weight_q, &e2) != 0) {
      *err = errf("active shard %s: %s", rows[i].name, e2 ? e2 : "?");
      free(e2);
      rc = -1;
    }
    st_close(f);
  }
  registry_shard_rows_free(rows, n);
  if (rc != 0) return rc;
  /* the live copy must hold the registry's version even when no shard is
   * active (e.g. after every shard was withdrawn) */
  if (soup_materialize_spare(a->soup, err) != 0) return -1;
  struct registry_soup_version v;
  char hex[65];
  soup_hash_hex(a->soup, hex);
  int vr = registry_soup_version_latest(a->reg, &v, err);
  if (vr == REGISTRY_ENOTFOUND) {
    free(*err);
    *err = NULL;
    json_t *members = json_array();
    rc = registry_soup_version_insert(a->reg, 0, hex, 0, members, err);
    json_decref(members);
    log_info("soup version 0 (the base) hash %.16s", hex);
    return rc;
  }
  if (vr != 0) return -1;
  if (soup_switch(a->soup, (uint64_t)v.version, err) != 0) {
    registry_soup_version_clear(&v);
    return -1;
  }
  if (strcmp(v.hash, hex) != 0)
    log_warn("soup version %lld: rebuilt hash %.16s differs from the recorded %.16s (algorithm "
             "change?)",
             (long long)v.version, hex, v.hash);
  log_info("soup version %lld %s %zu active shard(s), hash %.16s", (long long)v.version,
           restored ? "restored with" : "rebuilt from", n, hex);
  registry_soup_version_clear(&v);
  return 0;
}

static int app_first_admin_token(struct app *a, char **err) {
  int64_t n = 0;
  if (registry_token_count(a->reg, "admin", &n, err) != 0) return -1;
  if (n > 0) return 0;
  char *tok = NULL;
  if (registry_token_create(a->reg, "admin", NULL, &tok, NULL, err) != 0) return -1;
  char path[1200];
  snprintf(path, sizeof path, "%s/admin.token", a->cfg.data_dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int ok = fd >= 0 && write(fd, tok, strlen(tok)) == (ssize_t)strlen(tok) &&
           write(fd, "\n", 1) == 1 && fsync(fd) == 0;
  if (fd >= 0) close(fd);
  memset(tok, 0, strlen(tok));
  free(tok);
  if (!ok) {
    *err = errf("cannot write the admin token file %s: %s", path, strerror(errno));
    return -1;
  }
  log_info("created the first admin token; it is in %s (mode 0600)", path);
  return 0;
}

/* "auto": F32 on the CPU, F16 on a GPU; else F32, F16 or BF16 (the config
 * accepts nothing else). */
static enum dtype infer_dtype(const char *s, int gpu) {
  if (strcmp(s, "auto") == 0) return gpu ? DT_F16 : DT_F32;
  return (enum dtype)dtype_from_name(s);
}

void app_update_times(struct app *a, struct update_times *t) {
  pthread_mutex_lock(&a->times_mu);
  memcpy(t->updated_at, a->updated_at, sizeof t->updated_at);
  t->last_update_ms = a->last_update_ms;
  pthread_mutex_unlock(&a->times_mu);
}

void app_update_times_set(struct app *a, double ms) {
  char now[40];
  log_time_now(now, sizeof now);
  pthread_mutex_lock(&a->times_mu);
  snprintf(a->updated_at, sizeof a->updated_at, "%s", now);
  a->last_update_ms = ms;
  pthread_mutex_unlock(&a->times_mu);
}

void app_init(struct app *a) {
  pthread_mutex_init(&a->update_mu, NULL);
  pthread_mutex_init(&a->times_mu, NULL);
  pthread_mutex_init(&a->gen_stats.mu, NULL);
}

int app_open(struct app *a, char **err) {
  snprintf(a->shards_dir, sizeof a->shards_dir, "%s/shards", a->cfg.data_dir);
  snprintf(a->tmp_dir, sizeof a->tmp_dir, "%s/tmp", a->cfg.data_dir);
  snprintf(a->db_path, sizeof a->db_path, "%s/soupd.db", a->cfg.data_dir);
  if (mkdir_p(a->cfg.data_dir, err) || mkdir_p(a->shards_dir, err) || mkdir_p(a->tmp_dir, err))
    return -1;
  if (proofs_keys_open(a->cfg.data_dir, &a->keys, err) != 0) return -1;
  log_info("signing key %s (Ed25519)", proofs_keys_current_id(a->keys));
  if (registry_open(a->db_path, &a->reg, err) != 0) return -1;
  log_info("registry %s open (WAL, synchronous=FULL)", a->db_path);
  if (app_first_admin_token(a, err) != 0) return -1;

  if (model_dir_open_variant(a->model_root, a->cfg.variant, &a->model, err) != 0) return -1;
  if (st_open(a->model->unet_weights, &a->base, err) != 0) return -1;
  if (file_sha256(a->model->unet_weights, a->base_sha256) != 0) {
    *err = strdup("cannot read the base UNet");
    return -1;
  }
  const char *slash = strrchr(a->model_root, '/');
  snprintf(a->base_name, sizeof a->base_name, "%s", slash && slash[1] ? slash + 1 : a->model_root);
  log_info("base model %s: UNet with %zu tensors, sha256 %.16s", a->base_name, a->base->n_tensors,
           a->base_sha256);

  if (app_device_open(a, err) != 0) return -1;
  enum dtype inf = infer_dtype(a->cfg.infer_dtype, strcmp(a->device, "cpu") != 0);
  if (soup_new(a->base, a->soup_be, inf, &a->soup, err) != 0) return -1;
  app_gc(a);
  int restored = app_snapshot_restore(a);
  if (restored < 0) { /* a stale snapshot was loaded: start from an empty soup */
    soup_free(a->soup);
    if (soup_new(a->base, a->soup_be, inf, &a->soup, err) != 0) return -1;
    restored = 0;
  }
  if (app_soup_rebuild(a, restored, err) != 0) return -1;
  char *e2 = NULL;
  if (pipeline_load_dir(a->model, a->be, &a->pipe, &e2) != 0) {
    log_warn("the model cannot generate images (%s); /generate answers 503", e2 ? e2 : "?");
    free(e2);
    a->pipe = NULL;
  }
  return 0;
}

void app_close(struct app *a) {
  if (a->pipe) pipeline_free(a->pipe);
  a->pipe = NULL;
  if (a->be) be_destroy(a->be);
  a->be = NULL;
  if (a->soup) soup_free(a->soup);
  a->soup = NULL;
  if (a->base) st_close(a->base);
  a->base = NULL;
  if (a->model) model_dir_close(a->model);
  a->model = NULL;
  registry_close(a->reg);
  a->reg = NULL;
  proofs_keys_close(a->keys);
  a->keys = NULL;
}
