/* generate_run.c: a generation job on the worker thread. It acquires the
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
#include "engine.h"
#include "formats/png.h"
#include "generate.h"
#include "log.h"
#include "registry/registry.h"
#include "soup/soup.h"
#include "version.h"

struct gen_state {
  struct app *app;
  struct gen_request req;
  struct gen_output out;
  double deadline; /* monotonic seconds */
  int timed_out;
};

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- statistics ---- */

#define LAT_RING 1024
static pthread_mutex_t g_stats_mu = PTHREAD_MUTEX_INITIALIZER;
static double g_lat[LAT_RING];
static int64_t g_lat_n, g_images, g_requests, g_failures;
static double g_step_ms_sum;
static int64_t g_steps;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

void gen_stats_get(struct gen_stats *st) {
  static double tmp[LAT_RING];
  pthread_mutex_lock(&g_stats_mu);
  int n = (int)(g_lat_n < LAT_RING ? g_lat_n : LAT_RING);
  memcpy(tmp, g_lat, (size_t)n * sizeof *tmp);
  st->images = g_images, st->requests = g_requests, st->failures = g_failures;
  st->mean_step_ms = g_steps ? g_step_ms_sum / (double)g_steps : 0;
  pthread_mutex_unlock(&g_stats_mu);
  qsort(tmp, (size_t)n, sizeof *tmp, cmp_double);
  st->p50_ms = n ? tmp[(n - 1) * 50 / 100] : 0;
  st->p90_ms = n ? tmp[(n - 1) * 90 / 100] : 0;
  st->p99_ms = n ? tmp[(n - 1) * 99 / 100] : 0;
}

static void stats_record(const struct gen_state *s, int ok) {
  pthread_mutex_lock(&g_stats_mu);
  g_requests++;
  if (ok) {
    g_images += s->out.n;
    g_lat[g_lat_n++ % LAT_RING] = s->out.total_ms;
    g_step_ms_sum += s->out.denoise_ms;
    g_steps += s->req.steps;
  } else {
    g_failures++;
  }
  pthread_mutex_unlock(&g_stats_mu);
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

static int on_progress(void *ctx, int step, int steps) {
  struct job *j = ctx;
  struct gen_state *s = j->arg;
  atomic_store(&j->step, step);
  atomic_store(&j->steps, steps);
  if (mono_s() > s->deadline) {
    s->timed_out = 1;
    return 1;
  }
  return job_should_stop(j);
}

static int gen_run(struct job *j, void *arg) {
  struct gen_state *s = arg;
  struct app *a = s->app;
  struct gen_request *g = &s->req;
  double t0 = mono_s();
  s->out.queue_ms = (j->started - j->created) * 1e3;
  s->deadline = t0 + (double)a->cfg.job_timeout_s;
  atomic_store(&j->steps, g->steps);
  size_t px = (size_t)g->width * (size_t)g->height * 3;
  uint8_t *rgb = malloc(px * (size_t)g->n);
  s->out.png = calloc((size_t)g->n, sizeof *s->out.png);
  s->out.png_len = calloc((size_t)g->n, sizeof *s->out.png_len);
  s->out.seeds = calloc((size_t)g->n, sizeof *s->out.seeds);
  if (!rgb || !s->out.png || !s->out.png_len || !s->out.seeds) {
    free(rgb);
    return job_fail(j, 503, "out of memory for %d image(s) of %dx%d", g->n, g->width, g->height);
  }

  /* One soup version from the first step to the last. */
  const struct soup_version *v = soup_acquire(a->soup);
  s->out.soup_version = v->version;
  memcpy(s->out.soup_hash, v->hash_hex, 65);
  s->out.members = app_soup_brief(a);
  json_t *m = json_incref(json_object_get(s->out.members, "members"));
  json_decref(s->out.members);
  s->out.members = m ? m : json_array();
  struct bind_ctx bc = {v, calloc(v->n_tensors ? v->n_tensors : 1, sizeof *bc.views)};
  char *err = NULL;
  int rc = -1;
  if (!bc.views) {
    job_fail(j, 503, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < v->n_tensors; i++)
    bc.views[i] =
        tensor_view(v->dtype, v->tensors[i].ndim, v->tensors[i].shape, v->tensors[i].data);
  if (pipeline_bind_unet(a->pipe, bind_lookup, &bc, &err) != 0) {
    job_fail(j, 500, "cannot bind the soup to the UNet: %s", err ? err : "?");
    goto out;
  }
  struct gen_params p;
  pipeline_defaults(a->pipe, &p);
  p.prompt = g->prompt;
  p.negative_prompt = g->negative_prompt;
  p.steps = g->steps;
  p.guidance_scale = (float)g->guidance_scale;
  p.guidance_rescale = (float)g->guidance_rescale;
  p.eta = (float)g->eta;
  p.width = g->width, p.height = g->height;
  p.seed = g->seed;
  p.n = g->n;
  p.scheduler = g->scheduler[0] ? g->scheduler : NULL;
  p.clip_skip = g->clip_skip;
  struct gen_timings t = {0};
  int pr = pipeline_generate(a->pipe, &p, NULL, rgb, NULL, on_progress, j, &t, &err);
  if (pr != 0) {
    if (s->timed_out)
      job_fail(j, 503, "the job exceeded the time limit of %lld s",
               (long long)a->cfg.job_timeout_s);
    else if (pr == -ECANCELED)
      rc = -ECANCELED;
    else
      job_fail(j, 500, "generation failed: %s", err ? err : "?");
    if (pr == -ECANCELED && !s->timed_out) goto out_cancel;
    goto out;
  }
  s->out.text_ms = t.text_ms, s->out.denoise_ms = t.denoise_ms, s->out.decode_ms = t.decode_ms;
  double tp = mono_s();
  for (int i = 0; i < g->n; i++) {
    s->out.seeds[i] = g->seed + (uint64_t)i;
    char *info = infotext(s, s->out.seeds[i]), *prov = provenance(s, s->out.seeds[i]);
    struct png_kv kv[] = {{"parameters", info ? info : ""}, {"soupd", prov ? prov : "{}"}};
    int e2 = png_encode_rgb(rgb + px * (size_t)i, g->width, g->height, kv, 2, &s->out.png[i],
                            &s->out.png_len[i], NULL);
    free(info), free(prov);
    if (e2 != 0) {
      job_fail(j, 500, "PNG encoding failed");
      goto out;
    }
  }
  s->out.n = g->n;
  s->out.png_ms = (mono_s() - tp) * 1e3;
  s->out.total_ms = (mono_s() - t0) * 1e3;
  j->result = gen_output_json(&s->out);
  log_info("generated %d image(s) %dx%d, %d steps, seed %llu, soup v%llu in %.0f ms (text %.0f, "
           "denoise %.0f, decode %.0f, png %.0f)",
           g->n, g->width, g->height, g->steps, (unsigned long long)g->seed,
           (unsigned long long)s->out.soup_version, s->out.total_ms, t.text_ms, t.denoise_ms,
           t.decode_ms, s->out.png_ms);
  rc = 0;
  goto out;
out_cancel:
  snprintf(j->detail, sizeof j->detail, "%s",
           j->detail[0] ? j->detail : "cancelled at a denoising step");
  rc = -ECANCELED;
out:
  free(err);
  free(bc.views);
  soup_release(a->soup, v);
  free(rgb);
  stats_record(s, rc == 0);
  return rc;
}

struct job *gen_job_new(struct app *a, struct gen_request *g) {
  struct gen_state *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->app = a;
  s->req = *g;
  memset(g, 0, sizeof *g); /* moved */
  struct job *j = job_new(gen_run, s, state_free, 0);
  if (!j) state_free(s);
  return j;
}
