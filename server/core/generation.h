/* generation.h: text-to-image requests: parsing and validation (every
 * parameter checked before any compute; ERR_INVALID names the field), the job that
 * runs one request on the worker against one soup version, and its result
 * (PNG images with the A1111 infotext and soupd's provenance). */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "app.h"

struct job;

#define GEN_PROMPT_MAX_BYTES 65536

struct gen_request {
  char *prompt, *negative_prompt;
  char scheduler[16]; /* "" = the model's default */
  int steps, width, height, n;
  double guidance_scale, guidance_rescale, eta;
  int clip_skip;
  uint64_t seed;
  int seed_given;
  int async;
  int want_png; /* synchronous, n == 1, Accept: image/png */
  int64_t owner_token;
};

/* The result of a finished generation (owned by the job). */
struct gen_output {
  int n;
  uint8_t **png;
  size_t *png_len;
  uint64_t *seeds;
  uint64_t soup_version;
  char soup_hash[65];
  json_t *members;
  double text_ms, denoise_ms, decode_ms, png_ms, total_ms, queue_ms;
};

/* Fills defaults from the model, then applies a JSON body. Returns 0, or -1
 * with e (ERR_INVALID and errors naming each bad field). Strict: unknown keys are
 * errors, unless lenient (the compatibility endpoints). */
int gen_request_parse(struct app *a, const json_t *body, int lenient, struct gen_request *g,
                      struct op_error *e);
void gen_request_clear(struct gen_request *g);

/* Creates the job (not yet submitted), owned by g->owner_token. The request
 * is moved into the job. */
struct job *gen_job_new(struct app *a, struct gen_request *g);
/* Queues an asynchronous job, listed for GET /jobs/{id} (the job's owner_token
 * set). Returns 0, or -1 with *status ERR_BUSY (queue full) or another
 * err_code (shutting down). */
int gen_job_submit_listed(struct app *a, struct job *j, int *status);
/* The listed job id if the caller may see it (its owner token, or an admin):
 * a reference (job_put), else NULL. */
struct job *gen_job_find(struct app *a, const char *id, int64_t token_id, int admin);
/* Cancels a queued or running job. */
void gen_job_cancel(struct app *a, struct job *j);
/* Drops the caller's reference. */
void gen_job_put(struct job *j);
const char *gen_job_id(const struct job *j);
/* {"id", "status", "progress": {"step", "steps"}, "result" | "error", times}. */
json_t *gen_job_json(const struct job *j);
/* The finished output of a generation job (NULL unless it succeeded). */
const struct gen_output *gen_job_output(const struct job *j);
/* The synchronous JSON body: {"images": [{"png_base64", "seed"}], "soup", "timings"}. */
json_t *gen_output_json(const struct gen_output *o);
/* Base64 of a buffer, malloc'd. */
char *gen_base64(const uint8_t *p, size_t n);
/* A1111 sampler display name of a scheduler ("ddim" -> "DDIM"). */
const char *gen_sampler_display(const char *scheduler);

/* Generation statistics for /stats and /metrics (gen_stats.c), from the
 * app's one record (app.h: struct gen_stats_ring). */
struct gen_stats {
  int64_t images, requests, failures;
  double p50_ms, p90_ms, p99_ms, mean_step_ms;
};
void gen_stats_get(struct gen_stats_ring *g, struct gen_stats *st);
/* One request ended: ok with n images in total_ms (denoise_ms over steps), or failed. */
void gen_stats_record(struct gen_stats_ring *g, int ok, int n, double total_ms, double denoise_ms,
                      int steps);
