/* engine.h: the compute worker. One thread owns the compute backend and runs
 * jobs from one bounded queue shared by generation and soup updates.
 *
 * Invariants:
 *  - only the worker thread touches the backend and changes the soup, so a
 *    generation job sees one soup version from its first step to its last;
 *  - soup updates jump ahead of queued generations (priority), so a
 *    withdrawal waits for at most the job that is running, and every job
 *    started after its reply uses the new version;
 *  - at most queue_max jobs wait; engine_submit refuses more (429);
 *  - a job is reference counted: the engine holds one reference while it is
 *    queued or running (and while it stays listed for GET /jobs), the
 *    submitter holds one until it calls job_put.
 */
#pragma once

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#include "errors.h"

struct app;
struct job;
struct engine;

enum job_status { JOB_QUEUED = 0, JOB_RUNNING, JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED };

typedef int (*job_fn)(struct job *j, void *arg);
typedef void (*job_done_fn)(struct job *j, void *ctx);
typedef void (*job_free_fn)(void *arg);
/* Runs n compatible jobs as one batch; sets each job's rc. */
typedef void (*job_batch_fn)(struct job **jobs, int n);

struct job {
  char id[40];
  int64_t owner_token; /* who may read or cancel it (admins always may) */
  int priority;        /* 1: soup update, ahead of generations */
  job_fn fn;
  void *arg;
  job_free_fn arg_free;
  job_done_fn on_done; /* called by the worker when the job ends (any outcome) */
  void *done_ctx;
  _Atomic int status;
  atomic_int cancel;
  atomic_int step, steps;
  atomic_int refs;
  enum err_code code;                /* for a failure: what kind (errors.h) */
  char detail[600];                  /* for a failure */
  json_t *errors;                    /* for a failure, {field, message} array or NULL */
  json_t *result;                    /* on success, the JSON body (owned) */
  double created, started, finished; /* CLOCK_REALTIME seconds */
  int listed;                        /* kept in the job table for GET /jobs */
  struct app *app;                   /* set by engine_submit: the app the worker serves */
  const char *cancel_why;            /* set with cancel: why (a static string), or NULL */
  /* batching: queued jobs with the same batch_fn and batch_key run together,
   * up to the config's max_batch images */
  job_batch_fn batch_fn;
  char batch_key[160];
  int batch_images;
  int rc;           /* set by batch_fn */
  struct job *next; /* queue link */
};

/* a is handed to each job (job->app) and never read by the engine: it
 * knows queues and workers only. At most queue_max generations wait;
 * batches hold at most max_batch images. */
int engine_start(struct app *a, int queue_max, int max_batch, struct engine **out, char **err);
/* Cancels queued generations, lets the running job finish within grace_s
 * (then asks it to cancel), runs queued soup updates, stops the worker. */
void engine_stop(struct engine *e, int grace_s);

/* A new job (refs = 1, the caller's). */
struct job *job_new(job_fn fn, void *arg, job_free_fn arg_free, int priority);
void job_get(struct job *j);
void job_put(struct job *j);
/* 1 if the job has ended. */
int job_done(const struct job *j);
const char *job_status_name(int status);
/* For job functions: 1 if the job should stop (cancelled). */
int job_should_stop(struct job *j);
/* For job functions: records a failure. Returns -1. */
int job_fail(struct job *j, enum err_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Queues a job; listed = keep it for GET /jobs/{id}. Returns 0, or -1 when
 * the queue is full (ERR_BUSY) or the engine is stopping (ERR_UNAVAILABLE),
 * with *status. */
int engine_submit(struct engine *e, struct job *j, int listed, int *status);
/* Finds a listed job (a new reference) or NULL. */
struct job *engine_job_find(struct engine *e, const char *id);
/* Asks a job to stop: a queued one ends at once, a running one at its next
 * step. why (a static string, or NULL: on request) becomes its detail. */
void engine_job_cancel(struct engine *e, struct job *j, const char *why);

/* 1 once shutdown has given up waiting: running work should stop. */
int engine_aborting(struct engine *e);

struct engine_stats {
  int queued, running;
  int64_t succeeded, failed, cancelled, rejected;
};
void engine_stats_get(struct engine *e, struct engine_stats *st);
