/* shard_jobs.h: the soup changes (register, withdraw, reweight) and the soup
 * verification as typed worker jobs.
 *
 * A job is built on the HTTP side from parsed input and owns copies of all
 * of it (the actor, names, paths, metadata), so nothing of the request is
 * reachable from the worker. The worker runs the durable change
 * (shard_changes.c) and leaves the outcome in the job: `result` on success, or
 * `http_status`, `detail` and `errors` on failure. Every job here has
 * priority 1 (ahead of queued generations) and is never cancelled by a
 * client's disconnect: a change that was asked for is carried out. */
#pragma once

#include <stdint.h>

#include "core/app.h"

struct job;

struct job *core_shard_register_job(const struct actor *who, const struct shard_input *in);
struct job *core_shard_withdraw_job(const struct actor *who, int64_t id, const char *reason,
                                    int purge);
struct job *core_shard_reweight_job(const struct actor *who, int64_t id, double weight);
struct job *core_soup_verify_job(const struct actor *who);
