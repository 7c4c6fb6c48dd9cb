/* shards.c: /shards: register (upload or server-side path), list, get,
 * reweight, withdraw. Authorization of every object access (OWASP API1): a
 * provider acts only on shards it owns; anything else is 403 and audited. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "core/shard_jobs.h"
#include "core/app.h"
#include "http/auth.h"
#include "log.h"
#include "core/reads.h"

static void sha_hex(EVP_MD_CTX *c, char hex[65]) {
  unsigned char d[32];
  EVP_DigestFinal_ex(c, d, NULL);
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

/* Weight from a query string; 1.0 when absent. Returns 0 or -1. */
static int parse_weight_str(const char *s, double *w) {
  if (!s) {
    *w = 1.0;
    return 0;
  }
  char *end;
  errno = 0;
  *w = strtod(s, &end);
  return (errno || end == s || *end || !isfinite(*w)) ? -1 : 0;
}

/* Copies an import file into tmp/ with its SHA-256; the original is untouched. */
static int import_copy(struct request *r, const char *src, char hex[65], int64_t *size,
                       char *detail, size_t dlen) {
  int in = open(src, O_RDONLY | O_CLOEXEC);
  if (in < 0) {
    snprintf(detail, dlen, "cannot open the file: %s", strerror(errno));
    return 404;
  }
  snprintf(r->upload_path, sizeof r->upload_path, "%s/import-%s.part", r->app->tmp_dir, r->id);
  r->upload_fd = open(r->upload_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (r->upload_fd < 0) {
    r->upload_path[0] = 0;
    close(in);
    snprintf(detail, dlen, "cannot create a temporary file: %s", strerror(errno));
    return 500;
  }
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  EVP_DigestInit_ex(c, EVP_sha256(), NULL);
  static _Thread_local char buf[1 << 20];
  ssize_t n;
  int status = 0;
  *size = 0;
  while ((n = read(in, buf, sizeof buf)) > 0) {
    *size += n;
    if (*size > r->app->cfg.upload_max_bytes) {
      snprintf(detail, dlen, "the file exceeds the limit of %lld bytes",
               (long long)r->app->cfg.upload_max_bytes);
      status = 413;
      break;
    }
    EVP_DigestUpdate(c, buf, (size_t)n);
    if (write(r->upload_fd, buf, (size_t)n) != n) {
      snprintf(detail, dlen, "cannot copy the file: %s", strerror(errno));
      status = errno == ENOSPC ? 507 : 500;
      break;
    }
  }
  if (n < 0 && !status) {
    snprintf(detail, dlen, "cannot read the file: %s", strerror(errno));
    status = 422;
  }
  if (!status && fsync(r->upload_fd) != 0) {
    snprintf(detail, dlen, "cannot store the file: %s", strerror(errno));
    status = 500;
  }
  close(in);
  sha_hex(c, hex);
  EVP_MD_CTX_free(c);
  return status;
}

/* A path is importable if its real path lies inside a configured import directory. */
static int path_importable(const struct app *a, const char *path, char *real, size_t len) {
  char rp[PATH_MAX];
  if (!realpath(path, rp)) return 0;
  struct stat sb;
  if (stat(rp, &sb) != 0 || !S_ISREG(sb.st_mode)) return 0;
  char dirs[sizeof a->cfg.import_dirs];
  snprintf(dirs, sizeof dirs, "%s", a->cfg.import_dirs);
  char *save = NULL;
  for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
    char rd[PATH_MAX];
    if (!realpath(d, rd)) continue;
    size_t n = strlen(rd);
    if (strncmp(rp, rd, n) == 0 && rp[n] == '/') {
      snprintf(real, len, "%s", rp);
      return 1;
    }
  }
  return 0;
}

enum MHD_Result api_shards_create(struct request *r) {
  struct app *a = r->app;
  struct shard_input in = {0};
  char hex[65];
  json_t *j = r->json;
  if (r->upload) {
    sha_hex(r->upload_sha, hex);
    close(r->upload_fd);
    r->upload_fd = -1;
    in.tmp_path = r->upload_path;
    in.size_bytes = (int64_t)r->upload_len;
    in.name = request_arg(r, "name");
    in.description = request_arg(r, "description");
    if (parse_weight_str(request_arg(r, "weight"), &in.weight) != 0)
      return reply_field(r, 422, "weight", "a positive number");
    in.provider = r->who.role == ROLE_ADMIN ? request_arg(r, "provider") : r->who.provider;
  } else {
    if (!j)
      return reply_problemf(r, 415,
                            "send the safetensors file as application/octet-stream, or "
                            "(admins) a JSON object with a path");
    if (r->who.role != ROLE_ADMIN)
      return auth_deny(r, 0, "registering a shard by server-side path needs role admin");
    json_t *jw = json_object_get(j, "weight");
    const char *path = json_string_value(json_object_get(j, "path"));
    in.name = json_string_value(json_object_get(j, "name"));
    in.provider = json_string_value(json_object_get(j, "provider"));
    in.description = json_string_value(json_object_get(j, "description"));
    in.metadata = json_object_get(j, "metadata");
    if (in.metadata && json_is_null(in.metadata)) in.metadata = NULL;
    if (jw && !json_is_number(jw)) return reply_field(r, 422, "weight", "a positive number");
    in.weight = jw ? json_number_value(jw) : 1.0;
    if (!path) return reply_field(r, 422, "path", "required: a file inside an import directory");
    char real[PATH_MAX];
    if (!path_importable(a, path, real, sizeof real))
      return auth_deny(r, 0, "path is not a file inside a configured import directory");
    char detail[256];
    int st = import_copy(r, real, hex, &in.size_bytes, detail, sizeof detail);
    if (st) return reply_problem(r, (unsigned)st, detail, NULL);
    close(r->upload_fd);
    r->upload_fd = -1;
    in.tmp_path = r->upload_path;
  }
  if (!in.name) return reply_field(r, 422, "name", "required");
  if (!in.provider || !*in.provider) in.provider = "admin";
  in.sha256 = hex;
  struct actor who = auth_actor(r);
  return request_await(r, core_shard_register_job(&who, &in), 201, 0, NULL);
}

enum MHD_Result api_shards_list(struct request *r) {
  const char *status = request_arg(r, "status"), *provider = request_arg(r, "provider");
  if (status && strcmp(status, "active") != 0 && strcmp(status, "withdrawn") != 0)
    return reply_field(r, 422, "status", "one of active, withdrawn");
  json_t *out = NULL;
  struct op_error e = {0};
  if (core_shards_list(r->app, status, provider, &out, &e) != 0) return reply_op_error(r, &e);
  return reply_json(r, 200, out);
}

enum MHD_Result api_shards_get(struct request *r) {
  json_t *o = NULL;
  struct op_error e = {0};
  if (core_shard_get(r->app, r->path_id, &o, NULL, 0, &e) != 0) return reply_op_error(r, &e);
  return reply_json(r, 200, o);
}

/* Reweight and withdrawal check ownership in the job itself (core/
 * shard_changes.c: 404 unknown, then 403 and an auth.denied event for
 * another provider's shard), so the shard row is read once. */
enum MHD_Result api_shards_patch(struct request *r) {
  json_t *jw = r->json ? json_object_get(r->json, "weight") : NULL;
  if (!jw || !json_is_number(jw)) return reply_field(r, 422, "weight", "required: a number > 0");
  struct actor who = auth_actor(r);
  return request_await(r, core_shard_reweight_job(&who, r->path_id, json_number_value(jw)), 200, 0,
                       NULL);
}

enum MHD_Result api_shards_withdraw(struct request *r) {
  const char *reason = NULL;
  int purge = 1;
  if (r->json) {
    json_t *jr = json_object_get(r->json, "reason"), *jp = json_object_get(r->json, "purge");
    if (jr && !json_is_string(jr)) return reply_field(r, 422, "reason", "a string");
    if (jr && json_string_length(jr) > 4096)
      return reply_field(r, 422, "reason", "at most 4096 bytes");
    if (jp && !json_is_boolean(jp)) return reply_field(r, 422, "purge", "true or false");
    reason = json_string_value(jr);
    if (jp) purge = json_is_true(jp);
  }
  struct actor who = auth_actor(r);
  return request_await(r, core_shard_withdraw_job(&who, r->path_id, reason, purge), 200, 0, NULL);
}
