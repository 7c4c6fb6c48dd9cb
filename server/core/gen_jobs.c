/* gen_jobs.c: a generation job on the worker thread. It acquires the
 * live soup version once, binds the pipeline's UNet to that version's
 * tensors, runs every step with it, encodes the PNGs with the infotext and
 * the provenance of exactly that version, and releases it. Progress,
 * cancellation, client disconnects and the per-job time limit are checked
 * at every denoising step. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "diffusion/pipeline.h"
#include "engine/engine.h"
#include "formats/png.h"
#include "generation.h"
#include "log.h"
#include "registry/registry.h"
#include "soup/soup.h"
#include "version.h"

struct gen_state {
  struct app *app;
  struct gen_request req;
  struct gen_output out;
};

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- statistics (gen_stats.c) ---- */

static void stats_record(const struct gen_state *s, int ok) {
  gen_stats_record(&s->app->gen_stats, ok, s->out.n, s->out.total_ms, s->out.denoise_ms,
                   s->req.steps);
}

/* ---- soup binding ---- */

struct bind_ctx {
  const struct soup_version *v;
  struct tensor *views; /* one per soup tensor, same order (sorted by name) */
};

static const struct tensor *bind_lookup(void *arg, const char *name) {
  struct bind_ctx *c = arg;
  size_t lo = 0, hi = c->v->n_tensors;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int d = strcmp(c->v->tensors[mid].name, name);
    if (d == 0) return &c->views[mid];
    if (d < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

/* ---- output ---- */

static void output_free(struct gen_output *o) {
  for (int i = 0; i < o->n && o->png; i++) free(o->png[i]);
  free(o->png), free(o->png_len), free(o->seeds);
  json_decref(o->members);
  memset(o, 0, sizeof *o);
}

static void state_free(void *arg) {
  struct gen_state *s = arg;
  gen_request_clear(&s->req);
  output_free(&s->out);
  free(s);
}

const struct gen_output *gen_job_output(const struct job *j) {
  if (atomic_load(&j->status) != JOB_SUCCEEDED) return NULL;
  return &((const struct gen_state *)j->arg)->out;
}

/* Python's str() of a float for the few values infotext shows (7.0, 7.5). */
static void py_float(double x, char *out, size_t len) {
  snprintf(out, len, "%.15g", x);
  if (!strpbrk(out, ".en")) snprintf(out + strlen(out), len - strlen(out), ".0");
}

/* A1111 infotext value quoting: JSON-quote when it holds ',', ':' or a newline. */
static void infotext_value(const char *v, char *out, size_t len) {
  if (!strpbrk(v, ",:\n")) {
    snprintf(out, len, "%s", v);
    return;
  }
  json_t *s = json_string(v);
  char *q = json_dumps(s, JSON_ENCODE_ANY);
  snprintf(out, len, "%s", q ? q : v);
  free(q);
  json_decref(s);
}

static char *infotext(const struct gen_state *s, uint64_t seed) {
  const struct gen_request *g = &s->req;
  const struct app *a = s->app;
  char cfg[32], model[300], sampler[64];
  py_float(g->guidance_scale, cfg, sizeof cfg);
  infotext_value(a->base_name, model, sizeof model);
  infotext_value(gen_sampler_display(g->scheduler[0] ? g->scheduler : "default"), sampler,
                 sizeof sampler);
  size_t cap = strlen(g->prompt) + strlen(g->negative_prompt) + 1024;
  char *t = malloc(cap);
  if (!t) return NULL;
  int n = snprintf(t, cap, "%s", g->prompt);
  if (g->negative_prompt[0])
    n += snprintf(t + n, cap - (size_t)n, "\nNegative prompt: %s", g->negative_prompt);
  snprintf(t + n, cap - (size_t)n,
           "\nSteps: %d, Sampler: %s, CFG scale: %s, Seed: %llu, Size: %dx%d, Model hash: %.10s, "
           "Model: %s, Soup version: %llu, Soup hash: %.16s, Version: soupd %s",
           g->steps, sampler, cfg, (unsigned long long)seed, g->width, g->height, a->base_sha256,
           model, (unsigned long long)s->out.soup_version, s->out.soup_hash, SOUPD_VERSION);
  return t;
}

static char *provenance(const struct gen_state *s, uint64_t seed) {
  const struct gen_request *g = &s->req;
  json_t *p = json_pack("{s:s,s:I,s:s,s:O,s:s,s:s,s:I,s:{s:s,s:s,s:i,s:f,s:i,s:i,s:s}}",
                        "generator", "soupd " SOUPD_VERSION, "soup_version",
                        (json_int_t)s->out.soup_version, "soup_hash", s->out.soup_hash, "members",
                        s->out.members, "base_unet_sha256", s->app->base_sha256, "soup_algorithm",
                        "soupd-exact-int64/1", "seed", (json_int_t)seed, "request", "prompt",
                        g->prompt, "negative_prompt", g->negative_prompt, "steps", g->steps,
                        "guidance_scale", g->guidance_scale, "width", g->width, "height", g->height,
                        "scheduler", g->scheduler[0] ? g->scheduler : "default");
  char *txt = json_dumps(p, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(p);
  return txt;
}

/* ---- the job ---- */

struct batch_run {
  struct job **jobs;
  int n;
  double deadline;
  int timed_out;
};

/* Progress of a batch: every job sees the step; the batch stops when the
 * time limit passes, on shutdown, or when every job in it wants to stop. */
static int on_progress(void *ctx, int step, int steps) {
  struct batch_run *b = ctx;
  int stop_all = 1;
  for (int i = 0; i < b->n; i++) {
    atomic_store(&b->jobs[i]->step, step);
    atomic_store(&b->jobs[i]->steps, steps);
    if (!job_should_stop(b->jobs[i])) stop_all = 0;
  }
  struct gen_state *s0 = b->jobs[0]->arg;
  if (mono_s() > b->deadline) {
    b->timed_out = 1;
    return 1;
  }
  return stop_all || engine_aborting(s0->app->engine);
}

/* Fills s->out for one job from its slice of the batch's pixels. */
static int job_output(struct job *j, const uint8_t *rgb, const struct gen_timings *t, double t0) {
  struct gen_state *s = j->arg;
  struct gen_request *g = &s->req;
  size_t px = (size_t)g->width * (size_t)g->height * 3;
  s->out.png = calloc((size_t)g->n, sizeof *s->out.png);
  s->out.png_len = calloc((size_t)g->n, sizeof *s->out.png_len);
  s->out.seeds = calloc((size_t)g->n, sizeof *s->out.seeds);
  if (!s->out.png || !s->out.png_len || !s->out.seeds)
    return job_fail(j, ERR_UNAVAILABLE, "out of memory");
  s->out.text_ms = t->text_ms, s->out.denoise_ms = t->denoise_ms, s->out.decode_ms = t->decode_ms;
  double tp = mono_s();
  for (int i = 0; i < g->n; i++) {
    s->out.seeds[i] = g->seed + (uint64_t)i;
    char *info = infotext(s, s->out.seeds[i]), *prov = provenance(s, s->out.seeds[i]);
    struct png_kv kv[] = {{"parameters", info ? info : ""}, {"soupd", prov ? prov : "{}"}};
    int e2 = png_encode_rgb(rgb + px * (size_t)i, g->width, g->height, kv, 2, &s->out.png[i],
                            &s->out.png_len[i], NULL);
    free(info), free(prov);
    if (e2 != 0) return job_fail(j, ERR_INTERNAL, "PNG encoding failed");
  }
  s->out.n = g->n;
  s->out.png_ms = (mono_s() - tp) * 1e3;
  s->out.total_ms = (mono_s() - t0) * 1e3;
  j->result = gen_output_json(&s->out);
  return 0;
}

/* Runs n compatible generation jobs (same size, steps, scheduler, guidance)
 * as one pipeline batch over one soup version. */
static void gen_run_batch(struct job **jobs, int n) {
  struct gen_state *s0 = jobs[0]->arg;
  struct app *a = s0->app;
  const struct gen_request *g0 = &s0->req;
  double t0 = mono_s();
  struct batch_run br = {jobs, n, t0 + (double)a->cfg.job_timeout_s, 0};
  int total = 0;
  for (int i = 0; i < n; i++) {
    struct gen_state *s = jobs[i]->arg;
    total += s->req.n;
    s->out.queue_ms = (jobs[i]->started - jobs[i]->created) * 1e3;
    atomic_store(&jobs[i]->steps, s->req.steps);
    jobs[i]->rc = -1;
  }
  size_t px = (size_t)g0->width * (size_t)g0->height * 3;
  uint8_t *rgb = malloc(px * (size_t)total);
  const char **prompts = calloc((size_t)total, sizeof *prompts);
  const char **negs = calloc((size_t)total, sizeof *negs);
  uint64_t *seeds = calloc((size_t)total, sizeof *seeds);
  struct bind_ctx bc = {0};
  char *err = NULL;
  /* One soup version from the first step to the last, for the whole batch. */
  const struct soup_version *v = soup_acquire(a->soup);
  json_t *brief = app_soup_brief(a);
  json_t *members = json_object_get(brief, "members");
  for (int i = 0; i < n; i++) {
    struct gen_state *s = jobs[i]->arg;
    s->out.soup_version = v->version;
    memcpy(s->out.soup_hash, v->hash_hex, 65);
    s->out.members = members ? json_incref(members) : json_array();
  }
  json_decref(brief);
  if (!rgb || !prompts || !negs || !seeds) {
    for (int i = 0; i < n; i++)
      job_fail(jobs[i], ERR_UNAVAILABLE, "out of memory for %d image(s)", total);
    goto out;
  }
  for (int i = 0, k = 0; i < n; i++) {
    struct gen_state *s = jobs[i]->arg;
    for (int m = 0; m < s->req.n; m++, k++) {
      prompts[k] = s->req.prompt;
      negs[k] = s->req.negative_prompt;
      seeds[k] = s->req.seed + (uint64_t)m;
    }
  }
  bc.v = v;
  bc.views = calloc(v->n_tensors ? v->n_tensors : 1, sizeof *bc.views);
  if (!bc.views) {
    for (int i = 0; i < n; i++) job_fail(jobs[i], ERR_UNAVAILABLE, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < v->n_tensors; i++)
    bc.views[i] =
        tensor_view(v->dtype, v->tensors[i].ndim, v->tensors[i].shape, v->tensors[i].data);
  if (pipeline_bind_unet(a->pipe, bind_lookup, &bc, &err) != 0) {
    for (int i = 0; i < n; i++)
      job_fail(jobs[i], ERR_INTERNAL, "cannot bind the soup to the UNet: %s", err ? err : "?");
    goto out;
  }
  struct gen_params p;
  pipeline_defaults(a->pipe, &p);
  p.steps = g0->steps;
  p.guidance_scale = (float)g0->guidance_scale;
  p.guidance_rescale = (float)g0->guidance_rescale;
  p.eta = (float)g0->eta;
  p.width = g0->width, p.height = g0->height;
  p.n = total;
  p.scheduler = g0->scheduler[0] ? g0->scheduler : NULL;
  p.clip_skip = g0->clip_skip;
  struct gen_timings t = {0};
  int pr =
      pipeline_generate_batch(a->pipe, &p, prompts, negs, seeds, rgb, on_progress, &br, &t, &err);
  for (int i = 0, k = 0; i < n; i++) {
    struct job *j = jobs[i];
    struct gen_state *s = j->arg;
    if (pr == 0 && !atomic_load(&j->cancel)) {
      j->rc = job_output(j, rgb + px * (size_t)k, &t, t0);
    } else if (br.timed_out) {
      job_fail(j, ERR_UNAVAILABLE, "the job exceeded the time limit of %lld s",
               (long long)a->cfg.job_timeout_s);
    } else if (pr == -ECANCELED || atomic_load(&j->cancel)) {
      if (!j->detail[0]) snprintf(j->detail, sizeof j->detail, "cancelled at a denoising step");
      j->rc = -ECANCELED;
    } else {
      job_fail(j, ERR_INTERNAL, "generation failed: %s", err ? err : "?");
    }
    k += s->req.n;
  }
  log_info("generated %d image(s) for %d request(s), %dx%d, %d steps, soup v%llu in %.0f ms "
           "(text %.0f, denoise %.0f, decode %.0f)",
           total, n, g0->width, g0->height, g0->steps, (unsigned long long)v->version,
           (mono_s() - t0) * 1e3, t.text_ms, t.denoise_ms, t.decode_ms);
out:
  free(err);
  free(bc.views);
  soup_release(a->soup, v);
  free(rgb), free(prompts), free(negs), free(seeds);
  for (int i = 0; i < n; i++) stats_record(jobs[i]->arg, jobs[i]->rc == 0);
}

static int gen_run(struct job *j, void *arg) {
  gen_run_batch(&j, 1);
  return j->rc;
}

struct job *gen_job_new(struct app *a, struct gen_request *g) {
  struct gen_state *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->app = a;
  s->req = *g;
  memset(g, 0, sizeof *g); /* moved */
  struct job *j = job_new(gen_run, s, state_free, 0);
  if (!j) {
    state_free(s);
    return NULL;
  }
  const struct gen_request *q = &s->req;
  j->owner_token = q->owner_token;
  j->batch_fn = gen_run_batch;
  j->batch_images = q->n;
  snprintf(j->batch_key, sizeof j->batch_key, "%dx%d/%d/%s/%.17g/%.17g/%.17g/%d", q->width,
           q->height, q->steps, q->scheduler, q->guidance_scale, q->guidance_rescale, q->eta,
           q->clip_skip);
  return j;
}

int gen_job_submit_listed(struct app *a, struct job *j, int *status) {
  return engine_submit(a->engine, j, 1, status);
}

struct job *gen_job_find(struct app *a, const char *id, int64_t token_id, int admin) {
  struct job *j = engine_job_find(a->engine, id);
  if (j && (admin || j->owner_token == token_id)) return j;
  if (j) job_put(j);
  return NULL;
}

void gen_job_cancel(struct app *a, struct job *j) {
  engine_job_cancel(a->engine, j, NULL);
}

void gen_job_put(struct job *j) {
  job_put(j);
}

const char *gen_job_id(const struct job *j) {
  return j->id;
}

json_t *gen_job_json(const struct job *j) {
  int st = atomic_load(&j->status);
  json_t *o = json_pack("{s:s,s:s,s:{s:i,s:i},s:f}", "id", j->id, "status", job_status_name(st),
                        "progress", "step", atomic_load(&j->step), "steps", atomic_load(&j->steps),
                        "created", j->created);
  if (j->started > 0) json_object_set_new(o, "started", json_real(j->started));
  if (j->finished > 0) json_object_set_new(o, "finished", json_real(j->finished));
  if (st == JOB_SUCCEEDED && j->result) json_object_set(o, "result", j->result);
  if (st == JOB_FAILED || st == JOB_CANCELLED)
    json_object_set_new(o, "error",
                        json_pack("{s:s,s:s}", "code", st == JOB_CANCELLED ? "cancelled" : "failed",
                                  "message", j->detail[0] ? j->detail : job_status_name(st)));
  return o;
}
