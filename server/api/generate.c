/* generate.c: POST /generate, GET /jobs/{id}, DELETE /jobs/{id}.
 *
 * Synchronous requests wait for their job through request_await; a client
 * that disconnects cancels it.
 * Async requests get 202 and a listed job to poll or cancel. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "api_gen.h"
#include "core/generation.h"
#include "http/auth.h"

/* finish for a synchronous generation: PNG or JSON. */
static enum MHD_Result finish_generate(struct request *r) {
  struct job *j = r->job;
  const struct gen_output *o = gen_job_output(j);
  if (!o) return reply_job_error(r, j);
  struct api_gen_ctx *ctx = r->op_ctx;
  if (ctx && ctx->want_png) {
    char ver[32], seed[32];
    snprintf(ver, sizeof ver, "%llu", (unsigned long long)o->soup_version);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seeds[0]);
    const char *h[] = {"X-Soup-Version", ver, "X-Soup-Hash", o->soup_hash, "X-Seed", seed, NULL};
    return reply_bytes(r, 200, "image/png", o->png[0], o->png_len[0], h);
  }
  if (ctx && ctx->shape) return reply_json(r, 200, ctx->shape(r, o));
  return reply_json(r, 200, gen_output_json(o));
}

enum MHD_Result api_gen_submit(struct request *r, struct gen_request *g,
                               json_t *(*shape)(struct request *, const struct gen_output *)) {
  g->owner_token = r->who.token_id;
  if (g->async) {
    struct job *j = gen_job_new(r->app, g);
    if (!j) return reply_problemf(r, 500, "out of memory");
    int status = 0;
    if (gen_job_submit_listed(r->app, j, &status) != 0) {
      gen_job_put(j);
      return reply_problemf(r, http_status_of((enum err_code)status), "%s",
                            status == ERR_BUSY ? "the job queue is full; retry later"
                                               : "the server is shutting down");
    }
    char loc[64];
    snprintf(loc, sizeof loc, "/jobs/%s", gen_job_id(j));
    json_t *body = json_pack("{s:{s:s,s:s}}", "job", "id", gen_job_id(j), "status", "queued");
    gen_job_put(j);
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    const char *h[] = {"Location", loc, NULL};
    enum MHD_Result res = reply_bytes(r, 202, "application/json", s, strlen(s), h);
    free(s);
    return res;
  }
  struct api_gen_ctx *ctx = calloc(1, sizeof *ctx);
  if (!ctx) return reply_problemf(r, 500, "out of memory");
  ctx->want_png = g->want_png;
  ctx->shape = shape;
  r->op_ctx = ctx;
  return request_await(r, gen_job_new(r->app, g), 200, 1, finish_generate);
}

static int accepts_png(const struct request *r) {
  const char *acc = request_header(r, "Accept");
  return acc && strstr(acc, "image/png") != NULL;
}

enum MHD_Result api_generate(struct request *r) {
  if (!r->json) return reply_problemf(r, 400, "a JSON body is required");
  struct gen_request g;
  struct op_error e = {0};
  if (gen_request_parse(r->app, r->json, 0, &g, &e) != 0) return reply_op_error(r, &e);
  g.want_png = !g.async && g.n == 1 && accepts_png(r);
  return api_gen_submit(r, &g, NULL);
}

/* The listed job {key} if the caller may see it (owner or admin), else replies 404. */
static struct job *job_visible(struct request *r, enum MHD_Result *res) {
  struct job *j = gen_job_find(r->app, r->path_key, r->who.token_id, r->who.role == ROLE_ADMIN);
  if (j) return j;
  *res = reply_problemf(r, 404, "no job %s (jobs are kept for 10 minutes after they end)",
                        r->path_key);
  return NULL;
}

enum MHD_Result api_jobs_get(struct request *r) {
  enum MHD_Result res;
  struct job *j = job_visible(r, &res);
  if (!j) return res;
  json_t *o = gen_job_json(j);
  gen_job_put(j);
  return reply_json(r, 200, o);
}

enum MHD_Result api_jobs_cancel(struct request *r) {
  enum MHD_Result res;
  struct job *j = job_visible(r, &res);
  if (!j) return res;
  gen_job_cancel(r->app, j);
  json_t *o = gen_job_json(j);
  gen_job_put(j);
  return reply_json(r, 200, o);
}
