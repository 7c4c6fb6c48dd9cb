/* shard_jobs.c: typed jobs for the soup changes and verification (see
 * shard_jobs.h). Each owns its arguments; the worker runs it with the app
 * the engine serves and writes the outcome into the job. */
#include "shard_jobs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "log.h"

enum shard_job_kind { JOB_REGISTER, JOB_WITHDRAW, JOB_REWEIGHT, JOB_VERIFY };

struct shard_job {
  enum shard_job_kind kind;
  int64_t token_id;
  int admin;
  char *actor_name, *provider; /* owned copies of the actor */
  struct shard_input in;       /* JOB_REGISTER: strings and metadata owned */
  int64_t id;                  /* JOB_WITHDRAW, JOB_REWEIGHT */
  char *reason;                /* JOB_WITHDRAW */
  int purge;                   /* JOB_WITHDRAW */
  double weight;               /* JOB_REWEIGHT */
};

static char *dup_or_null(const char *s) {
  return s ? strdup(s) : NULL;
}

static void shard_job_free(void *arg) {
  struct shard_job *s = arg;
  if (!s) return;
  free(s->actor_name), free(s->provider), free(s->reason);
  free((char *)s->in.tmp_path), free((char *)s->in.sha256), free((char *)s->in.name);
  free((char *)s->in.provider), free((char *)s->in.description);
  json_decref((json_t *)s->in.metadata);
  free(s);
}

/* Runs on the worker thread. */
static int shard_job_run(struct job *j, void *arg) {
  struct shard_job *s = arg;
  struct app *a = j->app;
  struct actor who = {s->token_id, s->actor_name, s->provider, s->admin};
  struct op_error e = {0};
  json_t *result = NULL;
  int rc = -1;
  switch (s->kind) {
  case JOB_REGISTER:
    rc = app_shard_register(a, &who, &s->in, &result, &e);
    break;
  case JOB_WITHDRAW:
    rc = app_shard_withdraw(a, &who, s->id, s->reason, s->purge, &result, &e);
    break;
  case JOB_REWEIGHT:
    rc = app_shard_reweight(a, &who, s->id, s->weight, &result, &e);
    break;
  case JOB_VERIFY:
    rc = app_soup_verify(a, &who, &result, &e);
    break;
  }
  if (rc == 0) {
    j->result = result ? result : json_object();
    return 0;
  }
  json_decref(result);
  j->errors = e.errors;
  return job_fail(j, e.code ? e.code : ERR_INTERNAL, "%s", e.detail);
}

/* A job around s (taken over, freed on failure), or NULL when out of memory. */
static struct job *shard_job_make(struct shard_job *s, const struct actor *who) {
  if (!s) return NULL;
  s->token_id = who->token_id, s->admin = who->admin;
  s->actor_name = dup_or_null(who->name);
  s->provider = dup_or_null(who->provider);
  struct job *j = (who->name && !s->actor_name) || (who->provider && !s->provider)
                      ? NULL
                      : job_new(shard_job_run, s, shard_job_free, 1);
  if (!j) {
    shard_job_free(s);
    return NULL;
  }
  j->owner_token = who->token_id;
  return j;
}

struct job *core_shard_register_job(const struct actor *who, const struct shard_input *in) {
  struct shard_job *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->kind = JOB_REGISTER;
  s->in = *in;
  s->in.tmp_path = dup_or_null(in->tmp_path);
  s->in.sha256 = dup_or_null(in->sha256);
  s->in.name = dup_or_null(in->name);
  s->in.provider = dup_or_null(in->provider);
  s->in.description = dup_or_null(in->description);
  s->in.metadata = in->metadata ? json_deep_copy(in->metadata) : NULL;
  if ((in->tmp_path && !s->in.tmp_path) || (in->sha256 && !s->in.sha256) ||
      (in->name && !s->in.name) || (in->provider && !s->in.provider) ||
      (in->description && !s->in.description) || (in->metadata && !s->in.metadata)) {
    shard_job_free(s);
    return NULL;
  }
  return shard_job_make(s, who);
}

struct job *core_shard_withdraw_job(const struct actor *who, int64_t id, const char *reason,
                                    int purge) {
  struct shard_job *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->kind = JOB_WITHDRAW, s->id = id, s->purge = purge;
  s->reason = dup_or_null(reason);
  if (reason && !s->reason) {
    shard_job_free(s);
    return NULL;
  }
  return shard_job_make(s, who);
}

struct job *core_shard_reweight_job(const struct actor *who, int64_t id, double weight) {
  struct shard_job *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->kind = JOB_REWEIGHT, s->id = id, s->weight = weight;
  return shard_job_make(s, who);
}

struct job *core_soup_verify_job(const struct actor *who) {
  struct shard_job *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->kind = JOB_VERIFY;
  return shard_job_make(s, who);
}
