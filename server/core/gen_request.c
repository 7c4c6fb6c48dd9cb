/* gen_request.c: parsing and validating a generation request, the JSON of a
 * result, and generation statistics. Nothing here computes: a request that
 * fails validation never reaches the queue. */
#include "generation.h"

#include <math.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diffusion/pipeline.h"

static const char *const SCHEDULERS[] = {"ddim", "euler", "euler_a", "dpmpp_2m", "pndm"};

const char *gen_sampler_display(const char *s) {
  static const char *const names[] = {"DDIM", "Euler", "Euler a", "DPM++ 2M", "PLMS"};
  for (int i = 0; i < 5; i++)
    if (strcmp(s, SCHEDULERS[i]) == 0) return names[i];
  return s;
}

/* Number of UTF-8 code points, or -1 if the string is not valid UTF-8 text. */
static long utf8_chars(const char *s) {
  long n = 0;
  for (const unsigned char *p = (const unsigned char *)s; *p; n++) {
    int len = *p < 0x80             ? 1
              : (*p & 0xe0) == 0xc0 ? 2
              : (*p & 0xf0) == 0xe0 ? 3
              : (*p & 0xf8) == 0xf0 ? 4
                                    : 0;
    if (!len) return -1;
    for (int i = 1; i < len; i++)
      if ((p[i] & 0xc0) != 0x80) return -1;
    p += len;
  }
  return n;
}

static int get_int(const json_t *body, const char *key, long long lo, long long hi, int *out,
                   struct op_error *e) {
  json_t *v = json_object_get(body, key);
  if (!v || json_is_null(v)) return 0;
  char msg[96];
  snprintf(msg, sizeof msg, "an integer in [%lld, %lld]", lo, hi);
  if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
    op_field_error(e, ERR_INVALID, key, msg);
    return -1;
  }
  *out = (int)json_integer_value(v);
  return 0;
}

static int get_num(const json_t *body, const char *key, double lo, double hi, double *out,
                   struct op_error *e) {
  json_t *v = json_object_get(body, key);
  if (!v || json_is_null(v)) return 0;
  double x = json_is_number(v) ? json_number_value(v) : NAN;
  if (!isfinite(x) || x < lo || x > hi) {
    char msg[96];
    snprintf(msg, sizeof msg, "a finite number in [%g, %g]", lo, hi);
    op_field_error(e, ERR_INVALID, key, msg);
    return -1;
  }
  *out = x;
  return 0;
}

static int get_text(const json_t *body, const char *key, long max_chars, int required, char **out,
                    struct op_error *e) {
  json_t *v = json_object_get(body, key);
  if (!v || json_is_null(v)) {
    if (required) op_field_error(e, ERR_INVALID, key, "required: a non-empty string");
    return required ? -1 : 0;
  }
  if (!json_is_string(v)) {
    op_field_error(e, ERR_INVALID, key, "a string");
    return -1;
  }
  const char *s = json_string_value(v);
  long n = utf8_chars(s);
  if (strlen(s) != json_string_length(v) || n < 0) {
    op_field_error(e, ERR_INVALID, key, "text without NUL characters");
    return -1;
  }
  if (required && n == 0) {
    op_field_error(e, ERR_INVALID, key, "must not be empty");
    return -1;
  }
  if (n > max_chars) {
    char msg[80];
    snprintf(msg, sizeof msg, "at most %ld characters", max_chars);
    op_field_error(e, ERR_INVALID, key, msg);
    return -1;
  }
  free(*out);
  *out = strdup(s);
  return 0;
}

int gen_request_parse(struct app *a, const json_t *body, int lenient, struct gen_request *g,
                      struct op_error *e) {
  static const char *const known[] = {"prompt",
                                      "negative_prompt",
                                      "steps",
                                      "guidance_scale",
                                      "guidance_rescale",
                                      "eta",
                                      "width",
                                      "height",
                                      "seed",
                                      "scheduler",
                                      "n",
                                      "async",
                                      "clip_skip",
                                      NULL};
  const struct config *c = &a->cfg;
  memset(g, 0, sizeof *g);
  if (!a->pipe) {
    e->code = ERR_UNAVAILABLE;
    snprintf(e->detail, sizeof e->detail, "this model cannot generate images (see the log)");
    return -1;
  }
  struct gen_params d;
  pipeline_defaults(a->pipe, &d);
  g->steps = d.steps > c->max_steps ? (int)c->max_steps : d.steps;
  g->guidance_scale = d.guidance_scale;
  g->width = d.width, g->height = d.height;
  g->n = 1;
  g->negative_prompt = strdup("");
  if (d.scheduler) snprintf(g->scheduler, sizeof g->scheduler, "%s", d.scheduler);
  if (!json_is_object(body)) {
    op_field_error(e, ERR_INVALID, "body", "a JSON object");
    return -1;
  }
  if (!lenient) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)body, k, v) {
      int ok = 0;
      for (int i = 0; known[i] && !ok; i++) ok = strcmp(k, known[i]) == 0;
      if (!ok) op_field_error(e, ERR_INVALID, k, "unknown parameter");
    }
  }
  get_text(body, "prompt", c->max_prompt_chars, !lenient, &g->prompt, e);
  if (!g->prompt && !e->code) g->prompt = strdup(""); /* A1111 allows an empty prompt */
  get_text(body, "negative_prompt", c->max_prompt_chars, 0, &g->negative_prompt, e);
  get_int(body, "steps", 1, c->max_steps, &g->steps, e);
  get_num(body, "guidance_scale", 0, 100, &g->guidance_scale, e);
  get_num(body, "guidance_rescale", 0, 1, &g->guidance_rescale, e);
  get_num(body, "eta", 0, 1, &g->eta, e);
  get_int(body, "n", 1, c->max_n, &g->n, e);
  get_int(body, "clip_skip", 0, 8, &g->clip_skip, e);
  int w = g->width, h = g->height;
  if (get_int(body, "width", 64, c->max_width, &w, e) == 0 && w % 8)
    op_field_error(e, ERR_INVALID, "width", "a multiple of 8");
  if (get_int(body, "height", 64, c->max_height, &h, e) == 0 && h % 8)
    op_field_error(e, ERR_INVALID, "height", "a multiple of 8");
  g->width = w, g->height = h;
  json_t *seed = json_object_get(body, "seed");
  if (seed && !json_is_null(seed)) {
    if (!json_is_integer(seed) || json_integer_value(seed) < -1)
      op_field_error(e, ERR_INVALID, "seed", "an integer >= 0 (or -1 for a random seed)");
    else if (json_integer_value(seed) >= 0) {
      g->seed = (uint64_t)json_integer_value(seed);
      g->seed_given = 1;
    }
  }
  json_t *sch = json_object_get(body, "scheduler");
  if (sch && !json_is_null(sch)) {
    int ok = 0;
    for (int i = 0; i < 5 && json_is_string(sch); i++)
      if (strcmp(json_string_value(sch), SCHEDULERS[i]) == 0) {
        snprintf(g->scheduler, sizeof g->scheduler, "%s", SCHEDULERS[i]);
        ok = 1;
      }
    if (!ok)
      op_field_error(e, ERR_INVALID, "scheduler", "one of ddim, euler, euler_a, dpmpp_2m, pndm");
  }
  json_t *as = json_object_get(body, "async");
  if (as && !json_is_null(as)) {
    if (!json_is_boolean(as)) op_field_error(e, ERR_INVALID, "async", "true or false");
    g->async = json_is_true(as);
  }
  if (e->code) {
    snprintf(e->detail, sizeof e->detail, "invalid generation parameters (%zu listed)",
             json_array_size(e->errors));
    gen_request_clear(g);
    return -1;
  }
  /* The model's own limits (e.g. clip_skip within its text layers). */
  struct gen_params p = d;
  p.prompt = g->prompt, p.negative_prompt = g->negative_prompt;
  p.steps = g->steps, p.guidance_scale = (float)g->guidance_scale;
  p.guidance_rescale = (float)g->guidance_rescale, p.eta = (float)g->eta;
  p.width = g->width, p.height = g->height, p.n = g->n, p.clip_skip = g->clip_skip;
  p.scheduler = g->scheduler[0] ? g->scheduler : NULL;
  char *perr = NULL;
  if (pipeline_check_params(a->pipe, &p, &perr) != 0) {
    char field[32] = "body";
    const char *colon = perr ? strchr(perr, ':') : NULL;
    if (colon && (size_t)(colon - perr) < sizeof field) {
      memcpy(field, perr, (size_t)(colon - perr));
      field[colon - perr] = 0;
    }
    op_field_error(e, ERR_INVALID, field, perr ? perr : "not accepted by this model");
    free(perr);
    gen_request_clear(g);
    return -1;
  }
  if (!g->seed_given) {
    uint64_t s = 0;
    RAND_bytes((unsigned char *)&s, sizeof s);
    g->seed = s >> 1; /* fits a JSON integer */
  }
  return 0;
}

void gen_request_clear(struct gen_request *g) {
  free(g->prompt);
  free(g->negative_prompt);
  g->prompt = g->negative_prompt = NULL;
}

char *gen_base64(const uint8_t *p, size_t n) {
  char *out = malloc(4 * ((n + 2) / 3) + 1);
  if (out) EVP_EncodeBlock((unsigned char *)out, p, (int)n);
  return out;
}

json_t *gen_output_json(const struct gen_output *o) {
  json_t *imgs = json_array();
  for (int i = 0; i < o->n; i++) {
    char *b = gen_base64(o->png[i], o->png_len[i]);
    json_array_append_new(
        imgs, json_pack("{s:s,s:I}", "png_base64", b ? b : "", "seed", (json_int_t)o->seeds[i]));
    free(b);
  }
  return json_pack("{s:o,s:{s:I,s:s,s:O},s:{s:f,s:f,s:f,s:f,s:f,s:f}}", "images", imgs, "soup",
                   "version", (json_int_t)o->soup_version, "hash", o->soup_hash, "members",
                   o->members, "timings", "queue_ms", o->queue_ms, "text_ms", o->text_ms,
                   "denoise_ms", o->denoise_ms, "decode_ms", o->decode_ms, "png_ms", o->png_ms,
                   "total_ms", o->total_ms);
}
