/* soup_routes.c: /soup, /soup/history, /soup/verify (the unlearning proof), and
 * /soup/export (the live soup as a safetensors file). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "http/auth.h"
#include "core/shard_jobs.h"
#include "core/app.h"
#include "core/reads.h"

enum MHD_Result api_soup_get(struct request *r) {
  return reply_json(r, 200, app_soup_json(r->app, r->who.role == ROLE_ADMIN));
}

enum MHD_Result api_soup_history(struct request *r) {
  const char *s = request_arg(r, "since"), *l = request_arg(r, "limit");
  char *end = NULL;
  long long since = s ? strtoll(s, &end, 10) : -1;
  if (s && (*end || since < -1)) return reply_problemf(r, 422, "since: an integer >= 0");
  long long limit = l ? strtoll(l, &end, 10) : 1000;
  if (l && (*end || limit < 1 || limit > 1000))
    return reply_problemf(r, 422, "limit: an integer in [1, 1000]");
  json_t *out = NULL;
  struct op_error e = {0};
  if (core_soup_history(r->app, since, limit, &out, &e) != 0) return reply_op_error(r, &e);
  return reply_json(r, 200, out);
}

enum MHD_Result api_soup_verify(struct request *r) {
  struct actor who = auth_actor(r);
  return request_await(r, core_soup_verify_job(&who), 200, 0, NULL);
}

/* Writes the acquired live version to an unlinked temporary file and streams it. */
enum MHD_Result api_soup_export(struct request *r) {
  struct app *a = r->app;
  char path[1200];
  snprintf(path, sizeof path, "%s/export-%s.safetensors", a->tmp_dir, r->id);
  FILE *fp = fopen(path, "w+e");
  if (!fp) return reply_problemf(r, 500, "cannot create the export file: %s", strerror(errno));
  unlink(path);
  uint64_t version = 0;
  char hash[65];
  struct op_error e = {0};
  if (core_soup_export(a, fp, &version, hash, &e) != 0) {
    fclose(fp);
    return reply_op_error(r, &e);
  }
  char ver[32];
  snprintf(ver, sizeof ver, "%llu", (unsigned long long)version);
  long size = ftell(fp);
  int fd = dup(fileno(fp));
  fclose(fp);
  if (fd < 0 || size < 0) return reply_problemf(r, 500, "export failed");
  char disp[128];
  snprintf(disp, sizeof disp, "attachment; filename=\"soup-v%s.safetensors\"", ver);
  const char *h[] = {"X-Soup-Version", ver, "X-Soup-Hash", hash, "Content-Disposition", disp, NULL};
  return reply_fd(r, 200, "application/octet-stream", fd, (uint64_t)size, h);
}
