/* compat.c: the endpoints existing clients call, so they work unchanged
 * (shared/reference/client-compat.md): the OpenAI Images API
 * (/v1/images/generations, also without the /v1 prefix) and the
 * AUTOMATIC1111 subset (/sdapi/v1/txt2img plus the discovery routes the
 * webuiapi client touches). Each maps its body onto a /generate request and
 * shapes the result its own way; validation and limits are the same. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "api_gen.h"
#include "core/app.h"
#include "core/generation.h"
#include "version.h"

/* ---- OpenAI ---- */

struct openai_ctx {
  int url; /* response_format "url": a data: URL */
};

static json_t *openai_shape(struct request *r, const struct gen_output *o) {
  const char *fmt = json_string_value(json_object_get(r->json, "response_format"));
  int url = fmt && strcmp(fmt, "url") == 0;
  json_t *data = json_array();
  for (int i = 0; i < o->n; i++) {
    char *b = gen_base64(o->png[i], o->png_len[i]);
    if (url) {
      size_t n = strlen(b ? b : "") + 32;
      char *u = malloc(n);
      snprintf(u, n, "data:image/png;base64,%s", b ? b : "");
      json_array_append_new(data, json_pack("{s:s,s:n}", "url", u, "revised_prompt"));
      free(u);
    } else {
      json_array_append_new(data, json_pack("{s:s,s:n}", "b64_json", b ? b : "", "revised_prompt"));
    }
    free(b);
  }
  return json_pack("{s:I,s:o,s:s,s:{s:I,s:s}}", "created", (json_int_t)time(NULL), "data", data,
                   "output_format", "png", "soup", "version", (json_int_t)o->soup_version, "hash",
                   o->soup_hash);
}

enum MHD_Result api_openai_images(struct request *r) {
  json_t *in = r->json;
  if (!in) return reply_problemf(r, 400, "a JSON body is required");
  json_t *body = json_object();
  json_t *v;
  if ((v = json_object_get(in, "prompt"))) json_object_set(body, "prompt", v);
  if ((v = json_object_get(in, "n"))) json_object_set(body, "n", v);
  const char *size = json_string_value(json_object_get(in, "size"));
  if (json_object_get(in, "size") && !size) {
    json_decref(body);
    return reply_field(r, 422, "size", "a string WxH");
  }
  if (size && strcmp(size, "auto") != 0) {
    int w = 0, h = 0;
    char tail;
    if (sscanf(size, "%dx%d%c", &w, &h, &tail) != 2 || w <= 0 || h <= 0) {
      json_decref(body);
      return reply_field(r, 422, "size", "WxH, e.g. 512x512");
    }
    json_object_set_new(body, "width", json_integer(w));
    json_object_set_new(body, "height", json_integer(h));
  }
  const char *rf = json_string_value(json_object_get(in, "response_format"));
  if (json_object_get(in, "response_format") &&
      (!rf || (strcmp(rf, "b64_json") != 0 && strcmp(rf, "url") != 0))) {
    json_decref(body);
    return reply_field(r, 422, "response_format", "b64_json or url");
  }
  const char *of = json_string_value(json_object_get(in, "output_format"));
  if (of && strcmp(of, "png") != 0) {
    json_decref(body);
    return reply_field(r, 422, "output_format", "only png is supported");
  }
  struct gen_request g;
  struct op_error e = {0};
  int rc = gen_request_parse(r->app, body, 1, &g, &e);
  json_decref(body);
  if (rc != 0) return reply_op_error(r, &e);
  return api_gen_submit(r, &g, openai_shape);
}

enum MHD_Result api_openai_models(struct request *r) {
  json_t *m = json_pack("{s:s,s:s,s:s,s:i}", "id", r->app->base_name, "object", "model", "owned_by",
                        "soupd", "created", 0);
  return reply_json(r, 200, json_pack("{s:s,s:[o]}", "object", "list", "data", m));
}

/* ---- AUTOMATIC1111 ---- */

static const struct {
  const char *a1111, *ours;
} SAMPLERS[] = {{"Euler a", "euler_a"},   {"Euler", "euler"},        {"DDIM", "ddim"},
                {"DPM++ 2M", "dpmpp_2m"}, {"PLMS", "pndm"},          {"k_euler_a", "euler_a"},
                {"k_euler", "euler"},     {"k_dpmpp_2m", "dpmpp_2m"}};
#define N_SAMPLERS (sizeof SAMPLERS / sizeof SAMPLERS[0])

static json_t *a1111_shape(struct request *r, const struct gen_output *o) {
  const struct app *a = r->app;
  json_t *in = r->json;
  json_t *images = json_array(), *seeds = json_array(), *infotexts = json_array();
  for (int i = 0; i < o->n; i++) {
    char *b = gen_base64(o->png[i], o->png_len[i]);
    json_array_append_new(images, json_string(b ? b : ""));
    free(b);
    json_array_append_new(seeds, json_integer((json_int_t)o->seeds[i]));
  }
  const char *prompt = json_string_value(json_object_get(in, "prompt"));
  const char *neg = json_string_value(json_object_get(in, "negative_prompt"));
  const char *sampler = json_string_value(json_object_get(in, "sampler_name"));
  char hash10[11];
  snprintf(hash10, sizeof hash10, "%.10s", a->base_sha256);
  json_t *info = json_pack(
      "{s:s,s:s,s:I,s:O,s:s,s:s,s:s,s:O,s:s,s:s,s:I,s:s}", "prompt", prompt ? prompt : "",
      "negative_prompt", neg ? neg : "", "seed", (json_int_t)o->seeds[0], "all_seeds", seeds,
      "sampler_name", sampler ? sampler : "Euler", "sd_model_name", a->base_name, "sd_model_hash",
      hash10, "infotexts", infotexts, "version", "soupd " SOUPD_VERSION, "soup_hash", o->soup_hash,
      "soup_version", (json_int_t)o->soup_version, "job_timestamp", "");
  json_object_set(info, "width", json_object_get(in, "width"));
  json_object_set(info, "height", json_object_get(in, "height"));
  json_object_set(info, "steps", json_object_get(in, "steps"));
  json_object_set(info, "cfg_scale", json_object_get(in, "cfg_scale"));
  json_object_set_new(info, "batch_size", json_integer(o->n));
  char *info_s = json_dumps(info, JSON_COMPACT);
  json_decref(info);
  json_decref(seeds);
  json_decref(infotexts);
  json_t *out = json_pack("{s:o,s:O,s:s}", "images", images, "parameters", in, "info",
                          info_s ? info_s : "{}");
  free(info_s);
  return out;
}

enum MHD_Result api_sdapi_txt2img(struct request *r) {
  json_t *in = r->json;
  if (!in) return reply_problemf(r, 400, "a JSON body is required");
  json_t *body = json_object(), *v;
  if ((v = json_object_get(in, "prompt"))) json_object_set(body, "prompt", v);
  if ((v = json_object_get(in, "negative_prompt"))) json_object_set(body, "negative_prompt", v);
  if ((v = json_object_get(in, "steps"))) json_object_set(body, "steps", v);
  if ((v = json_object_get(in, "cfg_scale"))) json_object_set(body, "guidance_scale", v);
  if ((v = json_object_get(in, "width"))) json_object_set(body, "width", v);
  if ((v = json_object_get(in, "height"))) json_object_set(body, "height", v);
  if ((v = json_object_get(in, "seed"))) json_object_set(body, "seed", v);
  json_t *bs = json_object_get(in, "batch_size"), *ni = json_object_get(in, "n_iter");
  long long n = (bs && json_is_integer(bs) ? json_integer_value(bs) : 1) *
                (ni && json_is_integer(ni) ? json_integer_value(ni) : 1);
  json_object_set_new(body, "n", json_integer(n));
  const char *sn = json_string_value(json_object_get(in, "sampler_name"));
  if (!sn) sn = json_string_value(json_object_get(in, "sampler_index"));
  if (sn) {
    const char *ours = NULL;
    for (size_t i = 0; i < N_SAMPLERS && !ours; i++)
      if (strcasecmp(sn, SAMPLERS[i].a1111) == 0) ours = SAMPLERS[i].ours;
    if (!ours) {
      json_decref(body);
      return reply_field(r, 422, "sampler_name", "one of Euler a, Euler, DDIM, DPM++ 2M, PLMS");
    }
    json_object_set_new(body, "scheduler", json_string(ours));
    json_t *eta = json_object_get(in, "eta");
    if (strcmp(ours, "ddim") == 0 && eta && json_is_number(eta)) json_object_set(body, "eta", eta);
  }
  struct gen_request g;
  struct op_error e = {0};
  int rc = gen_request_parse(r->app, body, 1, &g, &e);
  json_decref(body);
  if (rc != 0) return reply_op_error(r, &e);
  return api_gen_submit(r, &g, a1111_shape);
}

enum MHD_Result api_sdapi_scripts(struct request *r) {
  return reply_json(r, 200, json_pack("{s:[],s:[]}", "txt2img", "img2img"));
}

enum MHD_Result api_sdapi_samplers(struct request *r) {
  json_t *a = json_array();
  for (size_t i = 0; i < 5; i++)
    json_array_append_new(a, json_pack("{s:s,s:[s],s:{}}", "name", SAMPLERS[i].a1111, "aliases",
                                       SAMPLERS[i].ours, "options"));
  return reply_json(r, 200, a);
}

enum MHD_Result api_sdapi_models(struct request *r) {
  const struct app *a = r->app;
  char title[400], hash10[11];
  snprintf(hash10, sizeof hash10, "%.10s", a->base_sha256);
  snprintf(title, sizeof title, "%s [%s]", a->base_name, hash10);
  return reply_json(r, 200,
                    json_pack("[{s:s,s:s,s:s,s:s,s:n,s:n}]", "title", title, "model_name",
                              a->base_name, "hash", hash10, "sha256", a->base_sha256, "filename",
                              "config"));
}

enum MHD_Result api_sdapi_options(struct request *r) {
  const struct app *a = r->app;
  char title[400], hash10[11];
  snprintf(hash10, sizeof hash10, "%.10s", a->base_sha256);
  snprintf(title, sizeof title, "%s [%s]", a->base_name, hash10);
  return reply_json(r, 200,
                    json_pack("{s:s,s:s,s:s,s:i}", "sd_model_checkpoint", title,
                              "sd_checkpoint_hash", a->base_sha256, "samples_format", "png",
                              "CLIP_stop_at_last_layers", 1));
}
