/* engine.c: the worker thread, its bounded priority queue, and the table of
 * listed (async) jobs. Finished listed jobs stay readable for JOB_TTL_S
 * seconds, at most JOB_TABLE_MAX of them. */
#include "engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "log.h"

#define JOB_TABLE_MAX 256
#define JOB_TTL_S 600.0
#define ENGINE_MAX_BATCH 64

struct engine {
  struct app *app; /* handed to every job, never read here */
  int queue_max, max_batch;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv, idle;
  struct job *head; /* priority jobs first, FIFO within a priority */
  int queued;
  struct job *running;
  int stopping;
  atomic_int aborting; /* shutdown grace over: running batches stop */
  struct job *table[JOB_TABLE_MAX];
  int64_t succeeded, failed, cancelled, rejected;
};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

const char *job_status_name(int status) {
  static const char *n[] = {"queued", "running", "succeeded", "failed", "cancelled"};
  return (unsigned)status < 5 ? n[status] : "?";
}

struct job *job_new(job_fn fn, void *arg, job_free_fn arg_free, int priority) {
  struct job *j = calloc(1, sizeof *j);
  if (!j) return NULL;
  unsigned char b[8] = {0};
  if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) memset(b, 0, sizeof b);
  memcpy(j->id, "job_", 4);
  for (int i = 0; i < 8; i++) snprintf(j->id + 4 + 2 * i, 3, "%02x", b[i]);
  j->fn = fn, j->arg = arg, j->arg_free = arg_free, j->priority = priority;
  atomic_init(&j->refs, 1);
  atomic_init(&j->status, JOB_QUEUED);
  j->created = now_s();
  return j;
}

void job_get(struct job *j) {
  atomic_fetch_add(&j->refs, 1);
}

void job_put(struct job *j) {
  if (!j || atomic_fetch_sub(&j->refs, 1) != 1) return;
  if (j->arg_free) j->arg_free(j->arg);
  json_decref(j->errors);
  json_decref(j->result);
  free(j);
}

int job_should_stop(struct job *j) {
  if (!atomic_load(&j->cancel)) return 0;
  if (j->cancel_why && !j->detail[0]) snprintf(j->detail, sizeof j->detail, "%s", j->cancel_why);
  return 1;
}

int job_done(const struct job *j) {
  return atomic_load(&j->status) >= JOB_SUCCEEDED;
}

int job_fail(struct job *j, enum err_code code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(j->detail, sizeof j->detail, fmt, ap);
  va_end(ap);
  j->code = code;
  return -1;
}

/* Ends a job (under e->mu): status, counters, completion callback. */
static void job_finish(struct engine *e, struct job *j, int status) {
  if (status == JOB_CANCELLED)
    log_info("job %s cancelled: %s", j->id, j->detail[0] ? j->detail : "on request");
  else if (status == JOB_FAILED)
    log_warn("job %s failed (%s): %s", j->id, err_code_name(j->code), j->detail);
  j->finished = now_s();
  atomic_store(&j->status, status);
  if (status == JOB_SUCCEEDED)
    e->succeeded++;
  else if (status == JOB_CANCELLED)
    e->cancelled++;
  else
    e->failed++;
  if (j->on_done) j->on_done(j, j->done_ctx);
}

/* Drops expired finished jobs from the table (under e->mu). */
static void table_sweep(struct engine *e) {
  double now = now_s();
  for (int i = 0; i < JOB_TABLE_MAX; i++) {
    struct job *j = e->table[i];
    if (j && job_done(j) && now - j->finished > JOB_TTL_S) {
      e->table[i] = NULL;
      job_put(j);
    }
  }
}

static int table_add(struct engine *e, struct job *j) {
  table_sweep(e);
  int slot = -1;
  double oldest = 0;
  for (int i = 0; i < JOB_TABLE_MAX; i++) {
    if (!e->table[i]) {
      slot = i;
      break;
    }
    if (job_done(e->table[i]) && (slot < 0 || e->table[i]->finished < oldest))
      slot = i, oldest = e->table[i]->finished;
  }
  if (slot < 0) return -1; /* every slot holds a live job */
  if (e->table[slot]) job_put(e->table[slot]);
  job_get(j);
  e->table[slot] = j;
  return 0;
}

int engine_submit(struct engine *e, struct job *j, int listed, int *status) {
  j->app = e->app;
  pthread_mutex_lock(&e->mu);
  if (e->stopping) {
    pthread_mutex_unlock(&e->mu);
    *status = ERR_UNAVAILABLE;
    return -1;
  }
  if (!j->priority && e->queued >= e->queue_max) {
    e->rejected++;
    pthread_mutex_unlock(&e->mu);
    *status = ERR_BUSY;
    return -1;
  }
  if (listed && table_add(e, j) != 0) {
    e->rejected++;
    pthread_mutex_unlock(&e->mu);
    *status = ERR_BUSY;
    return -1;
  }
  j->listed = listed;
  job_get(j); /* the queue's reference */
  struct job **p = &e->head;
  while (*p && (*p)->priority >= j->priority) p = &(*p)->next;
  j->next = *p;
  *p = j;
  e->queued++;
  pthread_cond_signal(&e->cv);
  pthread_mutex_unlock(&e->mu);
  return 0;
}

struct job *engine_job_find(struct engine *e, const char *id) {
  struct job *found = NULL;
  pthread_mutex_lock(&e->mu);
  table_sweep(e);
  for (int i = 0; i < JOB_TABLE_MAX && !found; i++)
    if (e->table[i] && strcmp(e->table[i]->id, id) == 0) {
      found = e->table[i];
      job_get(found);
    }
  pthread_mutex_unlock(&e->mu);
  return found;
}

void engine_job_cancel(struct engine *e, struct job *j, const char *why) {
  pthread_mutex_lock(&e->mu);
  if (!atomic_load(&j->cancel)) j->cancel_why = why; /* published by the store below */
  atomic_store(&j->cancel, 1);
  if (atomic_load(&j->status) == JOB_QUEUED) {
    for (struct job **p = &e->head; *p; p = &(*p)->next)
      if (*p == j) {
        *p = j->next;
        e->queued--;
        snprintf(j->detail, sizeof j->detail, "%s", why ? why : "cancelled before it started");
        job_finish(e, j, JOB_CANCELLED);
        job_put(j); /* the queue's reference */
        break;
      }
  }
  pthread_mutex_unlock(&e->mu);
}

/* Takes the head job and, if it can be batched, the compatible queued jobs
 * behind it up to max_batch images (under e->mu). Returns how many. */
static int batch_take(struct engine *e, struct job **batch) {
  struct job *j = e->head;
  e->head = j->next;
  e->queued--;
  int n = 1, images = j->batch_images;
  batch[0] = j;
  if (j->batch_fn && !atomic_load(&j->cancel))
    for (struct job **p = &e->head; *p && n < ENGINE_MAX_BATCH;) {
      struct job *c = *p;
      if (c->batch_fn == j->batch_fn && strcmp(c->batch_key, j->batch_key) == 0 &&
          !atomic_load(&c->cancel) && images + c->batch_images <= e->max_batch) {
        *p = c->next;
        e->queued--;
        batch[n++] = c;
        images += c->batch_images;
      } else {
        p = &c->next;
      }
    }
  double now = now_s();
  for (int i = 0; i < n; i++) {
    atomic_store(&batch[i]->status, JOB_RUNNING);
    batch[i]->started = now;
  }
  e->running = j;
  return n;
}

static void *worker(void *arg) {
  struct engine *e = arg;
  log_set_request_id(NULL);
  pthread_mutex_lock(&e->mu);
  for (;;) {
    while (!e->head && !e->stopping) pthread_cond_wait(&e->cv, &e->mu);
    if (!e->head) break; /* stopping and drained */
    struct job *batch[ENGINE_MAX_BATCH];
    int nb = batch_take(e, batch);
    struct job *j = batch[0];
    pthread_mutex_unlock(&e->mu);

    log_set_request_id(j->id);
    if (nb > 1) {
      log_info("running %d compatible jobs as one batch", nb);
      j->batch_fn(batch, nb);
    } else {
      j->rc = atomic_load(&j->cancel) ? -ECANCELED : j->fn(j, j->arg);
    }
    log_set_request_id(NULL);

    pthread_mutex_lock(&e->mu);
    e->running = NULL;
    for (int i = 0; i < nb; i++) {
      struct job *b = batch[i];
      int st = b->rc == 0                                         ? JOB_SUCCEEDED
               : (b->rc == -ECANCELED || atomic_load(&b->cancel)) ? JOB_CANCELLED
                                                                  : JOB_FAILED;
      if (st == JOB_CANCELLED && !b->detail[0]) snprintf(b->detail, sizeof b->detail, "cancelled");
      job_finish(e, b, st);
      job_put(b); /* the queue's reference */
    }
    pthread_cond_broadcast(&e->idle);
  }
  pthread_mutex_unlock(&e->mu);
  return NULL;
}

int engine_start(struct app *a, int queue_max, int max_batch, struct engine **out, char **err) {
  struct engine *e = calloc(1, sizeof *e);
  if (!e) return -1;
  e->app = a, e->queue_max = queue_max, e->max_batch = max_batch;
  pthread_mutex_init(&e->mu, NULL);
  pthread_cond_init(&e->cv, NULL);
  pthread_cond_init(&e->idle, NULL);
  if (pthread_create(&e->thread, NULL, worker, e) != 0) {
    *err = strdup("cannot start the compute worker thread");
    free(e);
    return -1;
  }
  *out = e;
  return 0;
}

void engine_stop(struct engine *e, int grace_s) {
  if (!e) return;
  pthread_mutex_lock(&e->mu);
  e->stopping = 1;
  /* queued generations are cancelled; queued soup updates still run */
  for (struct job **p = &e->head; *p;) {
    struct job *j = *p;
    if (j->priority) {
      p = &j->next;
      continue;
    }
    *p = j->next;
    e->queued--;
    atomic_store(&j->cancel, 1);
    snprintf(j->detail, sizeof j->detail, "the server is shutting down");
    job_finish(e, j, JOB_CANCELLED);
    job_put(j);
  }
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += grace_s;
  while (e->running && !e->running->priority &&
         pthread_cond_timedwait(&e->idle, &e->mu, &until) == 0) {
  }
  if (e->running && !e->running->priority) {
    log_warn("job %s still running after %d s: cancelling it", e->running->id, grace_s);
    atomic_store(&e->running->cancel, 1);
    atomic_store(&e->aborting, 1);
  }
  pthread_cond_broadcast(&e->cv);
  pthread_mutex_unlock(&e->mu);
  pthread_join(e->thread, NULL);
  for (int i = 0; i < JOB_TABLE_MAX; i++) job_put(e->table[i]);
  free(e);
}

int engine_aborting(struct engine *e) {
  return e && atomic_load(&e->aborting);
}

void engine_stats_get(struct engine *e, struct engine_stats *st) {
  pthread_mutex_lock(&e->mu);
  st->queued = e->queued;
  st->running = e->running != NULL;
  st->succeeded = e->succeeded, st->failed = e->failed, st->cancelled = e->cancelled;
  st->rejected = e->rejected;
  pthread_mutex_unlock(&e->mu);
}
