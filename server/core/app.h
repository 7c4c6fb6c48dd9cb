/* app.h: the daemon's state, shared by the HTTP threads and the engine.
 *
 * Invariants: reg, model, base and soup are set before HTTP starts and live
 * until it has stopped. Every change to the soup (register, withdraw,
 * reweight, verify) holds update_mu from its first write to its reply, so
 * changes are serialized; readers use soup_acquire/soup_release. The live soup
 * version always equals the latest version committed in the registry once
 * ready is set. */
#pragma once

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "config.h"
#include "errors.h"

struct registry;
struct model_dir;
struct st_file;
struct soup;
struct engine;
struct backend;
struct pipeline;
struct soup_backend;
struct proofs_keys;

/* The generation statistics: counters and the last GEN_LAT_RING latencies,
 * under mu (gen_stats.c). */
#define GEN_LAT_RING 1024
struct gen_stats_ring {
  pthread_mutex_t mu;
  double lat[GEN_LAT_RING];
  int64_t lat_n, images, requests, failures, steps;
  double step_ms_sum;
};

struct app {
  struct config cfg;
  char db_path[1100];
  char shards_dir[1100];
  char tmp_dir[1100];
  char model_root[1100];
  char base_name[256];
  char base_sha256[65];
  struct registry *reg;
  struct model_dir *model;
  struct st_file *base;
  struct soup *soup;
  struct proofs_keys *keys; /* the signing keys (proofs/keys.h) */
  struct engine *engine;    /* the compute worker (engine.h) */
  struct backend *be;       /* compute backend, used only by the worker */
  struct pipeline *pipe;    /* text-to-image pipeline; NULL if the model cannot generate */
  char device[32];          /* "cpu" or "cuda:N" */
  const struct soup_backend *soup_be; /* the soup ops of that device */
  pthread_mutex_t update_mu;
  /* the last soup change: written by the worker after each switch, read by
   * any thread (GET /soup, /stats, /metrics) through app_update_times */
  pthread_mutex_t times_mu;
  char updated_at[40]; /* RFC 3339, "" = none since start */
  double last_update_ms;
  struct gen_stats_ring gen_stats;
  atomic_int ready;
  atomic_int stopping;
};

/* The caller of a change, for authorization and the audit log. */
struct actor {
  int64_t token_id;
  const char *name;     /* "admin#1", "provider:acme#4" */
  const char *provider; /* owner name for new shards */
  int admin;            /* may act on every shard; else only on its provider's */
};

/* The outcome of a failed operation; http/reply.c maps it to problem+json. */
struct op_error {
  enum err_code code;
  char detail[600]; /* never a server path */
  json_t *errors;   /* {field, message} array or NULL (owned) */
};
/* Sets code and the detail from fmt; returns -1 (op_error.c). */
int op_fail(struct op_error *e, enum err_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Appends {field, message} to errors; the first one also becomes the
 * detail ("field: message"). Sets code; returns -1. */
int op_field_error(struct op_error *e, enum err_code code, const char *field, const char *msg);

/* A consistent copy of updated_at and last_update_ms (taken under times_mu). */
struct update_times {
  char updated_at[40];
  double last_update_ms;
};
void app_update_times(struct app *a, struct update_times *t);
/* Records a soup change that took `ms`, stamped now. */
void app_update_times_set(struct app *a, double ms);

/* Picks the compute device from cfg.device (device.c): sets be, soup_be
 * and device. */
int app_device_open(struct app *a, char **err);

/* Initializes the locks; before any thread can see the app. */
void app_init(struct app *a);
/* Opens the data directory, the registry, the base model, builds the soup
 * from the committed registry state. */
int app_open(struct app *a, char **err);
void app_close(struct app *a);
/* Writes the accumulator snapshot (clean shutdown), so the next start skips
 * re-reading every shard file when nothing changed in between. */
void app_snapshot_save(struct app *a);

/* Opens a shard file (header capped at 16 MiB), with original LDM names
 * converted to diffusers names. */
int app_shard_open(const struct app *a, const char *path, struct st_file **f, char **err);

/* Path of a stored shard file (content-addressed). */
void app_shard_path(const struct app *a, const char *sha256, char *out, size_t len);

/* A soup change, durably (DESIGN.md 5.6): validate, build aside, commit
 * registry row + audit event + soup version in one transaction, switch, and
 * only then return. `result` gets {"shard", "soup"}. */
struct shard_input {
  const char *tmp_path; /* a fully written, fsynced file under tmp_dir */
  const char *sha256;
  int64_t size_bytes;
  const char *name;
  double weight;
  const char *provider;
  const char *description;
  const json_t *metadata;
};
int app_shard_register(struct app *a, const struct actor *who, const struct shard_input *in,
                       json_t **result, struct op_error *e);
int app_shard_withdraw(struct app *a, const struct actor *who, int64_t id, const char *reason,
                       int purge, json_t **result, struct op_error *e);
int app_shard_reweight(struct app *a, const struct actor *who, int64_t id, double weight,
                       json_t **result, struct op_error *e);
/* POST /soup/verify: {"live_hash", "rebuilt_hash", "match", "ms"}. */
int app_soup_verify(struct app *a, const struct actor *who, json_t **result, struct op_error *e);
/* GET /soup body (admin adds base.path). */
json_t *app_soup_json(struct app *a, int admin);
/* The ordered member set of the active shards with their shares (NULL and
 * *err on a registry failure). */
json_t *app_soup_members(struct app *a, char **err);
/* {"version", "hash"} of the live soup plus members. */
json_t *app_soup_brief(struct app *a);
/* Records an auth.denied audit event. */
void app_audit_denied(struct app *a, const struct actor *who, int64_t shard_id, const char *what);
/* GET /keys: {"keys": [...]}, the public signing keys, current last. */
json_t *app_keys_json(struct app *a);
/* GET /shards/{id}/receipts: {"receipts": [...]}; ERR_NOT_FOUND for an unknown shard. */
int app_shard_receipts(struct app *a, int64_t id, json_t **out, struct op_error *e);
/* The soup hash rebuilt from the stored files of the active shards, as
 * POST /soup/verify computes it (the caller holds update_mu). */
int app_soup_rebuilt_hash(struct app *a, char rebuilt[65], struct op_error *e);

/* A receipt of a registration or withdrawal (receipts.c). */
struct app_receipt_in {
  const char *action; /* "shard.registered" or "shard.withdrawn" */
  int64_t shard_id, event_id;
  const char *sha256, *name, *provider, *reason;
  int64_t v_before, v_after;
  const char *hash_before, *hash_after;
  int verify; /* rebuild the soup from the active shards and record the match */
};
/* Builds and signs the receipt and stores it in the registry (inside the
 * change's transaction); *out gets it. A registry status, or -1 and *err. */
int app_receipt_commit(struct app *a, const struct app_receipt_in *in, json_t **out, char **err);
/* Signs the chain head (event_id, the change's own event) at a soup change
 * and stores it (checkpoints.c); inside the change's transaction. */
int app_checkpoint_commit(struct app *a, int64_t event_id, int64_t version, const char *soup_hash,
                          char **err);
/* The audit log's chain (registry_event_chain_verify) plus its signed
 * checkpoints checked with `keys` (an array as GET /keys lists): adds
 * "checkpoints" (count) and "checkpoint_problem" (null or a sentence). For
 * the daemon and for `soupd audit verify`, which passes its own registry. */
int app_audit_verify(struct registry *reg, const json_t *keys, json_t **out, char **err);
